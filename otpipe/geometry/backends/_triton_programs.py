"""Triton programs of the ``triton`` backend (imported only by :mod:`otpipe.geometry.backends.triton`).

One program owns a tile of ``BLOCK_N`` rows and streams the columns in tiles of ``BLOCK_M`` (dense: all of
``[0, M)``; block-sparse: the column ranges of the row tile's cluster), keeping a running maximum ``m_i``
and sum ``l_i`` of ``exp2(t_ij - m_i)`` (online log-sum-exp), and by mode a running, rescaled,
softmax-weighted sum. Points are stored as coordinate planes ``(B, D, N)``, so that one coordinate of a
tile is one coalesced load.

Exponents ``t_ij`` are in base 2 (the inner loop calls ``exp2`` on ``t - m`` with no extra multiply;
``log2 e`` is folded into ``c`` and into the offsets once per column tile; float64 ``exp2`` is as exact as
``exp``):

* ``p = 2``: ``t_ij = 2 c <x_i, y_j> + (h_j - c |y_j|^2)``, the row constant ``-c |x_i|^2`` added after
  the sum (``c = log2(e) scale / eps``). ``<x_i, y_j>`` is one ``tl.dot`` of the tiles when ``USE_DOT``,
  an unrolled sum of products otherwise;
* other ``p``: ``t_ij = h_j - c r_ij^p`` with ``r_ij^2`` summed from coordinate differences and
  ``r^p = exp2(p/2 log2 r^2)`` (``r = 0`` gives 0).

Without ``tl.dot`` the tile layout spreads each row over the 32 lanes of a warp, so the per-tile row max
and sum would cost cross-lane shuffles on every tile (three times the work of the ``exp2`` by a static
count of the sm_90 code). The log-sum-exp mode then keeps a running max and sum per tile *entry*
(``e = exp2(-|t - m|)`` rescales either the sum or the new term: still one ``exp2`` per pair) and reduces
over the columns once, after the loop.

Modes: ``LSE`` (log-sum-exp only), ``MEAN`` (``sum_j w_ij v_j``), ``COST`` (``sum_j w_ij r_ij^p``, the cost
without its scale), ``GRAD`` (``sum_j w_ij u_j G_ij (x_i - y_j)`` on ``D`` channels and ``sum_j w_ij u_j``,
``G = r^(p-2)``, 0 at ``r = 0``; the softmin gradients), all normalised by ``l_i`` (0 for rows that see
no column). Weighted sums are ``tl.dot`` tiles when ``ACC_DOT`` (``x_i sum_j Q_ij - sum_j Q_ij y_j`` for
GRAD), otherwise ``(BLOCK_N, BLOCK_M, BLOCK_K)`` broadcasts in the direct form ``sum_j Q_ij (x_i - y_j)``.
Channels beyond ``BLOCK_K`` are split over the third grid axis (the exponents are recomputed per chunk).

Float scalars reach a Triton kernel as float32; those that must be exact in float64 (``c``, ``p / 2``,
output factors) are passed as a float32 pair ``hi + lo`` (48 significant bits). Module-level constants
used inside kernels are ``tl.constexpr`` (compiled Triton reads no other globals).
"""
from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["reduce_program", "both_program", "kernel_apply_program", "kernel_grad_program", "fused_loop_program", "LSE",
           "MEAN", "COST", "GRAD", "INTERPRETED"]

#: reduction modes (host side)
LSE, MEAN, COST, GRAD = 0, 1, 2, 3
# the same inside kernels (Triton reads only constexpr globals)
_LSE, _MEAN, _COST, _GRAD = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2), tl.constexpr(3)
#: running-max start: finite (no ``-inf - -inf``), below any real exponent and below the padding
#: offset ``-1e30 log2 e``; columns outside the tile are ``-inf`` and contribute exactly 0
_NEG = tl.constexpr(-3.0e38)


@triton.jit
def _const(hi, lo, DT: tl.constexpr):
    """A float64-exact scalar from its float32 pair (the pair sum rounds to ``hi`` in float32)."""
    return tl.cast(hi, DT) + tl.cast(lo, DT)


