"""Multiscale solves, geometric part: clustering of point clouds and block-sparsity patterns.

Following Schmitzer (2016), a large problem is first solved on cluster centroids, then finished on the
points with reductions restricted to the cluster pairs ``(I, J)`` that can carry mass:

* clustering: a voxel grid of side ``scale`` for ``D <= 3``; above, seeded k-means (Lloyd iterations on a
  subsample, then assignment of every point). Points are sorted by cluster so each cluster is a
  contiguous range; the coarse measure puts the summed weight of each cluster at its weighted centroid.
* truncation: block ``(I, J)`` is kept when an upper bound ``U_IJ >= max_{i in I, j in J} f_i + g_j - C_ij``
  reaches ``-truncate * eps``. Every dropped term of a row's log-sum-exp is then below ``exp(-truncate)``
  times the row's total (for the current potentials), and the mask is only ``(n_I, n_J)`` booleans.
  ``U_IJ`` is the smaller of two rigorous bounds:

  - zeroth order: ``max_I f + max_J g - C_min(I, J)``, ``C_min`` the cost between the clusters' bounding
    boxes (or enclosing balls, whichever is farther apart);
  - first order: with per-cluster least-squares slopes ``f_i = <beta_I, x_i> + r_i`` (``r`` exact residuals)
    and ``y = x - z``, ``f_i + g_j - C_ij <= max r_I + max r_J + max_{x in box_I} <beta_I + beta_J, x>
    + max_{z in box_I - box_J} (-<beta_J, z> - C(z))``, separable per coordinate for ``p = 2``.

  The zeroth-order bound alone is loose as soon as the potentials vary across a cluster by more than
  ``truncate * eps``, i.e. whenever the transport moves mass (``grad f = x - T(x)`` for ``p = 2``): it
  kept 22% of the point pairs at the last temperature of a 200k-point problem with a displacement of 0.3,
  where the first-order bound, exact for translations, keeps the blocks near the transported cluster.

The solver driver is :mod:`otpipe.solvers.multiscale`; reductions on the points are the ``cpu`` backend's
block-sparse kernels (:class:`otpipe.geometry.backends.cpu.Blocks`) for CPU tensors and the ``triton`` backend's
block-sparse kernels (same pattern) for CUDA tensors; KeOps ``ranges`` only when asked for
(:data:`FINE_BACKEND` ``= "keops"``). Full reductions (transport maps, kernel losses) of a multiscale solve use
:func:`otpipe.geometry.backends.native.operator`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from otpipe.geometry.backends import cpu
from otpipe.geometry.costs import Cost

__all__ = ["Clustering", "cluster", "default_scale", "block_mask", "n_clusters", "mask_from_bound"]

#: kernels of the point-level reductions: ``None`` (automatic: the compiled ``cpu`` kernels for CPU tensors
#: when they build, the ``triton`` ones for CUDA tensors when Triton imports), ``"cpu"``, ``"triton"`` or
#: ``"keops"`` (KeOps ``ranges``: only when set here)
FINE_BACKEND: str | None = None
#: default truncation threshold (in units of eps) of the kept cluster pairs
TRUNCATE = 5.0
#: default points per cluster aimed at by :func:`default_scale`
POINTS_PER_CLUSTER = 64
#: most clusters per cloud (the mask has at most this squared entries)
MAX_CLUSTERS = 4096
#: the solver stays on the clusters while ``blur = eps^(1/p) >= JUMP_FRACTION * scale``. Measured (N = M = 50k
#: and 200k, blur 0.01, fixed schedule): 1 (jump as soon as blur < scale) gave 8.9e-5 / 2.3e-5 relative error
#: from the full solve; 0.5 gave 8.9e-6 / 7.4e-6 and one fine temperature fewer (the widest, which kept ~40% of
#: the point pairs): 1.3x / 1.5x faster; 0.25 was faster again but 1.7e-3 off at 50k
JUMP_FRACTION = 0.5
#: fixed schedule (``tol=None``): the solver leaves the clusters after the last temperature whose jump keeps
#: ``defect * 2^(-1.5 (K - 1)) <= FIXED_TOL``, with ``defect`` the jumped potentials' inconsistency on the points
#: (:func:`otpipe.solvers.multiscale._jump_defect`: RMS of ``f - d T(g)`` net of the coarse level's own residual, in units
#: of eps) and ``K`` the temperatures left for the points. The averaged updates there erase the clusters' error
#: only slowly (each keeps half the old potential). Measured (N = M = 20k, x in the unit cube, y in
#: [0.25, 0.75]^3, blur 0.01-0.5, and 50k, y = 0.8 x + 0.3, blur 0.01): the value's
#: relative error was within that bound in every case (3.3e-3 at defect 3.2e-3 and K = 1; 1.6e-4 at K = 4;
#: 1e-6 at K = 7), often far below it; the x-gradient's relative L2 error is larger, about 0.02 defect^0.7
FIXED_TOL = 1e-4
#: points used to fit the k-means centres (D > 3)
KMEANS_SAMPLE = 20000
#: Lloyd iterations of the k-means clustering
KMEANS_ITERS = 10


@dataclass
class Clustering:
    """Points sorted by cluster: cluster ``I`` is ``x[perm][bounds[I]:bounds[I + 1]]``.

    Parameters
    ----------
    perm : torch.Tensor
        ``(N,)`` int64, the permutation that sorts the points by cluster.
    inv : torch.Tensor
        ``(N,)`` int64, the inverse of ``perm``.
    bounds : torch.Tensor
        ``(n + 1,)`` int64, start of each cluster's range in the sorted points (and ``N`` last).
    labels : torch.Tensor
        ``(N,)`` int64, the cluster of each sorted point (non-decreasing).
    centers : torch.Tensor
        ``(n, D)`` weighted centroids (the points' dtype; the mean of the members where a cluster has no mass).
    weights : torch.Tensor
        ``(n,)`` summed weights of the members.
    radius : torch.Tensor
        ``(n,)`` float64, largest distance of a member to its centre.
    lo : torch.Tensor
        ``(n, D)`` float64, lower corner of the members' bounding box.
    hi : torch.Tensor
        ``(n, D)`` float64, upper corner of the members' bounding box.
    points : torch.Tensor
        ``(N, D)`` float64, the sorted points.
    """

    perm: torch.Tensor
    inv: torch.Tensor
    bounds: torch.Tensor
    labels: torch.Tensor
    centers: torch.Tensor
    weights: torch.Tensor
    radius: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    points: torch.Tensor

    @property
    def n(self) -> int:
        """Number of clusters."""
        return int(self.centers.shape[0])


def n_clusters(N: int) -> int:
    """Number of clusters for ``N`` points: one per ``POINTS_PER_CLUSTER``, between 1 and ``MAX_CLUSTERS``.

    Parameters
    ----------
    N : int
        Number of points.

    Returns
    -------
    int
        ``min(MAX_CLUSTERS, max(1, N // POINTS_PER_CLUSTER))``.
    """
    return int(min(MAX_CLUSTERS, max(1, N // POINTS_PER_CLUSTER)))


def _extent(x: torch.Tensor) -> float:
    """Bounding-box diagonal of ``x (N, D)``."""
    return float((x.max(0).values - x.min(0).values).double().norm()) if x.shape[0] else 0.0


def default_scale(x: torch.Tensor, y: torch.Tensor) -> float:
    """Voxel side (D <= 3) aiming at :data:`POINTS_PER_CLUSTER` points per cell in each cloud.

    ``extent / (sqrt(D) n^(1/D))`` with ``n = n_clusters(N)`` (at most :data:`MAX_CLUSTERS` cells), the larger of
    the two clouds' values (each cloud's own extent, so far-apart clouds still get fine cells).

    Parameters
    ----------
    x : torch.Tensor
        Points ``(N, D)``.
    y : torch.Tensor
        Points ``(M, D)``.

    Returns
    -------
    float
        The voxel side; ``0`` when both clouds are single points.
    """
    D = x.shape[-1]
    s = [_extent(z) / (math.sqrt(D) * n_clusters(z.shape[0]) ** (1.0 / D)) for z in (x, y)]
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
    """Cluster a weighted point cloud: voxel grid of side ``scale`` (D <= 3), else seeded k-means.

    For ``D > 3`` the number of clusters is ``N / POINTS_PER_CLUSTER`` (capped); ``scale`` is not used.

    Parameters
    ----------
    x : torch.Tensor
        Points ``(N, D)``, ``N >= 1`` (detached).
    a : torch.Tensor
        Weights ``(N,)``.
    scale : float
        Voxel side (:func:`default_scale`); ``0``: a single cluster (D <= 3).
    seed : int, default 0
        Seed of the k-means subsample and initial centres (D > 3).

    Returns
    -------
    Clustering
        The points sorted by cluster, with the clusters' centroids, weights, radii and bounding boxes.

    Raises
    ------
    ValueError
        If ``x`` has no points.
    """
    x = x.detach()
    N, D = x.shape
    if N == 0:
        raise ValueError("cannot cluster an empty point cloud")
    if D <= 3:
        labels = _voxel_labels(x, scale) if scale > 0 else torch.zeros(N, dtype=torch.int64)
    else:
        labels = _kmeans_labels(x, n_clusters(N), seed)
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
    idx = lab[:, None].expand(-1, D)
    lo = torch.full((n, D), math.inf, dtype=torch.float64).scatter_reduce(0, idx, xs, "amin", include_self=True)
    hi = torch.full((n, D), -math.inf, dtype=torch.float64).scatter_reduce(0, idx, xs, "amax", include_self=True)
    return Clustering(perm, inv, bounds, lab, centers.to(x.dtype), wsum.to(x.dtype), radius, lo, hi, xs)


def segment_max(values: torch.Tensor, c: Clustering) -> torch.Tensor:
    """Largest value per cluster, ``max_{i in I} values_i``.

    Parameters
    ----------
    values : torch.Tensor
        ``(N,)`` values on the sorted points of ``c``.
    c : Clustering
        The clustering.

    Returns
    -------
    torch.Tensor
        ``(n,)`` float64 on the CPU.
    """
    out = torch.full((c.n,), -math.inf, dtype=torch.float64)
    return out.scatter_reduce(0, c.labels, values.detach().double().cpu(), "amax", include_self=True)


def affine_fit(values: torch.Tensor, c: Clustering, chunk: int = 1 << 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster least-squares slopes of ``values`` and the largest residual of each cluster.

    ``r_i = values_i - <beta_I, x_i>`` are exact residuals, so any ``beta`` gives rigorous bounds. Computed on the
    device of the clustering's points (host clusterings: CPU; :mod:`otpipe.geometry.blocks_device`: the GPU).

    Parameters
    ----------
    values : torch.Tensor
        ``(N,)`` values on the sorted points of ``c`` (a potential).
    c : Clustering
        The clustering.
    chunk : int, default 65536
        Points per step of the accumulation of the normal equations (bounds the memory to ``chunk * D^2``).

    Returns
    -------
    beta : torch.Tensor
        ``(n, D)`` float64 slopes.
    rmax : torch.Tensor
        ``(n,)`` float64, ``max_{i in I} r_i``.
    """
    xs, lab, n, D = c.points, c.labels, c.n, c.points.shape[1]
    f64 = dict(dtype=torch.float64, device=xs.device)
    v = values.detach().to(**f64)
    cnt = torch.bincount(lab, minlength=n).double()
    xm = torch.zeros(n, D, **f64).index_add_(0, lab, xs) / cnt[:, None]
    vm = torch.zeros(n, **f64).index_add_(0, lab, v) / cnt
    S = torch.zeros(n, D, D, **f64)
    t = torch.zeros(n, D, **f64)
    for k in range(0, xs.shape[0], chunk):
        lk = lab[k:k + chunk]
        dx = xs[k:k + chunk] - xm[lk]
        S.index_add_(0, lk, dx[:, :, None] * dx[:, None, :])
        t.index_add_(0, lk, dx * (v[k:k + chunk] - vm[lk])[:, None])
    ridge = 1e-9 * S.diagonal(dim1=1, dim2=2).sum(-1) + 1e-300
    beta = torch.linalg.solve(S + ridge[:, None, None] * torch.eye(D, **f64), t[..., None])[..., 0]
    beta = torch.nan_to_num(beta, nan=0.0, posinf=0.0, neginf=0.0)
    r = v - (xs * beta[lab]).sum(1)
    rmax = torch.full((n,), -math.inf, **f64).scatter_reduce(0, lab, r, "amax", include_self=True)
    return beta, rmax


def _upper_bound(cx: Clustering, cy: Clustering, sl: slice, fit_f, fit_g, fmax, gmax, cost: Cost) -> torch.Tensor:
    """``U_IJ >= max f_i + g_j - C_ij`` for the row clusters ``sl`` and every column cluster (module docstring)."""
    s, p = cost.scale, cost.p
    loI, hiI, loJ, hiJ = cx.lo[sl, None], cx.hi[sl, None], cy.lo[None], cy.hi[None]
    zlo, zhi = loI - hiJ, hiI - loJ  # box of x - y, per coordinate
    box_gap = torch.where(zlo > 0, zlo, torch.where(zhi < 0, -zhi, torch.zeros((), dtype=zlo.dtype))).norm(dim=-1)
    ball_gap = (torch.cdist(cx.centers[sl].double(), cy.centers.double()) - cx.radius[sl, None]
                - cy.radius[None]).clamp(min=0)
    zeroth = fmax[sl, None] + gmax[None] - s * torch.maximum(box_gap, ball_gap) ** p
    (bI, rI), (bJ, rJ) = (fit_f[0][sl, None], fit_f[1][sl]), (fit_g[0][None], fit_g[1])
    v = bI + bJ
    lin = torch.maximum(v * loI, v * hiI).sum(-1)
    if p == 2.0:  # max over z in [zlo, zhi] of -beta_J z - s z^2, per coordinate
        z = torch.clamp(-bJ / (2 * s), zlo, zhi)
        quad = (-bJ * z - s * z * z).sum(-1)
    else:
        quad = torch.maximum(-bJ * zlo, -bJ * zhi).sum(-1) - s * box_gap**p
    first = rI[:, None] + rJ[None] + lin + quad
    return torch.minimum(zeroth, first)


def block_mask(cx: Clustering, cy: Clustering, f: torch.Tensor, g: torch.Tensor, eps: float, cost: Cost,
               truncate: float, chunk: int = 256, compiled: bool = True) -> torch.Tensor:
    """Kept cluster pairs ``U_IJ >= -truncate * eps`` (module docstring).

    Computed by the compiled kernel (:func:`otpipe.geometry.backends.cpu.block_mask`) when available and ``compiled``,
    else by chunked torch code (the reference the kernel is tested against).
    Each row and column keeps at least its best block, so no row is left without terms.

    Parameters
    ----------
    cx : Clustering
        Clustering of the source points.
    cy : Clustering
        Clustering of the target points (``cx`` itself for a self problem).
    f : torch.Tensor
        ``(N,)`` current potential on the sorted points of ``cx``.
    g : torch.Tensor
        ``(M,)`` current potential on the sorted points of ``cy`` (``f`` itself for a self problem).
    eps : float
        Current temperature.
    cost : Cost
        The ground cost.
    truncate : float
        Threshold in units of ``eps`` (:data:`TRUNCATE`).
    chunk : int, default 256
        Row clusters per step of the torch path.
    compiled : bool, default True
        Use the compiled kernel when it is available.

    Returns
    -------
    torch.Tensor
        ``(n_I, n_J)`` bool mask of the kept cluster pairs.
    """
    fmax, fit_f = segment_max(f, cx), affine_fit(f, cx)
    if g is f and cy is cx:  # a self problem: one cloud, one potential
        gmax, fit_g = fmax, fit_f
    else:
        gmax, fit_g = segment_max(g, cy), affine_fit(g, cy)
    if compiled and cpu.available():
        return cpu.block_mask((cx.centers, cx.radius, cx.lo, cx.hi, fmax, *fit_f),
                              (cy.centers, cy.radius, cy.lo, cy.hi, gmax, *fit_g), cost, -truncate * eps)
    return mask_from_bound(cx, cy, fit_f, fit_g, fmax, gmax, cost, -truncate * eps, chunk)


def mask_from_bound(cx: Clustering, cy: Clustering, fit_f, fit_g, fmax, gmax, cost: Cost, thr: float,
                     chunk: int) -> torch.Tensor:
    """Cluster pairs whose upper bound reaches ``thr``, plus each row's and column's best block.

    Evaluated by chunks of row clusters on the device of ``fmax`` (the torch path of :func:`block_mask` and
    :func:`otpipe.geometry.blocks_device.block_mask`).

    Parameters
    ----------
    cx : Clustering
        Clustering of the source points.
    cy : Clustering
        Clustering of the target points.
    fit_f : tuple of torch.Tensor
        ``(beta, rmax)`` of ``f`` on ``cx`` (:func:`affine_fit`).
    fit_g : tuple of torch.Tensor
        ``(beta, rmax)`` of ``g`` on ``cy``.
    fmax : torch.Tensor
        ``(n_I,)`` largest ``f`` per cluster (:func:`segment_max`).
    gmax : torch.Tensor
        ``(n_J,)`` largest ``g`` per cluster.
    cost : Cost
        The ground cost.
    thr : float
        Threshold on ``U_IJ`` (``-truncate * eps``).
    chunk : int
        Row clusters per step.

    Returns
    -------
    torch.Tensor
        ``(n_I, n_J)`` bool mask of the kept cluster pairs.
    """
    dev = fmax.device
    rows, best = [], []
    colbest = torch.full((cy.n,), -math.inf, dtype=torch.float64, device=dev)
    colarg = torch.zeros(cy.n, dtype=torch.int64, device=dev)
    for i in range(0, cx.n, chunk):
        score = _upper_bound(cx, cy, slice(i, i + chunk), fit_f, fit_g, fmax, gmax, cost)
        rows.append(score >= thr)
        best.append(score.argmax(1))
        m, am = score.max(0)
        upd = m > colbest
        colbest = torch.where(upd, m, colbest)
        colarg = torch.where(upd, am + i, colarg)
    mask = torch.cat(rows)
    mask[torch.arange(cx.n, device=dev), torch.cat(best)] = True
    mask[colarg, torch.arange(cy.n, device=dev)] = True
    return mask
