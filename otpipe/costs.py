"""Ground costs ``C(x, y)`` between point clouds and the diameter used by eps-scaling.

Two conventions (``DESIGN.md`` section 1):

* ``"|x-y|^p/p"`` (default, GeomLoss convention): ``C(x, y) = |x - y|^p / p``;
* ``"|x-y|^p"`` (the convention of Genevay et al. 2018): ``C(x, y) = |x - y|^p``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Cost", "make_cost", "diameter", "COST_NAMES"]

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


def diameter(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor | None = None, b: torch.Tensor | None = None) -> float:
    """Diagonal of the bounding box of the points of ``x`` and ``y`` that carry mass.

    ``|max - min|_2`` over all points with positive weight, across the whole batch: padding
    (zero-weight points) does not change it.
    """
    pts = []
    for pts_, w in ((x, a), (y, b)):
        flat = pts_.reshape(-1, pts_.shape[-1])
        if w is not None:
            flat = flat[w.reshape(-1) > 0]
        pts.append(flat)
    allp = torch.cat(pts, dim=0).detach()
    ext = allp.max(dim=0).values - allp.min(dim=0).values
    return float(ext.norm())
