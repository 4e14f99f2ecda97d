"""Distance matrices of collections that fit in memory: no store, no cluster.

``S[i, j] = S_eps(a_i, b_j) = OT_eps(a_i, b_j) - (OT_eps(a_i, a_i) + OT_eps(b_j, b_j)) / 2`` (``+ eps/2 (m(a_i) -
m(b_j))^2`` when unbalanced), every solve on one eps-schedule (one ``diameter`` for the whole matrix), so that
each entry equals ``otpipe.sinkhorn_divergence(x_i, y_j, a_i, b_j, diameter=...)`` to float rounding. The self
terms are solved once per measure; the pairs are sorted by size and solved in padded batches (the fused loop
runs each small problem alone and skips the padding, :mod:`otpipe.solvers.fused`). Kernel losses (``energy``,
``gaussian``, ``laplacian``, ``hausdorff``) are computed the same way, without self terms.

The run engine (:func:`otpipe.distances` on a store) does the same work tile by tile on Dask, resumable; this
module is for collections that fit in one process's memory.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from otpipe.geometry.boxes import bounds, box_diagonal, union
from otpipe.problems.measures import Stack

__all__ = ["distance_matrix", "as_measures", "LOSSES", "BATCH_PAIRS"]

LOSSES = ("sinkhorn", "energy", "gaussian", "laplacian", "hausdorff")
#: most pairs solved in one padded batch
BATCH_PAIRS = 4096
#: most cost-matrix entries (B * Nmax * Mmax) of one padded batch. The backends that ``auto`` picks need no
#: ``N x M`` memory (the compiled kernels stream); large batches let the reductions of big measures use every
#: thread (the ``cpu`` kernel runs one thread below 2^26 pairs a call: 5,000-point pairs one at a time ran on one
#: core of two); the dense backends asked for by name (``tensorized``, ``chunked``) get :data:`DENSE_BATCH_ENTRIES`
BATCH_ENTRIES = 2**28
DENSE_BATCH_ENTRIES = 2**24


def as_measures(measures, name: str = "measures", dtype: torch.dtype = torch.float64) -> list[tuple]:
    """Validate a list of measures into ``(points (N, D), weights (N,))`` float tensors.

    Parameters
    ----------
    measures : sequence
        Each item an ``(N, D)`` array or tensor (uniform weights), a ``(points, weights)`` pair, or an object with
        ``points`` and ``weights`` attributes (:class:`otpipe.store.Measure`).
    name : str, default "measures"
        The argument's name in error messages.
    dtype : torch.dtype, default torch.float64
        The dtype of the returned tensors.

    Returns
    -------
    list of tuple
        ``(points, weights)`` per measure.

    Raises
    ------
    ValueError
        On an empty list, an empty measure, non-finite points or weights, negative or zero-sum weights,
        or mismatched dimensions (the message names the measure).
    """
    if isinstance(measures, (str, bytes)) or not isinstance(measures, Sequence):
        raise ValueError(f"{name} must be a list of measures (arrays, (points, weights) pairs or Measures)")
    if len(measures) == 0:
        raise ValueError(f"{name} is empty")
    out, dims = [], set()
    for k, m in enumerate(measures):
        if hasattr(m, "points") and hasattr(m, "weights"):
            pts, w = m.points, m.weights
        elif isinstance(m, (tuple, list)) and len(m) == 2:
            pts, w = m
        else:
            pts, w = m, None
        x = torch.as_tensor(np.asarray(pts, dtype=np.float64) if not torch.is_tensor(pts) else pts).to(dtype)
        if x.dim() == 1:
            x = x[:, None]
        if x.dim() != 2 or x.shape[0] == 0:
            raise ValueError(f"{name}[{k}]: expected points of shape (N, D) with N >= 1, got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name}[{k}]: points contain NaN or infinite values")
        if w is None:
            a = torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=dtype)
        else:
            a = torch.as_tensor(np.asarray(w, dtype=np.float64) if not torch.is_tensor(w) else w).to(dtype).reshape(-1)
            if a.shape[0] != x.shape[0]:
                raise ValueError(f"{name}[{k}]: {a.shape[0]} weights for {x.shape[0]} points")
            if not bool(torch.isfinite(a).all()):
                raise ValueError(f"{name}[{k}]: weights contain NaN or infinite values")
            if bool((a < 0).any()):
                raise ValueError(f"{name}[{k}]: weights must be non-negative")
            if not float(a.sum()) > 0:
                raise ValueError(f"{name}[{k}]: weights sum to zero")
        dims.add(x.shape[1])
        out.append((x, a))
    if len(dims) != 1:
        raise ValueError(f"{name}: measures of different dimensions {sorted(dims)}")
    return out


def _groups(sizes_x: np.ndarray, sizes_y: np.ndarray, order: np.ndarray, entries: int = BATCH_ENTRIES) -> list:
    """Consecutive groups of ``order`` (pairs sorted by size) within :data:`BATCH_PAIRS` and ``entries``."""
    groups, cur, nmax, mmax = [], [], 0, 0
    for k in order:
        n2, m2 = max(nmax, int(sizes_x[k])), max(mmax, int(sizes_y[k]))
        if cur and (len(cur) >= BATCH_PAIRS or (len(cur) + 1) * n2 * m2 > entries):
            groups.append(np.array(cur))
            cur, n2, m2 = [], int(sizes_x[k]), int(sizes_y[k])
        cur.append(int(k))
        nmax, mmax = n2, m2
    if cur:
        groups.append(np.array(cur))
    return groups


def _kernel(loss: str, X, Y, A, B, kw: dict):
    from otpipe.tools import losses

    if loss == "energy":
        return losses.energy_distance(X, Y, A, B, backend=kw["backend"])
    if loss in ("gaussian", "laplacian"):
        return losses.mmd(X, Y, A, B, kernel=loss, sigma=kw["blur"], backend=kw["backend"])
    return losses.hausdorff(X, Y, A, B, p=kw["p"], blur=kw["blur"], cost=kw["cost"], backend=kw["backend"])


def distance_matrix(measures, other=None, *, loss: str = "sinkhorn", p: float = 2.0, blur: float = 0.05,
                    reach: float | None = None, scaling: float = 0.5, tol: float | None = None,
                    max_iter: int | None = None, diameter: float | None = None, cost: str | None = None,
                    backend: str = "auto", dtype: str = "float64") -> dict:
    """The ``N x N`` (or ``N x M`` against ``other``) matrix of divergences between measures held in memory.

    ``S[i, j] = OT_eps(a_i, b_j) - (OT_eps(a_i, a_i) + OT_eps(b_j, b_j)) / 2`` on one eps-schedule.

    Parameters
    ----------
    measures : sequence
        The measures (:func:`as_measures`): arrays ``(N, D)``, ``(points, weights)`` pairs or Measures.
    other : sequence or None, default None
        Target measures; ``None``: the symmetric matrix of ``measures`` (pairs ``i < j`` solved, then mirrored).
    loss : {"sinkhorn", "energy", "gaussian", "laplacian", "hausdorff"}, default "sinkhorn"
        The divergence.
    p, blur, reach, scaling, tol, max_iter, diameter, cost, backend
        As in :func:`otpipe.solve`; ``diameter`` ``None``: the bounding-box diagonal of every point with positive
        weight of both lists (one schedule for the whole matrix). Balanced problems (``reach=None``) normalise the
        weights of each measure to total mass 1, as the pipelines do.
    dtype : {"float64", "float32"}, default "float64"
        The dtype of the solves.

    Returns
    -------
    dict
        ``divergence``, ``ot`` (the cross terms, Sinkhorn only), ``n_iter`` and ``marginal_error``: ``(N, M)``
        NumPy arrays (a symmetric matrix has 0 on the diagonal and ``ot`` there the self terms); ``self_source``,
        ``self_target`` (Sinkhorn); ``diameter`` (float or ``None``), ``dtype`` and ``symmetric``.

    Raises
    ------
    ValueError
        On invalid measures (:func:`as_measures`), an unknown loss or dtype, or parameters the solver refuses.
    """
    from otpipe.solvers.sinkhorn import SinkhornParams, solve, solve_symmetric

    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}: choose one of {', '.join(LOSSES)}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    tdt = getattr(torch, dtype)
    src = as_measures(measures, "measures", torch.float64)
    symmetric = other is None
    tgt = src if symmetric else as_measures(other, "other", torch.float64)
    if tgt[0][0].shape[1] != src[0][0].shape[1]:
        raise ValueError(f"measures have dimension {src[0][0].shape[1]} but other has {tgt[0][0].shape[1]}")
    sinkhorn = loss == "sinkhorn"
    normalize = reach is None
    if normalize:
        src = [(x, a / a.sum()) for x, a in src]
        tgt = src if symmetric else [(x, a / a.sum()) for x, a in tgt]
    src = [(x.to(tdt), a.to(tdt)) for x, a in src]
    tgt = src if symmetric else [(x.to(tdt), a.to(tdt)) for x, a in tgt]
    if sinkhorn and diameter is None:
        boxes = [bounds(x[a > 0].double().numpy()) for x, a in (src if symmetric else src + tgt)]
        diameter = box_diagonal(union(boxes), float(blur))
    kw = dict(p=p, blur=blur, reach=reach, diameter=diameter, scaling=scaling, tol=tol, max_iter=max_iter,
              backend=backend, cost=cost)
    if sinkhorn:
        SinkhornParams.make(p, blur, reach, diameter, scaling, tol, max_iter, backend, cost)  # one clear error
    n, m = len(src), len(tgt)
    entries = DENSE_BATCH_ENTRIES if backend in ("tensorized", "dense", "chunked") else BATCH_ENTRIES
    sx = np.array([len(x) for x, _ in src])
    sy = np.array([len(x) for x, _ in tgt])

    stack_s = Stack(src, tdt)
    stack_t = stack_s if symmetric else Stack(tgt, tdt)

    def selfs(stack, sizes):
        vals = np.empty(len(sizes))
        order = np.argsort(sizes, kind="stable")
        for g in _groups(sizes, sizes, order, entries):
            X, A = stack.batch(g)
            vals[g] = solve_symmetric(X, A, **kw).value.double().numpy()
        return vals

    self_s = self_t = None
    if sinkhorn:
        self_s = selfs(stack_s, sx)
        self_t = self_s if symmetric else selfs(stack_t, sy)
    if symmetric:
        ii, jj = np.triu_indices(n, 1)
    else:
        ii, jj = (g.reshape(-1) for g in np.meshgrid(np.arange(n), np.arange(m), indexing="ij"))
    ot = np.full((n, m), np.nan)
    div = np.zeros((n, m))
    n_iter = np.zeros((n, m), dtype=np.int64)
    err = np.full((n, m), np.nan) if not sinkhorn else np.zeros((n, m))
    px, py = sx[ii], sy[jj]
    order = np.lexsort((py, px))  # sizes sorted: padding wastes little
    with torch.no_grad():
        for g in _groups(px, py, order, entries):
            gi, gj = ii[g], jj[g]
            X, A = stack_s.batch(gi)
            Y, B = stack_t.batch(gj)
            if sinkhorn:
                r = solve(X, Y, A, B, **kw)
                ot[gi, gj] = r.value.double().numpy()
                n_iter[gi, gj] = r.n_iter.numpy()
                err[gi, gj] = r.marginal_error.double().numpy()
            else:
                div[gi, gj] = _kernel(loss, X, Y, A, B, kw).double().numpy()
    if sinkhorn:
        div = ot - 0.5 * (self_s[:, None] + self_t[None, :])
        if reach is not None:
            ms_ = np.array([float(a.double().sum()) for _, a in src])
            mt_ = np.array([float(a.double().sum()) for _, a in tgt])
            div = div + 0.5 * blur**p * (ms_[:, None] - mt_[None, :]) ** 2
    if symmetric:
        for arr in (ot, div, n_iter, err):
            arr[jj, ii] = arr[ii, jj]
        np.fill_diagonal(div, 0.0)
        np.fill_diagonal(n_iter, 0)
        if sinkhorn:
            np.fill_diagonal(ot, self_s)
            np.fill_diagonal(err, 0.0)
    return {"divergence": div, "ot": ot, "n_iter": n_iter, "marginal_error": err, "self_source": self_s,
            "self_target": self_t, "diameter": None if diameter is None else float(diameter), "dtype": dtype,
            "symmetric": symmetric, "eps": blur**p if math.isfinite(blur**p) else None}
