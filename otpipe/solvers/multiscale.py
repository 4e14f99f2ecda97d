"""Multiscale Sinkhorn driver (Schmitzer 2016): coarse eps-scaling on cluster centroids, a jump to the
points, and the end of the schedule with block-sparse (truncated) reductions.

With ``s`` the cluster scale (:mod:`otpipe.geometry.blocks`) and the temperatures of
:func:`~otpipe.solvers.sinkhorn.epsilon_schedule`:

1. the first temperatures run on the coarse measures (centroids, summed weights), with the same updates as the
   full solver (``_Cross`` / ``_Symmetric``, fixed schedule or converging mode), at most those with
   ``eps >= (s / 2)^p``. Converging mode: all of them (every later temperature is solved to its target, so the
   clusters' error does not last). Fixed schedule: the later averaged updates on the points do not erase the
   clusters' error, so the solver leaves the clusters at the last temperature whose jump is consistent enough
   on the points for the updates left (:func:`_jump_defect`, :data:`~otpipe.geometry.blocks.FIXED_TOL`); when
   even the first is not (blur comparable to the clusters, a short schedule), the full solver runs instead
   (every update would be on the points anyway);
2. jump: ``f_i = -eps log sum_J B_J exp((G_J - C(x_i, y_J)) / eps)`` (damped when unbalanced) extrapolates
   the coarse potentials to the points;
3. at each remaining temperature the kept cluster pairs are recomputed from the current potentials
   (:func:`~otpipe.geometry.blocks.block_mask`) and the updates run on those blocks only;
4. the final differentiable extrapolation (envelope gradients) uses the last blocks.

Reductions on the points run on the ``cpu`` backend's compiled block-sparse kernels for CPU tensors, with the
clustering and the masks computed on the CPU (``O(N)`` and ``O(n_I n_J)`` work); on CUDA tensors on the
``triton`` backend's block-sparse kernels, with the clustering, the masks and the patterns computed on the GPU
(:mod:`otpipe.geometry.blocks_device`): nothing goes back to the host but a few scalars.
:data:`otpipe.geometry.blocks.FINE_BACKEND` forces one (``"keops"``: KeOps ``ranges``, only when set there);
without any (no compiler on the CPU, no Triton on CUDA) the full ``chunked`` solver runs, with a warning.
Batches (``B > 1``) fall back to the full solver with a warning.
Memory: ``O((N + M) D + n_I n_J)``; nothing of size ``N x M`` is formed.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import warnings

import torch

from otpipe.geometry.backends import cpu
from otpipe.geometry import blocks as ms
from otpipe.geometry import blocks_device as msd
from otpipe.problems.measures import Pair, log_weights
from otpipe.solvers.loop import STAGE_TOL, DEFAULT_MAX_ITER, SinkhornParams, _Cross, _Symmetric, _damping, _iterate, _needs_grad, _resolve, run_full

__all__ = ["_multiscale_run"]

#: per-temperature progress (eps, share of point pairs kept, updates, seconds) at INFO level
log = logging.getLogger("otpipe.multiscale")


class _WarmCross(_Cross):
    """A cross problem whose potentials are already set (the jump): ``init`` keeps them."""

    def init(self, eps, d):
        pass


class _WarmSymmetric(_Symmetric):
    def init(self, eps, d):
        pass


class _Permuted:
    """An operator on sorted points seen in the original order: ``h`` in, results out."""

    def __init__(self, op, row_inv: torch.Tensor, col_perm: torch.Tensor):
        self.op, self.row_inv, self.col_perm = op, row_inv, col_perm

    def _call(self, name, eps, h, *rest):
        out = getattr(self.op, name)(eps, h[:, self.col_perm], *[v[:, self.col_perm] for v in rest])
        return out[:, self.row_inv]

    def softmin(self, eps, h):
        return self._call("softmin", eps, h)

    def softmax_cost(self, eps, h):
        return self._call("softmax_cost", eps, h)

    def softmax_mean(self, eps, h, v):
        return self._call("softmax_mean", eps, h, v)


class _View:
    """The final state of a problem in the original point order (what :mod:`otpipe.tools.losses` reads)."""


def _fallback(P: Pair, prm: SinkhornParams, why: str, backend: str, **kw):
    warnings.warn(f"multiscale backend: {why}; using the {backend!r} backend", RuntimeWarning, stacklevel=4)
    out = run_full(P, dataclasses.replace(prm, backend=backend), **kw)
    return out


def _fine_backend(device: torch.device) -> str | None:
    """Kernel family for the point-level reductions: ``"cpu"``, ``"triton"``, ``"keops"`` (only when
    :data:`~otpipe.geometry.blocks.FINE_BACKEND` asks for it), or ``None`` (none available)."""
    if ms.FINE_BACKEND is not None:
        if ms.FINE_BACKEND not in ("cpu", "triton", "keops"):
            raise ValueError(f"otpipe.geometry.blocks.FINE_BACKEND must be None, 'cpu', 'triton' or 'keops', "
                             f"got {ms.FINE_BACKEND!r}")
        return ms.FINE_BACKEND
    if device.type == "cpu":
        return "cpu" if cpu.available() else None
    from otpipe.geometry.backends import triton_error

    return "triton" if device.type == "cuda" and triton_error() is None else None


def _operator_class(kind: str):
    if kind == "cpu":
        return cpu.CpuOperator
    if kind == "triton":
        from otpipe.geometry.backends.triton import TritonOperator

        return TritonOperator
    from otpipe.geometry.backends.keops import KeOpsOperator

    return KeOpsOperator


class _HostGeometry:
    """Clusters and truncation masks computed on the CPU (compiled mask kernel), the pattern as
    :class:`~otpipe.geometry.backends.cpu.Blocks` (the ``cpu`` and KeOps point kernels)."""

    def __init__(self, device: torch.device):
        self.device = device

    def cluster(self, x: torch.Tensor, a: torch.Tensor, scale: float) -> "_OnDevice":
        return _OnDevice(ms.cluster(x.cpu(), a.cpu(), scale), self.device)

    def mask(self, c1, c2, f, g, eps, cost, truncate) -> torch.Tensor:
        return ms.block_mask(c1.c, c2.c, f, g, eps, cost, truncate)

    def blocks(self, c1, c2, mask: torch.Tensor | None):
        """The pattern of ``mask`` (``None``: every block)."""
        return cpu.Blocks(c1.bounds, c2.bounds, torch.ones(c1.n, c2.n, dtype=torch.bool) if mask is None else mask)


class _DeviceGeometry:
    """Everything on the points' device (:mod:`otpipe.geometry.blocks_device`): the ``triton`` point kernels."""

    def cluster(self, x: torch.Tensor, a: torch.Tensor, scale: float) -> ms.Clustering:
        return msd.cluster(x, a, scale)

    def mask(self, c1, c2, f, g, eps, cost, truncate) -> torch.Tensor:
        return msd.block_mask(c1, c2, f, g, eps, cost, truncate)

    def blocks(self, c1, c2, mask: torch.Tensor | None):
        if mask is None:
            mask = torch.ones(c1.n, c2.n, dtype=torch.bool, device=c1.bounds.device)
        return msd.DeviceBlocks(c1.bounds, c2.bounds, mask)


