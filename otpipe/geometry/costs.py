"""Ground costs ``C(x, y)`` between point clouds and the diameter used by eps-scaling.

Two conventions (``docs/conventions.md``):

* ``"|x-y|^p/p"`` (default, GeomLoss convention): ``C(x, y) = |x - y|^p / p``;
* ``"|x-y|^p"`` (the convention of Genevay et al. 2018): ``C(x, y) = |x - y|^p``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Cost", "make_cost", "diameter", "box_extents", "diagonal", "check_range", "format_log", "COST_NAMES"]

#: accepted spellings of the two cost conventions
COST_NAMES = {
    None: True,
    "|x-y|^p/p": True,
    "default": True,
    "geomloss": True,
    "|x-y|^p": False,
    "plain": False,
    "power": False,
}


@dataclass(frozen=True)
class Cost:
    """The ground cost ``C(x, y) = |x - y|^p / p`` (``halved=True``) or ``|x - y|^p``.

    Parameters
    ----------
    p : float
        Exponent, any ``p > 0``.
    halved : bool
        Divide by ``p`` (GeomLoss convention) or not.
    """

    p: float = 2.0
    halved: bool = True

    @property
    def scale(self) -> float:
        """The constant factor in front of ``|x - y|^p``."""
        return 1.0 / self.p if self.halved else 1.0

    @property
    def name(self) -> str:
        """The convention's name, ``"|x-y|^p/p"`` or ``"|x-y|^p"`` (a key of :data:`COST_NAMES`)."""
        return "|x-y|^p/p" if self.halved else "|x-y|^p"

    def dense(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Dense cost matrix ``C[b, i, j] = scale * |x[b, i] - y[b, j]|^p``.

        Distances are computed from coordinate differences (accurate for far-apart clouds);
        the gradient of ``|x - y|^p`` at ``x = y`` is taken as 0.

        Parameters
        ----------
        x : torch.Tensor
            Points ``(B, N, D)``.
        y : torch.Tensor
            Points ``(B, M, D)``, same dtype and device.

        Returns
        -------
        torch.Tensor
            The costs ``(B, N, M)``.
        """
        if self.p == 2.0:
            d2 = _sqdist(x, y)
            return d2 * self.scale if self.scale != 1.0 else d2
        r = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")
        if self.p == 1.0:
            c = r
        else:
            pos = r > 0
            c = torch.where(pos, torch.where(pos, r, torch.ones_like(r)) ** self.p, torch.zeros_like(r))
        return c * self.scale if self.scale != 1.0 else c

    def keops(self, x_i, y_j):
        """The same cost as a KeOps symbolic ``LazyTensor``.

        Parameters
        ----------
        x_i : pykeops.torch.LazyTensor
            Points indexed by ``i``, ``(..., N, 1, D)``.
        y_j : pykeops.torch.LazyTensor
            Points indexed by ``j``, ``(..., 1, M, D)``.

        Returns
        -------
        pykeops.torch.LazyTensor
            The symbolic costs ``scale * |x_i - y_j|^p``, ``(..., N, M)``.
        """
        d2 = ((x_i - y_j) ** 2).sum(-1)
        if self.p == 2.0:
            c = d2
        elif self.p == 1.0:
            c = d2.sqrt()
        else:
            c = d2.sqrt() ** float(self.p)
        return c * self.scale if self.scale != 1.0 else c


def _sqdist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances from differences, memory ``B * N * M`` (not ``* D``)."""
    if x.shape[-1] <= 8:
        d2 = None
        for k in range(x.shape[-1]):
            dk = x[..., :, None, k] - y[..., None, :, k]
            d2 = dk * dk if d2 is None else d2 + dk * dk
        return d2
    r = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")
    return r * r


def make_cost(p: float = 2.0, cost: str | None = None) -> Cost:
    """Build a :class:`Cost` from ``p`` and a convention name.

    Parameters
    ----------
    p : float, default 2.0
        Exponent of ``|x - y|^p``, a positive finite number.
    cost : str or Cost or None, default None
        A key of :data:`COST_NAMES` (``None``: ``"|x-y|^p/p"``); a :class:`Cost` is returned as it is.

    Returns
    -------
    Cost
        The ground cost.

    Raises
    ------
    ValueError
        If ``p`` is not a positive finite number or ``cost`` is not a known convention.
    """
    if isinstance(cost, Cost):
        return cost
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"p must be a positive number, got {p!r}") from None
    if not (p > 0 and math.isfinite(p)):
        raise ValueError(f"p must be a positive finite number, got {p}")
    if cost not in COST_NAMES:
        raise ValueError(f"unknown cost {cost!r}: use '|x-y|^p/p' (default) or '|x-y|^p'")
    return Cost(p=p, halved=COST_NAMES[cost])


