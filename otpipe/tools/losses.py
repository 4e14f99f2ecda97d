"""Loss functions between measures: Sinkhorn divergences, kernel MMDs, energy distance and the
soft-min Hausdorff loss, plus :class:`SamplesLoss`, a drop-in for ``geomloss.SamplesLoss``.

Conventions (``docs/conventions.md``; ``<a, K b> = sum_ij a_i K(x_i, y_j) b_j``):

* Sinkhorn divergence: ``S_eps(a, b) = OT_eps(a, b) - OT_eps(a, a)/2 - OT_eps(b, b)/2``, plus, for
  unbalanced problems (``reach``), Sejourne et al.'s mass term ``eps/2 (m(a) - m(b))^2`` (``m``: total mass).
* Transport-cost variant (Genevay et al. 2018): ``Wbar = W_eps(a, b) - W_eps(a, a)/2 - W_eps(b, b)/2``
  with ``W_eps = <pi_eps, C>``; this is **half** the paper's ``2 W(a,b) - W(a,a) - W(b,b)``.
* Kernel losses: ``1/2 <a, K a> + 1/2 <b, K b> - <a, K b>``, i.e. **half** the squared MMD;
  energy distance with ``K = -|x - y|`` (half of ``2E|X-Y| - E|X-X'| - E|Y-Y'|``),
  Gaussian ``exp(-|x-y|^2 / 2 sigma^2)``, Laplacian ``exp(-|x-y| / sigma)``.
* Hausdorff: ``H_eps(a, b) = 1/2 <a, F_b - F_a> + 1/2 <b, F_a - F_b>`` with the soft-min distance
  ``F_b(x) = -eps log sum_j b_j exp(-C(x, y_j) / eps)`` (Feydy et al.'s soft-Hausdorff).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from otpipe import diagnostics as _diag
from otpipe._arrays import numpy_io, short
from otpipe.diagnostics import FIXED_SCHEDULE_MAX_ERROR
from otpipe.geometry.backends import choose_backend, get_backend
from otpipe.problems.measures import log_weights, validate_pair
from otpipe.problems.problems import damping
from otpipe.solvers.loop import check_mode
from otpipe.solvers.output import RunOutput
from otpipe.solvers.sinkhorn import (
    ROUNDING_FACTOR,
    SinkhornParams,
    check_balance,
    dual_value,
    run_problems,
    transport_cost,
)

__all__ = [
    "median_distance",
    "sinkhorn_divergence",
    "divergence",
    "DivergenceResult",
    "mass_term",
    "energy_distance",
    "mmd",
    "hausdorff",
    "SamplesLoss",
]

_VARIANTS = ("dual", "transport")


@dataclass
class DivergenceResult:
    """Value of a Sinkhorn divergence with its parts and diagnostics (``full_output=True``).

    ``value = ot_xy - ot_xx / 2 - ot_yy / 2 + mass_term`` (``value = ot_xy`` when ``debias=False``);
    ``mass_term = eps/2 (m(a) - m(b))^2`` for debiased unbalanced problems (``variant="dual"``), else 0.
    The diagnostics (``n_iter``, ``marginal_error``, ``converged``) are those of the cross term
    ``OT_eps(a, b)``, with ``converged`` requiring all terms to converge.

    Attributes
    ----------
    value : Tensor
        The divergence, scalar or ``(B,)``.
    ot_xy : Tensor
        The cross term ``OT_eps(a, b)`` (or ``W_eps(a, b)`` for ``variant="transport"``).
    ot_xx : Tensor or None
        The self term of ``a``; ``None`` when ``debias=False``.
    ot_yy : Tensor or None
        The self term of ``b``; ``None`` when ``debias=False``.
    n_iter : Tensor
        Updates of the cross solve (schedule included).
    marginal_error : Tensor
        Relative L1 marginal error of the cross solve.
    converged : Tensor or None
        Whether every solve met ``tol``; ``None`` in the fixed schedule.
    eps : float
        Final temperature ``blur^p``.
    schedule : list of float
        The temperatures.
    backend : str
        The backend (or solver strategy) that ran.
    mass_term : Tensor or float, default 0.0
        Sejourne et al.'s mass term (:func:`mass_term`), 0 for balanced problems.
    """

    value: torch.Tensor
    ot_xy: torch.Tensor
    ot_xx: torch.Tensor | None
    ot_yy: torch.Tensor | None
    n_iter: torch.Tensor
    marginal_error: torch.Tensor
    converged: torch.Tensor | None
    eps: float
    schedule: list
    backend: str
    mass_term: torch.Tensor | float = 0.0

    def __repr__(self) -> str:
        return (f"DivergenceResult(value={short(self.value)}, ot_xy={short(self.ot_xy)}, eps={self.eps:.4g}, "
                f"n_iter={short(self.n_iter, 'd')}, marginal_error={short(self.marginal_error, '.2g')}, "
                f"converged={short(self.converged)}, backend={self.backend!r})")


def mass_term(a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """Sejourne et al.'s mass term ``eps/2 (m(a) - m(b))^2`` of the debiased unbalanced divergence, per batch element.

    Derivation: ``-eps <a (x) b, exp((f+g-C)/eps) - 1>`` carries the constant ``+eps m(a) m(b)`` into ``OT_eps(a, b)``
    and ``eps m(a)^2/2 + eps m(b)^2/2`` into the two halved self terms, so ``OT(a,b) - OT(a,a)/2 - OT(b,b)/2``
    contains ``-eps/2 (m(a) - m(b))^2``, which this term cancels (Sejourne et al. 2019, Def. 4: then ``S >= 0``,
    ``= 0`` iff ``a = b``). Differentiable: ``d/da_i = eps (m(a) - m(b))``.

    Parameters
    ----------
    a : torch.Tensor
        ``(B, N)`` weights of the first measure.
    b : torch.Tensor
        ``(B, M)`` weights of the second.
    eps : float
        Temperature.

    Returns
    -------
    torch.Tensor
        ``(B,)``.
    """
    return 0.5 * eps * (a.sum(-1) - b.sum(-1)) ** 2


def _errors(results: RunOutput) -> dict:
    """``{problem: marginal error (B,)}`` of the solves in a :func:`run_problems` output."""
    return {k: r.marginal_error for k, r in results.solutions.items()}


def _warn_not_converged(results: RunOutput, tol) -> None:
    """A :class:`~otpipe.diagnostics.ConvergenceWarning` when a solve ended above ``tol`` (converged mode) or above
    :data:`~otpipe.diagnostics.FIXED_SCHEDULE_MAX_ERROR` (fixed schedule, ``tol=None``)."""
    errs = _errors(results)
    if not errs:
        return
    worst = max(float(e.detach().max()) for e in errs.values())
    if tol is not None:
        if worst > tol:
            _diag.warn(f"Sinkhorn did not reach tol={tol:g} (marginal error {worst:.3g}); raise max_iter or blur")
    elif not worst <= FIXED_SCHEDULE_MAX_ERROR:
        _diag.warn(
            f"the fixed eps-scaling schedule (tol=None) ended with a marginal error of {worst:.3g}, above "
            f"{FIXED_SCHEDULE_MAX_ERROR:g} (ordinary calls end below ~1.2): the plan has lost its marginals (e.g. a "
            "dtype that cannot resolve eps = blur^p against these costs) and the value cannot be trusted; check it with "
            "tol= (e.g. 1e-4), float64 or a larger blur"
        )


def _rounding(P, results: RunOutput, debias: bool) -> torch.Tensor:
    """Error a debiased value may carry without being wrong, per batch element: ``max(ROUNDING_FACTOR * finfo.eps,
    marginal error)`` times the magnitudes ``<a, |f|> + <b, |g|>`` of the three solves' potentials."""
    a, b = P.a.detach(), P.b.detach()
    r = results["xy"]
    mags = [(a * r.f.detach().abs()).sum(-1) + (b * r.g.detach().abs()).sum(-1)]
    errs = [r.marginal_error.detach()]
    if debias:  # the halved self terms: <a, |f_aa|> and <b, |f_bb|>
        for key, w in (("xx", a), ("yy", b)):
            mags.append((w * results[key].f.detach().abs()).sum(-1))
            errs.append(results[key].marginal_error.detach())
    errs = [e.to(mags[0].dtype) for e in errs]
    fe = torch.finfo(mags[0].dtype).eps
    err = torch.stack(errs).amax(0).clamp(min=ROUNDING_FACTOR * fe)
    return err * torch.stack(mags).sum(0)


