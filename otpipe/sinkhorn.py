"""The Sinkhorn solver: log-domain SoftMin iterations with eps-scaling, a stopping rule,
unbalanced (KL) marginals and envelope-theorem gradients.

For ``alpha = sum_i a_i delta_{x_i}``, ``beta = sum_j b_j delta_{y_j}`` and ``eps = blur^p``:

``OT_eps(a, b) = max_{f,g} <a,f> + <b,g> - eps <a (x) b, exp((f + g - C) / eps) - 1>``,

solved by the updates ``f_i = -eps log sum_j b_j exp((g_j - C_ij) / eps)`` (and symmetrically
for ``g``), always in the log domain. With ``reach`` (``rho = reach^p``) the marginal constraints
become KL penalties and each update is damped by ``1 / (1 + eps / rho)``.

Schedule (annealing): ``eps`` runs from ``diameter^p`` down to ``blur^p``, multiplied by
``scaling^p`` at each step, with one symmetric (averaged) update per value: exactly the
schedule of GeomLoss's ``SamplesLoss``, so the default mode (``tol=None``) returns the same
numbers. With ``tol`` set, alternating Sinkhorn updates continue at the final ``eps`` until the
relative L1 error of the plan's marginal is below ``tol`` (or ``max_iter``).

Gradients: the loop runs without autograd; one last update, differentiated, is made at the
final potentials (envelope theorem): ``d OT / d x_i = sum_j pi_ij d_x C(x_i, y_j)``, and the
gradient w.r.t. the weights is the dual potential.

This module knows nothing of Dask or Zarr.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from .costs import Cost, diameter as _bbox_diameter, make_cost
from .kernels import choose_backend, get_backend
from .measures import Pair, log_weights, validate_pair

__all__ = ["solve", "solve_symmetric", "OTResult", "SinkhornParams", "epsilon_schedule"]

#: largest number of entries a dense plan may have (``OTResult.plan``)
PLAN_MAX_ENTRIES = 50_000_000
#: default iteration cap (schedule included) when a tolerance is given
DEFAULT_MAX_ITER = 10000
#: marginal error targeted at intermediate temperatures of the converging mode
STAGE_TOL = 1e-2
#: updates without halving the error after which a temperature is considered stalled
STALL_ITERS = 500
#: over-relaxation factor of the converging updates (1: plain alternating Sinkhorn; Thibault et al. 2017)
OVERRELAX = 1.8


def epsilon_schedule(p: float, diameter: float, blur: float, scaling: float) -> list[float]:
    """Temperatures of the eps-scaling: ``diameter^p``, then ``x scaling^p`` per step, down to ``blur^p``.

    ``[D^p] + [exp(e) for e in arange(p log D, p log blur, p log scaling)] + [blur^p]``.
    """
    if not 0.0 < scaling < 1.0:
        raise ValueError(f"scaling must be in (0, 1), got {scaling}")
    if not (diameter > 0 and math.isfinite(diameter)):
        raise ValueError(f"diameter must be positive and finite, got {diameter}")
    if not (blur > 0 and math.isfinite(blur)):
        raise ValueError(f"blur must be positive and finite, got {blur}")
    steps = np.arange(p * np.log(diameter), p * np.log(blur), p * np.log(scaling))
    return [diameter**p] + [float(np.exp(e)) for e in steps] + [blur**p]


@dataclass(frozen=True)
class SinkhornParams:
    """Validated solver parameters (see :func:`solve` for their meaning)."""

    p: float = 2.0
    blur: float = 0.05
    reach: float | None = None
    diameter: float | None = None
    scaling: float = 0.5
    tol: float | None = None
    max_iter: int | None = None
    backend: str = "auto"
    cost: Cost = field(default_factory=Cost)
    truncate: float | None = None
    cluster_scale: float | None = None

    @classmethod
    def make(
        cls,
        p=2.0,
        blur=0.05,
        reach=None,
        diameter=None,
        scaling=0.5,
        tol=None,
        max_iter=None,
        backend="auto",
        cost=None,
        *,
        truncate=None,
        cluster_scale=None,
    ) -> "SinkhornParams":
        c = make_cost(p, cost)

        def _pos(name, v, allow_none=False):
            if v is None and allow_none:
                return None
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a positive number, got {v!r}") from None
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a positive finite number, got {v}")
            return v

        blur = _pos("blur", blur)
        reach = _pos("reach", reach, allow_none=True)
        diameter = _pos("diameter", diameter, allow_none=True)
        scaling = float(scaling)
        if not 0.0 < scaling < 1.0:
            raise ValueError(f"scaling must be in (0, 1), got {scaling}")
        tol = _pos("tol", tol, allow_none=True)
        if max_iter is not None:
            if int(max_iter) != max_iter or max_iter < 1:
                raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
            max_iter = int(max_iter)
        if not isinstance(backend, str):
            raise ValueError(f"backend must be a string, got {backend!r}")
        truncate = _pos("truncate", truncate, allow_none=True)
        cluster_scale = _pos("cluster_scale", cluster_scale, allow_none=True)
        return cls(c.p, blur, reach, diameter, scaling, tol, max_iter, backend, c, truncate, cluster_scale)

    @property
    def rho(self) -> float | None:
        """KL penalty strength ``reach^p`` (``None``: balanced)."""
        return None if self.reach is None else self.reach**self.p


@dataclass
class OTResult:
    """Output of :func:`solve`: value, dual potentials and diagnostics.

    Attributes
    ----------
    value : Tensor
        ``OT_eps(a, b)``, scalar (or ``(B,)`` for batched input); differentiable w.r.t. the
        points and weights by the envelope theorem.
    f, g : Tensor
        Dual potentials on ``x`` and ``y``, ``(N,)`` and ``(M,)`` (or batched).
    n_iter : Tensor
        Number of Sinkhorn updates (schedule included), per problem.
    marginal_error : Tensor
        Relative L1 error of the plan's marginals ``|pi 1 - a|_1 / |a|_1`` at the returned
        potentials (for unbalanced problems: the same quantity for the damped fixed point).
    converged : Tensor or None
        ``marginal_error <= tol`` per problem; ``None`` in the fixed-schedule mode (``tol=None``).
    eps : float
        Final temperature ``blur^p``.
    schedule : list of float
        The temperatures used.
    backend : str
        The reduction backend that ran.
    """

    value: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    n_iter: torch.Tensor
    marginal_error: torch.Tensor
    converged: torch.Tensor | None
    eps: float
    schedule: list
    backend: str
    params: SinkhornParams
    _pair: Pair = field(repr=False)
    symmetric: bool = False

    def _unbatch(self, t: torch.Tensor) -> torch.Tensor:
        return t if self._pair.batched else t[0]

    def plan(self) -> torch.Tensor:
        """Dense transport plan ``pi_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)``: ``(N, M)`` (or batched).

        For small problems only (at most :data:`PLAN_MAX_ENTRIES` entries); use
        :meth:`transport_map` for large ones.
        """
        P = self._pair
        B, N, M, _ = P.shape
        if B * N * M > PLAN_MAX_ENTRIES:
            raise ValueError(
                f"the dense plan would have {B * N * M:,} entries (limit {PLAN_MAX_ENTRIES:,}); use transport_map()"
            )
        with torch.no_grad():
            C = self.params.cost.dense(P.x, P.y)
            la, lb = log_weights(P.a), log_weights(P.b)
            logpi = la[:, :, None] + lb[:, None, :] + (self._fb[:, :, None] + self._gb[:, None, :] - C) / self.eps
            pi = torch.exp(logpi)
        return self._unbatch(pi)

    def transport_map(self) -> torch.Tensor:
        """Barycentric projection ``T(x_i) = sum_j pi_ij y_j / sum_j pi_ij``, ``(N, D)`` (or batched), any size."""
        P = self._pair
        with torch.no_grad():
            op = get_backend(self.backend).operator(P.x, P.y, self.params.cost)
            h = log_weights(P.b) + self._gb / self.eps
            T = op.softmax_mean(self.eps, h, P.y)
        return self._unbatch(T)

    # batched potentials, kept for plan() / transport_map()
    _fb: torch.Tensor = field(default=None, repr=False)
    _gb: torch.Tensor = field(default=None, repr=False)


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


def _damping(eps: float, rho: float | None) -> float:
    return 1.0 if rho is None else 1.0 / (1.0 + eps / rho)


def _rel_error(a: torch.Tensor, f_old: torch.Tensor, f_new: torch.Tensor, eps: float) -> torch.Tensor:
    """``sum_i a_i |exp((f_old_i - f_new_i) / eps) - 1| / sum_i a_i`` per batch element."""
    r = torch.expm1(((f_old - f_new) / eps).clamp(max=80.0)).abs()
    return (a * r).sum(-1) / a.sum(-1)


class _Cross:
    """A cross problem OT(a, b): operators both ways and the potentials (f, g)."""

    symmetric = False

    def __init__(self, op_xy, op_yx, a, b):
        self.op_xy, self.op_yx = op_xy, op_yx
        self.a, self.b = a, b
        self.la, self.lb = log_weights(a), log_weights(b)

    def init(self, eps, d):
        self.f = d * self.op_xy.softmin(eps, self.lb)
        self.g = d * self.op_yx.softmin(eps, self.la)

    def averaged_step(self, eps, d):
        ft = d * self.op_xy.softmin(eps, self.lb + self.g / eps)
        gt = d * self.op_yx.softmin(eps, self.la + self.f / eps)
        self.f, self.g = 0.5 * (self.f + ft), 0.5 * (self.g + gt)

    def converging_step(self, eps, d, omega=1.0, rho=None):
        """One alternating (over-relaxed) update; returns the marginal error of the plan it starts from."""
        ft = d * self.op_xy.softmin(eps, self.lb + self.g / eps)
        err_f = _rel_error(self.a, self.f, ft, eps)
        self.f = ft if omega == 1.0 else self.f + omega * (ft - self.f)
        gt = d * self.op_yx.softmin(eps, self.la + self.f / eps)
        err_g = _rel_error(self.b, self.g, gt, eps)
        self.g = gt if omega == 1.0 else self.g + omega * (gt - self.g)
        if rho is not None:
            # the dual is flat-ish along (f + c, g - c) when rho >> eps: move there optimally
            # (translation-invariant Sinkhorn), c = rho/2 log(<a, e^{-f/rho}> / <b, e^{-g/rho}>)
            la_ = torch.logsumexp(self.la - self.f / rho, dim=-1)
            lb_ = torch.logsumexp(self.lb - self.g / rho, dim=-1)
            c = (0.5 * rho) * (la_ - lb_)
            self.f, self.g = self.f + c[:, None], self.g - c[:, None]
        return torch.maximum(err_f, err_g)

    def extrapolate(self, eps, d, op_xy, op_yx):
        """Final (differentiable) update of both potentials from the current ones, in parallel."""
        f = d * op_xy.softmin(eps, self.lb + self.g / eps)
        g = d * op_yx.softmin(eps, self.la + self.f / eps)
        err = torch.maximum(
            _rel_error(self.a, self.f.detach(), f.detach(), eps), _rel_error(self.b, self.g.detach(), g.detach(), eps)
        )
        return f, g, err


class _Symmetric:
    """A symmetric problem OT(a, a): one potential, symmetric averaged updates."""

    symmetric = True

    def __init__(self, op, a):
        self.op, self.a, self.la = op, a, log_weights(a)

    def init(self, eps, d):
        self.f = d * self.op.softmin(eps, self.la)

    def averaged_step(self, eps, d):
        ft = d * self.op.softmin(eps, self.la + self.f / eps)
        self.f = 0.5 * (self.f + ft)

    def converging_step(self, eps, d, omega=1.0, rho=None):
        ft = d * self.op.softmin(eps, self.la + self.f / eps)
        err = _rel_error(self.a, self.f, ft, eps)
        self.f = 0.5 * (self.f + ft)
        return err

    def extrapolate(self, eps, d, op):
        f = d * op.softmin(eps, self.la + self.f / eps)
        return f, _rel_error(self.a, self.f.detach(), f.detach(), eps)


def _iterate(problems, schedule, rho, tol, max_iter, overrelax=None):
    """Run the eps-scaling; returns the number of updates per problem, ``(B,)`` int64 each.

    ``tol=None``: one symmetric (averaged) update per temperature, GeomLoss's schedule.
    ``tol`` set: at every temperature, alternating updates until the marginal error of every
    problem is ``<= tol`` (warm start for the next one; intermediate temperatures stop at
    ``max(tol, STAGE_TOL)``), over-relaxed by ``overrelax`` after a few plain updates, with a fall-back to plain updates if the error
    blows up, and a stop when a temperature makes no progress (reported as not converged).
    """
    if overrelax is None:
        overrelax = OVERRELAX
    eps0 = schedule[0]
    for pb in problems:
        pb.init(eps0, _damping(eps0, rho))
    B = problems[0].a.shape[0]
    device = problems[0].a.device
    if tol is None:
        for eps in schedule:
            d = _damping(eps, rho)
            for pb in problems:
                pb.averaged_step(eps, d)
        return [torch.full((B,), len(schedule), dtype=torch.int64, device=device) for _ in problems]

    cap = max_iter if max_iter is not None else DEFAULT_MAX_ITER
    n = 0
    last = len(schedule) - 1
    n_iter = [torch.zeros(B, dtype=torch.int64, device=device) for _ in problems]
    for k, eps in enumerate(schedule):
        d = _damping(eps, rho)
        # intermediate temperatures only prepare a warm start: a looser target
        target = tol if k == last else max(tol, STAGE_TOL)
        done = [False] * len(problems)
        best = [float("inf")] * len(problems)
        best_at = [0] * len(problems)
        ref = [float("inf")] * len(problems)
        plain = [False] * len(problems)
        met_final = [torch.zeros(B, dtype=torch.bool, device=device) for _ in problems]
        stage = 0
        # every remaining temperature gets at least one update within the cap
        while n < cap - (last - k) or stage == 0:
            n += 1
            stage += 1
            for j, pb in enumerate(problems):
                if done[j]:
                    continue
                # a few plain updates after each change of temperature, then over-relaxed ones
                err = pb.converging_step(eps, d, 1.0 if (plain[j] or stage <= 5) else overrelax, rho)
                emax = float(err.max())
                if emax > 10.0 * best[j]:
                    plain[j] = True  # the error blows up: plain Sinkhorn for the rest of this temperature
                if emax < (0.5 if k < last else 0.9) * ref[j]:
                    ref[j], best_at[j] = emax, stage  # progress since the last checkpoint
                best[j] = min(best[j], emax)
                met = err <= target
                if k == last:
                    # the plan after n - 1 updates met the tolerance
                    n_iter[j] = torch.where(
                        met_final[j], n_iter[j], torch.where(met, n_iter[j].new_tensor(n - 1), n_iter[j].new_tensor(n))
                    )
                    met_final[j] = met_final[j] | met
                # stagnation: give up on this temperature (intermediate: no halving of the error
                # in STALL_ITERS updates; final: no 10% progress in 4 x STALL_ITERS)
                done[j] = bool(met.all()) or stage - best_at[j] > (STALL_ITERS if k < last else 4 * STALL_ITERS)
            if all(done):
                break
    return n_iter


# --------------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------------


def _dual_value(a, f, b, g, eps: float, rho: float | None) -> torch.Tensor:
    """``OT_eps`` from the final potentials, per batch element.

    Balanced: ``<a, f> + <b, g>``. Unbalanced (KL, ``rho``): at the optimum
    ``(rho + eps/2) (<a, 1 - e^{-f/rho}> + <b, 1 - e^{-g/rho}>) + eps (|a||b| - (|a| + |b|)/2)``;
    its gradient is replaced by the envelope gradient of the dual objective.
    """
    if rho is None:
        return (a * f).sum(-1) + (b * g).sum(-1)
    ma, mb = a.sum(-1), b.sum(-1)
    s = (a * -torch.expm1(-f / rho)).sum(-1) + (b * -torch.expm1(-g / rho)).sum(-1)
    forward = (rho + 0.5 * eps) * s + eps * (ma * mb - 0.5 * (ma + mb))
    envelope = (rho + eps) * s + eps * (ma * mb - ma - mb)
    return envelope + (forward - envelope).detach()


def _transport_cost(op, a, f_row, h_cols, eps: float, d: float) -> torch.Tensor:
    """``<pi, C>`` for the plan with row potential ``f_row`` and column log-weights+potential ``h_cols``."""
    sc = op.softmax_cost(eps, h_cols)  # sum_j softmax_j C_ij
    F = op.softmin(eps, h_cols)  # undamped update
    row_mass = a * torch.exp(((f_row - F) / eps).clamp(max=80.0)) if d != 1.0 else a
    return (row_mass * sc).sum(-1)


# --------------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------------


def _check_balance(P: Pair, rho):
    if rho is not None:
        return
    ma, mb = P.a.detach().sum(-1), P.b.detach().sum(-1)
    tol = 1e-4 if P.x.dtype == torch.float32 else 1e-7
    bad = (ma - mb).abs() > tol * torch.maximum(ma, mb)
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[0])
        raise ValueError(
            f"balanced OT needs equal total masses, got {float(ma[k]):.6g} and {float(mb[k]):.6g}"
            + (f" (batch element {k})" if P.batched else "")
            + ": normalise the weights, or pass reach= for unbalanced OT"
        )


def _resolve(P: Pair, prm: SinkhornParams, symmetric_only: bool = False):
    B, N, M, D = P.shape
    backend = choose_backend(prm.backend, B, N, M if not symmetric_only else N, device=P.x.device)
    if prm.diameter is not None:
        diam = prm.diameter
    else:
        diam = _bbox_diameter(P.x, P.y, P.a, P.b)
        if diam <= 0:  # every point at one place: any positive scale works
            diam = prm.blur
    schedule = epsilon_schedule(prm.p, diam, prm.blur, prm.scaling)
    return backend, schedule


def _needs_grad(*ts) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in ts)


def _run_problems(P: Pair, prm: SinkhornParams, *, cross: bool, self_x: bool, self_y: bool):
    """Shared engine of :func:`solve`, :func:`solve_symmetric` and the divergences.

    Returns a dict with the backend, schedule, and for each requested problem its final
    (differentiable) potentials, n_iter and marginal error.
    """
    if choose_backend(prm.backend, P.shape[0], P.shape[1], P.shape[2], device=P.x.device) == "multiscale":
        from .multiscale import _multiscale_run

        return _multiscale_run(P, prm, cross=cross, self_x=self_x, self_y=self_y)
    backend, schedule = _resolve(P, prm, symmetric_only=not cross)
    mod = get_backend(backend)
    cost, rho = prm.cost, prm.rho
    x, y, a, b = P.x, P.y, P.a, P.b
    xd, yd, ad, bd = x.detach(), y.detach(), a.detach(), b.detach()
    problems, names = [], []
    with torch.no_grad():
        if cross:
            op_xy = mod.operator(xd, yd, cost)
            problems.append(_Cross(op_xy, op_xy.transpose(), ad, bd))
            names.append("xy")
        if self_x:
            problems.append(_Symmetric(mod.operator(xd, xd, cost), ad))
            names.append("xx")
        if self_y:
            problems.append(_Symmetric(mod.operator(yd, yd, cost), bd))
            names.append("yy")
        n_iters = _iterate(problems, schedule, rho, prm.tol, prm.max_iter)

    eps = schedule[-1]
    d = _damping(eps, rho)
    out = {"backend": backend, "schedule": schedule, "eps": eps}
    grad_x, grad_y = _needs_grad(x), _needs_grad(y)
    for pb, name, n_it in zip(problems, names, n_iters):
        if name == "xy":
            op_xy = mod.operator(x, yd, cost) if grad_x else pb.op_xy
            op_yx = mod.operator(y, xd, cost) if grad_y else pb.op_yx
            f, g, err = pb.extrapolate(eps, d, op_xy, op_yx)
            out[name] = dict(f=f, g=g, err=err, n_iter=n_it, problem=pb)
        else:
            pts, needs = (x, grad_x) if name == "xx" else (y, grad_y)
            op = mod.operator(pts, pts.detach(), cost) if needs else pb.op
            f, err = pb.extrapolate(eps, d, op)
            out[name] = dict(f=f, err=err, n_iter=n_it, problem=pb)
    return out


def _converged(err: torch.Tensor, tol: float | None):
    return None if tol is None else err <= tol


def solve(
    x,
    y,
    a=None,
    b=None,
    *,
    p: float = 2,
    blur: float = 0.05,
    reach: float | None = None,
    diameter: float | None = None,
    scaling: float = 0.5,
    tol: float | None = None,
    max_iter: int | None = None,
    backend: str = "auto",
    cost: str | None = None,
    truncate: float | None = None,
    cluster_scale: float | None = None,
) -> OTResult:
    """Entropic optimal transport ``OT_eps(a, b)`` between two (batches of) weighted point clouds.

    ``OT_eps = max_{f,g} <a,f> + <b,g> - eps <a (x) b, exp((f + g - C)/eps) - 1>``, ``eps = blur^p``.

    Parameters
    ----------
    x, y : Tensor or array, ``(N, D)``/``(M, D)`` or batched ``(B, N, D)``/``(B, M, D)``
        Points; the result lives on their device and dtype.
    a, b : Tensor or array, optional
        Non-negative weights (``(N,)`` / ``(B, N)``), uniform ``1/N`` by default. Balanced
        problems (``reach=None``) need equal total masses (a ``ValueError`` otherwise: weights
        are not normalised silently). Zero weights act as padding.
    p : float
        Exponent of the cost ``|x - y|^p / p`` (or ``|x - y|^p`` with ``cost="|x-y|^p"``).
    blur : float
        Final temperature ``eps = blur^p``.
    reach : float, optional
        Unbalanced OT with KL marginal penalties of strength ``rho = reach^p``.
    diameter : float, optional
        First temperature ``diameter^p`` of the eps-scaling; default: bounding-box diagonal
        of the points with positive weight (over the whole batch).
    scaling : float
        Ratio of successive ``blur`` values in the eps-scaling, in ``(0, 1)``.
    tol : float, optional
        ``None``: the fixed eps-scaling schedule (GeomLoss's default mode). A number: keep
        iterating at the final ``eps`` until the relative L1 marginal error is ``<= tol``.
    max_iter : int, optional
        Cap on the total number of updates when ``tol`` is set (default 10000).
    backend : {"auto", "tensorized", "keops", "cpu", "multiscale"}
        Reduction backend; ``auto`` picks by size and device.
    cost : {"|x-y|^p/p", "|x-y|^p"}, optional
        Cost convention.
    truncate : float, optional
        ``multiscale`` backend: keep the cluster pairs whose terms can reach ``exp(-truncate)`` of a
        row's log-sum-exp (default 5). Unlike GeomLoss's ``truncate`` (a kernel radius in units of
        ``blur``) it is a bound in units of ``eps`` on the dropped terms.
    cluster_scale : float, optional
        ``multiscale`` backend: side of the voxel cells (``D <= 3``); default: about 64 points a cell.

    Returns
    -------
    OTResult
    """
    prm = SinkhornParams.make(p, blur, reach, diameter, scaling, tol, max_iter, backend, cost,
                              truncate=truncate, cluster_scale=cluster_scale)
    P = validate_pair(x, y, a, b)
    _check_balance(P, prm.rho)
    out = _run_problems(P, prm, cross=True, self_x=False, self_y=False)
    return _result(P, prm, out, "xy")


def _result(P: Pair, prm: SinkhornParams, out: dict, key: str) -> OTResult:
    """Package the output of :func:`_run_problems` for problem ``key`` ("xy" or "xx")."""
    r = out[key]
    f = r["f"]
    g = r["g"] if key == "xy" else f
    b = P.b if key == "xy" else P.a
    value = _dual_value(P.a, f, b, g, out["eps"], prm.rho)
    un = (lambda t: t) if P.batched else (lambda t: t[0])
    return OTResult(
        value=un(value),
        f=un(f),
        g=un(g),
        n_iter=un(r["n_iter"]),
        marginal_error=un(r["err"]),
        converged=None if prm.tol is None else un(_converged(r["err"], prm.tol)),
        eps=out["eps"],
        schedule=out["schedule"],
        backend=out["backend"],
        params=prm,
        _pair=P,
        symmetric=key != "xy",
        _fb=f.detach(),
        _gb=g.detach(),
    )


def solve_symmetric(
    x,
    a=None,
    *,
    p: float = 2,
    blur: float = 0.05,
    reach: float | None = None,
    diameter: float | None = None,
    scaling: float = 0.5,
    tol: float | None = None,
    max_iter: int | None = None,
    backend: str = "auto",
    cost: str | None = None,
    truncate: float | None = None,
    cluster_scale: float | None = None,
) -> OTResult:
    """The self term ``OT_eps(a, a)`` with its symmetric potential (``f = g``).

    Same parameters as :func:`solve`. Pass the same ``diameter`` as the cross terms so that
    ``S_eps(a, b) = OT_eps(a, b) - OT_eps(a, a)/2 - OT_eps(b, b)/2`` can reuse self terms
    across pairs with exactly the numbers of :func:`~otpipe.losses.sinkhorn_divergence`.
    """
    prm = SinkhornParams.make(p, blur, reach, diameter, scaling, tol, max_iter, backend, cost,
                              truncate=truncate, cluster_scale=cluster_scale)
    P = validate_pair(x, x, a, a)
    out = _run_problems(P, prm, cross=False, self_x=True, self_y=False)
    return _result(P, prm, out, "xx")