@triton.jit
def _dot(a, b, PREC: tl.constexpr):
    """``a @ b`` with float32 inputs as IEEE float32 (0), TF32 (1) or three TF32 products (3, ~float32 error)."""
    if PREC == 1:
        return tl.dot(a, b, input_precision="tf32")
    elif PREC == 3:
        return tl.dot(a, b, input_precision="tf32x3")
    else:
        return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _bounds(pid, N, work_ptr, rows_ptr, cptr_ptr, BLOCK_N: tl.constexpr, SPARSE: tl.constexpr):
    """First row, end of the row's cluster, and the cluster's slice ``[q0, q1)`` of column ranges."""
    if SPARSE:
        row0 = tl.load(work_ptr + 2 * pid)
        clus = tl.load(work_ptr + 2 * pid + 1)
        row_end = tl.load(rows_ptr + clus + 1)
        q0 = tl.load(cptr_ptr + clus)
        q1 = tl.load(cptr_ptr + clus + 1)
    else:
        row0 = pid * BLOCK_N
        row_end = N
        q0 = 0
        q1 = 1
    return row0, row_end, q0, q1


@triton.jit
def _col_range(q, M, rng_ptr, SPARSE: tl.constexpr):
    if SPARSE:
        js = tl.load(rng_ptr + 2 * q)
        je = tl.load(rng_ptr + 2 * q + 1)
    else:
        js = 0
        je = M
    return js, je


@triton.jit
def _sqdist(xb, yb, rows, cols, rmask, cmask, N, M, DT: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr,
            BLOCK_M: tl.constexpr):
    """``(BLOCK_N, BLOCK_M)`` tile of ``|x_i - y_j|^2`` from coordinate differences."""
    s = tl.zeros((BLOCK_N, BLOCK_M), DT)
    for d in range(D):
        xk = tl.load(xb + d * N + rows, mask=rmask, other=0.0)
        yk = tl.load(yb + d * M + cols, mask=cmask, other=0.0)
        dk = xk[:, None] - yk[None, :]
        s += dk * dk
    return s