def _geometry(kind: str, device: torch.device):
    return _DeviceGeometry() if kind == "triton" else _HostGeometry(device)


class _OnDevice:
    """A CPU :class:`~otpipe.geometry.blocks.Clustering` with the tensors the solver indexes on ``device``."""

    def __init__(self, c: ms.Clustering, device: torch.device):
        self.c = c
        self.perm, self.inv = c.perm.to(device), c.inv.to(device)
        self.centers, self.weights = c.centers.to(device), c.weights.to(device)

    def __getattr__(self, name):  # bounds, labels, radius, n: the CPU clustering's
        return getattr(self.c, name)


def _n_coarse(schedule: list[float], s: float, p: float) -> int:
    """Most temperatures run on the clusters: those with ``eps >= (JUMP_FRACTION s)^p``, leaving at least one for
    the points (the fixed schedule may stop earlier: :func:`_jump_defect`)."""
    return sum(1 for e in schedule[:-1] if e >= (ms.JUMP_FRACTION * s) ** p)


#: rows of the points sampled to measure the jump's defect
DEFECT_SAMPLES = 512


def _jump_defect(name: str, cpb, c1, c2, pts1, pts2, lw1, lw2, eps: float, d: float, Op, cost) -> float:
    """What the clusters miss at temperature ``eps``, measured on the points: the jumped potentials' defect
    ``f - d T(g)`` on :data:`DEFECT_SAMPLES` rows, net of the coarse problem's own residual ``F_I - d T_c(G)_I``,
    as a root mean square in units of ``eps`` (the larger of the two sides for a cross problem). It vanishes
    when the clusters are the points and the coarse problem is solved; it is not zero along the fixed
    schedule's unconverged iterates, and the bound's constant was calibrated on it (netting out the clusters'
    own jump defect instead, zero for one-point clusters at any iterate, let 4,000 points at blur 0.01 end
    2.3e-4 from the full solve)."""
    sides = [(cpb.f, cpb.g if name == "xy" else cpb.f, c1, c2, pts1, pts2, lw2,
              cpb.op_xy if name == "xy" else cpb.op, cpb.lb if name == "xy" else cpb.la,
              cpb.la)]
    if name == "xy":
        sides.append((cpb.g, cpb.f, c2, c1, pts2, pts1, lw1, cpb.op_yx, cpb.la, cpb.lb))
    worst = 0.0
    for F, G, ca, cb, pa, pb_, lwb, op_c, lG, lF in sides:
        n = pa.shape[1]
        rows = torch.linspace(0, n - 1, min(n, DEFECT_SAMPLES), device=pa.device).round().long()
        f_s = d * Op(pa[:, rows], cb.centers[None], cost).softmin(eps, lG + G / eps)
        g_all = d * Op(pb_, ca.centers[None], cost).softmin(eps, lF + F / eps)
        tf_s = d * Op(pa[:, rows], pb_, cost).softmin(eps, lwb + g_all / eps)
        r = F - d * op_c.softmin(eps, lG + G / eps)  # the coarse level's own residual, per cluster
        defect = (f_s - tf_s) - r[:, ca.labels.to(r.device)[rows]]
        worst = max(worst, float(defect.double().pow(2).mean().sqrt()) / eps)
    return worst


