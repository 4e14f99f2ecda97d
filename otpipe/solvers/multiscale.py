"""Multiscale Sinkhorn driver (Schmitzer 2016): coarse eps-scaling on cluster centroids, a jump to the
points, and the end of the schedule with block-sparse (truncated) reductions.

With ``s`` the cluster scale (:mod:`otpipe.geometry.blocks`) and the temperatures of
:func:`~otpipe.solvers.sinkhorn.epsilon_schedule`:

1. the first temperatures run on the coarse measures (centroids, summed weights), with the same updates as the
   full solver (``CrossProblem`` / ``SymmetricProblem``, fixed schedule or converging mode), at most those with
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

from otpipe.geometry import blocks as ms
from otpipe.geometry import blocks_device as msd
from otpipe.geometry.backends import cpu
from otpipe.problems.measures import Pair, log_weights
from otpipe.problems.problems import CrossProblem, SymmetricProblem, damping
from otpipe.solvers.loop import (
    DEFAULT_MAX_ITER,
    STAGE_TOL,
    SinkhornParams,
    backend_and_schedule,
    iterate,
    needs_grad,
    run_full,
)
from otpipe.solvers.output import RunOutput, Solution

__all__ = ["run_multiscale"]

#: per-temperature progress (eps, share of point pairs kept, updates, seconds) at INFO level
log = logging.getLogger("otpipe.multiscale")


class _WarmCross(CrossProblem):
    """A cross problem whose potentials are already set (the jump): ``init`` keeps them."""

    def init(self, eps, d):
        pass


class _WarmSymmetric(SymmetricProblem):
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

    def cluster(self, x: torch.Tensor, a: torch.Tensor, scale: float) -> _OnDevice:
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


def run_multiscale(P: Pair, prm: SinkhornParams, *, cross: bool, self_x: bool, self_y: bool) -> RunOutput:
    """Multiscale counterpart of :func:`otpipe.solvers.loop.run_full`: same inputs and output dict.

    Parameters
    ----------
    P : Pair
        The validated measures (one pair, ``B = 1``; a batch falls back to a full backend with a warning).
    prm : SinkhornParams
        Solver parameters (``truncate`` and ``cluster_scale`` are read here).
    cross, self_x, self_y : bool
        Which of ``OT_eps(a, b)``, ``OT_eps(a, a)``, ``OT_eps(b, b)`` to solve.

    Returns
    -------
    RunOutput
        ``backend="multiscale"`` with ``fine_backend``; each problem's ``Solution.problem`` is a view in the
        original point order.
    """
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
    run = _prepare(P, prm, kind, cross, self_x, self_y)
    if run.kj == 0:  # a one-temperature schedule (blur ~ diameter), or clusters as large as the blur
        return _full_instead(P, prm, kind, run.s, kw)
    with torch.no_grad():
        coarse_pbs = _coarse_problems(run)
        if run.tol is None:
            n_coarse = _coarse_fixed(run, coarse_pbs)
        else:
            n_coarse = iterate(coarse_pbs, run.coarse, run.rho, max(run.tol, STAGE_TOL),
                               max(len(run.coarse), run.cap - len(run.fine)))
    if n_coarse is None:  # decided on the clusters, run outside no_grad (it must stay differentiable)
        return _full_instead(P, prm, kind, run.s, kw)
    with torch.no_grad():
        fine_pbs = _jump(run, coarse_pbs)
        n_fine, blocks = _fine(run, fine_pbs, n_coarse)
    return _extrapolate(run, P, fine_pbs, n_coarse, n_fine, blocks)


@dataclasses.dataclass
class _Run:
    """What the phases of :func:`run_multiscale` share: kernels, schedule split, clusterings, sorted points."""

    kind: str
    dev: torch.device
    Op: type
    geo: object
    schedule: list
    coarse: list
    fine: list
    kj: int
    s: float
    cost: object
    rho: float | None
    tol: float | None
    cap: int
    truncate: float
    N: int
    M: int
    cx: object
    cy: object
    names: list
    levels: list
    srt: dict
    key: dict


def _prepare(P: Pair, prm: SinkhornParams, kind: str, cross: bool, self_x: bool, self_y: bool) -> _Run:
    """Resolve the schedule, cluster the points (the cluster scale ``s``), split the schedule at the jump and sort
    the points by cluster; ``kj = 0`` when no temperature can run on the clusters."""
    B, N, M, D = P.shape
    Op = _operator_class(kind)
    _, schedule = backend_and_schedule(P, prm, symmetric_only=not cross)
    truncate = ms.TRUNCATE if prm.truncate is None else prm.truncate
    xd, yd, ad, bd = P.x.detach()[0], P.y.detach()[0], P.a.detach()[0], P.b.detach()[0]
    geo = _geometry(kind, P.x.device)
    s = ms.default_scale(xd, yd) if prm.cluster_scale is None else prm.cluster_scale
    if D > 3 and prm.cluster_scale is not None:
        warnings.warn("cluster_scale is ignored for D > 3 (k-means clustering with about "
                      f"{ms.POINTS_PER_CLUSTER} points a cluster)", RuntimeWarning, stacklevel=5)
    cx = geo.cluster(xd, ad, s) if (cross or self_x) else None
    cy = geo.cluster(yd, bd, s) if (cross or self_y) else None
    if D > 3:  # k-means: the scale is the clusters' typical size
        s = max(float(c.radius.max()) for c in (cx, cy) if c is not None)
    kj = _n_coarse(schedule, s, prm.p)
    cap = prm.max_iter if prm.max_iter is not None else DEFAULT_MAX_ITER
    names, levels = [], []
    if cross:
        names.append("xy")
        levels.append((cx, cy))
    if self_x:
        names.append("xx")
        levels.append((cx, cx))
    if self_y:
        names.append("yy")
        levels.append((cy, cy))
    srt, key = {}, {}
    if kj:
        with torch.no_grad():
            pts = {id(cx): (xd, ad), id(cy): (yd, bd)}
            srt = {k: (pts[id(c)][0][c.perm][None].contiguous(), pts[id(c)][1][c.perm][None].contiguous())
                   for k, c in (("x", cx), ("y", cy)) if c is not None}
            key = {id(cx): "x", id(cy): "y"}
    return _Run(kind, P.x.device, Op, geo, schedule, schedule[:kj], schedule[kj:], kj, s, prm.cost, prm.rho, prm.tol, cap,
                truncate, N, M, cx, cy, names, levels, srt, key)


def _coarse_problems(run: _Run) -> list:
    """The problems on the clusters' centroids and summed weights."""
    coarse_pbs = []
    for name, (c1, c2) in zip(run.names, run.levels):
        op = run.Op(c1.centers[None], c2.centers[None], run.cost)
        if name == "xy":
            coarse_pbs.append(CrossProblem(op, op.transpose(), c1.weights[None], c2.weights[None]))
        else:
            coarse_pbs.append(SymmetricProblem(op, c1.weights[None]))
    return coarse_pbs


