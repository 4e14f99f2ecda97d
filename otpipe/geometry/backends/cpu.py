"""CPU backend: fused, vectorised, multi-threaded log-sum-exp reductions compiled at run time.

The hot loop of the Sinkhorn solver is ``f_i = -eps log sum_j exp(h_j - C(x_i, y_j) / eps)``.
``_cpu/softmin.cpp`` computes it (and the softmax-weighted sums behind gradients and transport maps)
in one streaming pass over column tiles: distances from coordinate differences, an online max so
nothing overflows, an inline polynomial ``exp`` that the compiler vectorises (AVX-512 here), terms
more than ``exp(-80)`` (float32) / ``exp(-700)`` (float64) below the row maximum dropped exactly (so
``-1e30`` padding contributes exactly 0), OpenMP threads over blocks of rows.

Build: the source is compiled on first use with the system C++ compiler (``$CXX``, else ``g++``/``c++``)
straight into a plain shared library loaded with :mod:`ctypes`. This takes ~15 s once, depends on
no torch headers or Python ABI (so it survives torch upgrades and needs no ninja), and is cached under
``$OTPIPE_CACHE_DIR`` (default ``~/.cache/otpipe/cpu``) keyed by a hash of the source, the flags, the
compiler version and the CPU's model and instruction-set flags (``-march=native``). The cache
(:mod:`otpipe.geometry.backends._libcache`) loads only a library this user built there: the folder and files
owned by the user and not writable by others, no symbolic links, and the sha256 recorded by the
build; otherwise it builds again (an untrusted folder: privately, with a warning). Concurrent builds
(several Dask worker processes) serialise on an ``fcntl`` lock file and publish the library with an
atomic rename. ``$OTPIPE_CACHE_DIR`` and ``$CXX`` are trusted inputs. When no compiler is found or the build fails, :func:`available` is ``False`` and
:func:`operator` warns once and returns the dense operator, by blocks of rows for large problems
(never KeOps: pykeops is an optional extra, used only when ``backend="keops"`` is asked for).

Autograd: :meth:`CpuOperator.softmin` is differentiable w.r.t. ``x``, ``y`` and ``h`` through fused
weighted reductions (no ``N x M`` matrix), first order only. ``softmax_mean`` / ``softmax_cost`` with
inputs that require grad fall back to the tensorized computation (by blocks of rows above the dense-size limit).
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import torch

from otpipe.geometry.backends import _libcache
from otpipe.geometry.costs import Cost

__all__ = ["operator", "available", "CpuOperator", "Blocks", "build_error", "block_mask", "warn_unavailable",
           "fused_loop"]

_DIR = Path(__file__).parent / "_cpu"
#: the translation units of the library (``poly.h`` holds their shared numerics)
_SOURCES = (_DIR / "softmin.cpp", _DIR / "loop.cpp")
_HEADERS = (_DIR / "poly.h",)
_FLAGS = (
    "-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=fast",
    "-fPIC", "-shared", "-std=c++17",
)
_MODE = {"lse": 0, "mean": 1, "cost": 2, "grad": 3}
#: reductions over fewer pairs run on one thread (~10 ms of work): on a loaded machine, waiting for a
#: second OpenMP thread to be scheduled cost ~25 ms per call (measured at N = M = 1000 and 5000, load 10 on 2 cores)
PARALLEL_MIN_PAIRS = 1 << 26

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: str | None = None
_tried = False
_warned = False


# ----------------------------------------------------------------------------------------- build
def _compiler() -> str | None:
    for cand in (os.environ.get("CXX"), "g++", "c++"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


def _cpu_signature() -> str:
    """CPU model and instruction-set flags (what ``-march=native`` depends on)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
        flags = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", text, re.M)
        return f"{model.group(1) if model else ''}|{flags.group(1) if flags else ''}"
    except OSError:
        return f"{platform.machine()}|{platform.processor()}"


def _cache_dir() -> Path:
    root = os.environ.get("OTPIPE_CACHE_DIR") or os.path.join(Path.home(), ".cache", "otpipe")
    return Path(root) / "cpu"