@triton.jit
def _body(pid, b, kc, x_ptr, y_ptr, xn_ptr, yn_ptr, h_ptr, v_ptr, u_ptr, out_ptr, acc_ptr, s_ptr,
          work_ptr, rows_ptr, cptr_ptr, rng_ptr, N, M, K,
          c_hi, c_lo, ph_hi, ph_lo, om_hi, om_lo,
          D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
          BLOCK_K: tl.constexpr, MODE: tl.constexpr, PK: tl.constexpr, USE_DOT: tl.constexpr,
          ACC_DOT: tl.constexpr, PREC: tl.constexpr, ACC_PREC: tl.constexpr, HAS_U: tl.constexpr, SPARSE: tl.constexpr,
          ELEMWISE: tl.constexpr):
    """One row tile: online log-sum-exp over its columns and the mode's weighted sums (see module doc)."""
    DT = x_ptr.dtype.element_ty
    # (helpers are inlined here: each call of a jitted helper costs the interpreter milliseconds)
    c = tl.cast(c_hi, DT) + tl.cast(c_lo, DT)  # log2(e) scale / eps
    ph = tl.cast(ph_hi, DT) + tl.cast(ph_lo, DT)  # p / 2
    l2e = tl.cast(1.4426950216293335, DT) + tl.cast(1.925963033500011e-08, DT)  # log2(e) as a float32 pair
    # the tile's first row, the end of its cluster, the cluster's slice [q0, q1) of column ranges
    row0, row_end, q0, q1 = _bounds(pid, N, work_ptr, rows_ptr, cptr_ptr, BLOCK_N, SPARSE)
    rows = row0 + tl.arange(0, BLOCK_N)
    rmask = rows < row_end
    b64 = b.to(tl.int64)
    xb = x_ptr + b64 * D * N
    yb = y_ptr + b64 * D * M
    hb = h_ptr + b64 * M
    ynb = yn_ptr + b64 * M
    dd = tl.arange(0, BLOCK_D)
    if USE_DOT:
        X = tl.load(xb + dd[None, :] * N + rows[:, None], mask=rmask[:, None] & (dd[None, :] < D), other=0.0)
    else:
        X = 0.0
    if PK == 2:
        xn = tl.load(xn_ptr + b64 * N + rows, mask=rmask, other=0.0)
    kk = kc * BLOCK_K + tl.arange(0, BLOCK_K)
    if MODE == _GRAD:
        kmask = kk < D
        Xc = tl.load(xb + kk[None, :] * N + rows[:, None], mask=rmask[:, None] & kmask[None, :], other=0.0)
    if MODE == _MEAN:
        kmask = kk < K
    m_i = tl.full([BLOCK_N], _NEG, DT)
    l_i = tl.zeros([BLOCK_N], DT)
    # ELEMWISE (log-sum-exp mode with sum-of-products tiles): a running max and sum per tile *entry*, reduced over
    # the columns once after the loop; no per-tile row reductions, whose cross-lane shuffles dominate
    # this tile layout (one exp2 per entry either way: e = exp2(-|t - m|) rescales the sum or the term)
    m_e = tl.full([BLOCK_N, BLOCK_M], _NEG, DT)
    l_e = tl.zeros([BLOCK_N, BLOCK_M], DT)
    acc = tl.zeros([BLOCK_N, BLOCK_K], DT)
    su = tl.zeros([BLOCK_N], DT)
    sg = tl.zeros([BLOCK_N], DT)
    for q in range(q0, q1):
        if SPARSE:
            js = tl.load(rng_ptr + 2 * q)
            je = tl.load(rng_ptr + 2 * q + 1)
        else:
            js = 0
            je = M
        for j0 in range(js, je, BLOCK_M):
            cols = j0 + tl.arange(0, BLOCK_M)
            cmask = cols < je
            h = tl.load(hb + cols, mask=cmask, other=float("-inf")) * l2e
            # pair term: <x_i, y_j> (p = 2) or |x_i - y_j|^2
            if USE_DOT:
                Yt = tl.load(yb + dd[:, None] * M + cols[None, :], mask=(dd[:, None] < D) & cmask[None, :], other=0.0)
                s = _dot(X, Yt, PREC)
            else:
                s = tl.zeros((BLOCK_N, BLOCK_M), DT)
                if D <= 8:  # unrolled, the row coordinates stay in registers
                    for d in tl.static_range(D):
                        xk = tl.load(xb + d * N + rows, mask=rmask, other=0.0)
                        yk = tl.load(yb + d * M + cols, mask=cmask, other=0.0)
                        if PK == 2:
                            s += xk[:, None] * yk[None, :]
                        else:
                            dk = xk[:, None] - yk[None, :]
                            s += dk * dk
                else:
                    for d in range(D):
                        xk = tl.load(xb + d * N + rows, mask=rmask, other=0.0)
                        yk = tl.load(yb + d * M + cols, mask=cmask, other=0.0)
                        if PK == 2:
                            s += xk[:, None] * yk[None, :]
                        else:
                            dk = xk[:, None] - yk[None, :]
                            s += dk * dk
            if PK == 2:
                yn = tl.load(ynb + cols, mask=cmask, other=0.0)
                t = s * (2.0 * c) + (h - c * yn)[None, :]
            else:
                if PK == 1:
                    rp = tl.sqrt(s)
                else:
                    pos = s > 0.0
                    lg = tl.log2(tl.where(pos, s, 1.0))  # log r^2, 0 where r = 0 (masked below)
                    rp = tl.where(pos, tl.exp2(ph * lg), 0.0)
                t = h[None, :] - c * rp
            if ELEMWISE:
                e = tl.exp2(-tl.abs(t - m_e))
                up = t > m_e
                l_e = tl.where(up, l_e * e, l_e + e) + tl.where(up, 1.0, 0.0)
                m_e = tl.maximum(m_e, t)
            else:
                m_new = tl.maximum(m_i, tl.max(t, 1))
                alpha = tl.exp2(m_i - m_new)
                P = tl.exp2(t - m_new[:, None])
                l_i = l_i * alpha + tl.sum(P, 1)
                m_i = m_new
            if MODE == _MEAN:
                V = tl.load(v_ptr + (b64 * M + cols[:, None]) * K + kk[None, :],
                            mask=cmask[:, None] & kmask[None, :], other=0.0)
                if ACC_DOT:
                    acc = acc * alpha[:, None] + _dot(P, V, ACC_PREC)
                else:
                    acc = acc * alpha[:, None] + tl.sum(P[:, :, None] * V[None, :, :], 1)
            if MODE == _COST:
                if PK == 2:
                    cst = tl.maximum(xn[:, None] + yn[None, :] - 2.0 * s, 0.0)
                else:
                    cst = rp
                su = su * alpha + tl.sum(P * cst, 1)
            if MODE == _GRAD:
                Q = P
                if HAS_U:
                    u = tl.load(u_ptr + b64 * M + cols, mask=cmask, other=0.0)
                    Q = Q * u[None, :]
                su = su * alpha + tl.sum(Q, 1)
                if PK == 1:
                    Q = tl.where(s > 0.0, Q / tl.where(s > 0.0, rp, 1.0), 0.0)
                if PK == 0:
                    Q = tl.where(pos, Q * tl.exp2((ph - 1.0) * lg), 0.0)
                Yc = tl.load(yb + kk[None, :] * M + cols[:, None], mask=cmask[:, None] & kmask[None, :], other=0.0)
                if ACC_DOT:
                    # sum_j Q_ij y_j; the x_i * sum_j Q_ij part is added after the loop
                    acc = acc * alpha[:, None] + _dot(Q, Yc, ACC_PREC)
                    sg = sg * alpha + tl.sum(Q, 1)
                else:
                    acc = acc * alpha[:, None] + tl.sum(Q[:, :, None] * (Xc[:, None, :] - Yc[None, :, :]), 1)
    if ELEMWISE:
        m_i = tl.max(m_e, 1)
        l_i = tl.sum(l_e * tl.exp2(m_e - m_i[:, None]), 1)
    lse = m_i + tl.log2(l_i)
    if PK == 2:
        lse = lse - c * xn
    om = tl.cast(om_hi, DT) + tl.cast(om_lo, DT)
    rb = b64 * N + rows
    inv = tl.where(l_i > 0.0, 1.0 / l_i, 0.0)  # rows that see no column (empty block rows): sums 0
    if kc == 0:
        tl.store(out_ptr + rb, lse * om, mask=rmask)
        if MODE == _COST or MODE == _GRAD:
            tl.store(s_ptr + rb, su * inv, mask=rmask)
    if MODE == _MEAN or MODE == _GRAD:
        if MODE == _MEAN:
            nch = K
        else:
            nch = D
        if MODE == _GRAD and ACC_DOT:
            acc = Xc * sg[:, None] - acc
        tl.store(acc_ptr + rb[:, None] * nch + kk[None, :], acc * inv[:, None], mask=rmask[:, None] & kmask[None, :])