def _sign_guard(value: torch.Tensor, slack: torch.Tensor, p: float) -> torch.Tensor:
    """The debiased balanced ``S_eps`` made honest about its sign (see :func:`sinkhorn_divergence`, "Sign").

    ``p <= 2``: ``S_eps >= 0`` (the kernel ``exp(-C/eps)`` is positive definite): a negative value is returned as 0
    (its gradient kept), with a :class:`~otpipe.diagnostics.ConvergenceWarning` when it is below ``-slack``
    (more than rounding and the marginal error explain). ``p > 2``: ``S_eps`` can be negative (no such theorem):
    returned as it is, with a ``RuntimeWarning`` when below ``-slack``.
    """
    v = value.detach()
    neg = v < 0
    if not bool(neg.any()):
        return value
    beyond = v < -slack
    worst = float(v.min())
    if p <= 2.0:  # Feydy et al. 2019, Thm. 1: exp(-|x-y|^p / (p eps)) is positive definite for 0 < p <= 2
        if bool(beyond.any()):
            _diag.warn(
                f"S_eps came out at {worst:.3g} < 0 although S_eps >= 0 for p <= 2, beyond what rounding and the "
                "marginal error explain: returned as 0; the solves are not accurate enough (pass tol=, or a smaller one)"
            )
        return value + (torch.where(neg, torch.zeros_like(v), v) - v)
    if bool(beyond.any()):
        _diag.warn(
            f"S_eps = {worst:.3g} < 0: for p = {p:g} > 2 the debiased Sinkhorn loss is no divergence (exp(-C/eps) is "
            "not a positive definite kernel) and can be negative, most at large blur; as blur -> 0 it tends to the "
            "OT cost >= 0",
            RuntimeWarning,
        )
    return value


