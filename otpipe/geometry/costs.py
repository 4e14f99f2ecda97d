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
        return "|x-y|^p/p" if self.halved else "|x-y|^p"

    def dense(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Dense cost matrix ``(B, N, M)`` from ``x (B, N, D)`` and ``y (B, M, D)``.

        Distances are computed from coordinate differences (accurate for far-apart clouds);
        the gradient of ``|x - y|^p`` at ``x = y`` is taken as 0.
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
        """The same cost as a KeOps symbolic ``LazyTensor`` (``x_i``: ``(..., N, 1, D)``, ``y_j``: ``(..., 1, M, D)``)."""
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
    """Build a :class:`Cost` from ``p`` and a convention name (see :data:`COST_NAMES`)."""
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
    """Sides ``max - min`` (per coordinate, ``(D,)``, detached) of the bounding box of the points of ``x`` and ``y``
    that carry mass, across the whole batch: padding (zero-weight points) does not change it."""
    pts = []
    for pts_, w in ((x, a), (y, b)):
        flat = pts_.reshape(-1, pts_.shape[-1])
        if w is not None:
            flat = flat[w.reshape(-1) > 0]
        pts.append(flat)
    allp = torch.cat(pts, dim=0).detach()
    return allp.max(dim=0).values - allp.min(dim=0).values


def diagonal(ext: torch.Tensor) -> float:
    """Length ``|ext|_2`` of the diagonal of a box with sides ``ext`` (:func:`box_extents`), overflow-safe."""
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
