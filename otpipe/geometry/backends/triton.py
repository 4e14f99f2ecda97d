"""Triton backend: fused, tiled, online log-sum-exp reductions on CUDA tensors (FlashAttention-style).

Each reduction streams tiles of columns through one program per tile of rows, keeping a running max and
sum of ``exp2`` (no ``N x M`` array anywhere, memory ``O((N + M) D)``); see
:mod:`otpipe.geometry.backends._triton_programs`. Batched ``(B, N, D)``, zero-weight padding (``h = -1e30`` columns
contribute exactly 0), float32 (float32 accumulation) and float64 (float64 throughout), any ``D``, every
cost ``C = scale |x - y|^p``:

* ``p = 2`` in the dot-product form ``scale (|x|^2 + |y|^2 - 2 <x, y>)``: ``-scale |y_j|^2 / eps`` joins the
  column offset, ``-scale |x_i|^2 / eps`` is added after the sum, so the inner loop is one product tile, one
  max, one ``exp2``, one sum. Product tiles: ``tl.dot`` for float32 with ``DOT_MIN_D <= D <= DOT_MAX_D``
  (8 to 128), unrolled sums of products below (and for float64). The points are centred once per operator
  (by the mean of both clouds; the cost is translation invariant), so the cancellation error stays
  ``~1e-7 R^2`` in float32 for clouds of radius ``R``, wherever they sit;
* any other ``p > 0`` from coordinate differences, ``r^p = exp2(p/2 log2 r^2)`` (0 at ``r = 0``).

**Gradients.** :meth:`TritonOperator.softmin` is differentiable w.r.t. ``x``, ``y`` and ``h`` (first
order) by fused kernels: when ``x`` requires grad, the forward pass itself also accumulates
``sum_j w_ij G_ij (x_i - y_j)`` (``G = r^(p-2)``, online like the sum of exponentials), so the gradient
w.r.t. the rows (the envelope-theorem step of the solver) costs no second pass; ``y`` and ``h`` take one
transposed pass weighted by the incoming gradient, with offsets ``f_i / eps``. ``kernel_apply`` is
differentiable likewise (``sum_j v_j k'(r_ij) / r_ij (x_i - y_j)`` and transposed sums); ``softmax_mean`` and
``softmax_cost`` are not (dense fallback for small problems under autograd).

**Symmetric updates.** :meth:`TritonOperator.softmin_both` computes ``f = softmin_y(h_y)`` on the rows and
``g = softmin_x(h_x)`` on the columns in one launch (the averaged Sinkhorn update of a cross problem).

**Block-sparse mode.** ``operator(x, y, cost, blocks=Blocks(...))`` (:class:`otpipe.geometry.backends.cpu.Blocks`, or
:class:`otpipe.geometry.blocks_device.DeviceBlocks` built on the GPU; ``B = 1``, points sorted by cluster)
visits for each tile of rows, which never straddles two clusters, only the column ranges kept for its
cluster, in every reduction and gradient. The index arrays are copied to the device once per ``Blocks``
object (and cached on it); ``DeviceBlocks`` builds them there.

**Dot precision.** Float32 ``tl.dot`` tiles use Triton's ``tf32x3`` (three TF32 tensor-core products:
about the error of float32 FMAs, several times faster) unless :data:`FP32_DOT` is ``"ieee"``
(``OTPIPE_TRITON_FP32_DOT=ieee``: float32 FMAs).

**TF32** (float32 ``p = 2`` with ``8 <= D <= 128`` only; off by default): on with
``operator(..., tf32=True)``, the module flag :data:`ALLOW_TF32` or the environment variable
``OTPIPE_TF32=1``. TF32 rounds both factors of ``<x_i, y_j>`` to a 10-bit mantissa (unit roundoff
``2^-11``), so the product tile, hence the cost, has an absolute error up to ``~1e-3 scale |x_i| |y_j|``,
i.e. ``~1e-3 scale R^2`` after centring (typically ``1e-4 scale R^2``: the rounding errors are random).
A softmin is 1-Lipschitz in the costs, so ``f``, ``g`` and ``S_eps`` inherit that absolute error whatever
``eps``; the plan's weights however move by ``exp(err / eps)``: gradients and transport maps degrade once
``eps <~ 1e-3 scale R^2`` (blur below ~3% of the radius for p = 2). The weighted sums of points in the
gradients keep the precision of :data:`FP32_DOT`.

CPU tensors are accepted only under Triton's interpreter (``TRITON_INTERPRET=1``, how the tests run on
machines without a GPU); otherwise use the ``cpu`` backend. Triton is imported by this module only.
"""
from __future__ import annotations

import contextlib
import math
import os

import torch

from otpipe.geometry.costs import Cost

try:
    import triton as _triton
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("the 'triton' backend needs Triton: pip install triton (and a CUDA GPU)") from exc

from otpipe.geometry.backends import _triton_programs as _k