@numpy_io
def sinkhorn_divergence(
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
    debias: bool = True,
    variant: str = "dual",
    full_output: bool = False,
    truncate: float | None = None,
    cluster_scale: float | None = None,
):
    """Debiased Sinkhorn divergence ``S_eps(a, b) = OT_eps(a,b) - OT_eps(a,a)/2 - OT_eps(b,b)/2 [+ eps/2 (m(a) - m(b))^2]``.

    The bracketed mass term (``m``: total mass) is added for unbalanced problems (``reach`` set): it is
    Sejourne et al.'s (2019) unbalanced Sinkhorn divergence, ``>= 0`` and ``= 0`` only for ``a = b`` (see
    :func:`mass_term` for its one-line derivation). Without it the combination goes negative for unequal
    masses; GeomLoss drops it (``SamplesLoss`` here keeps it). On identical supports, ``a = m_a mu`` and
    ``b = m_b mu`` with ``m(mu) = 1``: ``S = (rho + eps/2) Q (m_a^k - m_b^k)^2``, ``k = (rho + eps)/(2 rho + eps)``,
    ``Q`` the mass of the self-transport plan of ``mu`` (``rho = reach^p``).

    Parameters
    ----------
    x, y : Tensor or array, ``(N, D)``/``(M, D)`` or batched ``(B, N, D)``/``(B, M, D)``
        Points; the result lives on their device and dtype.
    a, b : Tensor or array, optional
        Non-negative weights, uniform ``1/N`` by default. Balanced problems (``reach=None``) need equal total
        masses (a ``ValueError`` otherwise).
    p : float, default 2
        Exponent of the cost ``|x - y|^p / p`` (or ``|x - y|^p`` with ``cost="|x-y|^p"``).
    blur : float, default 0.05
        Final temperature ``eps = blur^p``.
    reach : float, optional
        Unbalanced OT with KL marginal penalties of strength ``rho = reach^p``.
    diameter : float, optional
        First temperature ``diameter^p`` of the eps-scaling, shared by the three solves; default: the bounding-box
        diagonal of all the points.
    scaling : float, default 0.5
        Ratio of successive ``blur`` values in the eps-scaling, in ``(0, 1)``.
    tol : float, optional
        ``None``: the fixed eps-scaling schedule (``0 < p <= 2``); a number: iterate each solve at the final ``eps``
        until its relative L1 marginal error is ``<= tol``.
    max_iter : int, optional
        Cap on the updates of each solve when ``tol`` is set (default 10000).
    backend : str, default "auto"
        Reduction backend or solver strategy (see :func:`otpipe.solve`).
    cost : {"|x-y|^p/p", "|x-y|^p"}, optional
        Cost convention.
    debias : bool, default True
        ``False`` returns ``OT_eps(a, b)`` alone.
    variant : {"dual", "transport"}, default "dual"
        ``"dual"``: the entropic OT value above. ``"transport"``: the transport cost of the
        entropic plan, ``W_eps = <pi_eps, C>`` (Genevay et al. 2018; what POT's ``sinkhorn2``
        returns), debiased as ``W(a,b) - W(a,a)/2 - W(b,b)/2``. The transport variant is
        returned without gradient. Unbalanced (``reach``), it is **not** a divergence and no
        correction depending on the masses alone makes it one: on identical supports it equals
        ``-W_mu/2 (m_a^k - m_b^k)^2 <= 0`` (``W_mu = <pi_mu, C>``, the plans scale as ``(m_a m_b)^k pi_mu``),
        and with equal masses it still tends to ``-W(a,a)/2 - W(b,b)/2 < 0`` as the supports move apart
        (the cross plan's mass vanishes); a ``RuntimeWarning`` says so.
    full_output : bool, default False
        Return a :class:`DivergenceResult` with the parts and diagnostics instead of a tensor.
    truncate, cluster_scale : float, optional
        ``multiscale`` backend settings (see :func:`otpipe.solve`).

    Returns
    -------
    Tensor or DivergenceResult
        Scalar, or ``(B,)`` for batched input; differentiable w.r.t. points and weights
        (envelope theorem) for ``variant="dual"``. NumPy input (no tensor argument): a NumPy
        scalar or array (:mod:`otpipe._arrays`). With ``full_output=True``: a :class:`DivergenceResult`.

    Raises
    ------
    ValueError
        Besides bad input: ``p > 2`` without ``tol`` (the fixed schedule is supported for ``0 < p <= 2``), a
        ``diameter`` below the points' extent without ``tol``, ``p > 2`` with a blur the dtype cannot resolve
        (:func:`otpipe.solvers.loop.check_mode` and neighbours name the supported range), a ``scaling`` that makes more
        than :data:`otpipe.solvers.loop.MAX_TEMPERATURES` temperatures, or a solve that ended at a negative balanced
        ``OT_eps`` (impossible: the iterations stalled).

    Warns
    -----
    ConvergenceWarning
        (:class:`otpipe.ConvergenceWarning`, a ``RuntimeWarning``) when a solve ends above ``tol``, or, in the fixed
        schedule, above a marginal error of :data:`otpipe.diagnostics.FIXED_SCHEDULE_MAX_ERROR` (that schedule ends
        at 0.1-1.1 on ordinary calls by design, see :mod:`otpipe.diagnostics`).

    Notes
    -----
    Sign. For ``0 < p <= 2`` the balanced debiased ``S_eps`` is ``>= 0`` (Feydy et al. 2019: ``exp(-C/eps)`` is a
    positive definite kernel); a computed value below 0 is returned as ``0`` (its gradient kept), silently within
    rounding and the achieved marginal error (``max(64 finfo.eps, error) x (<a,|f|> + <b,|g|>)`` summed over the
    three solves), with a ``ConvergenceWarning`` beyond. For ``p > 2`` there is no such theorem: ``S_eps`` is then
    no divergence and can be truly negative (two measures ``delta_0`` and ``(delta_-1 + delta_1)/2``: ``S_eps ->
    (4 - 2^p) / (4p)`` as ``blur -> inf``); it is returned as it is, with a ``RuntimeWarning`` when negative.
    """
    if variant not in _VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: use 'dual' or 'transport'")
    prm = SinkhornParams.make(p, blur, reach, diameter, scaling, tol, max_iter, backend, cost,
                              truncate=truncate, cluster_scale=cluster_scale)
    return _divergence(x, y, a, b, prm, debias, variant, full_output)