def _coarse_fixed(run: _Run, coarse_pbs: list) -> list | None:
    """Fixed schedule on the clusters: one averaged update per temperature, as long as the jump's bound (its defect
    on the points, measured at each temperature) is within :data:`~otpipe.geometry.blocks.FIXED_TOL`; else the jump
    is from the previous one. Sets ``run.coarse`` / ``run.fine``; returns the updates per problem, or ``None`` when
    not even the first temperature is within the bound (the full solver runs instead)."""
    schedule, rho, names, srt, key = run.schedule, run.rho, run.names, run.srt, run.key
    kept = 0
    lw = {k: log_weights(v[1]) for k, v in srt.items()}
    for k in range(run.kj):
        snap = [] if k == 0 else [(pb.f.clone(), pb.g.clone() if name == "xy" else None)
                                  for name, pb in zip(names, coarse_pbs)]
        if k == 0:
            iterate(coarse_pbs, schedule[:1], rho, None, 1)
        else:
            for pb in coarse_pbs:
                pb.averaged_step(schedule[k], damping(schedule[k], rho))
        m = max(_jump_defect(nm, cpb, c1, c2, srt[key[id(c1)]][0], srt[key[id(c2)]][0], lw[key[id(c1)]],
                             lw[key[id(c2)]], schedule[k], damping(schedule[k], rho), run.Op, run.cost)
                for nm, (c1, c2), cpb in zip(names, run.levels, coarse_pbs))
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
        return None
    run.coarse, run.fine = schedule[:kept], schedule[kept:]
    return [torch.full((1,), kept, dtype=torch.int64, device=run.dev) for _ in names]


def _jump(run: _Run, coarse_pbs: list) -> list:
    """Extrapolate the coarse potentials to the (sorted) points at the last coarse temperature."""
    e0 = run.coarse[-1]
    dd = damping(e0, run.rho)
    fine_pbs = []
    for name, (c1, c2), cpb in zip(run.names, run.levels, coarse_pbs):
        (xs, as_), (ys, bs) = run.srt[run.key[id(c1)]], run.srt[run.key[id(c2)]]
        if name == "xy":
            pb = _WarmCross(None, None, as_, bs)
            pb.f = dd * run.Op(xs, c2.centers[None], run.cost).softmin(e0, cpb.lb + cpb.g / e0)
            pb.g = dd * run.Op(ys, c1.centers[None], run.cost).softmin(e0, cpb.la + cpb.f / e0)
        else:
            pb = _WarmSymmetric(None, as_)
            pb.f = dd * run.Op(xs, c1.centers[None], run.cost).softmin(e0, cpb.la + cpb.f / e0)
        fine_pbs.append(pb)
    return fine_pbs