__all__ = ["operator", "TritonOperator", "ALLOW_TF32", "fused_loop", "FUSED_MAX_POINTS"]

#: most points per measure of the fused loop's one-program-per-problem kernel (its cost tile stays on chip)
FUSED_MAX_POINTS = 128

#: TF32 tensor cores for the float32 ``<x, y>`` tiles (``p = 2``, ``DOT_MIN_D <= D <= DOT_MAX_D``); module doc
ALLOW_TF32 = False
#: smallest ``D`` for which the float32 ``p = 2`` log-sum-exp uses ``tl.dot`` tiles (below: unrolled FMAs, the
#: fastest by a static count of the sm_90 instructions: one ``exp2`` per pair dominates either way)
DOT_MIN_D = 8
#: largest ``D`` for ``tl.dot`` tiles (one ``BLOCK_D`` tile of points); above: a loop over coordinates
DOT_MAX_D = 128
#: precision of the float32 ``tl.dot`` tiles when TF32 is off: ``"tf32x3"`` (three TF32 tensor-core products,
#: about the error of float32 FMAs; at D = 64 about half the issue slots of ``"ieee"`` by a static count of the
#: sm_90 code, not timed yet) or ``"ieee"`` (float32 FMAs); environment ``OTPIPE_TRITON_FP32_DOT``
FP32_DOT = os.environ.get("OTPIPE_TRITON_FP32_DOT", "tf32x3")
#: ``tl.dot`` on float64 tiles. Off: float64 dot support differs between Triton versions and GPUs (float64
#: MMA on some only); float64 runs the sum-of-products path instead. ``OTPIPE_TRITON_FP64_DOT=1`` turns it on
FP64_DOT = os.environ.get("OTPIPE_TRITON_FP64_DOT", "") == "1"

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453


def _tf32_default() -> bool:
    return ALLOW_TF32 or os.environ.get("OTPIPE_TF32", "") == "1"


def _split(v: float) -> tuple[float, float]:
    """``v`` as a float32 pair ``hi + lo`` (Triton passes float scalars as float32)."""
    import numpy as np

    hi = float(np.float32(v))
    return hi, float(np.float32(v - hi))


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


# ------------------------------------------------------------------------------------------ configs
def _env_blocks() -> tuple[int, ...] | None:
    """``OTPIPE_TRITON_BLOCKS="BLOCK_N,BLOCK_M,num_warps[,num_stages]"``: override of the log-sum-exp tiles."""
    s = os.environ.get("OTPIPE_TRITON_BLOCKS")
    if not s:
        return None
    vals = tuple(int(t) for t in s.split(","))
    if len(vals) not in (3, 4) or any(v <= 0 for v in vals) or vals[0] < 16 or vals[1] < 16:
        raise ValueError("OTPIPE_TRITON_BLOCKS must be 'BLOCK_N,BLOCK_M,num_warps[,num_stages]' (blocks >= 16), "
                         f"got {s!r}")
    return vals if len(vals) == 4 else vals + (2,)


def _precisions(tf32: bool, fp64: bool) -> tuple[int, int]:
    """Kernel codes (0 IEEE, 1 TF32, 3 three TF32 products) of the product tiles and of the weighted sums."""
    if fp64:
        return 0, 0
    if FP32_DOT not in ("tf32x3", "ieee"):
        raise ValueError(f"OTPIPE_TRITON_FP32_DOT must be 'tf32x3' or 'ieee', got {FP32_DOT!r}")
    acc = 3 if FP32_DOT == "tf32x3" else 0
    return (1 if tf32 else acc), acc