@numpy_io
def divergence(x, y, a=None, b=None, params: SinkhornParams | None = None, *, debias: bool = True,
               variant: str = "dual", full_output: bool = False):
    """:func:`sinkhorn_divergence` with its solver parameters given as one validated :class:`SinkhornParams`.

    Parameters
    ----------
    x, y, a, b
        The measures (see :func:`otpipe.solve`).
    params : SinkhornParams, optional
        Solver parameters (:meth:`SinkhornParams.make`); default ``SinkhornParams.make()``.
    debias, variant, full_output
        As in :func:`sinkhorn_divergence`.

    Returns
    -------
    Tensor or DivergenceResult
        As :func:`sinkhorn_divergence`.
    """
    if variant not in _VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: use 'dual' or 'transport'")
    return _divergence(x, y, a, b, SinkhornParams.make() if params is None else params, debias, variant, full_output)


def _divergence(x, y, a, b, prm: SinkhornParams, debias: bool, variant: str, full_output: bool):
    """The body of :func:`sinkhorn_divergence` and :func:`divergence`: validate the measures, solve, combine."""
    P = validate_pair(x, y, a, b)
    check_balance(P, prm.rho)
    # attributed to the caller outside otpipe (through the numpy_io wrapper and SamplesLoss)
    if variant == "transport" and _needs_any_grad(P):
        _diag.warn("variant='transport' is returned without gradient", RuntimeWarning)
    if variant == "transport" and debias and prm.rho is not None:
        _diag.warn(
            "the debiased unbalanced transport variant is not a divergence (it can be negative, even for equal "
            "masses); use variant='dual' for Sejourne et al.'s unbalanced Sinkhorn divergence",
            RuntimeWarning,
        )
    grad_ctx = torch.no_grad() if variant == "transport" else _nullcontext()
    with grad_ctx:
        out = run_problems(P, prm, cross=True, self_x=debias, self_y=debias)
    _warn_not_converged(out, prm.tol)
    eps, rho = out.eps, prm.rho
    d = damping(eps, rho)
    xy = out["xy"]
    with grad_ctx:
        if variant == "dual":
            ot_xy = dual_value(P.a, xy.f, P.b, xy.g, eps, rho)
            ot_xx = dual_value(P.a, out["xx"].f, P.a, out["xx"].f, eps, rho) if debias else None
            ot_yy = dual_value(P.b, out["yy"].f, P.b, out["yy"].f, eps, rho) if debias else None
        else:
            pb = xy.problem
            ot_xy = transport_cost(pb.op_xy, P.a, xy.f, pb.lb + pb.g / eps, eps, d)
            if debias:
                sx, sy = out["xx"].problem, out["yy"].problem
                ot_xx = transport_cost(sx.op, P.a, out["xx"].f, sx.la + sx.f / eps, eps, d)
                ot_yy = transport_cost(sy.op, P.b, out["yy"].f, sy.la + sy.f / eps, eps, d)
            else:
                ot_xx = ot_yy = None
    mt = 0.0
    if debias and variant == "dual" and rho is not None:
        mt = mass_term(P.a, P.b, eps)
    value = ot_xy if not debias else ot_xy - 0.5 * (ot_xx + ot_yy) + mt
    if debias and variant == "dual" and rho is None:
        value = _sign_guard(value, _rounding(P, out, debias), prm.p)
    un = (lambda t: t) if P.batched else (lambda t: None if t is None else t[0])
    if not full_output:
        return un(value)
    conv = None
    if prm.tol is not None:
        conv = xy.converged(prm.tol)
        if debias:
            conv = conv & out["xx"].converged(prm.tol) & out["yy"].converged(prm.tol)
    return DivergenceResult(
        value=un(value),
        ot_xy=un(ot_xy),
        ot_xx=un(ot_xx),
        ot_yy=un(ot_yy),
        n_iter=un(xy.n_iter),
        marginal_error=un(xy.marginal_error),
        converged=un(conv),
        eps=eps,
        schedule=out.schedule,
        backend=out.backend,
        mass_term=un(mt) if torch.is_tensor(mt) else mt,
    )


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _needs_any_grad(P) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in (P.x, P.y, P.a, P.b))