def box_extents(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor | None = None, b: torch.Tensor | None = None) -> torch.Tensor:
    """Sides ``max - min`` per coordinate of the bounding box of the points of ``x`` and ``y`` that carry mass.

    The box is taken across the whole batch; padding (zero-weight points) does not change it.

    Parameters
    ----------
    x : torch.Tensor
        Points ``(..., N, D)``.
    y : torch.Tensor
        Points ``(..., M, D)``.
    a : torch.Tensor or None, default None
        Weights of ``x`` (``x.shape[:-1]``); points of weight 0 are left out. ``None``: every point counts.
    b : torch.Tensor or None, default None
        Weights of ``y``, likewise.

    Returns
    -------
    torch.Tensor
        The sides ``(D,)``, detached from the autograd graph.
    """
    pts = []
    for pts_, w in ((x, a), (y, b)):
        flat = pts_.reshape(-1, pts_.shape[-1])
        if w is not None:
            flat = flat[w.reshape(-1) > 0]
        pts.append(flat)
    allp = torch.cat(pts, dim=0).detach()
    return allp.max(dim=0).values - allp.min(dim=0).values


def diagonal(ext: torch.Tensor) -> float:
    """Length ``|ext|_2`` of the diagonal of a box, overflow-safe.

    Parameters
    ----------
    ext : torch.Tensor
        Sides of the box ``(D,)`` (:func:`box_extents`).

    Returns
    -------
    float
        The diagonal, computed in float64 with scaling where the norm over- or underflows ``ext``'s dtype
        (``inf`` only when a side is infinite).
    """
    d = float(ext.norm())
    if not math.isfinite(d) or (d == 0.0 and bool((ext != 0).any())):
        # the norm overflowed or underflowed the points' dtype: scaled, in float64
        e = ext.double().abs()
        m = float(e.max())
        d = m * float((e / m).norm()) if math.isfinite(m) else math.inf
    return d


def diameter(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor | None = None, b: torch.Tensor | None = None) -> float:
    """Diagonal of the bounding box of the points of ``x`` and ``y`` that carry mass.

    ``|max - min|_2`` over all points with positive weight, across the whole batch: padding
    (zero-weight points) does not change it.

    Parameters
    ----------
    x : torch.Tensor
        Points ``(..., N, D)``.
    y : torch.Tensor
        Points ``(..., M, D)``.
    a : torch.Tensor or None, default None
        Weights of ``x``; ``None``: every point counts.
    b : torch.Tensor or None, default None
        Weights of ``y``; ``None``: every point counts.

    Returns
    -------
    float
        The diagonal of the bounding box (0 when all points coincide).
    """
    return diagonal(box_extents(x, y, a, b))


#: headroom below the largest float for the sums of potentials and costs formed by the loop
RANGE_MARGIN = 64.0


def format_log(log_v: float) -> str:
    """``exp(log_v)`` written as ``1.23e+45`` even where a Python float would overflow.

    Parameters
    ----------
    log_v : float
        Natural logarithm of the value.

    Returns
    -------
    str
        Three significant digits (``"1.23e+45"``, or ``"1.23e+400"`` beyond float64's range).
    """
    e = log_v / math.log(10.0)
    if abs(e) < 300:
        return f"{math.exp(log_v):.3g}"
    k = math.floor(e)
    m = round(10.0 ** (e - k), 2)
    if m >= 10.0:
        m, k = m / 10.0, k + 1
    return f"{m:.3g}e{k:+03d}"