def _launch_config(op: TritonOperator, mode: int, nch: int = 1) -> tuple[dict, tuple[int, int]]:
    """Compile-time parameters and ``(num_warps, num_stages)`` of a reduction (``nch``: MEAN/GRAD channels).

    Float32 ``p = 2`` products come from ``tl.dot`` tiles for ``DOT_MIN_D <= D <= DOT_MAX_D`` and, in every
    mode but the log-sum-exp, for any ``D <= DOT_MAX_D`` (its register layout keeps the per-tile row
    reductions cheap); the weighted sums of MEAN and GRAD are ``tl.dot`` tiles too. Float64 uses neither
    (unless :data:`FP64_DOT`). Tile sizes were chosen from the register use and a static count of the inner
    loop's sm_90 instructions (Triton 3.9), not timed on a GPU yet: ``OTPIPE_TRITON_BLOCKS`` overrides the
    log-sum-exp tiles.
    """
    D = op._xp.shape[1]
    fp64 = op._xp.dtype == torch.float64
    pk = _pk(op.cost.p)
    sparse = op.blocks is not None
    dot_ok = not fp64 or FP64_DOT
    use_dot = pk == 2 and dot_ok and D <= DOT_MAX_D and (D >= DOT_MIN_D or mode != _k.LSE)
    acc_dot = mode in (_k.MEAN, _k.GRAD) and dot_ok
    block_d = max(16, _pow2(D)) if use_dot else 16
    block_k = min(max(16, _pow2(nch)), 64) if acc_dot else min(_pow2(nch), 16)
    prec, acc_prec = _precisions(op.tf32 and DOT_MIN_D <= D <= DOT_MAX_D, fp64)
    if _k.INTERPRETED:  # small tiles: several tiles per test problem, so the edges and the online max are exercised
        bn, bm, warps, stages = 16, 32, 4, 1
    elif mode == _k.LSE:
        env = _env_blocks()
        if env is not None:
            bn, bm, warps, stages = env
        elif use_dot:
            big = block_d > 64 or prec == 0 or sparse
            bn, bm, warps, stages = (64 if big else 128), 64, 8, 2
        else:
            bn, bm, warps, stages = (32 if fp64 or sparse else 64), 32, 4, 2
    elif fp64:
        bn, bm, warps, stages = 16, 16, (8 if block_k >= 8 else 4), 1
    else:
        wide = max(block_d, block_k) >= 64
        bn = 32 if block_d >= 128 or sparse or (pk != 2 and D > 3) else 64
        bn, bm, warps, stages = bn, 32, (8 if wide else 4), 2
    const = dict(D=D, BLOCK_N=bn, BLOCK_M=bm, BLOCK_D=block_d, PK=pk, USE_DOT=use_dot, SPARSE=sparse,
                 ELEMWISE=mode == _k.LSE and not use_dot)
    const.update(BLOCK_K=block_k, MODE=mode, ACC_DOT=acc_dot, PREC=prec, ACC_PREC=acc_prec)
    return const, (warps, stages)


# ------------------------------------------------------------------------------------ block sparse
def _sparse_arrays(blocks, block_n: int, device) -> tuple[torch.Tensor, ...]:
    """``(work, rows, cptr, rng)`` int32 on ``device``; ``work`` = ``(row0, cluster)`` per row tile. Patterns built
    on the device (:class:`otpipe.geometry.blocks_device.DeviceBlocks`) make their own, without a host trip."""
    import numpy as np

    if hasattr(blocks, "triton_arrays"):
        return blocks.triton_arrays(block_n, device)

    cache = blocks.__dict__.setdefault("_triton_arrays", {})
    key = (str(device), block_n)
    if key not in cache:
        rows = blocks.rows.cpu().numpy()
        sizes = np.diff(rows)
        ntiles = (sizes + block_n - 1) // block_n
        clus = np.repeat(np.arange(len(sizes)), ntiles)
        first = np.repeat(np.cumsum(ntiles) - ntiles, ntiles)
        row0 = rows[clus] + (np.arange(int(ntiles.sum())) - first) * block_n
        work = np.stack([row0, clus], axis=1).reshape(-1)
        cache[key] = tuple(torch.as_tensor(np.ascontiguousarray(a), dtype=torch.int32).to(device)
                           for a in (work, rows, blocks.cptr.cpu().numpy(), blocks.rng.cpu().numpy()))
    return cache[key]


# -------------------------------------------------------------------------------------------- launch
def _pk(p: float) -> int:
    return 2 if p == 2.0 else 1 if p == 1.0 else 0


def _reduce(op: TritonOperator, h: torch.Tensor, eps: float, mode: int, om: float, *,
            v: torch.Tensor | None = None, u: torch.Tensor | None = None):
    """Raw launch on the operator's planes: ``out = om * lse`` (natural log) and the mode's sums.

    Returns ``(out (B, N), acc, s)``: ``acc`` is ``(B, N, K)`` (MEAN) or ``(B, N, D)`` (GRAD:
    ``sum_j w_ij u_j G_ij (x_i - y_j)``), ``s`` is ``(B, N)`` (COST: ``sum_j w_ij r_ij^p``; GRAD: ``sum_j w_ij u_j``).
    """
    xp, yp = op._xp, op._yp
    B, D, N = xp.shape
    M = yp.shape[2]
    dt, dev = xp.dtype, xp.device
    out = torch.empty(B, N, dtype=dt, device=dev)
    acc = s = None
    if mode in (_k.COST, _k.GRAD):
        s = torch.empty(B, N, dtype=dt, device=dev)
    nch = v.shape[2] if mode == _k.MEAN else D if mode == _k.GRAD else 1
    if mode in (_k.MEAN, _k.GRAD):
        acc = torch.empty(B, N, nch, dtype=dt, device=dev)
    if B * N == 0:
        return out, acc, s
    const, (warps, stages) = _launch_config(op, mode, nch)
    bn = const["BLOCK_N"]
    blocks = op.blocks
    if blocks is None:
        work = rows = cptr = rng = xp
        n_tiles = triton_cdiv(N, bn)
    else:
        work, rows, cptr, rng = _sparse_arrays(blocks, bn, dev)
        n_tiles = work.shape[0] // 2
    if n_tiles == 0:
        return out, acc, s
    pk2 = const["PK"] == 2
    scalars = (*_split(op.cost.scale / eps * _LOG2E), *_split(op.cost.p / 2.0), *_split(om * _LN2))
    for b0, b1 in _batch_chunks(B, dev):
        xb = xp[b0:b1]
        args = [xb, yp[b0:b1], op._xn[b0:b1] if pk2 else xb, op._yn[b0:b1] if pk2 else xb, h[b0:b1],
                xb if v is None else v[b0:b1], xb if u is None else u[b0:b1], out[b0:b1],
                out[b0:b1] if acc is None else acc[b0:b1], out[b0:b1] if s is None else s[b0:b1]]
        _k.reduce_program[(n_tiles, b1 - b0, triton_cdiv(nch, const["BLOCK_K"]))](
            *args, work, rows, cptr, rng, N, M, nch, *scalars,
            HAS_U=u is not None, num_warps=warps, num_stages=stages, **const)
    return out, acc, s


