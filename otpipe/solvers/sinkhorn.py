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

from dataclasses import dataclass, field

import torch

from otpipe._arrays import numpy_io, short, to_numpy
from otpipe.geometry.backends import STRATEGIES, choose_backend, get_backend
from otpipe.problems.measures import Pair, log_weights, validate_pair
from otpipe.solvers import fused
from otpipe.solvers.loop import (  # noqa: F401 - re-exported: the solver's parameters and schedule
    DEFAULT_MAX_ITER,
    STAGE_TOL,
    SinkhornParams,
    epsilon_schedule,
    run_full,
)
from otpipe.solvers.output import RunOutput

__all__ = ["solve", "solve_symmetric", "OTResult", "SinkhornParams", "epsilon_schedule", "run_problems",
           "dual_value", "transport_cost", "check_balance", "ROUNDING_FACTOR"]

#: largest number of entries a dense plan may have (``OTResult.plan``)
PLAN_MAX_ENTRIES = 50_000_000


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
    params : SinkhornParams
        The validated solver parameters.
    symmetric : bool, default False
        Whether this is a self term ``OT_eps(a, a)`` (:func:`solve_symmetric`: ``g`` is ``f``).
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

    def _unbatch(self, t: torch.Tensor):
        t = t if self._pair.batched else t[0]
        return to_numpy(t) if self._numpy else t

    def __repr__(self) -> str:
        B, N, M, D = self._pair.shape
        shape = f"B={B}, N={N}, M={M}, D={D}" if self._pair.batched else f"N={N}, M={M}, D={D}"
        return (f"OTResult(value={short(self.value)}, {shape}, eps={self.eps:.4g}, n_iter={short(self.n_iter, 'd')}, "
                f"marginal_error={short(self.marginal_error, '.2g')}, converged={short(self.converged)}, "
                f"backend={self.backend!r})")

    def plan(self) -> torch.Tensor:
        """Dense transport plan ``pi_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)``.

        For small problems only (at most :data:`PLAN_MAX_ENTRIES` entries); use
        :meth:`transport_map` for large ones.

        Returns
        -------
        torch.Tensor or numpy.ndarray
            ``(N, M)`` (or ``(B, N, M)`` for batched input); NumPy for NumPy input.

        Raises
        ------
        ValueError
            If the plan would have more than :data:`PLAN_MAX_ENTRIES` entries.
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
        """Barycentric projection ``T(x_i) = sum_j pi_ij y_j / sum_j pi_ij``, any size (no dense plan).

        Returns
        -------
        torch.Tensor or numpy.ndarray
            ``(N, D)`` (or ``(B, N, D)`` for batched input); NumPy for NumPy input.
        """
        P = self._pair
        with torch.no_grad():
            op = get_backend(self.backend).operator(P.x, P.y, self.params.cost)
            h = log_weights(P.b) + self._gb / self.eps
            T = op.softmax_mean(self.eps, h, P.y)
        return self._unbatch(T)

    # batched potentials, kept for plan() / transport_map()
    _fb: torch.Tensor = field(default=None, repr=False)
    _gb: torch.Tensor = field(default=None, repr=False)
    # NumPy input: plan() and transport_map() answer in NumPy too (otpipe._arrays)
    _numpy: bool = field(default=False, repr=False)



# --------------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------------


def dual_value(a, f, b, g, eps: float, rho: float | None) -> torch.Tensor:
    """``OT_eps`` from the final potentials, per batch element.

    Balanced: ``<a, f> + <b, g>``. Unbalanced (KL, ``rho``): at the optimum
    ``(rho + eps/2) (<a, 1 - e^{-f/rho}> + <b, 1 - e^{-g/rho}>) + eps (|a||b| - (|a| + |b|)/2)``;
    its gradient is replaced by the envelope gradient of the dual objective.

    Parameters
    ----------
    a, b : Tensor, ``(B, N)`` / ``(B, M)``
        Weights.
    f, g : Tensor, ``(B, N)`` / ``(B, M)``
        Final potentials.
    eps : float
        Final temperature.
    rho : float or None
        KL penalty strength (``None``: balanced).

    Returns
    -------
    Tensor, ``(B,)``
        The value (differentiable).

    Raises
    ------
    ValueError
        A non-finite value, or a balanced value below zero beyond rounding (a stalled solve).
    """
    if rho is None:
        return _nonnegative(_finite((a * f).sum(-1) + (b * g).sum(-1), eps), a, f, b, g, eps)
    ma, mb = a.sum(-1), b.sum(-1)
    s = (a * -torch.expm1(-f / rho)).sum(-1) + (b * -torch.expm1(-g / rho)).sum(-1)
    forward = (rho + 0.5 * eps) * s + eps * (ma * mb - 0.5 * (ma + mb))
    envelope = (rho + eps) * s + eps * (ma * mb - ma - mb)
    return _finite(envelope + (forward - envelope).detach(), eps)


def _finite(value: torch.Tensor, eps: float) -> torch.Tensor:
    """``value`` itself, or a ``ValueError`` when a solve ended in NaN or infinity (never returned)."""
    v = value.detach()
    if not bool(torch.isfinite(v).all()):
        what = "a NaN" if bool(torch.isnan(v).any()) else "an infinite"
        raise ValueError(
            f"the Sinkhorn solve ended with {what} value in {str(v.dtype).replace('torch.', '')} (final eps = {eps:.3g}): "
            "an overflow or underflow of the costs or potentials; rescale the points or use float64"
        )
    return value


#: a balanced ``OT_eps`` below ``-ROUNDING_FACTOR * finfo.eps * (<a, |f|> + <b, |g|>)`` is no rounding error
ROUNDING_FACTOR = 64.0


def _nonnegative(value: torch.Tensor, a, f, b, g, eps: float) -> torch.Tensor:
    """``value`` itself, or a ``ValueError`` when a balanced ``OT_eps`` came out negative beyond rounding.

    ``OT_eps(a, b) = min_pi <pi, C> + eps KL(pi | a (x) b) >= 0`` for costs ``C >= 0``: a clearly negative dual
    value means potentials far from optimal (a solve that stalled: measured ``-2.3e8`` at ``p`` = 16), never a
    value to return. Rounding: ``ROUNDING_FACTOR * finfo.eps`` of the magnitudes ``<a, |f|> + <b, |g|>`` summed.
    """
    v = value.detach()
    mag = (a.detach() * f.detach().abs()).sum(-1) + (b.detach() * g.detach().abs()).sum(-1)
    bad = v < -ROUNDING_FACTOR * torch.finfo(v.dtype).eps * mag
    if bool(bad.any()):
        k = int(torch.nonzero(bad.reshape(-1))[0])
        raise ValueError(
            f"the Sinkhorn solve ended at OT_eps = {float(v.reshape(-1)[k]):.3g} < 0 (final eps = {eps:.3g}), impossible "
            "for balanced OT (OT_eps >= 0 since costs >= 0): its potentials are far from optimal (the iterations "
            "stalled); use a larger blur, raise max_iter with tol=, or for large p a smaller p"
        )
    return value


def transport_cost(op, a, f_row, h_cols, eps: float, d: float) -> torch.Tensor:
    """``<pi, C>`` for the plan with row potential ``f_row`` and column log-weights+potential ``h_cols``.

    Parameters
    ----------
    op : operator
        The rows-from-columns reduction (:mod:`otpipe.geometry.backends`).
    a : Tensor, ``(B, N)``
        Row weights.
    f_row : Tensor, ``(B, N)``
        Row potential.
    h_cols : Tensor, ``(B, M)``
        ``log b + g / eps`` on the columns.
    eps : float
        Temperature.
    d : float
        Damping of the updates (:func:`otpipe.problems.problems.damping`); ``1`` keeps the row masses ``a``.

    Returns
    -------
    Tensor, ``(B,)``
        The transport cost per batch element.
    """
    sc = op.softmax_cost(eps, h_cols)  # sum_j softmax_j C_ij
    F = op.softmin(eps, h_cols)  # undamped update
    row_mass = a * torch.exp(((f_row - F) / eps).clamp(max=80.0)) if d != 1.0 else a
    return (row_mass * sc).sum(-1)


# --------------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------------


def check_balance(P: Pair, rho: float | None) -> None:
    """A ``ValueError`` when a balanced problem (``rho=None``) has unequal total masses (beyond the dtype's rounding).

    Parameters
    ----------
    P : Pair
        The validated measures.
    rho : float or None
        KL penalty strength; unbalanced problems (a number) are not checked.
    """
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



def run_problems(P: Pair, prm: SinkhornParams, *, cross: bool, self_x: bool, self_y: bool,
                 init: dict | None = None) -> RunOutput:
    """Shared engine of :func:`solve`, :func:`solve_symmetric` and the divergences: the multiscale driver
    (:func:`otpipe.solvers.multiscale.run_multiscale`) or the fused loop (:func:`otpipe.solvers.fused.run_fused`;
    ``auto`` picks it for small CPU problems, :func:`otpipe.solvers.fused.eligible`) when the backend name resolves
    to that solver strategy, else :func:`otpipe.solvers.loop.run_full` on the operator backend (same output).

    Parameters
    ----------
    P : Pair
        The validated measures.
    prm : SinkhornParams
        Solver parameters.
    cross, self_x, self_y : bool
        Which of ``OT_eps(a, b)``, ``OT_eps(a, a)``, ``OT_eps(b, b)`` to solve.
    init : dict, optional
        Warm-start potentials by problem name (full backends only).

    Returns
    -------
    RunOutput
        The backend, schedule and each problem's :class:`~otpipe.solvers.output.Solution`.
    """
    B, N, M, _ = P.shape
    # a solver strategy (``multiscale``, ``fused``) is chosen like a backend but runs its own driver
    name = choose_backend(prm.backend, B, N, M, device=P.x.device, dtype=P.x.dtype, converging=prm.tol is not None)
    kw = dict(cross=cross, self_x=self_x, self_y=self_y)
    if name == "fused" or (name not in STRATEGIES and prm.backend == "auto" and fused.eligible(P, prm, **kw, init=init)):
        if init:
            raise ValueError("init= (warm start) is not supported by the fused backend: pass another backend")
        return fused.run_fused(P, prm, **kw)
    if name in STRATEGIES:
        if init:
            raise ValueError("init= (warm start) is not supported by the multiscale backend: pass another backend")
        from otpipe.solvers.multiscale import run_multiscale

        return run_multiscale(P, prm, **kw)
    return run_full(P, prm, **kw, init=init)


def _warm_start(init, P: Pair, prm: SinkhornParams, key: str) -> dict | None:
    """Validate ``init`` (``(f, g)`` for ``key="xy"``, ``f`` for ``"xx"``) into batched detached tensors."""
    if init is None:
        return None
    if prm.tol is None:
        raise ValueError("init= (warm start) needs tol= (the converged mode): the fixed schedule starts cold")
    if key == "xy":
        if not (isinstance(init, (tuple, list)) and len(init) == 2):
            raise ValueError("init must be a pair (f, g) of potentials")
        parts, names, sizes = list(init), ("f", "g"), (P.shape[1], P.shape[2])
    else:
        parts, names, sizes = [init], ("f",), (P.shape[1],)
    out = []
    for v, name, n in zip(parts, names, sizes):
        t = torch.as_tensor(v.detach() if torch.is_tensor(v) else v, dtype=P.x.dtype, device=P.x.device)
        if not P.batched:
            t = t[None]
        if tuple(t.shape) != (P.shape[0], n):
            want = (P.shape[0], n) if P.batched else (n,)
            raise ValueError(f"init potential {name} must have shape {want}, got {tuple(t.shape[1:] if not P.batched else t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"init potential {name} contains NaN or infinite values")
        out.append(t)
    return {key: tuple(out) if key == "xy" else out[0]}


@numpy_io
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
    init=None,
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
        of the points with positive weight (over the whole batch). With ``tol=None`` it must be at
        least half the largest side of that box (:data:`otpipe.solvers.loop.DIAMETER_MIN_FRACTION`).
    scaling : float
        Ratio of successive ``blur`` values in the eps-scaling, in ``(0, 1)``; the schedule may have at
        most :data:`otpipe.solvers.loop.MAX_TEMPERATURES` temperatures (a ``ValueError`` gives the largest that fits).
    tol : float, optional
        ``None``: the fixed eps-scaling schedule (GeomLoss's default mode), for ``0 < p <= 2`` only
        (:func:`otpipe.solvers.loop.check_mode`). A number: keep iterating at the final ``eps`` until the relative
        L1 marginal error is ``<= tol``; for ``p > 2`` the dtype must resolve every temperature.
    max_iter : int, optional
        Cap on the total number of updates when ``tol`` is set (default 10000).
    backend : {"auto", "cpu", "triton", "multiscale", "tensorized", "chunked", "keops"}
        Reduction backend; ``auto`` picks by size and device (:func:`otpipe.geometry.backends.choose_backend`; never
        ``keops``).
    cost : {"|x-y|^p/p", "|x-y|^p"}, optional
        Cost convention.
    truncate : float, optional
        ``multiscale`` backend: keep the cluster pairs whose terms can reach ``exp(-truncate)`` of a
        row's log-sum-exp (default 5). Unlike GeomLoss's ``truncate`` (a kernel radius in units of
        ``blur``) it is a bound in units of ``eps`` on the dropped terms.
    cluster_scale : float, optional
        ``multiscale`` backend: side of the voxel cells (``D <= 3``); default: about 64 points a cell.
    init : tuple ``(f, g)``, optional
        Warm start: initial potentials on ``x`` and ``y`` (shapes of :attr:`OTResult.f`/``g``), typically
        those of a previous result on nearby measures (moved points, changed weights). Needs ``tol``. The
        eps-scaling then runs at the final temperature only (``schedule == [blur^p]``): annealing exists to
        bring cold potentials close to the final ones, and restarting it from ``diameter^p`` would discard the
        warm start. It pays when the potentials move by less than ``eps`` or so: a change that moves them by several
        ``eps`` (a translation by ``eps / diameter``) can take more updates than a cold solve. Not supported by the
        ``multiscale`` backend.

    Returns
    -------
    OTResult
        Tensors for tensor input; NumPy arrays (and NumPy scalars) when no argument is a tensor
        (:mod:`otpipe._arrays`). ``solve`` does not warn about convergence: read ``marginal_error`` and
        ``converged`` (:func:`otpipe.sinkhorn_divergence` warns). A balanced value below 0 beyond rounding
        (impossible: a stalled solve) is a ``ValueError``.
    """
    prm = SinkhornParams.make(p, blur, reach, diameter, scaling, tol, max_iter, backend, cost,
                              truncate=truncate, cluster_scale=cluster_scale)
    P = validate_pair(x, y, a, b)
    check_balance(P, prm.rho)
    out = run_problems(P, prm, cross=True, self_x=False, self_y=False, init=_warm_start(init, P, prm, "xy"))
    return _result(P, prm, out, "xy")


def _result(P: Pair, prm: SinkhornParams, out: RunOutput, key: str) -> OTResult:
    """Package the output of :func:`run_problems` for problem ``key`` ("xy" or "xx")."""
    r = out[key]
    f = r.f
    g = r.g if key == "xy" else f
    b = P.b if key == "xy" else P.a
    value = dual_value(P.a, f, b, g, out.eps, prm.rho)
    un = (lambda t: t) if P.batched else (lambda t: t[0])
    return OTResult(
        value=un(value),
        f=un(f),
        g=un(g),
        n_iter=un(r.n_iter),
        marginal_error=un(r.marginal_error),
        converged=None if prm.tol is None else un(r.converged(prm.tol)),
        eps=out.eps,
        schedule=out.schedule,
        backend=out.backend,
        params=prm,
        _pair=P,
        symmetric=key != "xy",
        _fb=f.detach(),
        _gb=g.detach(),
    )


@numpy_io
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
    init=None,
) -> OTResult:
    """The self term ``OT_eps(a, a)`` with its symmetric potential (``f = g``).

    The parameters mean what they mean for :func:`solve`. Pass the same ``diameter`` as the cross terms so that
    ``S_eps(a, b) = OT_eps(a, b) - OT_eps(a, a)/2 - OT_eps(b, b)/2`` can reuse self terms
    across pairs with exactly the numbers of :func:`~otpipe.tools.losses.sinkhorn_divergence`.

    Parameters
    ----------
    x : Tensor or array
        Points ``(N, D)`` or batched ``(B, N, D)``.
    a : Tensor or array, optional
        Non-negative weights ``(N,)`` / ``(B, N)``; uniform ``1/N`` by default.
    p : float, default 2
        Exponent of the cost ``|x - y|^p / p`` (or ``|x - y|^p`` with ``cost="|x-y|^p"``).
    blur : float, default 0.05
        Final temperature ``eps = blur^p``.
    reach : float or None, default None
        Unbalanced OT with KL marginal penalties of strength ``rho = reach^p``; ``None``: balanced.
    diameter : float or None, default None
        First temperature ``diameter^p`` of the eps-scaling; ``None``: the bounding-box diagonal of the points.
    scaling : float, default 0.5
        Ratio of successive ``blur`` values in the eps-scaling, in ``(0, 1)``.
    tol : float or None, default None
        ``None``: the fixed eps-scaling schedule; a number: iterate at the final ``eps`` until the relative L1 marginal
        error is ``<= tol``.
    max_iter : int or None, default None
        Cap on the total number of updates when ``tol`` is set (``None``: :data:`DEFAULT_MAX_ITER`).
    backend : str, default "auto"
        Reduction backend or solver strategy (:func:`otpipe.geometry.backends.choose_backend`).
    cost : str or None, default None
        Cost convention, ``"|x-y|^p/p"`` (default) or ``"|x-y|^p"``.
    truncate : float or None, default None
        ``multiscale``: truncation threshold of the kept cluster pairs, in units of ``eps`` (default 5).
    cluster_scale : float or None, default None
        ``multiscale``: side of the voxel cells (``D <= 3``); ``None``: about 64 points a cell.
    init : Tensor or array, optional
        Warm start: the one potential ``f`` (shape of :attr:`OTResult.f`); needs ``tol``.

    Returns
    -------
    OTResult
        ``value`` is ``OT_eps(a, a)``, ``f`` and ``g`` the same potential; NumPy for NumPy input.
    """
    prm = SinkhornParams.make(p, blur, reach, diameter, scaling, tol, max_iter, backend, cost,
                              truncate=truncate, cluster_scale=cluster_scale)
    P = validate_pair(x, x, a, a)
    out = run_problems(P, prm, cross=False, self_x=True, self_y=False, init=_warm_start(init, P, prm, "xx"))
    return _result(P, prm, out, "xx")