def check_range(
    dtype: torch.dtype,
    cost: Cost,
    *,
    extent: float,
    diameter: float,
    blur: float,
    reach: float | None = None,
    diameter_given: bool = False,
) -> None:
    """Check that the costs and temperatures of a solve are representable in ``dtype``.

    ``C_max = scale * extent^p`` (``extent`` the bounding-box diagonal of the points), the first
    temperature ``diameter^p``, the final one ``blur^p`` and ``reach^p`` must lie in
    ``[tiny, max / RANGE_MARGIN]`` of the dtype (``C_max`` may also be 0: all points at one place).

    Parameters
    ----------
    dtype : torch.dtype
        The floating-point type of the solve.
    cost : Cost
        The ground cost.
    extent : float
        Bounding-box diagonal of the points (:func:`diameter`).
    diameter : float
        The diameter that starts the eps-scaling (first temperature ``diameter^p``).
    blur : float
        The final blur (temperature ``blur^p``).
    reach : float or None, default None
        The reach of unbalanced OT (``reach^p``); ``None``: balanced.
    diameter_given : bool, default False
        Whether the user passed ``diameter`` (only then is its overflow reported; a computed one follows ``extent``).

    Raises
    ------
    ValueError
        Naming the quantity that overflows or underflows and what to do.
    """
    fi = torch.finfo(dtype)
    name = str(dtype).replace("torch.", "")
    hi, lo = math.log(fi.max / RANGE_MARGIN), math.log(fi.tiny)
    p = cost.p
    f64 = "" if dtype == torch.float64 else ", or use float64"
    fix = "rescale the points (divide all coordinates by a common factor)" + f64
    up = "rescale the points (multiply all coordinates by a common factor)" + f64
    if not math.isfinite(extent):
        raise ValueError(f"the points span more than {name} can hold (their bounding-box diagonal overflows): {fix}")
    lc = p * math.log(extent) + math.log(cost.scale) if extent > 0 else -math.inf
    if extent > 0:
        if max(lc, p * math.log(extent)) > hi:
            raise ValueError(
                f"the costs overflow {name}: the points span {extent:.3g} (bounding-box diagonal), so costs "
                f"{cost.name} reach {format_log(lc)}, beyond {name}'s range ({fi.max:.3g}): {fix}"
            )
        if lc < lo:
            raise ValueError(
                f"the costs underflow {name}: the points span only {extent:.3g} (bounding-box diagonal), so costs "
                f"{cost.name} are below {format_log(lc)}, under {name}'s smallest normal number ({fi.tiny:.3g}): {up}"
            )
    if diameter_given and p * math.log(diameter) > hi:
        raise ValueError(
            f"diameter^p = {diameter:.3g}^{p:g} = {format_log(p * math.log(diameter))} (the first temperature of the "
            f"eps-scaling) overflows {name}: pass a diameter near the points' extent ({extent:.3g})"
            + f64
        )
    for what, v in (("blur", blur), ("reach", reach)):
        if v is None:
            continue
        lv = p * math.log(v)
        if lv < lo:
            raise ValueError(
                f"{what}^p = {v:.3g}^{p:g} = {format_log(lv)} underflows {name} (smallest normal number {fi.tiny:.3g}): "
                f"use a larger {what} (scaled with the points: multiply both by a common factor)" + f64
            )
        if lv > hi:
            raise ValueError(
                f"{what}^p = {v:.3g}^{p:g} = {format_log(lv)} overflows {name}: use a smaller {what} (scaled with the points: "
                "divide both by a common factor)" + f64
            )
    if lc - p * math.log(blur) > hi:
        raise ValueError(
            f"costs / blur^p overflow {name}: the points span {extent:.3g} (bounding-box diagonal), so costs "
            f"{cost.name} reach {format_log(lc)}, {format_log(lc - p * math.log(blur))} times the final temperature blur^p; "
            f"use a larger blur, {fix}"
        )