def _library_path(cxx: str) -> Path:
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    key = hashlib.sha256()
    parts = [f.read_bytes() for f in (*_SOURCES, *_HEADERS)]
    for part in (*parts, " ".join(_FLAGS).encode(), version.encode(), _cpu_signature().encode()):
        key.update(part)
        key.update(b"\0")
    return _cache_dir() / f"softmin-{key.hexdigest()[:20]}.so"


def _builder(cxx: str):
    """``build(out)``: compile the kernel library to the path ``out`` (see :mod:`otpipe.geometry.backends._libcache`)."""

    def build(out: str) -> None:
        # a first run on a machine waits for this: say so, once (one line on stderr)
        sys.stderr.write(f"otpipe: compiling the CPU kernels for this machine (once, ~20 s; cached in {_cache_dir()})\n")
        sys.stderr.flush()
        # the translation units compile in parallel (one compiler process each), then link
        cflags = [f for f in _FLAGS if f != "-shared"]
        objs = [f"{out}.{src.stem}.o" for src in _SOURCES]
        procs = [subprocess.Popen([cxx, *cflags, "-c", str(src), "-o", obj], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for src, obj in zip(_SOURCES, objs)]
        try:
            errors = []
            for proc in procs:
                _, err = proc.communicate(timeout=600)
                if proc.returncode != 0:
                    errors.append(err[-4000:])
            if errors:
                raise RuntimeError(f"{cxx} failed:\n" + "\n".join(errors))
            proc = subprocess.run([cxx, *_FLAGS, *objs, "-o", out], capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"{cxx} failed to link:\n{proc.stderr[-4000:]}")
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
            for obj in objs:
                with contextlib.suppress(OSError):
                    os.unlink(obj)

    return build


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, c_int, dbl = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
    for name in ("otp_reduce_f32", "otp_reduce_f64"):
        fn = getattr(lib, name)
        fn.argtypes = [p, p, p, p, p, i64, i64, i64, i64, i64, dbl, dbl, c_int, c_int, p, p]
        fn.restype = c_int
    for name in ("otp_reduce_ranges_f32", "otp_reduce_ranges_f64"):
        fn = getattr(lib, name)
        fn.argtypes = [p, p, p, p, p, i64, i64, i64, i64, i64, dbl, dbl, c_int, c_int, p, p, p, p, p, i64]
        fn.restype = c_int
    lib.otp_block_mask.argtypes = [p, p, p, p, p, p, p, i64, p, p, p, p, p, p, p, i64, i64, dbl, dbl, dbl, c_int, p]
    lib.otp_block_mask.restype = c_int
    for name in ("otp_sinkhorn_loop_f32", "otp_sinkhorn_loop_f64"):
        fn = getattr(lib, name)
        fn.argtypes = [p, p, p, p, p, p, p, p, i64, i64, i64, i64, dbl, dbl, p, p, i64, c_int, c_int, dbl, dbl, dbl,
                       dbl, i64, i64, i64, c_int, p, p, p, p, p]
        fn.restype = c_int
    for name in ("otp_exp_f32", "otp_log_f32", "otp_exp_f64", "otp_log_f64"):
        getattr(lib, name).argtypes = [p, p, i64]
        getattr(lib, name).restype = None


def _load() -> ctypes.CDLL | None:
    """Build (once per machine) and load (once per process) the kernel library; ``None`` on failure."""
    global _lib, _error, _tried
    if _tried:
        return _lib
    with _lock:
        if _tried:
            return _lib
        try:
            if os.environ.get("OTPIPE_CPU_DISABLE"):
                raise RuntimeError("disabled by OTPIPE_CPU_DISABLE")
            cxx = _compiler()
            if cxx is None:
                raise RuntimeError("no C++ compiler found (set $CXX or install g++)")
            target = _library_path(cxx)
            lib = _libcache.load(target.parent, target.name, _builder(cxx))  # owner, mode and sha256 checked
            _declare(lib)
            _lib = lib
        except Exception as exc:  # noqa: BLE001 - any failure means "not available", reported once
            _error = f"{type(exc).__name__}: {exc}"
        _tried = True
    return _lib


def available() -> bool:
    """Whether the compiled CPU kernels can be used (compiles them on the first call, ~15 s).

    Returns
    -------
    bool
        ``True`` when the library built (or was in the cache) and loaded.
    """
    return _load() is not None


def build_error() -> str | None:
    """Why :func:`available` is ``False``.

    Returns
    -------
    str or None
        The build or load error; ``None`` when the kernels are available or were not tried yet.
    """
    return _error


def warn_unavailable() -> None:
    """Warn once per process that the compiled kernel is unavailable (and why)."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f"otpipe 'cpu' backend unavailable ({_error}); falling back to the dense backend "
                      "(by blocks of rows for large problems)",
                      RuntimeWarning, stacklevel=3)


# ------------------------------------------------------------------------------------ reductions
def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class Blocks:
    """Block-sparsity pattern of a sorted point pair: which column ranges each row cluster visits.

    Consecutive kept column clusters are merged into one range (``rng``, with offsets ``cptr`` per row cluster);
    ``pairs`` counts the point pairs visited. :meth:`transpose` gives the pattern of the transposed pair (same kept
    pairs), so gradients visit exactly the blocks of the forward pass.

    Parameters
    ----------
    rows : torch.Tensor
        ``(n_I + 1,)`` cluster bounds of the rows: cluster ``I`` is ``x[rows[I]:rows[I + 1]]`` (CPU).
    cols : torch.Tensor
        ``(n_J + 1,)`` cluster bounds of the columns, likewise.
    mask : torch.Tensor
        ``(n_I, n_J)`` bool, whether block ``(I, J)`` is summed over.
    """

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, mask: torch.Tensor):
        import numpy as np

        self.rows = rows.to(torch.int64).contiguous()
        self.cols = cols.to(torch.int64).contiguous()
        self.mask = mask.to(torch.bool)
        m = self.mask.numpy().astype(np.int8)
        nI = m.shape[0]
        edge = np.diff(np.pad(m, ((0, 0), (1, 1))), axis=1)  # +1 at run starts, -1 after run ends
        si, sj = np.nonzero(edge == 1)
        _, ej = np.nonzero(edge == -1)  # same row order, one end per start
        c = self.cols.numpy()
        self.rng = torch.from_numpy(np.stack([c[sj], c[ej]], axis=1).reshape(-1).astype(np.int64)).contiguous()
        counts = np.bincount(si, minlength=nI)
        self.cptr = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)).contiguous()
        self.nclus = nI
        #: number of point pairs visited (per batch element)
        self.pairs = int(((self.rows[1:] - self.rows[:-1])[:, None].double() * (self.cols[1:] - self.cols[:-1])[None, :].double()
                          * self.mask.double()).sum())

    def transpose(self) -> Blocks:
        """The pattern of the transposed pair (columns as rows), built once and linked both ways.

        Returns
        -------
        Blocks
            Rows and columns swapped, the mask transposed.
        """
        if not hasattr(self, "_T"):
            self._T = Blocks(self.cols, self.rows, self.mask.t().contiguous())
            self._T._T = self
        return self._T


def _reduce(x: torch.Tensor, yT: torch.Tensor, h: torch.Tensor, c: float, p: float, mode: str,
            v: torch.Tensor | None = None, u: torch.Tensor | None = None,
            blocks: Blocks | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Raw kernel call: ``lse_i = log sum_j exp(h_j - c r_ij^p)`` and the mode's softmax-weighted sums.

    With ``blocks``, the sums run over the kept column ranges of each row's cluster only.

    ``x (B, N, D)``, ``yT (B, D, M)``, ``h (B, M)``, ``v (B, K, M)`` (mode ``mean``), ``u (B, M)`` (mode
    ``grad``), all contiguous, same dtype, no autograd. Returns ``lse (B, N)`` and ``acc``: ``(B, N, K)``
    (mean), ``(B, N)`` (cost: sum w r^p), ``(B, N, D + 1)`` (grad: sum w u G (x - y) and sum w u).
    """
    lib = _load()
    B, N, D = x.shape
    M = yT.shape[2]
    K = v.shape[1] if v is not None else 0
    lse = torch.empty(B, N, dtype=x.dtype)
    acc = None
    if mode == "mean":
        acc = torch.empty(B, N, K, dtype=x.dtype)
    elif mode == "cost":
        acc = torch.empty(B, N, dtype=x.dtype)
    elif mode == "grad":
        acc = torch.empty(B, N, D + 1, dtype=x.dtype)
    if B * N == 0:
        return lse, acc
    if M == 0:
        lse.fill_(-float("inf"))
        if acc is not None:
            acc.fill_(float("nan"))
        return lse, acc
    pairs = B * N * M if blocks is None else B * blocks.pairs
    threads = torch.get_num_threads() if pairs >= PARALLEL_MIN_PAIRS else 1
    args = (_ptr(x), _ptr(yT), _ptr(h), _ptr(v), _ptr(u), B, N, M, D, K, float(c), float(p), _MODE[mode],
            threads, _ptr(lse), _ptr(acc))
    if blocks is None:
        fn = lib.otp_reduce_f32 if x.dtype == torch.float32 else lib.otp_reduce_f64
        rc = fn(*args)
    else:
        if int(blocks.rows[-1]) != N or int(blocks.cols[-1]) != M:
            raise ValueError(f"block pattern for {int(blocks.rows[-1])} x {int(blocks.cols[-1])} points used on {N} x {M}")
        fn = lib.otp_reduce_ranges_f32 if x.dtype == torch.float32 else lib.otp_reduce_ranges_f64
        rc = fn(*args, _ptr(blocks.rows), _ptr(blocks.cptr), _ptr(blocks.rng), blocks.nclus)
    if rc != 0:
        raise RuntimeError(f"otpipe cpu kernel rejected its arguments (code {rc})")
    return lse, acc


def _leading(w: torch.Tensor) -> torch.Tensor:
    """``(B,)`` int64: one past the last positive weight of each row of ``w`` (at least 1)."""
    idx = torch.arange(1, w.shape[-1] + 1, dtype=torch.int64)
    return torch.where(w > 0, idx, torch.zeros((), dtype=torch.int64)).amax(-1).clamp(min=1).contiguous()


def fused_loop(x: torch.Tensor, y: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor | None, la: torch.Tensor,
               lb: torch.Tensor | None, cost: Cost, schedule, damping, *, converging: dict | None = None,
               rho: float | None = None, threads: int | None = None) -> tuple:
    """The whole Sinkhorn loop of a batch of small problems in one compiled call (``_cpu/loop.cpp``).

    One problem per thread; each computes its cost matrix once and runs the eps-scaling, then the extrapolation,
    with the updates of :mod:`otpipe.solvers.loop` on that problem alone. ``y is None``: the symmetric problems
    ``OT_eps(a, a)`` (one potential).

    Parameters
    ----------
    x : torch.Tensor
        ``(B, N, D)`` rows, float32 or float64, contiguous, on the CPU.
    y : torch.Tensor or None
        ``(B, M, D)`` columns, same dtype; ``None``: symmetric problems.
    a, b : torch.Tensor
        ``(B, N)`` / ``(B, M)`` weights (``b`` unused when symmetric); points after the last positive weight are
        padding, skipped by the loop.
    la, lb : torch.Tensor
        Their log-weights (:func:`otpipe.problems.measures.log_weights`).
    cost : Cost
        The ground cost.
    schedule : sequence of float
        The temperatures.
    damping : sequence of float
        The damping factor of each temperature (1 when balanced).
    converging : dict or None, default None
        ``None``: the fixed schedule. Else the converging mode's ``tol``, ``stage_tol``, ``overrelax``,
        ``max_iter``, ``stall`` and ``plain_first`` (:func:`otpipe.solvers.loop.iterate`).
    rho : float or None, default None
        KL penalty strength (the unbalanced translation of the converging updates); ``None``: balanced.
    threads : int or None, default None
        OpenMP threads (default ``torch.get_num_threads()``).

    Returns
    -------
    f, g : torch.Tensor
        ``(B, N)`` / ``(B, M)`` potentials after the loop (``g is f`` when symmetric).
    fe, ge : torch.Tensor
        The extrapolated potentials, one parallel update further (``ge is fe`` when symmetric).
    n_iter : torch.Tensor
        ``(B,)`` int64 updates counted as :func:`otpipe.solvers.loop.iterate` counts them.

    Raises
    ------
    RuntimeError
        If the kernel rejects its arguments.
    """
    lib = _load()
    sym = y is None
    dt = x.dtype
    B, N, D = x.shape
    x = _prep(x, dt)
    a, la = _prep(a, dt), _prep(la, dt)
    if sym:
        y, b, lb, M = x, a, la, N
    else:
        y, b, lb = _prep(y, dt), _prep(b, dt), _prep(lb, dt)
        M = y.shape[1]
    nx = _leading(a)
    ny = nx if sym else _leading(b)
    eps = torch.tensor([float(e) for e in schedule], dtype=torch.float64)
    damp = torch.tensor([float(d) for d in damping], dtype=torch.float64)
    f = torch.empty(B, N, dtype=dt)
    fe = torch.empty(B, N, dtype=dt)
    g = f if sym else torch.empty(B, M, dtype=dt)
    ge = fe if sym else torch.empty(B, M, dtype=dt)
    n_iter = torch.empty(B, dtype=torch.int64)
    if B == 0:
        return f, g, fe, ge, n_iter
    cv = converging or {}
    fn = lib.otp_sinkhorn_loop_f32 if dt == torch.float32 else lib.otp_sinkhorn_loop_f64
    rc = fn(_ptr(x), _ptr(y), _ptr(a), _ptr(b), _ptr(la), _ptr(lb), _ptr(nx), _ptr(ny), B, N, M, D,
            float(cost.scale), float(cost.p), _ptr(eps), _ptr(damp), len(eps), int(sym), int(converging is not None),
            float(cv.get("tol", 0.0)), float(cv.get("stage_tol", 0.0)), float(cv.get("overrelax", 1.0)),
            float(rho) if rho is not None else 0.0, int(cv.get("max_iter", 0)), int(cv.get("stall", 0)),
            int(cv.get("plain_first", 0)), int(threads or torch.get_num_threads()), _ptr(f),
            None if sym else _ptr(g), _ptr(fe), None if sym else _ptr(ge), _ptr(n_iter))
    if rc != 0:
        raise RuntimeError(f"otpipe cpu fused loop rejected its arguments (code {rc})")
    return f, g, fe, ge, n_iter


def block_mask(row: tuple, col: tuple, cost: Cost, thr: float) -> torch.Tensor:
    """Compiled truncation test of :func:`otpipe.geometry.blocks.block_mask` (same arithmetic, fused).

    Parameters
    ----------
    row : tuple of torch.Tensor
        Per row cluster ``(centers, radius, lo, hi, fmax, beta, rmax)``, shapes
        ``(n, D), (n,), (n, D), (n, D), (n,), (n, D), (n,)`` (converted to float64).
    col : tuple of torch.Tensor
        The same per column cluster.
    cost : Cost
        The ground cost.
    thr : float
        Threshold on the upper bound ``U_IJ`` (``-truncate * eps``).

    Returns
    -------
    torch.Tensor
        ``(n_I, n_J)`` bool mask of the kept cluster pairs.

    Raises
    ------
    RuntimeError
        If the kernel rejects its arguments.
    """
    lib = _load()
    row = [t.detach().to(torch.float64).contiguous() for t in row]
    col = [t.detach().to(torch.float64).contiguous() for t in col]
    nI, D = row[0].shape
    nJ = col[0].shape[0]
    keep = torch.zeros(nI, nJ, dtype=torch.uint8)
    threads = torch.get_num_threads() if nI * nJ >= 1 << 20 else 1
    rc = lib.otp_block_mask(*[_ptr(t) for t in row], nI, *[_ptr(t) for t in col], nJ, D, float(cost.scale),
                            float(cost.p), float(thr), threads, _ptr(keep))
    if rc != 0:
        raise RuntimeError(f"otpipe cpu block mask rejected its arguments (code {rc})")
    return keep.bool()


def _prep(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.detach().to(dtype).contiguous()


class _Softmin(torch.autograd.Function):
    """``f_i = -eps log sum_j exp(h_j - C(x_i, y_j) / eps)`` with fused first-order gradients.

    Let ``w_ij = exp(h_j - C_ij / eps + f_i / eps)`` and ``dC/dx = scale p |x - y|^(p-2) (x - y)``:
    ``df_i/dx_i = sum_j w_ij dC/dx(x_i, y_j)``, ``df_i/dy_j = -w_ij dC/dx(x_i, y_j)``, ``df_i/dh_j = -eps w_ij``.
    The column sums over ``i`` run as the transposed reduction with offsets ``f_i / eps``.
    """

    @staticmethod
    def forward(ctx, x, y, h, eps: float, cost: Cost, blocks: Blocks | None = None):  # noqa: D401
        dt = x.dtype
        xd, yd, hd = _prep(x, dt), _prep(y, dt), _prep(h, dt)
        lse, _ = _reduce(xd, yd.transpose(1, 2).contiguous(), hd, cost.scale / eps, cost.p, "lse", blocks=blocks)
        ctx.save_for_backward(xd, yd, hd, lse)
        ctx.eps, ctx.cost, ctx.blocks = eps, cost, blocks
        return -eps * lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_f):
        xd, yd, hd, lse = ctx.saved_tensors
        eps, cost, blocks = ctx.eps, ctx.cost, ctx.blocks
        bT = None if blocks is None else blocks.transpose()
        c, k = cost.scale / eps, cost.scale * cost.p
        g = grad_f.detach().to(xd.dtype).contiguous()
        gx = gy = gh = None
        if ctx.needs_input_grad[0]:
            _, acc = _reduce(xd, yd.transpose(1, 2).contiguous(), hd, c, cost.p, "grad", blocks=blocks)
            gx = (k * g)[..., None] * acc[..., :-1]
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            # rows y_j, columns x_i, offsets -lse_i: exp(h_j + lse'_j) * softmax' = w_ij
            lse_t, acc_t = _reduce(yd, xd.transpose(1, 2).contiguous(), (-lse).contiguous(), c, cost.p, "grad", u=g,
                                   blocks=bT)
            mass = torch.exp(hd + lse_t)
            if ctx.needs_input_grad[1]:
                gy = k * mass[..., None] * acc_t[..., :-1]
            if ctx.needs_input_grad[2]:
                gh = -eps * mass * acc_t[..., -1]
        return gx, gy, gh, None, None, None


# -------------------------------------------------------------------------------------- operator
class CpuOperator:
    """Rows ``x (B, N, D)``, columns ``y (B, M, D)`` on the CPU; reductions over ``j`` by compiled kernels.

    Same interface as :class:`~otpipe.geometry.backends.tensorized.DenseOperator`; float32 or float64, any ``D``,
    any ``p > 0`` (``p = 1``, ``3/2``, ``2`` and ``D <= 3`` have specialised code), memory ``O((N + M) D)``.
    With ``blocks`` (points sorted by cluster) every reduction visits only the kept cluster pairs (block-sparse;
    the differentiable ``softmax_mean``/``softmax_cost`` fallbacks stay dense).

    Parameters
    ----------
    x : torch.Tensor
        Points of the rows, ``(B, N, D)``, float32 or float64, on the CPU.
    y : torch.Tensor
        Points of the columns, ``(B, M, D)``, same dtype.
    cost : Cost
        The ground cost.
    blocks : Blocks or None, default None
        Block-sparsity pattern of the pair (cluster-sorted points).

    Raises
    ------
    ValueError
        If the points are not CPU tensors of one float dtype with shapes ``(B, N, D)`` and ``(B, M, D)``.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, cost: Cost, blocks: Blocks | None = None):
        if x.device.type != "cpu" or y.device.type != "cpu":
            raise ValueError(f"the 'cpu' backend needs CPU tensors, got {x.device} and {y.device}")
        if x.dtype not in (torch.float32, torch.float64) or y.dtype != x.dtype:
            raise ValueError(f"the 'cpu' backend needs float32 or float64 points of one dtype, got {x.dtype}, {y.dtype}")
        if x.dim() != 3 or y.dim() != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
            raise ValueError(f"expected x (B, N, D) and y (B, M, D), got {tuple(x.shape)} and {tuple(y.shape)}")
        self.x, self.y, self.cost, self.blocks = x, y, cost, blocks
        self._cache: dict[str, torch.Tensor] = {}

    # detached contiguous copies, made once per operator
    def _xd(self) -> torch.Tensor:
        if "x" not in self._cache:
            self._cache["x"] = _prep(self.x, self.x.dtype)
        return self._cache["x"]

    def _yT(self) -> torch.Tensor:
        if "yT" not in self._cache:
            self._cache["yT"] = self.y.detach().transpose(1, 2).contiguous()
        return self._cache["yT"]

    def _h(self, h: torch.Tensor) -> torch.Tensor:
        if h.shape != (self.y.shape[0], self.y.shape[1]):
            raise ValueError(f"h must have shape {(self.y.shape[0], self.y.shape[1])}, got {tuple(h.shape)}")
        return _prep(h, self.x.dtype)

    def _needs_grad(self, *extra: torch.Tensor) -> bool:
        return torch.is_grad_enabled() and any(t.requires_grad for t in (self.x, self.y, *extra))

    def _dense(self):
        from otpipe.geometry.backends.tensorized import DenseOperator

        return DenseOperator(self.x, self.y, self.cost)

    def _autograd_fallback(self):
        """Differentiable stand-in for ``softmax_mean`` / ``softmax_cost``: dense when small, else by blocks of rows."""
        from otpipe.geometry.backends._limits import AUTO_DENSE_MAX_ENTRIES

        if self.x.shape[0] * self.x.shape[1] * self.y.shape[1] <= AUTO_DENSE_MAX_ENTRIES:
            return self._dense()
        return _fallback(self.x, self.y, self.cost)

    def transpose(self) -> CpuOperator:
        """The operator with rows and columns exchanged (``y`` as rows, ``x`` as columns).

        Block patterns are transposed too.

        Returns
        -------
        CpuOperator
            The transposed operator, on the same cost.
        """
        return CpuOperator(self.y, self.x, self.cost, None if self.blocks is None else self.blocks.transpose())

    def softmin(self, eps: float, h: torch.Tensor) -> torch.Tensor:
        """Soft-min over the columns, ``f_i = -eps log sum_j exp(h_j - C(x_i, y_j) / eps)``.

        Differentiable w.r.t. ``x``, ``y`` and ``h`` (fused first-order gradients).

        Parameters
        ----------
        eps : float
            Temperature.
        h : torch.Tensor
            ``(B, M)`` column offsets (log-weights plus potential over eps, ``log b_j + g_j / eps``).

        Returns
        -------
        torch.Tensor
            ``(B, N)``.
        """
        eps = float(eps)
        if self._needs_grad(h):
            return _Softmin.apply(self.x, self.y, h, eps, self.cost, self.blocks)
        lse, _ = _reduce(self._xd(), self._yT(), self._h(h), self.cost.scale / eps, self.cost.p, "lse",
                         blocks=self.blocks)
        return lse.mul_(-eps)

    def softmax_mean(self, eps: float, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Softmax-weighted mean of column values, ``sum_j softmax_j(h_j - C_ij / eps) v_j``.

        Under autograd: the dense computation (by blocks of rows above the dense-size limit).

        Parameters
        ----------
        eps : float
            Temperature.
        h : torch.Tensor
            ``(B, M)`` column offsets (log-weights plus potential over eps, ``log b_j + g_j / eps``).
        v : torch.Tensor
            ``(B, M, K)`` values at the columns (the points ``y`` for a transport map).

        Returns
        -------
        torch.Tensor
            ``(B, N, K)``.
        """
        eps = float(eps)
        if self._needs_grad(h, v):
            return self._autograd_fallback().softmax_mean(eps, h, v)
        vT = v.detach().to(self.x.dtype).transpose(1, 2).contiguous()
        _, acc = _reduce(self._xd(), self._yT(), self._h(h), self.cost.scale / eps, self.cost.p, "mean", v=vT,
                         blocks=self.blocks)
        return acc

    def softmax_cost(self, eps: float, h: torch.Tensor) -> torch.Tensor:
        """Softmax-weighted mean cost per row, ``sum_j softmax_j(h_j - C_ij / eps) C_ij``.

        Under autograd: the dense computation (by blocks of rows above the dense-size limit).

        Parameters
        ----------
        eps : float
            Temperature.
        h : torch.Tensor
            ``(B, M)`` column offsets (log-weights plus potential over eps, ``log b_j + g_j / eps``).

        Returns
        -------
        torch.Tensor
            ``(B, N)``.
        """
        eps = float(eps)
        if self._needs_grad(h):
            return self._autograd_fallback().softmax_cost(eps, h)
        _, acc = _reduce(self._xd(), self._yT(), self._h(h), self.cost.scale / eps, self.cost.p, "cost",
                         blocks=self.blocks)
        return acc.mul_(self.cost.scale) if self.cost.scale != 1.0 else acc

    def dense_cost(self) -> torch.Tensor:
        """The cost matrix ``C(x_i, y_j)``, materialised (for small problems and tests).

        Returns
        -------
        torch.Tensor
            ``(B, N, M)``.
        """
        return self.cost.dense(self.x, self.y)

    def kernel_apply(self, kernel: str, sigma: float, v: torch.Tensor) -> torch.Tensor:
        """Kernel product ``sum_j k(x_i, y_j) v_j``.

        Not a hot path: dense for small problems, by blocks of rows otherwise.

        Parameters
        ----------
        kernel : str
            ``"gaussian"`` (``exp(-|x-y|^2 / 2 sigma^2)``), ``"laplacian"`` (``exp(-|x-y| / sigma)``) or ``"energy"``
            (``-|x-y|``).
        sigma : float
            Kernel width (not used by ``"energy"``).
        v : torch.Tensor
            ``(B, M)`` values at the columns.

        Returns
        -------
        torch.Tensor
            ``(B, N)``.
        """
        from otpipe.geometry.backends._limits import AUTO_DENSE_MAX_ENTRIES

        B, N, M = self.x.shape[0], self.x.shape[1], self.y.shape[1]
        if B * N * M <= AUTO_DENSE_MAX_ENTRIES:
            return self._dense().kernel_apply(kernel, sigma, v)
        return _fallback(self.x, self.y, self.cost).kernel_apply(kernel, sigma, v)


def _fallback(x: torch.Tensor, y: torch.Tensor, cost: Cost):
    """Dense operator computed by blocks of rows (bounded memory; no pykeops on a default path)."""
    from otpipe.geometry.backends.tensorized import ChunkedDenseOperator

    return ChunkedDenseOperator(x, y, cost)


def operator(x: torch.Tensor, y: torch.Tensor, cost: Cost):
    """CPU operator with rows ``x`` and columns ``y``, or its fallback when the kernels are unavailable.

    Without the compiled kernels it warns once and returns the dense operator computed by blocks of rows.

    Parameters
    ----------
    x : torch.Tensor
        Points of the rows, ``(B, N, D)``.
    y : torch.Tensor
        Points of the columns, ``(B, M, D)``.
    cost : Cost
        The ground cost.

    Returns
    -------
    CpuOperator or ChunkedDenseOperator
        The operator.
    """
    if not available():
        warn_unavailable()
        return _fallback(x, y, cost)
    return CpuOperator(x, y, cost)