# --------------------------------------------------------------------------------------------
# kernel losses
# --------------------------------------------------------------------------------------------

_KERNELS = ("gaussian", "laplacian", "energy")


#: the seeded generators :func:`median_distance` may draw its subsample with
SUBSAMPLERS = ("torch", "numpy")


def median_distance(z: torch.Tensor, *, max_points: int = 1000, subsample: str = "torch", exact: bool = False) -> float:
    """Median heuristic for a kernel bandwidth: ``median_{i<j} |z_i - z_j|`` over the points ``z``.

    Parameters
    ----------
    z : torch.Tensor
        Points ``(N, D)`` (a pooled sample).
    max_points : int
        Above this many points, the median of a subsample of ``max_points`` of them, drawn uniformly
        without replacement with seed 0 (deterministic).
    subsample : {"torch", "numpy"}
        The generator of that subsample: ``torch.randperm`` (what the kernel losses use, on ``max_points = 1000``)
        or ``numpy.random.default_rng(0).choice`` (the two-sample tests, on 2000). Both are uniform draws, so
        either estimates the same median; each is kept where it is used because it fixes which points are drawn,
        hence the bandwidth to the last bit, and with it the losses and p-values of results already computed.
    exact : bool
        Distances from exact coordinate differences (exact zeros between equal points) rather than torch's
        ``|x|^2 - 2 x.y + |y|^2`` shortcut, which ``torch.cdist`` takes for more than 25 points.

    Returns
    -------
    float
        The median distance; ``1.0`` when it is 0 (every point the same) or there is no pair.
    """
    if subsample not in SUBSAMPLERS:
        raise ValueError(f"unknown subsample {subsample!r}: use one of {', '.join(SUBSAMPLERS)}")
    n = z.shape[0]
    if n > max_points:
        if subsample == "numpy":
            import numpy as np

            idx = torch.from_numpy(np.random.default_rng(0).choice(n, max_points, replace=False))
        else:
            idx = torch.randperm(n, generator=torch.Generator(device="cpu").manual_seed(0))[:max_points]
        z = z[idx.to(z.device)]
    d = torch.cdist(z, z, compute_mode="donot_use_mm_for_euclid_dist") if exact else torch.cdist(z, z)
    iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1, device=z.device)
    vals = d[iu[0], iu[1]]
    med = float(vals.median()) if vals.numel() else 0.0
    return med if med > 0 else 1.0


def _kernel_terms(P, kernel: str, sigma: float, backend: str):
    B, N, M, _ = P.shape
    mod = get_backend(choose_backend(backend, B, N, M, device=P.x.device, dtype=P.x.dtype))
    from otpipe.geometry.costs import Cost

    c = Cost()
    Kxx_a = mod.operator(P.x, P.x, c).kernel_apply(kernel, sigma, P.a)
    Kyy_b = mod.operator(P.y, P.y, c).kernel_apply(kernel, sigma, P.b)
    Kxy_b = mod.operator(P.x, P.y, c).kernel_apply(kernel, sigma, P.b)
    Kyx_a = mod.operator(P.y, P.x, c).kernel_apply(kernel, sigma, P.a)
    return Kxx_a, Kyy_b, Kxy_b, Kyx_a