@triton.jit
def reduce_program(x_ptr, y_ptr, xn_ptr, yn_ptr, h_ptr, v_ptr, u_ptr, out_ptr, acc_ptr, s_ptr,
                  work_ptr, rows_ptr, cptr_ptr, rng_ptr, N, M, K,
                  c_hi, c_lo, ph_hi, ph_lo, om_hi, om_lo,
                  D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
                  BLOCK_K: tl.constexpr, MODE: tl.constexpr, PK: tl.constexpr, USE_DOT: tl.constexpr,
                  ACC_DOT: tl.constexpr, PREC: tl.constexpr, ACC_PREC: tl.constexpr, HAS_U: tl.constexpr,
                  SPARSE: tl.constexpr, ELEMWISE: tl.constexpr):
    """Grid ``(row tiles, B, channel chunks)``; ``out_i = om * lse_i`` and the mode's sums."""
    _body(tl.program_id(0), tl.program_id(1), tl.program_id(2), x_ptr, y_ptr, xn_ptr, yn_ptr, h_ptr, v_ptr,
          u_ptr, out_ptr, acc_ptr, s_ptr, work_ptr, rows_ptr, cptr_ptr, rng_ptr, N, M, K,
          c_hi, c_lo, ph_hi, ph_lo, om_hi, om_lo, D, BLOCK_N, BLOCK_M, BLOCK_D, BLOCK_K, MODE, PK, USE_DOT,
          ACC_DOT, PREC, ACC_PREC, HAS_U, SPARSE, ELEMWISE)