#: CUDA's limit on the second grid dimension (the batch): larger batches are launched in chunks
_MAX_GRID_Y = 65535


def _batch_chunks(B: int, device: torch.device):
    """``(b0, b1)`` batch slices of at most :data:`_MAX_GRID_Y`, iterated with ``device`` current (Triton
    launches on the current CUDA device)."""
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        for b0 in range(0, B, _MAX_GRID_Y):
            yield b0, min(B, b0 + _MAX_GRID_Y)


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _kernel_tiles(op: TritonOperator, grad: bool = False) -> tuple[int, int, int, int, tuple, int]:
    """Tiles of the kernel sums (no log-sum-exp): ``bn, bm, warps, stages``, the sparse arrays, row tiles."""
    xp = op._xp
    D, N = xp.shape[1], xp.shape[2]
    fp64 = xp.dtype == torch.float64
    if _k.INTERPRETED:
        bn, bm, warps, stages = 16, 32, 4, 1
    elif not grad:
        bn, bm, warps, stages = (32 if fp64 else 64), 32, 4, 2
    elif fp64:  # (BLOCK_N, BLOCK_M, BLOCK_K) broadcasts
        bn, bm, warps, stages = 16, 16, 4, 1
    else:
        bn, bm, warps, stages = 32, 32, (8 if D >= 64 else 4), 2
    if op.blocks is None:
        return bn, bm, warps, stages, (xp, xp, xp, xp), triton_cdiv(N, bn)
    arrays = _sparse_arrays(op.blocks, bn, xp.device)
    return bn, bm, warps, stages, arrays, arrays[0].shape[0] // 2


def _launch_kernel_apply(op: TritonOperator, kind: int, s: float, v: torch.Tensor) -> torch.Tensor:
    """``out_i = sum_j k(x_i, y_j) v_j`` (``kind`` 0 gaussian ``exp(-s r^2)``, 1 ``exp(-s r)``, 2 ``-r``)."""
    xp, yp = op._xp, op._yp
    B, D, N = xp.shape
    M = yp.shape[2]
    out = torch.empty(B, N, dtype=xp.dtype, device=xp.device)
    bn, bm, warps, stages, arrays, n_tiles = _kernel_tiles(op)
    if B * n_tiles == 0:
        return out
    for b0, b1 in _batch_chunks(B, xp.device):
        _k.kernel_apply_program[(n_tiles, b1 - b0)](
            xp[b0:b1], yp[b0:b1], v[b0:b1], out[b0:b1], *arrays, N, M, *_split(s), D=D, BLOCK_N=bn, BLOCK_M=bm,
            KIND=kind, SPARSE=op.blocks is not None, num_warps=warps, num_stages=stages)
    return out


def _kernel_grad(op: TritonOperator, kind: int, s: float, v: torch.Tensor) -> torch.Tensor:
    """``sum_j v_j W_ij (x_i - y_j)``, ``(B, N, D)``, ``W = k'(r) / r``: the kernel sums' gradient."""
    xp, yp = op._xp, op._yp
    B, D, N = xp.shape
    M = yp.shape[2]
    acc = torch.empty(B, N, D, dtype=xp.dtype, device=xp.device)
    bn, bm, warps, stages, arrays, n_tiles = _kernel_tiles(op, grad=True)
    if B * n_tiles == 0:
        return acc
    fp64 = xp.dtype == torch.float64
    acc_dot = not fp64 or FP64_DOT
    block_k = min(max(16, _pow2(D)), 64) if acc_dot else min(_pow2(D), 8)
    for b0, b1 in _batch_chunks(B, xp.device):
        _k.kernel_grad_program[(n_tiles, b1 - b0, triton_cdiv(D, block_k))](
            xp[b0:b1], yp[b0:b1], v[b0:b1], acc[b0:b1], *arrays, N, M, *_split(s), D=D, BLOCK_N=bn, BLOCK_M=bm,
            BLOCK_K=block_k, KIND=kind, SPARSE=op.blocks is not None, ACC_DOT=acc_dot,
            ACC_PREC=_precisions(False, fp64)[1], num_warps=warps, num_stages=stages)
    return acc