def _full_instead(P: Pair, prm: SinkhornParams, kind: str, s: float, kw: dict):
    """No temperature can run on the clusters within the bound: every update would be on the points, where blocks
    of this scale keep (nearly) every pair at those temperatures; the full solve is that computation without the
    block bookkeeping (the result names the backend that ran)."""
    full = kind  # cpu, triton (CUDA) or keops (only when FINE_BACKEND asks for it)
    log.info("multiscale: no coarse temperature within the bound (scale %.3g, blur %.3g): full %r solve",
             s, prm.blur, full)
    return run_full(P, dataclasses.replace(prm, backend=full), **kw)


def _multiscale_run(P: Pair, prm: SinkhornParams, *, cross: bool, self_x: bool, self_y: bool):
    """Multiscale counterpart of :func:`otpipe.solvers.loop.run_full` (same inputs and output dict)."""
    B, N, M, D = P.shape
    kw = dict(cross=cross, self_x=self_x, self_y=self_y)
    if B != 1:
        return _fallback(P, prm, f"one pair at a time (got a batch of {B})",
                         "cpu" if P.x.device.type == "cpu" and cpu.available() else "auto", **kw)
    kind = _fine_backend(P.x.device)
    if kind is None:
        why = (f"the compiled kernels are unavailable ({cpu.build_error()})" if P.x.device.type == "cpu"
               else f"no block-sparse kernels for {P.x.device.type} tensors (Triton: pip install triton)")
        return _fallback(P, prm, why, "chunked", **kw)
    if kind == "cpu" and P.x.device.type != "cpu":
        raise ValueError(f"FINE_BACKEND='cpu' needs CPU tensors, got {P.x.device}")
    if P.x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"the 'multiscale' backend needs float32 or float64 points, got {P.x.dtype}")
    Op = _operator_class(kind)
    _, schedule = _resolve(P, prm, symmetric_only=not cross)
    truncate = ms.TRUNCATE if prm.truncate is None else prm.truncate
    cost, rho, p = prm.cost, prm.rho, prm.p
    x, y, a, b = P.x, P.y, P.a, P.b
    dev = x.device
    xd, yd, ad, bd = x.detach()[0], y.detach()[0], a.detach()[0], b.detach()[0]

    geo = _geometry(kind, dev)
    s = ms.default_scale(xd, yd) if prm.cluster_scale is None else prm.cluster_scale
    if D > 3 and prm.cluster_scale is not None:
        warnings.warn("cluster_scale is ignored for D > 3 (k-means clustering with about "
                      f"{ms.POINTS_PER_CLUSTER} points a cluster)", RuntimeWarning, stacklevel=4)
    fixed = prm.tol is None
    cx = geo.cluster(xd, ad, s) if (cross or self_x) else None
    cy = geo.cluster(yd, bd, s) if (cross or self_y) else None
    if D > 3:  # k-means: the scale is the clusters' typical size
        s = max(float(c.radius.max()) for c in (cx, cy) if c is not None)
    kj = _n_coarse(schedule, s, p)
    if kj == 0:  # a one-temperature schedule (blur ~ diameter), or clusters as large as the blur
        return _full_instead(P, prm, kind, s, kw)
    coarse, fine = schedule[:kj], schedule[kj:]
    cap = prm.max_iter if prm.max_iter is not None else DEFAULT_MAX_ITER
    tol = prm.tol

    def sorted_pts(c, pts, w):
        return pts[c.perm][None].contiguous(), w[c.perm][None].contiguous()

    names, fine_pbs, levels, n_coarse = [], [], [], []
    full_instead = False
    with torch.no_grad():
        if cross:
            names.append("xy")
            levels.append((cx, cy))
        if self_x:
            names.append("xx")
            levels.append((cx, cx))
        if self_y:
            names.append("yy")
            levels.append((cy, cy))
        pts = {id(cx): (xd, ad), id(cy): (yd, bd)}
        srt = {k: sorted_pts(c, *pts[id(c)]) for k, c in (("x", cx), ("y", cy)) if c is not None}
        key = {id(cx): "x", id(cy): "y"}

        # 1. coarse level
        coarse_pbs = []
        for name, (c1, c2) in zip(names, levels):
            op = Op(c1.centers[None], c2.centers[None], cost)
            if name == "xy":
                coarse_pbs.append(_Cross(op, op.transpose(), c1.weights[None], c2.weights[None]))
            else:
                coarse_pbs.append(_Symmetric(op, c1.weights[None]))
        if fixed:
            # one averaged update per temperature, as long as the jump's bound (its defect on the points,
            # measured at each temperature) is within FIXED_TOL; else the jump is from the previous one
            kept = 0
            lw = {k: log_weights(v[1]) for k, v in srt.items()}
            for k in range(kj):
                snap = [] if k == 0 else [(pb.f.clone(), pb.g.clone() if name == "xy" else None)
                                          for name, pb in zip(names, coarse_pbs)]
                if k == 0:
                    _iterate(coarse_pbs, schedule[:1], rho, None, 1)
                else:
                    for pb in coarse_pbs:
                        pb.averaged_step(schedule[k], _damping(schedule[k], rho))
                m = max(_jump_defect(nm, cpb, c1, c2, srt[key[id(c1)]][0], srt[key[id(c2)]][0], lw[key[id(c1)]],
                                     lw[key[id(c2)]], schedule[k], _damping(schedule[k], rho), Op, cost)
                        for nm, (c1, c2), cpb in zip(names, levels, coarse_pbs))
                bound = m * 2.0 ** (-1.5 * (len(schedule) - k - 2))
                log.info("multiscale: eps %.3g on the clusters: jump defect %.3g eps, bound %.2g", schedule[k], m, bound)
                if bound > ms.FIXED_TOL:
                    for pb, (f0, g0) in zip(coarse_pbs, snap):
                        pb.f = f0
                        if g0 is not None:
                            pb.g = g0
                    break
                kept = k + 1
            if kept == 0:
                full_instead = True  # decided here, run outside no_grad (it must stay differentiable)
            else:
                coarse, fine = schedule[:kept], schedule[kept:]
            n_coarse = [torch.full((1,), kept, dtype=torch.int64, device=dev) for _ in names]
        else:
            n_coarse = _iterate(coarse_pbs, coarse, rho, max(tol, STAGE_TOL), max(len(coarse), cap - len(fine)))

    if full_instead:
        return _full_instead(P, prm, kind, s, kw)
    with torch.no_grad():
        # 2. the jump
        e0 = coarse[-1]
        dd = _damping(e0, rho)
        for name, (c1, c2), cpb in zip(names, levels, coarse_pbs):
            (xs, as_), (ys, bs) = srt[key[id(c1)]], srt[key[id(c2)]]
            if name == "xy":
                pb = _WarmCross(None, None, as_, bs)
                pb.f = dd * Op(xs, c2.centers[None], cost).softmin(e0, cpb.lb + cpb.g / e0)
                pb.g = dd * Op(ys, c1.centers[None], cost).softmin(e0, cpb.la + cpb.f / e0)
            else:
                pb = _WarmSymmetric(None, as_)
                pb.f = dd * Op(xs, c1.centers[None], cost).softmin(e0, cpb.la + cpb.f / e0)
            fine_pbs.append(pb)

        # 3. fine temperatures, blocks recomputed at each
        n_fine = [torch.zeros(1, dtype=torch.int64, device=dev) for _ in names]
        used = int(max(int(n.max()) for n in n_coarse)) if names else 0
        blocks = {}
        log.info("multiscale: %d x %d points, %s clusters, scale %.3g, %d coarse + %d fine temperatures, %s kernels",
                 N, M, "/".join(str(c.n) for c in (cx, cy) if c is not None), s, len(coarse), len(fine), kind)
        for k, eps in enumerate(fine):
            t0 = time.perf_counter()
            last = k == len(fine) - 1
            for j, (name, (c1, c2), pb) in enumerate(zip(names, levels, fine_pbs)):
                (xs, _), (ys, _) = srt[key[id(c1)]], srt[key[id(c2)]]
                if not coarse and k == 0:
                    bl = geo.blocks(c1, c2, None)
                else:
                    f0 = pb.f[0]
                    g0 = pb.g[0] if name == "xy" else f0  # the same object for a self problem: fitted once
                    bl = geo.blocks(c1, c2, geo.mask(c1, c2, f0, g0, eps, cost, truncate))
                blocks[name] = bl
                op = Op(xs, ys, cost, bl)
                if name == "xy":
                    pb.op_xy, pb.op_yx = op, op.transpose()
                else:
                    pb.op = op
            t = None if tol is None else (tol if last else max(tol, STAGE_TOL))
            remaining = max(len(fine) - k, cap - used - (len(fine) - 1 - k))
            its = _iterate(fine_pbs, [eps], rho, t, remaining)
            for j in range(len(names)):
                n_fine[j] = n_fine[j] + its[j]
            used += int(max(int(n.max()) for n in its))
            if log.isEnabledFor(logging.INFO):
                kept = ", ".join(f"{nm} {blocks[nm].pairs / float(int(blocks[nm].rows[-1]) * int(blocks[nm].cols[-1])):.2%}"
                                 for nm in names)
                log.info("multiscale: eps %.3g: pairs kept %s, %s updates, %.2f s", eps, kept,
                         "/".join(str(int(n.max())) for n in its), time.perf_counter() - t0)

    # 4. differentiable extrapolation on the final blocks, results in the original order
    eps = schedule[-1]
    d = _damping(eps, rho)
    out = {"backend": "multiscale", "schedule": schedule, "eps": eps, "fine_backend": kind}
    grad_x, grad_y = _needs_grad(x), _needs_grad(y)
    for name, (c1, c2), pb, nc, nf in zip(names, levels, fine_pbs, n_coarse, n_fine):
        bl = blocks[name]
        n_it = nc + nf
        if name == "xy":
            xs = x[0][c1.perm][None] if grad_x else pb.op_xy.x
            ys = y[0][c2.perm][None] if grad_y else pb.op_yx.x
            op_xy = Op(xs, pb.op_xy.y, cost, bl) if grad_x else pb.op_xy
            op_yx = Op(ys, pb.op_yx.y, cost, bl.transpose()) if grad_y else pb.op_yx
            f, g, err = pb.extrapolate(eps, d, op_xy, op_yx)
            f, g = f[:, c1.inv], g[:, c2.inv]
            view = _View()
            view.op_xy = _Permuted(pb.op_xy, c1.inv, c2.perm)
            view.lb, view.g = log_weights(b.detach()), pb.g[:, c2.inv]
            view.la, view.f = log_weights(a.detach()), pb.f[:, c1.inv]
            out[name] = dict(f=f, g=g, err=err, n_iter=n_it, problem=view)
        else:
            src, needs = (x, grad_x) if name == "xx" else (y, grad_y)
            op = Op(src[0][c1.perm][None], pb.op.y, cost, bl) if needs else pb.op
            f, err = pb.extrapolate(eps, d, op)
            f = f[:, c1.inv]
            view = _View()
            view.op = _Permuted(pb.op, c1.inv, c1.perm)
            view.la, view.f = log_weights((a if name == "xx" else b).detach()), pb.f[:, c1.inv]
            out[name] = dict(f=f, err=err, n_iter=n_it, problem=view)
    return out