def _kernel_loss(x, y, a, b, kernel: str, sigma, backend: str = "auto", potentials: bool = False):
    if kernel not in _KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}: use one of {_KERNELS}")
    P = validate_pair(x, y, a, b)
    if kernel == "energy":
        _check_balance_energy(P)
        sigma = 1.0
    elif sigma is None or sigma == "median":
        sigma = median_distance(torch.cat([P.x.reshape(-1, P.x.shape[-1]), P.y.reshape(-1, P.y.shape[-1])]).detach())
    else:
        sigma = float(sigma)
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
    # the loss is quadratic in the weights: computed for weights / s (s the larger total mass, per batch element,
    # a constant for autograd) and scaled back by s^2, so that weight products cannot overflow on the way
    s = torch.maximum(P.a.detach().sum(-1), P.b.detach().sum(-1))
    Pn = dataclasses.replace(P, a=P.a / s[:, None], b=P.b / s[:, None])
    Kxx_a, Kyy_b, Kxy_b, Kyx_a = _kernel_terms(Pn, kernel, sigma, backend)
    un = (lambda t: t) if P.batched else (lambda t: t[0])
    if potentials:
        F, G = (Kxx_a - Kxy_b) * s[:, None], (Kyy_b - Kyx_a) * s[:, None]
        _finite_kernel(torch.cat([F.detach(), G.detach()], -1), kernel, s)
        return un(F), un(G)
    val = 0.5 * (Pn.a * Kxx_a).sum(-1) + 0.5 * (Pn.b * Kyy_b).sum(-1) - (Pn.a * Kxy_b).sum(-1)
    val = (val * s) * s
    _finite_kernel(val.detach(), kernel, s)
    return un(val)


def _check_balance_energy(P) -> None:
    """The energy distance needs equal total masses: ``K = -|x - y|`` is only conditionally positive definite, so
    ``1/2 <a - b, K (a - b)>`` is a (squared) distance only when ``sum(a - b) = 0`` (measured: -0.926 for
    ``b = 2 a`` on the same points). Same test and tolerance as the balanced Sinkhorn divergence."""
    ma, mb = P.a.detach().sum(-1), P.b.detach().sum(-1)
    tol = 1e-4 if P.x.dtype == torch.float32 else 1e-7
    bad = (ma - mb).abs() > tol * torch.maximum(ma, mb)
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[0])
        raise ValueError(
            f"the energy distance needs equal total masses, got {float(ma[k]):.6g} and {float(mb[k]):.6g}"
            + (f" (batch element {k})" if P.batched else "")
            + ": normalise the weights (with K = -|x - y| unequal masses can give negative values)"
        )


def _finite_kernel(v: torch.Tensor, kernel: str, s: torch.Tensor) -> None:
    """A ``ValueError`` when a kernel loss overflows its dtype once scaled back by the squared total mass."""
    if bool(torch.isfinite(v).all()):
        return
    raise ValueError(
        f"the {kernel} loss overflows {str(v.dtype).replace('torch.', '')}: it scales with the squared total mass "
        f"({float(s.max()):.3g}^2); rescale the weights (divide them by a common factor; the loss divides by its square)"
    )


@numpy_io
def energy_distance(x, y, a=None, b=None, *, backend: str = "auto"):
    """Energy distance ``1/2 <a - b, K (a - b)>`` with ``K(x, y) = -|x - y|``.

    Equals half of ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (GeomLoss's normalisation), and the
    ``eps -> inf`` limit of the Sinkhorn divergence with ``p = 1``. The total masses must be equal (a
    ``ValueError`` otherwise: ``-|x - y|`` is only conditionally positive definite). Weights of any scale:
    the loss is computed for normalised weights and scaled back by the squared mass (a ``ValueError`` if that
    overflows).

    Parameters
    ----------
    x, y : Tensor or array, ``(N, D)``/``(M, D)`` or batched ``(B, N, D)``/``(B, M, D)``
        Points.
    a, b : Tensor or array, optional
        Non-negative weights, uniform ``1/N`` by default.
    backend : str, default "auto"
        Reduction backend of the kernel products.

    Returns
    -------
    Tensor
        Scalar, or ``(B,)`` for batched input; differentiable w.r.t. points and weights. NumPy for NumPy input.
    """
    return _kernel_loss(x, y, a, b, "energy", None, backend)


@numpy_io
def mmd(x, y, a=None, b=None, *, kernel: str = "gaussian", sigma="median", backend: str = "auto"):
    """Kernel MMD loss ``1/2 <a - b, K (a - b)>`` (half the squared MMD; the V-statistic).

    Parameters
    ----------
    x, y : Tensor or array, ``(N, D)``/``(M, D)`` or batched ``(B, N, D)``/``(B, M, D)``
        Points.
    a, b : Tensor or array, optional
        Non-negative weights, uniform ``1/N`` by default.
    kernel : {"gaussian", "laplacian", "energy"}, default "gaussian"
        ``exp(-|x-y|^2 / 2 sigma^2)``, ``exp(-|x-y| / sigma)`` or ``-|x-y|``.
    sigma : float or "median", default "median"
        Bandwidth; ``"median"`` uses the median pairwise distance of the pooled points (:func:`median_distance`).
    backend : str, default "auto"
        Reduction backend of the kernel products.

    Returns
    -------
    Tensor
        Scalar, or ``(B,)`` for batched input; differentiable w.r.t. points and weights. NumPy for NumPy input.

    Notes
    -----
    Unequal total masses: ``"energy"`` refuses them (as :func:`energy_distance`); the Gaussian and Laplacian kernels
    are positive definite, so ``1/2 |a - b|_K^2`` stays a squared distance between measures of any masses and is
    returned as defined. Weights of any scale: computed for weights divided by the larger total mass and scaled
    back by its square (a ``ValueError`` if that overflows).
    """
    return _kernel_loss(x, y, a, b, kernel, sigma, backend)