@triton.jit
def both_program(x_ptr, y_ptr, xn_ptr, yn_ptr, hy_ptr, hx_ptr, f_ptr, g_ptr,
                work_a, rows_a, cptr_a, rng_a, work_b, rows_b, cptr_b, rng_b, N, M, n_a,
                c_hi, c_lo, ph_hi, ph_lo, om_hi, om_lo,
                D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
                PK: tl.constexpr, USE_DOT: tl.constexpr, PREC: tl.constexpr, SPARSE: tl.constexpr,
                ELEMWISE: tl.constexpr):
    """Both softmins of a cross problem in one launch: programs ``< n_a`` reduce the rows ``x`` over the
    columns ``y`` (offsets ``h_y``, output ``f``), the others the rows ``y`` over ``x`` (``h_x``, ``g``)."""
    pid = tl.program_id(0)
    b = tl.program_id(1)
    if pid < n_a:
        _body(pid, b, 0, x_ptr, y_ptr, xn_ptr, yn_ptr, hy_ptr, x_ptr, x_ptr, f_ptr, f_ptr, f_ptr,
              work_a, rows_a, cptr_a, rng_a, N, M, 1, c_hi, c_lo, ph_hi, ph_lo, om_hi, om_lo,
              D, BLOCK_N, BLOCK_M, BLOCK_D, 1, _LSE, PK, USE_DOT, False, PREC, 0, False, SPARSE, ELEMWISE)
    else:
        _body(pid - n_a, b, 0, y_ptr, x_ptr, yn_ptr, xn_ptr, hx_ptr, x_ptr, x_ptr, g_ptr, g_ptr, g_ptr,
              work_b, rows_b, cptr_b, rng_b, M, N, 1, c_hi, c_lo, ph_hi, ph_lo, om_hi, om_lo,
              D, BLOCK_N, BLOCK_M, BLOCK_D, 1, _LSE, PK, USE_DOT, False, PREC, 0, False, SPARSE, ELEMWISE)


@triton.jit
def kernel_apply_program(x_ptr, y_ptr, v_ptr, out_ptr, work_ptr, rows_ptr, cptr_ptr, rng_ptr, N, M, s_hi, s_lo,
                        D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, KIND: tl.constexpr,
                        SPARSE: tl.constexpr):
    """``out_i = sum_j k(x_i, y_j) v_j``; ``KIND`` 0: ``exp(-s r^2)``, 1: ``exp(-s r)``, 2: ``-r``."""
    DT = x_ptr.dtype.element_ty
    pid = tl.program_id(0)
    b64 = tl.program_id(1).to(tl.int64)
    sc = _const(s_hi, s_lo, DT)
    row0, row_end, q0, q1 = _bounds(pid, N, work_ptr, rows_ptr, cptr_ptr, BLOCK_N, SPARSE)
    rows = row0 + tl.arange(0, BLOCK_N)
    rmask = rows < row_end
    xb = x_ptr + b64 * D * N
    yb = y_ptr + b64 * D * M
    acc = tl.zeros([BLOCK_N, BLOCK_M], DT)  # per entry, summed over the columns after the loop
    for q in range(q0, q1):
        js, je = _col_range(q, M, rng_ptr, SPARSE)
        for j0 in range(js, je, BLOCK_M):
            cols = j0 + tl.arange(0, BLOCK_M)
            cmask = cols < je
            d2 = _sqdist(xb, yb, rows, cols, rmask, cmask, N, M, DT, D, BLOCK_N, BLOCK_M)
            v = tl.load(v_ptr + b64 * M + cols, mask=cmask, other=0.0)
            if KIND == 0:
                k = tl.exp(-sc * d2)
            elif KIND == 1:
                k = tl.exp(-sc * tl.sqrt(d2))
            else:
                k = -tl.sqrt(d2)
            acc += k * v[None, :]
    tl.store(out_ptr + b64 * N + rows, tl.sum(acc, 1), mask=rmask)


