"""Multiscale backend, geometric part: clustering of point clouds and block-sparsity patterns.

Following Schmitzer (2016), a large problem is first solved on cluster centroids, then finished on the
points with reductions restricted to the cluster pairs ``(I, J)`` that can carry mass:

* clustering: a voxel grid of side ``scale`` for ``D <= 3``; above, seeded k-means (Lloyd iterations on a
  subsample, then assignment of every point). Points are sorted by cluster so each cluster is a
  contiguous range; the coarse measure puts the summed weight of each cluster at its weighted centroid.
* truncation: block ``(I, J)`` is kept when ``max_I f + max_J g - C_min(I, J) >= -truncate * eps``, with
  ``C_min`` the cost between the balls ``B(c_I, r_I)`` and ``B(c_J, r_J)`` that contain the clusters. Every
  dropped term of a row's log-sum-exp is then below ``exp(-truncate)`` times the row's total (for the
  current potentials), and the mask is only ``(n_I, n_J)`` booleans.

The solver driver is :mod:`otpipe.multiscale`; reductions on the points are the ``cpu`` backend's
block-sparse kernels (:class:`otpipe.kernels.cpu.Blocks`) for CPU tensors and KeOps with the same pattern
as block-sparse ``ranges`` for CUDA tensors. :func:`operator` (used for transport maps and kernel losses)
is the full ``cpu`` operator on CPU tensors, the KeOps one otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..costs import Cost
from . import cpu

__all__ = ["operator", "Clustering", "cluster", "default_scale", "block_mask"]

#: kernels of the point-level reductions: ``None`` (automatic: the compiled ``cpu`` kernels for CPU tensors
#: when they build, KeOps ``ranges`` otherwise), ``"cpu"`` or ``"keops"``
FINE_BACKEND: str | None = None
#: default truncation threshold (in units of eps) of the kept cluster pairs
TRUNCATE = 5.0
#: default points per cluster aimed at by :func:`default_scale`
POINTS_PER_CLUSTER = 64
#: most clusters per cloud (the mask has at most this squared entries)
MAX_CLUSTERS = 4096
#: points used to fit the k-means centres (D > 3)
KMEANS_SAMPLE = 20000
#: Lloyd iterations of the k-means clustering
KMEANS_ITERS = 10


def operator(x: torch.Tensor, y: torch.Tensor, cost: Cost):
    """The full (not truncated) operator: ``cpu`` for CPU tensors, KeOps otherwise (transport maps, kernel sums)."""
    if x.device.type == "cpu":
        return cpu.operator(x, y, cost)
    from .keops import KeOpsOperator

    return KeOpsOperator(x, y, cost)


@dataclass
class Clustering:
    """Points sorted by cluster: cluster ``I`` is ``x[perm][bounds[I]:bounds[I + 1]]``.

    ``centers (n, D)`` weighted centroids, ``weights (n,)`` summed weights, ``radius (n,)`` largest distance
    of a member to its centre, ``labels (N,)`` the cluster of each sorted point, ``inv`` the inverse of ``perm``.
    """

    perm: torch.Tensor
    inv: torch.Tensor
    bounds: torch.Tensor
    labels: torch.Tensor
    centers: torch.Tensor
    weights: torch.Tensor
    radius: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.centers.shape[0])


def _n_clusters(N: int) -> int:
    return int(min(MAX_CLUSTERS, max(1, N // POINTS_PER_CLUSTER)))


def _extent(x: torch.Tensor) -> float:
    """Bounding-box diagonal of ``x (N, D)``."""
    return float((x.max(0).values - x.min(0).values).double().norm()) if x.shape[0] else 0.0


def default_scale(x: torch.Tensor, y: torch.Tensor) -> float:
    """Voxel side (D <= 3) aiming at :data:`POINTS_PER_CLUSTER` points per cell (at most
    :data:`MAX_CLUSTERS` cells) in each cloud: ``extent / (sqrt(D) n^(1/D))``, the larger of the two clouds'
    values (each cloud's own extent, so far-apart clouds still get fine cells); ``0`` when both are single points.
    """
    D = x.shape[-1]
    s = [_extent(z) / (math.sqrt(D) * _n_clusters(z.shape[0]) ** (1.0 / D)) for z in (x, y)]
    return max(s)


def _voxel_labels(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Lexicographic voxel index of each point (cells of side ``scale``), as int64 ranks."""
    idx = torch.floor((x.double() - x.double().min(0).values) / scale).to(torch.int64)
    _, inv = torch.unique(idx, dim=0, return_inverse=True)  # rows sorted lexicographically
    return inv


def _kmeans_labels(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Seeded k-means: Lloyd iterations on a subsample, then every point to its nearest centre."""
    gen = torch.Generator().manual_seed(seed)
    xd = x.double()
    N = x.shape[0]
    sub = xd[torch.randperm(N, generator=gen)[: min(N, max(KMEANS_SAMPLE, 4 * k))]]
    cent = sub[torch.randperm(sub.shape[0], generator=gen)[:k]].clone()
    for _ in range(KMEANS_ITERS):
        lab = _nearest(sub, cent)
        cnt = torch.bincount(lab, minlength=k).double()
        tot = torch.zeros_like(cent).index_add_(0, lab, sub)
        cent = torch.where(cnt[:, None] > 0, tot / cnt.clamp(min=1)[:, None], cent)
    lab = _nearest(xd, cent)
    _, lab = torch.unique(lab, return_inverse=True)  # drop empty clusters
    return lab


def _nearest(x: torch.Tensor, c: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    return torch.cat([torch.cdist(x[i:i + chunk], c).argmin(1) for i in range(0, x.shape[0], chunk)])


def cluster(x: torch.Tensor, a: torch.Tensor, scale: float, *, seed: int = 0) -> Clustering:
    """Cluster ``x (N, D)`` with weights ``a (N,)``: voxel grid of side ``scale`` (D <= 3), else k-means.

    For ``D > 3`` the number of clusters is ``N / POINTS_PER_CLUSTER`` (capped); ``scale`` is not used.
    """
    x = x.detach()
    N, D = x.shape
    if N == 0:
        raise ValueError("cannot cluster an empty point cloud")
    if D <= 3:
        labels = _voxel_labels(x, scale) if scale > 0 else torch.zeros(N, dtype=torch.int64)
    else:
        labels = _kmeans_labels(x, _n_clusters(N), seed)
    perm = torch.argsort(labels, stable=True)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(N)
    lab = labels[perm]
    n = int(lab[-1]) + 1
    counts = torch.bincount(lab, minlength=n)
    bounds = torch.zeros(n + 1, dtype=torch.int64)
    bounds[1:] = torch.cumsum(counts, 0)
    xs, ws = x[perm].double(), a.detach()[perm].double()
    wsum = torch.zeros(n, dtype=torch.float64).index_add_(0, lab, ws)
    psum = torch.zeros(n, D, dtype=torch.float64).index_add_(0, lab, xs * ws[:, None])
    msum = torch.zeros(n, D, dtype=torch.float64).index_add_(0, lab, xs)
    centers = torch.where(wsum[:, None] > 0, psum / wsum.clamp(min=1e-300)[:, None], msum / counts[:, None])
    dist = (xs - centers[lab]).norm(dim=1)
    radius = torch.zeros(n, dtype=torch.float64).scatter_reduce(0, lab, dist, "amax", include_self=True)
    return Clustering(perm, inv, bounds, lab, centers.to(x.dtype), wsum.to(x.dtype), radius)


def segment_max(values: torch.Tensor, c: Clustering) -> torch.Tensor:
    """``max_{i in I} values_i`` for sorted ``values (N,)``, shape ``(n,)``."""
    out = torch.full((c.n,), -math.inf, dtype=torch.float64)
    return out.scatter_reduce(0, c.labels, values.detach().double().cpu(), "amax", include_self=True)


def block_mask(cx: Clustering, cy: Clustering, fmax: torch.Tensor, gmax: torch.Tensor, eps: float, cost: Cost,
               truncate: float, chunk: int = 512) -> torch.Tensor:
    """Kept cluster pairs: ``fmax_I + gmax_J - C_min(I, J) >= -truncate * eps``, ``(n_I, n_J)`` bool.

    ``C_min = scale * max(|c_I - c_J| - r_I - r_J, 0)^p`` bounds the cost of every pair of members from below.
    Each row and column keeps at least its best block, so no row is left without terms.
    """
    cyc, ry, gm = cy.centers.double(), cy.radius, gmax.double()
    rows, best = [], []
    for i in range(0, cx.n, chunk):
        d = torch.cdist(cx.centers[i:i + chunk].double(), cyc)
        gap = (d - cx.radius[i:i + chunk, None] - ry[None, :]).clamp(min=0)
        score = fmax[i:i + chunk, None].double() + gm[None, :] - cost.scale * gap**cost.p
        rows.append(score >= -truncate * eps)
        best.append(score.argmax(1))
    mask = torch.cat(rows)
    mask[torch.arange(cx.n), torch.cat(best)] = True
    # best row block of each column: a second chunked pass only where a column kept nothing
    empty = (~mask.any(0)).nonzero().flatten()
    if empty.numel():
        d = torch.cdist(cx.centers.double(), cyc[empty])
        gap = (d - cx.radius[:, None] - ry[empty][None, :]).clamp(min=0)
        score = fmax[:, None].double() + gm[empty][None, :] - cost.scale * gap**cost.p
        mask[score.argmax(0), empty] = True
    return mask