def _fine(run: _Run, fine_pbs: list, n_coarse: list) -> tuple[list, dict]:
    """The remaining temperatures on the points, the kept blocks recomputed at each from the current potentials;
    returns the updates per problem and the last blocks by problem name."""
    names, coarse, fine, tol = run.names, run.coarse, run.fine, run.tol
    n_fine = [torch.zeros(1, dtype=torch.int64, device=run.dev) for _ in names]
    used = int(max(int(n.max()) for n in n_coarse)) if names else 0
    blocks = {}
    log.info("multiscale: %d x %d points, %s clusters, scale %.3g, %d coarse + %d fine temperatures, %s kernels",
             run.N, run.M, "/".join(str(c.n) for c in (run.cx, run.cy) if c is not None), run.s, len(coarse),
             len(fine), run.kind)
    for k, eps in enumerate(fine):
        t0 = time.perf_counter()
        last = k == len(fine) - 1
        for name, (c1, c2), pb in zip(names, run.levels, fine_pbs):
            (xs, _), (ys, _) = run.srt[run.key[id(c1)]], run.srt[run.key[id(c2)]]
            if not coarse and k == 0:
                bl = run.geo.blocks(c1, c2, None)
            else:
                f0 = pb.f[0]
                g0 = pb.g[0] if name == "xy" else f0  # the same object for a self problem: fitted once
                bl = run.geo.blocks(c1, c2, run.geo.mask(c1, c2, f0, g0, eps, run.cost, run.truncate))
            blocks[name] = bl
            op = run.Op(xs, ys, run.cost, bl)
            if name == "xy":
                pb.op_xy, pb.op_yx = op, op.transpose()
            else:
                pb.op = op
        t = None if tol is None else (tol if last else max(tol, STAGE_TOL))
        remaining = max(len(fine) - k, run.cap - used - (len(fine) - 1 - k))
        its = iterate(fine_pbs, [eps], run.rho, t, remaining)
        for j in range(len(names)):
            n_fine[j] = n_fine[j] + its[j]
        used += int(max(int(n.max()) for n in its))
        if log.isEnabledFor(logging.INFO):
            kept = ", ".join(f"{nm} {blocks[nm].pairs / float(int(blocks[nm].rows[-1]) * int(blocks[nm].cols[-1])):.2%}"
                             for nm in names)
            log.info("multiscale: eps %.3g: pairs kept %s, %s updates, %.2f s", eps, kept,
                     "/".join(str(int(n.max())) for n in its), time.perf_counter() - t0)
    return n_fine, blocks


def _extrapolate(run: _Run, P: Pair, fine_pbs: list, n_coarse: list, n_fine: list, blocks: dict) -> RunOutput:
    """The final differentiable update on the last blocks (envelope gradients), results in the original order."""
    x, y, a, b = P.x, P.y, P.a, P.b
    cost, schedule = run.cost, run.schedule
    eps = schedule[-1]
    d = damping(eps, run.rho)
    out = RunOutput("multiscale", schedule, eps, fine_backend=run.kind)
    grad_x, grad_y = needs_grad(x), needs_grad(y)
    for name, (c1, c2), pb, nc, nf in zip(run.names, run.levels, fine_pbs, n_coarse, n_fine):
        bl = blocks[name]
        n_it = nc + nf
        if name == "xy":
            xs = x[0][c1.perm][None] if grad_x else pb.op_xy.x
            ys = y[0][c2.perm][None] if grad_y else pb.op_yx.x
            op_xy = run.Op(xs, pb.op_xy.y, cost, bl) if grad_x else pb.op_xy
            op_yx = run.Op(ys, pb.op_yx.y, cost, bl.transpose()) if grad_y else pb.op_yx
            f, g, err = pb.extrapolate(eps, d, op_xy, op_yx)
            f, g = f[:, c1.inv], g[:, c2.inv]
            view = _View()
            view.op_xy = _Permuted(pb.op_xy, c1.inv, c2.perm)
            view.lb, view.g = log_weights(b.detach()), pb.g[:, c2.inv]
            view.la, view.f = log_weights(a.detach()), pb.f[:, c1.inv]
            out.solutions[name] = Solution(f, g, err, n_it, view)
        else:
            src, needs = (x, grad_x) if name == "xx" else (y, grad_y)
            op = run.Op(src[0][c1.perm][None], pb.op.y, cost, bl) if needs else pb.op
            f, err = pb.extrapolate(eps, d, op)
            f = f[:, c1.inv]
            view = _View()
            view.op = _Permuted(pb.op, c1.inv, c1.perm)
            view.la, view.f = log_weights((a if name == "xx" else b).detach()), pb.f[:, c1.inv]
            out.solutions[name] = Solution(f, None, err, n_it, view)
    return out