@triton.jit
def kernel_grad_program(x_ptr, y_ptr, v_ptr, acc_ptr, work_ptr, rows_ptr, cptr_ptr, rng_ptr, N, M, s_hi, s_lo,
                       D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
                       KIND: tl.constexpr, SPARSE: tl.constexpr, ACC_DOT: tl.constexpr, ACC_PREC: tl.constexpr):
    """``acc_i = sum_j v_j W_ij (x_i - y_j)`` with ``W = k'(r) / r`` (0 at ``r = 0`` for ``KIND`` 1, 2): the
    gradient of :func:`kernel_apply_program`. Grid ``(row tiles, B, channel chunks of BLOCK_K)``."""
    DT = x_ptr.dtype.element_ty
    pid = tl.program_id(0)
    b64 = tl.program_id(1).to(tl.int64)
    kk = tl.program_id(2) * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = kk < D
    sc = _const(s_hi, s_lo, DT)
    row0, row_end, q0, q1 = _bounds(pid, N, work_ptr, rows_ptr, cptr_ptr, BLOCK_N, SPARSE)
    rows = row0 + tl.arange(0, BLOCK_N)
    rmask = rows < row_end
    xb = x_ptr + b64 * D * N
    yb = y_ptr + b64 * D * M
    Xc = tl.load(xb + kk[None, :] * N + rows[:, None], mask=rmask[:, None] & kmask[None, :], other=0.0)
    acc = tl.zeros([BLOCK_N, BLOCK_K], DT)
    sw = tl.zeros([BLOCK_N], DT)
    for q in range(q0, q1):
        js, je = _col_range(q, M, rng_ptr, SPARSE)
        for j0 in range(js, je, BLOCK_M):
            cols = j0 + tl.arange(0, BLOCK_M)
            cmask = cols < je
            d2 = _sqdist(xb, yb, rows, cols, rmask, cmask, N, M, DT, D, BLOCK_N, BLOCK_M)
            v = tl.load(v_ptr + b64 * M + cols, mask=cmask, other=0.0)
            if KIND == 0:
                w = -2.0 * sc * tl.exp(-sc * d2)
            else:
                pos = d2 > 0.0
                r = tl.sqrt(tl.where(pos, d2, 1.0))
                if KIND == 1:
                    w = tl.where(pos, -sc * tl.exp(-sc * r) / r, 0.0)
                else:
                    w = tl.where(pos, -1.0 / r, 0.0)
            Q = w * v[None, :]
            Yc = tl.load(yb + kk[None, :] * M + cols[:, None], mask=cmask[:, None] & kmask[None, :], other=0.0)
            if ACC_DOT:
                acc += _dot(Q, Yc, ACC_PREC)
                sw += tl.sum(Q, 1)
            else:
                acc += tl.sum(Q[:, :, None] * (Xc[:, None, :] - Yc[None, :, :]), 1)
    if ACC_DOT:
        acc = Xc * sw[:, None] - acc
    tl.store(acc_ptr + (b64 * N + rows[:, None]) * D + kk[None, :], acc, mask=rmask[:, None] & kmask[None, :])