@numpy_io
def hausdorff(
    x,
    y,
    a=None,
    b=None,
    *,
    p: float = 2,
    blur: float = 0.05,
    cost: str | None = None,
    backend: str = "auto",
    potentials: bool = False,
):
    """Soft-min Hausdorff loss ``H_eps(a, b) = 1/2 <a - b, F_b - F_a>``, ``eps = blur^p``.

    ``F_b(x) = -eps log sum_j b_j exp(-C(x, y_j)/eps)`` is a soft distance to the support of
    ``b``; as ``blur -> 0``, ``H`` tends to the symmetric (Chamfer/ICP) Hausdorff-type loss.
    Differentiable w.r.t. points and weights (plain autograd: no optimisation is involved).

    Parameters
    ----------
    x, y : Tensor or array, ``(N, D)``/``(M, D)`` or batched ``(B, N, D)``/``(B, M, D)``
        Points.
    a, b : Tensor or array, optional
        Non-negative weights, uniform ``1/N`` by default.
    p : float, default 2
        Exponent of the cost.
    blur : float, default 0.05
        Temperature ``eps = blur^p``.
    cost : {"|x-y|^p/p", "|x-y|^p"}, optional
        Cost convention.
    backend : str, default "auto"
        Reduction backend.
    potentials : bool, default False
        Return the potentials ``(F_b - F_a on x, F_a - F_b on y)`` instead of the value.

    Returns
    -------
    Tensor or tuple of Tensor
        The loss, scalar or ``(B,)``; with ``potentials=True`` the two potentials. NumPy for NumPy input.
    """
    prm = SinkhornParams.make(p=p, blur=blur, backend=backend, cost=cost)
    P = validate_pair(x, y, a, b)
    B, N, M, _ = P.shape
    mod = get_backend(choose_backend(prm.backend, B, N, M, device=P.x.device, dtype=P.x.dtype))
    eps = prm.blur**prm.p
    la, lb = log_weights(P.a, detach=False), log_weights(P.b, detach=False)
    c = prm.cost
    f_b = mod.operator(P.x, P.y, c).softmin(eps, lb)  # F_b on x
    f_a = mod.operator(P.x, P.x, c).softmin(eps, la)  # F_a on x
    g_a = mod.operator(P.y, P.x, c).softmin(eps, la)  # F_a on y
    g_b = mod.operator(P.y, P.y, c).softmin(eps, lb)  # F_b on y
    un = (lambda t: t) if P.batched else (lambda t: t[0])
    if potentials:
        return un(f_b - f_a), un(g_a - g_b)
    val = 0.5 * (P.a * (f_b - f_a)).sum(-1) + 0.5 * (P.b * (g_a - g_b)).sum(-1)
    return un(val)


# --------------------------------------------------------------------------------------------
# SamplesLoss
# --------------------------------------------------------------------------------------------

_LOSSES = ("sinkhorn", "hausdorff", "energy", "gaussian", "laplacian")


