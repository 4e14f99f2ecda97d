"""Multiscale geometry on the points' device: clustering, truncation masks and block patterns without a host
round trip (the CUDA counterpart of the CPU code in :mod:`otpipe.geometry.blocks`).

The multiscale solver with the ``triton`` point kernels keeps everything on the GPU: per temperature it
fits the potentials' per-cluster slopes, evaluates the rigorous upper bound ``U_IJ`` of
:mod:`otpipe.geometry.blocks` on every cluster pair, keeps ``U_IJ >= -truncate * eps`` and turns the mask
into the column ranges the block-sparse Triton kernels visit, all with torch operations on the device
(``n_I x n_J`` work, a few milliseconds for 4096 x 4096 clusters on a GPU), instead of moving potentials to the
host and masks back.

* :func:`cluster`: the same clustering as :func:`otpipe.geometry.blocks.cluster` (voxel grid of side
  ``scale`` for ``D <= 3``: identical clusters and order; seeded k-means above, Lloyd iterations on a
  subsample: the same seeds, the assignments may differ on near-ties), every tensor on ``x.device``;
* :func:`block_mask`: the same bound (the pure-torch reference :func:`otpipe.geometry.blocks._upper_bound`)
  on the device, with :func:`segment_max` / :func:`affine_fit` on the device;
* :class:`DeviceBlocks`: the pattern of :class:`otpipe.geometry.backends.cpu.Blocks` (runs of kept column clusters
  per row cluster) with its arrays, and those of the Triton kernels' work list, built on the device.

Works on any device (the CPU tests run it on CPU tensors, with the Triton kernels in the interpreter).
"""
from __future__ import annotations

import math

import torch

from otpipe.geometry import blocks as ms
from otpipe.geometry.costs import Cost

__all__ = ["cluster", "segment_max", "affine_fit", "block_mask", "DeviceBlocks"]