@triton.jit
def _fused_softmin(W, h, c, e, AXIS: tl.constexpr):
    """``-e log sum exp(h - c W)`` over ``AXIS`` of the ``(BLOCK_N, BLOCK_M)`` tile (``h`` broadcast along the other
    axis; entries outside the problem carry ``h = -inf`` and contribute exactly 0)."""
    if AXIS == 1:
        s = h[None, :] - c * W
        mx = tl.max(s, 1)
        return -e * (mx + tl.log(tl.sum(tl.exp(s - mx[:, None]), 1)))
    else:
        s = h[:, None] - c * W
        mx = tl.max(s, 0)
        return -e * (mx + tl.log(tl.sum(tl.exp(s - mx[None, :]), 0)))


@triton.jit
def fused_loop_program(x_ptr, y_ptr, la_ptr, lb_ptr, eps_ptr, damp_ptr, f_ptr, g_ptr, fe_ptr, ge_ptr, N, M, K, scale,
                       hp, D: tl.constexpr, PK: tl.constexpr, SYM: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_M: tl.constexpr):
    """The whole fixed eps-scaling of one small problem (``N <= BLOCK_N``, ``M <= BLOCK_M``): one program per
    problem, the cost tile ``W = r^p`` computed once and kept on chip, the averaged updates of every temperature,
    then the extrapolation (:func:`otpipe.geometry.backends.triton.fused_loop`). ``x (B, N, D)``, ``y (B, M, D)``
    row-major; log-weights ``(B, N)`` / ``(B, M)``; temperatures and damping ``(K,)`` in the points' dtype.
    ``PK``: 2 (p = 2), 1 (p = 1), 3 (p = 3/2), 0 (any p, ``hp = p / 2``). ``SYM``: ``y`` is ``x``, one potential."""
    b = tl.program_id(0).to(tl.int64)
    rows = tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_M)
    rmask = rows < N
    cmask = cols < M
    xb = x_ptr + b * N * D
    yb = y_ptr + b * M * D
    W = tl.zeros((BLOCK_N, BLOCK_M), x_ptr.dtype.element_ty)
    for d in range(D):
        xk = tl.load(xb + rows * D + d, mask=rmask, other=0.0)
        yk = tl.load(yb + cols * D + d, mask=cmask, other=0.0)
        dk = xk[:, None] - yk[None, :]
        W += dk * dk
    if PK == 1:
        W = tl.sqrt(W)
    elif PK == 3:
        W = tl.sqrt(W) * tl.sqrt(tl.sqrt(W))
    elif PK == 0:
        W = tl.where(W > 0, tl.exp(hp * tl.log(tl.where(W > 0, W, 1.0))), 0.0)
    la = tl.load(la_ptr + b * N + rows, mask=rmask, other=float("-inf"))
    lb = tl.load(lb_ptr + b * M + cols, mask=cmask, other=float("-inf"))
    e = tl.load(eps_ptr)
    d = tl.load(damp_ptr)
    c = scale / e
    f = d * _fused_softmin(W, lb, c, e, 1)
    g = f
    if not SYM:
        g = d * _fused_softmin(W, la, c, e, 0)
    for k in range(K):
        e = tl.load(eps_ptr + k)
        d = tl.load(damp_ptr + k)
        c = scale / e
        if SYM:
            ft = d * _fused_softmin(W, la + f / e, c, e, 1)
            f = 0.5 * (f + ft)
        else:
            ft = d * _fused_softmin(W, lb + g / e, c, e, 1)
            gt = d * _fused_softmin(W, la + f / e, c, e, 0)
            f = 0.5 * (f + ft)
            g = 0.5 * (g + gt)
    if SYM:
        fe = d * _fused_softmin(W, la + f / e, c, e, 1)
    else:
        fe = d * _fused_softmin(W, lb + g / e, c, e, 1)
        ge = d * _fused_softmin(W, la + f / e, c, e, 0)
        tl.store(g_ptr + b * M + cols, g, mask=cmask)
        tl.store(ge_ptr + b * M + cols, ge, mask=cmask)
    tl.store(f_ptr + b * N + rows, f, mask=rmask)
    tl.store(fe_ptr + b * N + rows, fe, mask=rmask)


#: whether these kernels run in Triton's interpreter (``TRITON_INTERPRET=1`` when they were defined)
INTERPRETED = "Interpreted" in type(reduce_program).__name__
