"""What one Dask task does, in plain Python (no Dask here): read measures, solve, return arrays.

Every task opens the collection store(s) by path on the worker, reads the measures it needs,
and calls the public solver (:func:`otpipe.solve`, :func:`otpipe.solvers.sinkhorn.solve_symmetric`,
the kernel losses) on padded batches of many small problems at a time; large problems are
solved one at a time, where ``backend="auto"`` picks a linear-memory (online) reduction.
Tasks return small NumPy arrays only.

Devices: a task computes on ``RunParams.device`` (``"cpu"``, or ``"cuda"`` on GPU workers: the worker's
GPU). It moves its measures there once, as one concatenated array (:func:`_stack`), and cuts each
padded batch out of it with one gather on the device. On GPU workers (``RunParams.gpu``) batches are
much larger (:data:`BATCH_ENTRIES_GPU`, :data:`BATCH_MAX_GPU`): the Triton kernels need no ``N x M``
memory and a GPU is only busy with thousands of small problems at a time.

Sinkhorn runs reuse self terms: ``S_ij = OT_eps(a_i, b_j) - (OT_eps(a_i, a_i) + OT_eps(b_j, b_j)) / 2``
(``+ eps/2 (m(a_i) - m(b_j))^2`` when unbalanced, as :func:`otpipe.sinkhorn_divergence`) with every solve
on the same eps-schedule (one ``diameter`` for the whole run).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from otpipe.diagnostics import quiet
from otpipe.geometry.boxes import bounds, box_diagonal, union

__all__ = ["RunParams", "bbox_task", "self_task", "cross_task", "apply_task_threads", "KERNEL_LOSSES", "LOSSES"]

#: set by the engine in worker processes (:class:`otpipe.engine.processes.ComputeThreads`): compute threads per task
TASK_THREADS_ENV = "OTPIPE_TASK_THREADS"

KERNEL_LOSSES = ("energy", "gaussian", "laplacian", "hausdorff")
LOSSES = ("sinkhorn",) + KERNEL_LOSSES
#: cost-matrix entries (B * N * M) of one padded batch; bigger problems are solved alone
BATCH_ENTRIES = 2**24
#: most problems in one padded batch (the fused loop of small problems runs one per thread and skips the padding:
#: larger batches only spare Python calls; 512 left ~5% of a 300-digit matrix in per-batch work)
BATCH_MAX = 4096
#: the same on GPU workers: 2^27 entries (B = 32768 pairs of 64-point measures; a dense fallback's cost
#: matrices would take 0.5 GiB in float32) and at most 8192 problems a batch (a few thousand Triton
#: programs a launch: every SM busy)
BATCH_ENTRIES_GPU = 2**27
BATCH_MAX_GPU = 8192


@dataclass(frozen=True)
class RunParams:
    """Everything a task needs to reproduce one solve (recorded in the result's attrs).

    Parameters
    ----------
    loss : str, default "sinkhorn"
        One of :data:`LOSSES`: the Sinkhorn divergence, or a kernel loss of :data:`KERNEL_LOSSES`.
    p : float, default 2.0
        Exponent of the cost ``|x - y|^p / p`` (Sinkhorn, Hausdorff).
    blur : float, default 0.05
        Final temperature ``eps = blur^p`` (Sinkhorn, Hausdorff); the kernel width ``sigma`` of ``"gaussian"`` and
        ``"laplacian"``.
    reach : float or None, default None
        Unbalanced OT with marginal penalties of strength ``reach^p``; ``None``: balanced (weights normalised).
    scaling : float, default 0.5
        Ratio of successive ``blur`` values in the eps-scaling.
    tol : float or None, default None
        Marginal-error tolerance at the final ``eps`` (``None``: the fixed schedule).
    max_iter : int or None, default None
        Cap on the updates when ``tol`` is set.
    backend : str, default "auto"
        Reduction backend of the solver or kernel loss.
    cost : str or None, default None
        Cost convention (:func:`otpipe.solvers.sinkhorn.solve`).
    diameter : float or None, default None
        First temperature ``diameter^p`` of the schedule, one for the whole run.
    dtype : str, default "float64"
        The dtype the measures are solved in.
    gpu : bool, default False
        The run has GPU workers (larger batches: :data:`BATCH_ENTRIES_GPU`, :data:`BATCH_MAX_GPU`).
    device : str, default "cpu"
        Where a task computes (``"cpu"``, ``"cuda"``; ``"auto"``: CUDA when ``gpu``, else the CPU).
    """

    loss: str = "sinkhorn"
    p: float = 2.0
    blur: float = 0.05
    reach: float | None = None
    scaling: float = 0.5
    tol: float | None = None
    max_iter: int | None = None
    backend: str = "auto"
    cost: str | None = None
    diameter: float | None = None
    dtype: str = "float64"
    gpu: bool = False
    device: str = "cpu"

    @property
    def normalize(self) -> bool:
        """Balanced problems use weights normalised to total mass 1 (unbalanced: raw weights)."""
        return self.reach is None

    @property
    def self_terms(self) -> bool:
        """Whether the run has a self-term phase (Sinkhorn only)."""
        return self.loss == "sinkhorn"

    def as_dict(self) -> dict:
        """The fields as a dict (:func:`dataclasses.asdict`).

        Returns
        -------
        dict
            ``{field name: value}``.
        """
        return asdict(self)


_OPEN: dict[str, object] = {}


def _collection(path: str):
    from otpipe import store

    c = _OPEN.get(path)
    if c is None:
        if len(_OPEN) > 8:
            _OPEN.clear()
        c = _OPEN[path] = store.open(path)
    return c


def _read(path: str, indices, normalize: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(points, weights)`` of the measures ``indices`` of the collection at ``path``."""
    c = _collection(path)
    out = []
    for i in indices:
        m = c[int(i)]
        w = np.asarray(m.weights, dtype=np.float64)
        if normalize:
            w = w / w.sum()
        out.append((np.asarray(m.points), w))
    return out


def apply_task_threads() -> None:
    """Give this thread the compute threads its worker allots to a task (``$OTPIPE_TASK_THREADS``, if set).

    OpenMP's thread count is a setting of each thread: the engine publishes the count in the worker's environment
    and each task applies it in its own thread (once: later calls find it set).
    """
    import os

    import torch

    v = os.environ.get(TASK_THREADS_ENV)
    if v and v.isdigit() and int(v) >= 1 and torch.get_num_threads() != int(v):
        torch.set_num_threads(int(v))


def _device(prm: RunParams):
    """The torch device of the task: ``prm.device`` (``"auto"``, e.g. a task run outside :func:`pairwise` for a
    cost estimate: CUDA on GPU runs, else the CPU); a CUDA device must exist on this worker."""
    import torch

    dev = torch.device(("cuda" if prm.gpu else "cpu") if prm.device == "auto" else prm.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"this task was sent to compute on {prm.device} but torch {torch.__version__} sees no CUDA "
                           "device on this worker: install the CUDA build of torch, or give the worker's job a GPU "
                           "(e.g. --gres=gpu:1)")
    return dev


def _stack(measures: list[tuple[np.ndarray, np.ndarray]], prm: RunParams, device):
    """The measures of one task on the compute device, concatenated (:class:`otpipe.problems.measures.Stack`)."""
    import torch

    from otpipe.problems.measures import Stack

    return Stack(measures, getattr(torch, prm.dtype), device)


def _solver_kw(prm: RunParams) -> dict:
    return dict(
        p=prm.p,
        blur=prm.blur,
        reach=prm.reach,
        diameter=prm.diameter,
        scaling=prm.scaling,
        tol=prm.tol,
        max_iter=prm.max_iter,
        backend=prm.backend,
        cost=prm.cost,
    )


def _groups(sizes_x: list[int], sizes_y: list[int], gpu: bool = False) -> list[list[int]]:
    """Consecutive groups of problems whose padded batch stays under the size limits (GPU's with ``gpu``)."""
    entries, most = (BATCH_ENTRIES_GPU, BATCH_MAX_GPU) if gpu else (BATCH_ENTRIES, BATCH_MAX)
    groups: list[list[int]] = []
    cur: list[int] = []
    nmax = mmax = 0
    for k, (n, m) in enumerate(zip(sizes_x, sizes_y)):
        n2, m2 = max(nmax, n), max(mmax, m)
        if cur and ((len(cur) + 1) * n2 * m2 > entries or len(cur) >= most):
            groups.append(cur)
            cur, n2, m2 = [], n, m
        cur.append(k)
        nmax, mmax = n2, m2
    if cur:
        groups.append(cur)
    return groups


def bbox_task(path: str, indices) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate ``(min, max)`` (float64) of the points with positive weight of the given measures.

    Parameters
    ----------
    path : str
        The collection store.
    indices : iterable of int
        The measures.

    Returns
    -------
    tuple
        ``(min, max)``, two ``(D,)`` arrays; ``(None, None)`` when no point has positive weight.
    """
    box = union(bounds(np.asarray(x, dtype=np.float64)[w > 0]) for x, w in _read(path, indices, normalize=False))
    return (None, None) if box is None else box


def self_task(path: str, indices, prm: RunParams) -> dict:
    """Self terms ``OT_eps(a_i, a_i)`` of the measures ``indices`` (padded batches, one schedule).

    Parameters
    ----------
    path : str
        The collection store.
    indices : iterable of int
        The measures.
    prm : RunParams
        The solve's parameters.

    Returns
    -------
    dict
        ``(len(indices),)`` arrays: ``value`` (the self terms), ``n_iter``, ``marginal_error``.
    """
    from otpipe.solvers.sinkhorn import solve_symmetric

    apply_task_threads()
    meas = _read(path, indices, prm.normalize)
    n = len(meas)
    value = np.empty(n)
    n_iter = np.empty(n, dtype=np.int64)
    err = np.empty(n)
    sizes = [len(x) for x, _ in meas]
    on_dev = _stack(meas, prm, _device(prm))
    order = np.argsort(sizes, kind="stable")  # sorted by size: padding wastes little
    with quiet():  # the run summarises the marginal errors once
        for gg in _groups([sizes[k] for k in order], [sizes[k] for k in order], prm.gpu):
            g = order[gg]
            X, A = on_dev.batch(g)
            r = solve_symmetric(X, A, **_solver_kw(prm))
            value[g] = r.value.detach().cpu().double().numpy()
            n_iter[g] = r.n_iter.cpu().numpy()
            err[g] = r.marginal_error.detach().cpu().double().numpy()
    return {"value": value, "n_iter": n_iter, "marginal_error": err}


def _kernel_values(X, Y, A, B, prm: RunParams):
    import otpipe

    if prm.loss == "energy":
        return otpipe.energy_distance(X, Y, A, B, backend=prm.backend)
    if prm.loss in ("gaussian", "laplacian"):
        return otpipe.mmd(X, Y, A, B, kernel=prm.loss, sigma=prm.blur, backend=prm.backend)
    return otpipe.hausdorff(X, Y, A, B, p=prm.p, blur=prm.blur, cost=prm.cost, backend=prm.backend)


def cross_task(
    src_path: str,
    rows,
    tgt_path: str,
    cols,
    prm: RunParams,
    *,
    diagonal: bool = False,
    self_rows=None,
    self_cols=None,
) -> dict:
    """One tile: the losses between measures ``rows`` of ``src_path`` and ``cols`` of ``tgt_path``.

    ``diagonal``: rows and columns are the same measures; only pairs ``i < j`` are solved, the
    diagonal is 0 and the lower triangle mirrors the upper. ``self_rows``/``self_cols``: the
    self terms (Sinkhorn), combined as ``S_ij = OT_ij - (self_i + self_j) / 2`` (``+ eps/2 (m_i - m_j)^2``
    with ``reach``: the unbalanced mass term).

    Parameters
    ----------
    src_path : str
        The source collection store.
    rows : iterable of int
        The source measures of the tile.
    tgt_path : str
        The target collection store (not read when ``diagonal``).
    cols : iterable of int
        The target measures of the tile.
    prm : RunParams
        The solve's parameters.
    diagonal : bool, default False
        Rows and columns are the same measures.
    self_rows, self_cols : array_like, optional
        The self terms of the rows and columns (Sinkhorn only).

    Returns
    -------
    dict
        ``(len(rows), len(cols))`` arrays: ``divergence``, ``ot`` (the cross term ``OT_eps(a_i, b_j)``, Sinkhorn
        only, else NaN), ``n_iter``, ``marginal_error`` (NaN for kernel losses).
    """
    import torch

    from otpipe.solvers.sinkhorn import solve

    apply_task_threads()
    rows, cols = list(rows), list(cols)
    src = _read(src_path, rows, prm.normalize)
    tgt = src if diagonal else _read(tgt_path, cols, prm.normalize)
    nr, nc = len(rows), len(cols)
    pairs = [(i, j) for i in range(nr) for j in range(nc) if not diagonal or i < j]
    # sorted by size (rows, then columns): each padded batch holds measures of similar sizes
    lx, ly = [len(x) for x, _ in src], [len(x) for x, _ in tgt]
    pairs.sort(key=lambda ij: (lx[ij[0]], ly[ij[1]]))
    ot = np.full((nr, nc), np.nan)
    div = np.zeros((nr, nc))
    n_iter = np.zeros((nr, nc), dtype=np.int64)
    err = np.zeros((nr, nc))
    if not prm.self_terms:
        err[:] = np.nan
    sx = [len(src[i][0]) for i, _ in pairs]
    sy = [len(tgt[j][0]) for _, j in pairs]
    dev = _device(prm)
    src_dev = _stack(src, prm, dev)
    tgt_dev = src_dev if diagonal else _stack(tgt, prm, dev)
    with torch.no_grad(), quiet():  # the run summarises the marginal errors once
        for g in _groups(sx, sy, prm.gpu):
            ii = [pairs[k][0] for k in g]
            jj = [pairs[k][1] for k in g]
            X, A = src_dev.batch(ii)
            Y, B = tgt_dev.batch(jj)
            if prm.self_terms:
                r = solve(X, Y, A, B, **_solver_kw(prm))
                ot[ii, jj] = r.value.cpu().double().numpy()
                n_iter[ii, jj] = r.n_iter.cpu().numpy()
                err[ii, jj] = r.marginal_error.cpu().double().numpy()
            else:
                div[ii, jj] = _kernel_values(X, Y, A, B, prm).cpu().double().numpy()
    if prm.self_terms:
        sr = np.asarray(self_rows, dtype=np.float64)
        sc = np.asarray(self_cols, dtype=np.float64)
        div = ot - 0.5 * (sr[:, None] + sc[None, :])
        if prm.reach is not None:
            # Sejourne et al.'s mass term eps/2 (m_i - m_j)^2 (otpipe.tools.losses.mass_term), masses in the solve's dtype
            mr = np.array([np.asarray(w, dtype=prm.dtype).sum(dtype=np.float64) for _, w in src])
            mc = np.array([np.asarray(w, dtype=prm.dtype).sum(dtype=np.float64) for _, w in tgt])
            div = div + 0.5 * prm.blur**prm.p * (mr[:, None] - mc[None, :]) ** 2
    if diagonal:
        iu = np.triu_indices(nr, 1)
        for a in (ot, div, n_iter, err):
            a[(iu[1], iu[0])] = a[iu]
        np.fill_diagonal(div, 0.0)
        np.fill_diagonal(n_iter, 0)
        if prm.self_terms:
            np.fill_diagonal(ot, np.asarray(self_rows, dtype=np.float64))
            np.fill_diagonal(err, 0.0)
    return {"divergence": div, "ot": ot, "n_iter": n_iter, "marginal_error": err}


def diameter_from_boxes(boxes, blur: float) -> float:
    """Bounding-box diagonal from per-task ``(min, max)`` pairs (``blur`` if every point coincides)."""
    return box_diagonal(union(boxes), float(blur))