class SamplesLoss(torch.nn.Module):
    """Distances between sampled measures, with the arguments and call forms of ``geomloss.SamplesLoss``.

    ``loss(x, y)`` or ``loss(a, x, b, y)`` with ``x (N, D)`` / ``(B, N, D)`` and weights
    ``a (N,)`` / ``(B, N)``; returns a scalar (or ``(B,)``), or with ``potentials=True`` the
    pair ``(F, G)`` of dual potentials / kernel potentials sampled on ``x`` and ``y``.

    Parameters
    ----------
    loss : {"sinkhorn", "hausdorff", "energy", "gaussian", "laplacian"}, default "sinkhorn"
        The loss.
    p, blur, reach, diameter, scaling, debias, backend
        As in GeomLoss; ``blur`` is the kernel bandwidth for "gaussian"/"laplacian".
    tol, max_iter
        Convergence control (``tol=None``: GeomLoss's fixed eps-scaling schedule).
    variant : {"dual", "transport"}
        See :func:`sinkhorn_divergence`.
    cost : {"|x-y|^p/p", "|x-y|^p"}, optional
        Cost convention (GeomLoss's formula strings and callables are not supported).
    truncate, cluster_scale
        ``multiscale`` backend settings (see :func:`otpipe.solve`); ``truncate`` there bounds the dropped
        terms by ``exp(-truncate)`` of each row's sum, where GeomLoss's is a kernel radius in ``blur`` units.
    kernel, verbose
        Accepted for signature compatibility; ``kernel`` must be None.
    potentials : bool, default False
        Return the pair ``(F, G)`` of potentials sampled on ``x`` and ``y`` instead of the value.

    Notes
    -----
    Values and gradients equal GeomLoss's (tensorized backend, float64: to ~1e-13) except where GeomLoss is off
    (README, "Where otpipe differs from GeomLoss and why"; each case tested in ``tests/test_geomloss_differences.py``):
    GeomLoss floors distances at 1e-4 (``p=1`` Sinkhorn, Laplacian and energy kernels: otpipe uses exact
    distances); its unbalanced position gradients are ``(rho + eps/2)/(rho + eps)`` of the true ones (otpipe's
    match finite differences); its ``"hausdorff"`` loss raises ``KeyError``; its unbalanced ``debias=False`` value
    lacks the dual's constant ``eps (m(a) m(b) - (m(a) + m(b))/2)``. The debiased unbalanced value carries
    Sejourne et al.'s mass term ``eps/2 (m(a) - m(b))^2`` in both (GeomLoss through its Prop. 12 formula).
    ``potentials=True`` with ``reach`` returns the debiased dual potentials ``F - F_aa``, as GeomLoss does: they
    are not the gradient of the unbalanced value w.r.t. the weights.
    """

    def __init__(
        self,
        loss: str = "sinkhorn",
        p: float = 2,
        blur: float = 0.05,
        reach: float | None = None,
        diameter: float | None = None,
        scaling: float = 0.5,
        truncate: float | None = 5,
        cost=None,
        kernel=None,
        cluster_scale=None,
        debias: bool = True,
        potentials: bool = False,
        verbose: bool = False,
        backend: str = "auto",
        *,
        tol: float | None = None,
        max_iter: int | None = None,
        variant: str = "dual",
    ):
        super().__init__()
        if loss not in _LOSSES:
            raise ValueError(f"unknown loss {loss!r}: use one of {_LOSSES}")
        if callable(cost):
            raise ValueError("custom cost callables are not supported: use p= and cost='|x-y|^p/p' or '|x-y|^p'")
        if kernel is not None:
            raise ValueError("custom kernels are not supported")
        self.loss, self.p, self.blur, self.reach = loss, p, blur, reach
        self.diameter, self.scaling, self.truncate, self.cost = diameter, scaling, truncate, cost
        self.cluster_scale = cluster_scale
        self.debias, self.potentials, self.verbose, self.backend = debias, potentials, verbose, backend
        self.tol, self.max_iter, self.variant = tol, max_iter, variant
        # validate once, early
        prm = self._params()
        if loss == "sinkhorn":
            check_mode(prm)

    def _params(self) -> SinkhornParams:
        """The solver parameters of the current attributes, validated (one object passed to the solvers)."""
        return SinkhornParams.make(self.p, self.blur, self.reach, self.diameter, self.scaling, self.tol,
                                   self.max_iter, self.backend, self.cost, truncate=self.truncate,
                                   cluster_scale=self.cluster_scale)

    def extra_repr(self) -> str:
        """The module's settings shown by ``repr`` (``torch.nn.Module`` hook).

        Returns
        -------
        str
            ``loss``, ``p``, ``blur``, ``reach`` and ``debias``.
        """
        return f"loss={self.loss!r}, p={self.p}, blur={self.blur}, reach={self.reach}, debias={self.debias}"

    def forward(self, *args):
        """The loss between two measures, ``loss(x, y)`` or ``loss(a, x, b, y)``.

        Parameters
        ----------
        *args : Tensor or array
            ``(x, y)`` (uniform weights) or ``(a, x, b, y)``; points ``(N, D)`` / ``(B, N, D)``, weights ``(N,)`` /
            ``(B, N)``.

        Returns
        -------
        Tensor or tuple of Tensor
            Scalar (or ``(B,)``); with ``potentials=True`` the pair ``(F, G)`` sampled on ``x`` and ``y``.

        Raises
        ------
        ValueError
            If called with another number of arguments, or on bad input.
        """
        if len(args) == 2:
            x, y = args
            a = b = None
        elif len(args) == 4:
            a, x, b, y = args
        else:
            raise ValueError("SamplesLoss takes (x, y) or (a, x, b, y)")
        if self.loss == "sinkhorn":
            if self.potentials:
                return self._sinkhorn_potentials(x, y, a, b)
            return divergence(x, y, a, b, self._params(), debias=self.debias, variant=self.variant)
        if self.loss == "hausdorff":
            return hausdorff(x, y, a, b, p=self.p, blur=self.blur, cost=self.cost, backend=self.backend,
                             potentials=self.potentials)
        sigma = None if self.loss == "energy" else self.blur
        return _kernel_loss(x, y, a, b, self.loss, sigma, self.backend, potentials=self.potentials)

    def _sinkhorn_potentials(self, x, y, a, b):
        prm = self._params()
        P = validate_pair(x, y, a, b)
        check_balance(P, prm.rho)
        out = run_problems(P, prm, cross=True, self_x=self.debias, self_y=self.debias)
        _warn_not_converged(out, prm.tol)
        F, G = out["xy"].f, out["xy"].g
        if self.debias:
            F, G = F - out["xx"].f, G - out["yy"].f
        un = (lambda t: t) if P.batched else (lambda t: t[0])
        return un(F), un(G)