# ------------------------------------------------------------------------------------------ autograd
class _Softmin(torch.autograd.Function):
    """``f_i = -eps log sum_j exp(h_j - C_ij / eps)`` with fused first-order gradients.

    ``w_ij = exp(h_j - C_ij / eps + f_i / eps)``, ``dC/dx = scale p G (x - y)``: ``df_i/dx_i = sum_j w_ij dC/dx``
    (accumulated by the forward pass), ``sum_i g_i df_i/dy_j = -sum_i g_i w_ij dC/dx`` and
    ``sum_i g_i df_i/dh_j = -eps sum_i g_i w_ij`` (one transposed pass with offsets ``f_i / eps``).
    """

    @staticmethod
    def forward(ctx, x, y, h, op: TritonOperator, eps: float):  # noqa: D401
        hd = op._h(h)
        if ctx.needs_input_grad[0]:
            f, acc, _ = _reduce(op, hd, eps, _k.GRAD, -eps)
        else:
            f, acc = _reduce(op, hd, eps, _k.LSE, -eps)[0], None
        ctx.op, ctx.eps = op, eps
        ctx.save_for_backward(f, hd, acc)
        return f

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_f):
        f, hd, acc = ctx.saved_tensors
        op, eps = ctx.op, ctx.eps
        k = op.cost.scale * op.cost.p
        g = grad_f.detach().to(f.dtype).contiguous()
        gx = gy = gh = None
        if ctx.needs_input_grad[0]:
            gx = (k * g)[..., None] * acc
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            # rows y_j, columns x_i with offsets f_i / eps: exp(h_j + lse'_j) * softmax'_i = w_ij
            lse_t, acc_t, s_t = _reduce(op.transpose(), (f / eps).contiguous(), eps, _k.GRAD, 1.0, u=g)
            mass = torch.exp(hd + lse_t)
            if ctx.needs_input_grad[1]:
                gy = k * mass[..., None] * acc_t
            if ctx.needs_input_grad[2]:
                gh = -eps * mass * s_t
        return gx, gy, gh, None, None


class _KernelApply(torch.autograd.Function):
    """``out_i = sum_j k(x_i, y_j) v_j`` with fused first-order gradients (``W = k'(r) / r``):
    ``d/dx_i = g_i sum_j v_j W_ij (x_i - y_j)``, ``d/dy_j = v_j sum_i g_i W_ij (y_j - x_i)``,
    ``d/dv_j = sum_i g_i k(x_i, y_j)`` (the last two: reductions of the transposed operator)."""

    @staticmethod
    def forward(ctx, x, y, v, op: TritonOperator, kind: int, s: float):  # noqa: D401
        vd = v.detach().to(op._xp.dtype).contiguous()
        ctx.op, ctx.kind, ctx.s = op, kind, s
        ctx.save_for_backward(vd)
        return _launch_kernel_apply(op, kind, s, vd)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (vd,) = ctx.saved_tensors
        op, kind, s = ctx.op, ctx.kind, ctx.s
        g = grad_out.detach().to(vd.dtype).contiguous()
        gx = gy = gv = None
        if ctx.needs_input_grad[0]:
            gx = g[..., None] * _kernel_grad(op, kind, s, vd)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            T = op.transpose()
            if ctx.needs_input_grad[1]:
                gy = vd[..., None] * _kernel_grad(T, kind, s, g)
            if ctx.needs_input_grad[2]:
                gv = _launch_kernel_apply(T, kind, s, g)
        return gx, gy, gv, None, None, None