# --------------------------------------------------------------------------------------------- clusters
def _voxel_labels(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Lexicographic rank of each point's voxel (cells of side ``scale``), int64 on ``x.device``."""
    xd = x.double()
    idx = torch.floor((xd - xd.min(0).values) / scale).to(torch.int64)
    _, inv = torch.unique(idx, dim=0, return_inverse=True)
    return inv


def _nearest(x: torch.Tensor, c: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    return torch.cat([torch.cdist(x[i:i + chunk], c).argmin(1) for i in range(0, x.shape[0], chunk)])


def _kmeans_labels(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Seeded k-means (the seeds of :func:`otpipe.geometry.blocks.cluster`), computed on ``x.device``."""
    gen = torch.Generator().manual_seed(seed)
    dev = x.device
    xd = x.double()
    N = x.shape[0]
    pick = torch.randperm(N, generator=gen)[: min(N, max(ms.KMEANS_SAMPLE, 4 * k))]
    sub = xd[pick.to(dev)]
    cent = sub[torch.randperm(sub.shape[0], generator=gen)[:k].to(dev)].clone()
    for _ in range(ms.KMEANS_ITERS):
        lab = _nearest(sub, cent)
        cnt = torch.bincount(lab, minlength=k).double()
        tot = torch.zeros_like(cent).index_add_(0, lab, sub)
        cent = torch.where(cnt[:, None] > 0, tot / cnt.clamp(min=1)[:, None], cent)
    _, lab = torch.unique(_nearest(xd, cent), return_inverse=True)  # drop empty clusters
    return lab


def cluster(x: torch.Tensor, a: torch.Tensor, scale: float, *, seed: int = 0) -> ms.Clustering:
    """Cluster a weighted point cloud on its device: voxel grid of side ``scale`` (``D <= 3``), else k-means.

    Above ``D = 3``: seeded k-means with ``N / POINTS_PER_CLUSTER`` clusters (capped), as
    :func:`otpipe.geometry.blocks.cluster` does on the host.

    Parameters
    ----------
    x : torch.Tensor
        Points ``(N, D)``, ``N >= 1`` (detached).
    a : torch.Tensor
        Weights ``(N,)``, on ``x.device``.
    scale : float
        Voxel side; ``0``: a single cluster (``D <= 3``).
    seed : int, default 0
        Seed of the k-means subsample and initial centres (``D > 3``).

    Returns
    -------
    otpipe.geometry.blocks.Clustering
        The same fields as :func:`otpipe.geometry.blocks.cluster`, every tensor on ``x.device``.

    Raises
    ------
    ValueError
        If ``x`` has no points.
    """
    x = x.detach()
    N, D = x.shape
    dev = x.device
    if N == 0:
        raise ValueError("cannot cluster an empty point cloud")
    if D <= 3:
        labels = _voxel_labels(x, scale) if scale > 0 else torch.zeros(N, dtype=torch.int64, device=dev)
    else:
        labels = _kmeans_labels(x, ms.n_clusters(N), seed)
    perm = torch.argsort(labels, stable=True)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(N, device=dev)
    lab = labels[perm]
    counts = torch.bincount(lab)
    n = counts.shape[0]
    bounds = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    bounds[1:] = torch.cumsum(counts, 0)
    f64 = dict(dtype=torch.float64, device=dev)
    xs, ws = x[perm].double(), a.detach()[perm].double()
    wsum = torch.zeros(n, **f64).index_add_(0, lab, ws)
    psum = torch.zeros(n, D, **f64).index_add_(0, lab, xs * ws[:, None])
    msum = torch.zeros(n, D, **f64).index_add_(0, lab, xs)
    centers = torch.where(wsum[:, None] > 0, psum / wsum.clamp(min=1e-300)[:, None], msum / counts[:, None])
    dist = (xs - centers[lab]).norm(dim=1)
    radius = torch.zeros(n, **f64).scatter_reduce(0, lab, dist, "amax", include_self=True)
    idx = lab[:, None].expand(-1, D)
    lo = torch.full((n, D), math.inf, **f64).scatter_reduce(0, idx, xs, "amin", include_self=True)
    hi = torch.full((n, D), -math.inf, **f64).scatter_reduce(0, idx, xs, "amax", include_self=True)
    return ms.Clustering(perm, inv, bounds, lab, centers.to(x.dtype), wsum.to(x.dtype), radius, lo, hi, xs)


# ------------------------------------------------------------------------------------------------ masks
def segment_max(values: torch.Tensor, c: ms.Clustering) -> torch.Tensor:
    """Largest value per cluster, ``max_{i in I} values_i``, on the clustering's device.

    Parameters
    ----------
    values : torch.Tensor
        ``(N,)`` values on the sorted points of ``c``.
    c : otpipe.geometry.blocks.Clustering
        The clustering.

    Returns
    -------
    torch.Tensor
        ``(n,)`` float64 on the clustering's device.
    """
    out = torch.full((c.n,), -math.inf, dtype=torch.float64, device=c.labels.device)
    return out.scatter_reduce(0, c.labels, values.detach().double(), "amax", include_self=True)


#: the per-cluster affine fit is device-agnostic: the host function runs on the device of the clustering's points
affine_fit = ms.affine_fit


def block_mask(cx: ms.Clustering, cy: ms.Clustering, f: torch.Tensor, g: torch.Tensor, eps: float, cost: Cost,
               truncate: float, chunk: int = 1024) -> torch.Tensor:
    """Kept cluster pairs ``U_IJ >= -truncate * eps``, computed on the device.

    The bound of :func:`otpipe.geometry.blocks.block_mask` (its pure-torch path), every row and column keeping at
    least its best block.

    Parameters
    ----------
    cx : otpipe.geometry.blocks.Clustering
        Clustering of the source points.
    cy : otpipe.geometry.blocks.Clustering
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
        Threshold in units of ``eps``.
    chunk : int, default 1024
        Row clusters per step.

    Returns
    -------
    torch.Tensor
        ``(n_I, n_J)`` bool mask on the device.
    """
    fmax, fit_f = segment_max(f, cx), affine_fit(f, cx)
    if g is f and cy is cx:  # a self problem: one cloud, one potential
        gmax, fit_g = fmax, fit_f
    else:
        gmax, fit_g = segment_max(g, cy), affine_fit(g, cy)
    return ms.mask_from_bound(cx, cy, fit_f, fit_g, fmax, gmax, cost, -truncate * eps, chunk)


# ----------------------------------------------------------------------------------------------- blocks
class DeviceBlocks:
    """Block-sparsity pattern of a sorted pair, on the device: the interface of :class:`otpipe.geometry.backends.cpu.Blocks`.

    Besides the inputs, ``rng`` holds the ``[start, end)`` column ranges of the runs of kept column clusters, row
    cluster by row cluster, and ``cptr`` their offsets per row cluster. :meth:`triton_arrays` gives the Triton
    kernels' int32 arrays (cached).

    Parameters
    ----------
    rows : torch.Tensor
        ``(n_I + 1,)`` cluster bounds of the sorted source points.
    cols : torch.Tensor
        ``(n_J + 1,)`` cluster bounds of the sorted target points.
    mask : torch.Tensor
        ``(n_I, n_J)`` bool, the kept cluster pairs; its device is the pattern's.
    """

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, mask: torch.Tensor):
        dev = mask.device
        self.rows = rows.to(device=dev, dtype=torch.int64).contiguous()
        self.cols = cols.to(device=dev, dtype=torch.int64).contiguous()
        self.mask = mask.to(torch.bool)
        nI = self.mask.shape[0]
        m = self.mask.to(torch.int8)
        edge = torch.diff(torch.nn.functional.pad(m, (1, 1)), dim=1)  # +1 at run starts, -1 after run ends
        si, sj = torch.nonzero(edge == 1, as_tuple=True)  # row-major: runs in row order
        _, ej = torch.nonzero(edge == -1, as_tuple=True)
        self.rng = torch.stack([self.cols[sj], self.cols[ej]], dim=1).reshape(-1).contiguous()
        counts = torch.bincount(si, minlength=nI)
        self.cptr = torch.zeros(nI + 1, dtype=torch.int64, device=dev)
        self.cptr[1:] = torch.cumsum(counts, 0)
        self.nclus = nI
        self._cache: dict = {}

    @property
    def pairs(self) -> int:
        """Number of point pairs visited (a host synchronisation: for logs)."""
        sr = (self.rows[1:] - self.rows[:-1]).double()
        sc = (self.cols[1:] - self.cols[:-1]).double()
        return int((sr[:, None] * sc[None, :] * self.mask.double()).sum())

    def transpose(self) -> DeviceBlocks:
        """The pattern of the transposed pair (targets as rows), built once and linked both ways.

        Returns
        -------
        DeviceBlocks
            Rows and columns swapped, the mask transposed.
        """
        if not hasattr(self, "_T"):
            self._T = DeviceBlocks(self.cols, self.rows, self.mask.t())
            self._T._T = self
        return self._T

    def triton_arrays(self, block_n: int, device) -> tuple[torch.Tensor, ...]:
        """The Triton kernels' int32 arrays ``(work, rows, cptr, rng)`` for tiles of ``block_n`` rows (cached).

        Parameters
        ----------
        block_n : int
            Rows per tile of the kernel; a tile never straddles two clusters.
        device : torch.device or str
            Device of the arrays.

        Returns
        -------
        tuple of torch.Tensor
            ``work`` (the ``(row0, cluster)`` of every tile, flattened), the row bounds, ``cptr`` and ``rng``,
            int32 and contiguous on ``device``.
        """
        key = (str(device), int(block_n))
        if key not in self._cache:
            rows = self.rows.to(device)
            sizes = rows[1:] - rows[:-1]
            ntiles = (sizes + block_n - 1) // block_n
            total = int(ntiles.sum())
            clus = torch.repeat_interleave(torch.arange(len(sizes), device=device), ntiles, output_size=total)
            first = torch.repeat_interleave(torch.cumsum(ntiles, 0) - ntiles, ntiles, output_size=total)
            row0 = rows[clus] + (torch.arange(total, device=device) - first) * block_n
            work = torch.stack([row0, clus], dim=1).reshape(-1)
            self._cache[key] = tuple(t.to(device=device, dtype=torch.int32).contiguous()
                                     for t in (work, rows, self.cptr, self.rng))
        return self._cache[key]