# ------------------------------------------------------------------------------------------ operator
def _check_points(x: torch.Tensor, y: torch.Tensor) -> None:
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
        raise ValueError("the 'triton' backend takes torch tensors")
    if x.dim() != 3 or y.dim() != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(f"expected x (B, N, D) and y (B, M, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dtype not in (torch.float32, torch.float64) or y.dtype != x.dtype:
        raise ValueError(f"the 'triton' backend needs float32 or float64 points of one dtype, got {x.dtype} and "
                         f"{y.dtype}")
    if x.device != y.device:
        raise ValueError(f"x is on {x.device} but y is on {y.device}: the 'triton' backend needs one device")
    if x.device.type == "cpu":
        if not _k.INTERPRETED:
            raise ValueError("the 'triton' backend runs on CUDA tensors (CPU tensors only under TRITON_INTERPRET=1); "
                             "use backend='cpu' for CPU tensors")
    elif x.device.type != "cuda":
        raise ValueError(f"the 'triton' backend runs on CUDA tensors, got {x.device}")


class TritonOperator:
    """Rows ``x (B, N, D)``, columns ``y (B, M, D)`` on a CUDA device; reductions over ``j`` by Triton kernels.

    Same interface as :class:`~otpipe.geometry.backends.tensorized.DenseOperator`, plus :meth:`softmin_both`.

    Parameters
    ----------
    x, y : torch.Tensor
        Points, float32 or float64, on one CUDA device (CPU only under ``TRITON_INTERPRET=1``).
    cost : Cost
        The ground cost.
    blocks : otpipe.geometry.backends.cpu.Blocks, optional
        Block-sparsity pattern of a single (``B = 1``) cluster-sorted pair: every reduction visits only
        the kept cluster pairs.
    tf32 : bool, optional
        TF32 ``<x, y>`` tiles (float32, ``p = 2``, ``8 <= D <= 128``); default :data:`ALLOW_TF32` or
        ``OTPIPE_TF32=1``. See the module doc for the error.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, cost: Cost, blocks=None, tf32: bool | None = None,
                 _planes: tuple | None = None):
        _check_points(x, y)
        if not (cost.p > 0 and math.isfinite(cost.p)):
            raise ValueError(f"the 'triton' backend needs a cost exponent p > 0, got {cost.p}")
        if blocks is not None:
            if x.shape[0] != 1:
                raise ValueError(f"block-sparse Triton reductions take one pair (B = 1), got B = {x.shape[0]}")
            if int(blocks.rows[-1]) != x.shape[1] or int(blocks.cols[-1]) != y.shape[1]:
                raise ValueError(f"block pattern for {int(blocks.rows[-1])} x {int(blocks.cols[-1])} points used on "
                                 f"{x.shape[1]} x {y.shape[1]}")
        self.x, self.y, self.cost, self.blocks = x, y, cost, blocks
        self.tf32 = _tf32_default() if tf32 is None else bool(tf32)
        if _planes is None:
            _planes = _make_planes(x, y)
        self._xp, self._yp, self._xn, self._yn = _planes

    def transpose(self) -> TritonOperator:
        """The operator with rows and columns exchanged (``y`` as rows, ``x`` as columns).

        It shares the prepared coordinate planes; block patterns are transposed too.

        Returns
        -------
        TritonOperator
            The transposed operator, on the same cost.
        """
        return TritonOperator(self.y, self.x, self.cost, None if self.blocks is None else self.blocks.transpose(),
                              tf32=self.tf32, _planes=(self._yp, self._xp, self._yn, self._xn))

    # ---------------------------------------------------------------- helpers
    def _h(self, h: torch.Tensor, n: int | None = None) -> torch.Tensor:
        shape = (self.y.shape[0], self.y.shape[1] if n is None else n)
        if tuple(h.shape) != shape:
            raise ValueError(f"h must have shape {shape}, got {tuple(h.shape)}")
        if h.device != self.x.device:
            raise ValueError(f"h is on {h.device} but the points are on {self.x.device}")
        return h.detach().to(self._xp.dtype).contiguous()

    def _needs_grad(self, *extra: torch.Tensor) -> bool:
        return torch.is_grad_enabled() and any(t.requires_grad for t in (self.x, self.y, *extra))

    def _dense(self):
        from otpipe.geometry.backends._limits import AUTO_DENSE_MAX_ENTRIES
        from otpipe.geometry.backends.tensorized import DenseOperator

        B, N, M = self.x.shape[0], self.x.shape[1], self.y.shape[1]
        if self.blocks is not None or B * N * M > AUTO_DENSE_MAX_ENTRIES:
            raise NotImplementedError("the 'triton' backend differentiates softmin and kernel_apply; softmax_mean "
                                      "and softmax_cost with inputs that require grad run dense, up to "
                                      f"{AUTO_DENSE_MAX_ENTRIES:,} entries and without blocks: detach the inputs")
        return DenseOperator(self.x, self.y, self.cost)

    # ---------------------------------------------------------------- reductions
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
            return _Softmin.apply(self.x, self.y, h, self, eps)
        return _reduce(self, self._h(h), eps, _k.LSE, -eps)[0]

    def softmin_both(self, eps: float, h_y: torch.Tensor, h_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both half-steps of a symmetric Sinkhorn update in one kernel launch.

        ``f = softmin`` over the columns with offsets ``h_y`` and ``g = softmin`` over the rows with offsets ``h_x``:
        the same as ``(self.softmin(eps, h_y), self.transpose().softmin(eps, h_x))`` (which it runs under autograd).

        Parameters
        ----------
        eps : float
            Temperature.
        h_y : torch.Tensor
            ``(B, M)`` column offsets.
        h_x : torch.Tensor
            ``(B, N)`` row offsets.

        Returns
        -------
        f : torch.Tensor
            ``(B, N)``.
        g : torch.Tensor
            ``(B, M)``.
        """
        eps = float(eps)
        if self._needs_grad(h_y, h_x):
            return self.softmin(eps, h_y), self.transpose().softmin(eps, h_x)
        hy, hx = self._h(h_y), self._h(h_x, self.x.shape[1])
        xp, yp = self._xp, self._yp
        B, D, N = xp.shape
        M = yp.shape[2]
        f = torch.empty(B, N, dtype=xp.dtype, device=xp.device)
        g = torch.empty(B, M, dtype=xp.dtype, device=xp.device)
        const, (warps, stages) = _launch_config(self, _k.LSE)
        for key in ("BLOCK_K", "MODE", "ACC_DOT", "ACC_PREC"):
            del const[key]
        bn = const["BLOCK_N"]
        if self.blocks is None:
            wa = ra = ca = ga = wb = rb = cb = gb = xp
            n_a, n_b = triton_cdiv(N, bn), triton_cdiv(M, bn)
        else:
            wa, ra, ca, ga = _sparse_arrays(self.blocks, bn, xp.device)
            wb, rb, cb, gb = _sparse_arrays(self.blocks.transpose(), bn, xp.device)
            n_a, n_b = wa.shape[0] // 2, wb.shape[0] // 2
        if B * (n_a + n_b) == 0:
            return f, g
        pk2 = const["PK"] == 2
        for b0, b1 in _batch_chunks(B, xp.device):
            xb, yb = xp[b0:b1], yp[b0:b1]
            _k.both_program[(n_a + n_b, b1 - b0)](
                xb, yb, self._xn[b0:b1] if pk2 else xb, self._yn[b0:b1] if pk2 else xb, hy[b0:b1], hx[b0:b1],
                f[b0:b1], g[b0:b1], wa, ra, ca, ga, wb, rb, cb, gb, N, M, n_a,
                *_split(self.cost.scale / eps * _LOG2E), *_split(self.cost.p / 2.0), *_split(-eps * _LN2),
                num_warps=warps, num_stages=stages, **const)
        return f, g

    def softmax_mean(self, eps: float, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Softmax-weighted mean of column values, ``sum_j softmax_j(h_j - C_ij / eps) v_j``.

        Not differentiable: under autograd, the dense operator for small problems without blocks.

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
            return self._dense().softmax_mean(eps, h, v)
        B, M = self.y.shape[0], self.y.shape[1]
        if v.dim() != 3 or v.shape[:2] != (B, M):
            raise ValueError(f"v must have shape ({B}, {M}, K), got {tuple(v.shape)}")
        vd = v.detach().to(device=self._xp.device, dtype=self._xp.dtype).contiguous()
        return _reduce(self, self._h(h), eps, _k.MEAN, 1.0, v=vd)[1]

    def softmax_cost(self, eps: float, h: torch.Tensor) -> torch.Tensor:
        """Softmax-weighted mean cost per row, ``sum_j softmax_j(h_j - C_ij / eps) C_ij``.

        Not differentiable: under autograd, the dense operator for small problems without blocks.

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
            return self._dense().softmax_cost(eps, h)
        s = _reduce(self, self._h(h), eps, _k.COST, 1.0)[2]
        return s.mul_(self.cost.scale) if self.cost.scale != 1.0 else s

    def dense_cost(self) -> torch.Tensor:
        """The cost matrix ``C(x_i, y_j)``, materialised (small problems: tests, plans).

        Returns
        -------
        torch.Tensor
            ``(B, N, M)``.
        """
        return self.cost.dense(self.x, self.y)

    def kernel_apply(self, kernel: str, sigma: float, v: torch.Tensor) -> torch.Tensor:
        """Kernel product ``sum_j k(x_i, y_j) v_j``.

        Differentiable w.r.t. ``x``, ``y`` and ``v`` (first order, fused kernels).

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
        kinds = {"gaussian": 0, "laplacian": 1, "energy": 2}
        if kernel not in kinds:
            raise ValueError(f"unknown kernel {kernel!r}")
        B, M = self.y.shape[0], self.y.shape[1]
        if tuple(v.shape) != (B, M):
            raise ValueError(f"v must have shape ({B}, {M}), got {tuple(v.shape)}")
        if v.device != self.x.device:
            raise ValueError(f"v is on {v.device} but the points are on {self.x.device}")
        sig = float(sigma)
        kind = kinds[kernel]
        s = 0.5 / (sig * sig) if kind == 0 else 1.0 / sig
        if self._needs_grad(v):
            return _KernelApply.apply(self.x, self.y, v, self, kind, s)
        return _launch_kernel_apply(self, kind, s, v.detach().to(self._xp.dtype).contiguous())


def _make_planes(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Centred coordinate planes ``(B, D, N)``, ``(B, D, M)`` and squared norms ``(B, N)``, ``(B, M)``."""
    same = x is y or (x.data_ptr() == y.data_ptr() and x.shape == y.shape and x.stride() == y.stride())
    with torch.no_grad():
        xd, yd = x.detach(), y.detach()
        shift = xd.mean(1, keepdim=True) if same else 0.5 * (xd.mean(1, keepdim=True) + yd.mean(1, keepdim=True))
        xc = xd - shift
        yc = xc if same else yd - shift
        xp = xc.transpose(1, 2).contiguous()
        yp = xp if same else yc.transpose(1, 2).contiguous()
        xn = (xc * xc).sum(-1)
        yn = xn if same else (yc * yc).sum(-1)
    return xp, yp, xn, yn


def operator(x: torch.Tensor, y: torch.Tensor, cost: Cost, blocks=None, tf32: bool | None = None) -> TritonOperator:
    """Triton operator with rows ``x`` and columns ``y`` (block-sparse with ``blocks``).

    Parameters
    ----------
    x : torch.Tensor
        Points of the rows, ``(B, N, D)``.
    y : torch.Tensor
        Points of the columns, ``(B, M, D)``.
    cost : Cost
        The ground cost.
    blocks : otpipe.geometry.backends.cpu.Blocks or None, default None
        Block-sparsity pattern of a single (``B = 1``) cluster-sorted pair.
    tf32 : bool or None, default None
        TF32 ``<x, y>`` tiles (float32, ``p = 2``); ``None``: :data:`ALLOW_TF32` or ``OTPIPE_TF32=1``.

    Returns
    -------
    TritonOperator
        The operator.
    """
    return TritonOperator(x, y, cost, blocks, tf32=tf32)


def fused_loop(x: torch.Tensor, y: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor | None, la: torch.Tensor,
               lb: torch.Tensor | None, cost: Cost, schedule, damping, *, converging: dict | None = None,
               rho: float | None = None, threads: int | None = None) -> tuple:
    """The whole fixed eps-scaling of a batch of small problems in one launch: one Triton program per problem.

    Same contract as :func:`otpipe.geometry.backends.cpu.fused_loop` (the fixed schedule only): each program
    computes its ``r^p`` tile once, keeps it and the potentials on chip for every temperature, and writes the
    potentials after the loop and after the extrapolation.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, N, D)`` rows, float32 or float64 (CUDA; CPU under ``TRITON_INTERPRET=1``), ``N <=``
        :data:`FUSED_MAX_POINTS`.
    y : torch.Tensor or None
        ``(B, M, D)`` columns; ``None``: symmetric problems.
    a, b : torch.Tensor
        Weights (unused: the log-weights carry the padding).
    la, lb : torch.Tensor
        Log-weights (:func:`otpipe.problems.measures.log_weights`).
    cost : Cost
        The ground cost.
    schedule : sequence of float
        The temperatures.
    damping : sequence of float
        The damping factor of each temperature.
    converging : dict or None, default None
        Must be ``None`` (the converging mode runs on the general path on GPUs).
    rho : float or None, default None
        Not used by the fixed schedule.
    threads : int or None, default None
        Not used (the signature is the CPU kernel's).

    Returns
    -------
    f, g, fe, ge : torch.Tensor
        Potentials after the loop and extrapolated (``g is f``, ``ge is fe`` when symmetric).
    n_iter : torch.Tensor
        ``(B,)`` int64, the number of temperatures.

    Raises
    ------
    ValueError
        On the converging mode, measures above :data:`FUSED_MAX_POINTS` points, or points the backend cannot take.
    """
    if converging is not None:
        raise ValueError("the Triton fused loop runs the fixed schedule only (tol=None)")
    sym = y is None
    _check_points(x, x if sym else y)
    B, N, D = x.shape
    M = N if sym else y.shape[1]
    if max(N, M) > FUSED_MAX_POINTS:
        raise ValueError(f"the Triton fused loop takes measures of at most {FUSED_MAX_POINTS} points, got {max(N, M)}")
    dt = x.dtype
    dev = x.device
    xc = x.detach().contiguous()
    yc = xc if sym else y.detach().to(dt).contiguous()
    lac = la.detach().to(dt).contiguous()
    lbc = lac if sym else lb.detach().to(dt).contiguous()
    eps = torch.tensor([float(e) for e in schedule], dtype=dt, device=dev)
    damp = torch.tensor([float(v) for v in damping], dtype=dt, device=dev)
    f = torch.empty(B, N, dtype=dt, device=dev)
    fe = torch.empty(B, N, dtype=dt, device=dev)
    g = f if sym else torch.empty(B, M, dtype=dt, device=dev)
    ge = fe if sym else torch.empty(B, M, dtype=dt, device=dev)
    n_iter = torch.full((B,), len(eps), dtype=torch.int64, device=dev)
    if B == 0:
        return f, g, fe, ge, n_iter
    p = float(cost.p)
    pk = 2 if p == 2.0 else 1 if p == 1.0 else 3 if p == 1.5 else 0
    bn = max(16, _triton.next_power_of_2(N))
    bm = bn if sym else max(16, _triton.next_power_of_2(M))
    _k.fused_loop_program[(B,)](xc, yc, lac, lbc, eps, damp, f, g, fe, ge, N, M, len(eps), float(cost.scale),
                                0.5 * p, D=D, PK=pk, SYM=sym, BLOCK_N=bn, BLOCK_M=bm,
                                num_warps=8 if bn * bm > 4096 else 4)
    return f, g, fe, ge, n_iter
