"""The Sinkhorn loop: parameters, the eps-scaling schedule, the alternating updates and their
stopping rule, shared by the full solver and the multiscale driver.

Problems are :class:`~otpipe.problems.problems.CrossProblem` (``OT_eps(a, b)``, potentials ``f, g``) and
:class:`~otpipe.problems.problems.SymmetricProblem` (``OT_eps(a, a)``, one potential); both talk only to reduction
operators (:mod:`otpipe.geometry.backends`). :func:`run_full` runs
them on full (not truncated) operators; :mod:`otpipe.solvers.multiscale` runs the same problems on clusters
and block-sparse operators; :mod:`otpipe.solvers.sinkhorn` picks one and packages the results.

Imports go one way: ``sinkhorn -> multiscale -> loop -> problems -> geometry``. This module knows nothing of Dask or Zarr.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from otpipe import diagnostics as _diag
from otpipe.geometry.backends import choose_backend, get_backend
from otpipe.geometry.costs import Cost, check_range, format_log, make_cost
from otpipe.geometry.costs import box_extents as _box_extents
from otpipe.geometry.costs import diagonal as _diagonal
from otpipe.problems.measures import Pair
from otpipe.problems.problems import CrossProblem, SymmetricProblem, damping
from otpipe.solvers.anderson import Anderson
from otpipe.solvers.output import RunOutput, Solution

__all__ = ["SinkhornParams", "epsilon_schedule", "run_full", "iterate", "backend_and_schedule", "needs_grad",
           "check_mode", "n_temperatures", "max_scaling", "DEFAULT_MAX_ITER", "STAGE_TOL",
           "MAX_TEMPERATURES", "FIXED_SCHEDULE_MAX_P", "DIAMETER_MIN_FRACTION"]

#: default iteration cap (schedule included) when a tolerance is given
DEFAULT_MAX_ITER = 10000
#: marginal error targeted at intermediate temperatures of the converging mode
STAGE_TOL = 1e-2
#: updates without halving the error after which a temperature is considered stalled
STALL_ITERS = 500
#: over-relaxation factor of the converging updates (1: plain alternating Sinkhorn; Thibault et al. 2017)
OVERRELAX = 1.8

#: the converging mode mixes the updates (Anderson, :func:`_iterate_mixed`) of problems with at least this many
#: points; smaller ones keep the over-relaxed alternating updates. Measured: the
#: mixing's least-squares steps on 5-15-point problems (a free-support barycenter's inner solves) sent them astray
#: (a 1e-15 change of the weights moved a 10-point barycenter by 0.57), and on 3-atom problems they stall where the
#: over-relaxed updates converge; from a few hundred points on they converge 2-21x faster at small blur
ANDERSON_MIN_POINTS = 80
#: marginal error targeted at intermediate temperatures by the mixed iteration (a warm start for the next).
#: Measured: 1e-2 let a stage end with whole points unmatched (2 / N of the mass for N = 300), which the next,
#: colder temperature repairs only by moving potentials many eps (thousands of updates); 1e-3 and 1e-4 gave similar
#: totals
MIX_STAGE_TOL = 1e-4
#: iterates kept by the Anderson mixing (20 was 2-8x faster than 10 at small blur; 50 was no better)
ANDERSON_MEMORY = 20
#: Tikhonov term of the mixing least squares, relative to the largest squared residual difference
ANDERSON_RIDGE = 1e-10
#: an error this many times the best of the temperature drops the mixing history (safeguard)
RESTART_FACTOR = 10.0
#: stall window once the error is at the rounding floor ``finfo.eps * max|potential| / eps`` (float32 at small
#: blur: the potentials' rounding alone makes errors of ~1e-4 there)
NOISE_ITERS = 100


#: most temperatures an eps-scaling may have (:func:`epsilon_schedule`): as many as the default update cap of the
#: converging mode (each temperature gets at least one update); at 30 x 25 points one temperature of the fixed
#: schedule takes ~0.2 ms, so the cap is ~2 s there, and minutes from ~10,000 points on (a scaling of 0.9999 asked
#: for 46,000 temperatures, 0.999999 for 4.6 million: 15 minutes)
MAX_TEMPERATURES = 10_000


def n_temperatures(diameter: float, blur: float, scaling: float) -> int:
    """Number of temperatures of :func:`epsilon_schedule`, independent of ``p``.

    ``2 + ceil(log(diameter / blur) / log(1 / scaling))``, or ``2`` when ``blur >= diameter``.

    Parameters
    ----------
    diameter : float
        First blur of the schedule.
    blur : float
        Final blur.
    scaling : float
        Ratio of successive blurs, in ``(0, 1)``.

    Returns
    -------
    int
        The number of temperatures.
    """
    if not blur < diameter:
        return 2
    return 2 + max(0, math.ceil(math.log(diameter / blur) / -math.log(scaling) - 1e-12))


def max_scaling(diameter: float, blur: float, limit: int = MAX_TEMPERATURES) -> float:
    """The largest ``scaling`` whose schedule from ``diameter`` to ``blur`` has at most ``limit`` temperatures.

    Parameters
    ----------
    diameter : float
        First blur of the schedule.
    blur : float
        Final blur.
    limit : int, default MAX_TEMPERATURES
        Most temperatures allowed (at least 3).

    Returns
    -------
    float
        ``exp(-log(diameter / blur) / (limit - 2))``; ``1.0`` when ``blur >= diameter``.
    """
    if not blur < diameter:
        return 1.0
    return math.exp(-math.log(diameter / blur) / (limit - 2))


def epsilon_schedule(p: float, diameter: float, blur: float, scaling: float) -> list[float]:
    """Temperatures of the eps-scaling: ``diameter^p``, then ``x scaling^p`` per step, down to ``blur^p``.

    ``[D^p] + [exp(e) for e in arange(p log D, p log blur, p log scaling)] + [blur^p]``.

    Parameters
    ----------
    p : float
        Exponent of the cost.
    diameter : float
        First blur (positive, finite).
    blur : float
        Final blur (positive, finite).
    scaling : float
        Ratio of successive blurs, in ``(0, 1)``.

    Returns
    -------
    list of float
        The temperatures, decreasing from ``diameter^p`` to ``blur^p``.

    Raises
    ------
    ValueError
        On a ``scaling`` outside ``(0, 1)``, a non-positive ``diameter`` or ``blur``, or a schedule of more than
        :data:`MAX_TEMPERATURES` temperatures (``scaling`` too close to 1; the message gives the largest that fits).
    """
    if not 0.0 < scaling < 1.0:
        raise ValueError(f"scaling must be in (0, 1), got {scaling}")
    if not (diameter > 0 and math.isfinite(diameter)):
        raise ValueError(f"diameter must be positive and finite, got {diameter}")
    if not (blur > 0 and math.isfinite(blur)):
        raise ValueError(f"blur must be positive and finite, got {blur}")
    n = n_temperatures(diameter, blur, scaling)
    if n > MAX_TEMPERATURES:
        fit = math.floor(max_scaling(diameter, blur) * 1e6) / 1e6
        raise ValueError(
            f"scaling={scaling:g} makes an eps-scaling of {n:,} temperatures from diameter {diameter:.3g} down to blur "
            f"{blur:.3g} (one solver update or more each), above the limit of {MAX_TEMPERATURES:,}: use scaling <= "
            f"{fit:g} (or tol= with the default scaling 0.5 to converge at the final temperature)"
        )
    steps = np.arange(p * np.log(diameter), p * np.log(blur), p * np.log(scaling))
    return [diameter**p] + [float(np.exp(e)) for e in steps] + [blur**p]


@dataclass(frozen=True)
class SinkhornParams:
    """Validated solver parameters (built by :meth:`make`; see :func:`otpipe.solvers.sinkhorn.solve`).

    Parameters
    ----------
    p : float, default 2.0
        Exponent of the cost.
    blur : float, default 0.05
        Final temperature ``eps = blur^p``.
    reach : float or None, default None
        Unbalanced OT with KL penalties of strength ``rho = reach^p`` (:attr:`rho`); ``None``: balanced.
    diameter : float or None, default None
        First blur of the eps-scaling; ``None``: the bounding-box diagonal of the points.
    scaling : float, default 0.5
        Ratio of successive blurs, in ``(0, 1)``.
    tol : float or None, default None
        Marginal-error tolerance at the final temperature; ``None``: the fixed schedule.
    max_iter : int or None, default None
        Cap on the total number of updates when ``tol`` is set.
    backend : str, default "auto"
        Reduction backend or solver strategy name.
    cost : Cost, default Cost()
        The ground cost (its ``p`` is the ``p`` above).
    truncate : float or None, default None
        ``multiscale``: truncation threshold in units of ``eps``.
    cluster_scale : float or None, default None
        ``multiscale``: side of the voxel cells.
    """

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
    ) -> SinkhornParams:
        """Validate user-facing parameters and build the parameter object.

        Parameters
        ----------
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
            ``None``: the fixed eps-scaling schedule; a number: iterate at the final ``eps`` until the relative L1
            marginal
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

        Returns
        -------
        SinkhornParams
            The validated parameters (numbers as floats, ``cost`` as a :class:`~otpipe.geometry.costs.Cost`).

        Raises
        ------
        ValueError
            On a non-positive or non-finite ``p``, ``blur``, ``reach``, ``diameter``, ``tol``, ``truncate`` or
            ``cluster_scale``, a ``scaling`` outside ``(0, 1)``, a ``max_iter`` that is not a positive integer, a
            ``backend`` that is not a string, or an unknown ``cost``.
        """
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
        if self.reach is None:
            return None
        try:
            return self.reach**self.p
        except OverflowError:
            raise ValueError(f"reach^p = {self.reach:.3g}^{self.p:g} overflows float64: use a smaller reach") from None




def iterate(problems, schedule, rho, tol, max_iter, overrelax=None) -> list[torch.Tensor]:
    """Run the eps-scaling on ``problems`` in place (their potentials end at the last temperature).

    ``tol=None``: one symmetric (averaged) update per temperature, GeomLoss's schedule.
    ``tol`` set: at every temperature, alternating updates until the marginal error of every
    problem is ``<= tol`` (warm start for the next one; intermediate temperatures stop at
    ``max(tol, STAGE_TOL)``), over-relaxed by ``overrelax`` after a few plain updates, with a fall-back to plain
    updates if the error blows up, and a stop when a temperature makes no progress (reported as not converged);
    problems of at least :data:`ANDERSON_MIN_POINTS` points are mixed instead (:func:`_iterate_mixed`).

    Parameters
    ----------
    problems : list of CrossProblem or SymmetricProblem
        The problems, all with the same batch size; :meth:`init` is called at the first temperature.
    schedule : list of float
        The temperatures.
    rho : float or None
        KL penalty strength (``None``: balanced).
    tol : float or None
        Target marginal error, or ``None`` for the fixed schedule.
    max_iter : int or None
        Cap on the updates (default :data:`DEFAULT_MAX_ITER`), converging mode only.
    overrelax : float, optional
        Over-relaxation factor (default :data:`OVERRELAX`).

    Returns
    -------
    list of Tensor
        The number of updates per problem, ``(B,)`` int64 each.
    """
    if overrelax is None:
        overrelax = OVERRELAX
    eps0 = schedule[0]
    for pb in problems:
        pb.init(eps0, damping(eps0, rho))
    B = problems[0].a.shape[0]
    device = problems[0].a.device
    if tol is None:
        for eps in schedule:
            d = damping(eps, rho)
            for pb in problems:
                pb.averaged_step(eps, d)
        return [torch.full((B,), len(schedule), dtype=torch.int64, device=device) for _ in problems]

    if min(pb.state.shape[-1] for pb in problems) >= ANDERSON_MIN_POINTS:
        return _iterate_mixed(problems, schedule, rho, tol, max_iter)
    cap = max_iter if max_iter is not None else DEFAULT_MAX_ITER
    n = 0
    last = len(schedule) - 1
    n_iter = [torch.zeros(B, dtype=torch.int64, device=device) for _ in problems]
    for k, eps in enumerate(schedule):
        d = damping(eps, rho)
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
                if k == last and bool(met.any()):
                    # the error reported is that of the final update (``extrapolate``): it must meet tol too (an
                    # over-relaxed last step can leave it ~2x the step's own error)
                    met = met & (pb.final_error(eps, d) <= target)
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


def _restore_best(pb, s: dict, mask: torch.Tensor) -> None:
    """Set the elements ``mask`` of a problem to the update of the best iterate of the temperature."""
    pb.state = torch.where(mask[:, None], s["best_img"], pb.state)
    if s["best_comp"] is not None:
        pb.companion = torch.where(mask[:, None], s["best_comp"], pb.companion)


def _iterate_mixed(problems, schedule, rho, tol, max_iter):
    """The converging mode with Anderson mixing (:class:`otpipe.solvers.anderson.Anderson`), for problems of at least
    :data:`ANDERSON_MIN_POINTS` points, after :func:`iterate` initialised them; returns the updates per problem.

    At every temperature, alternating updates of the problems' :attr:`state` (``g``, with ``f`` following; the
    self problems' averaged ``f``), mixed, until the marginal error of each batch element is ``<= tol``
    (intermediate temperatures: ``max(tol, MIX_STAGE_TOL)``); an element that meets its target is frozen.
    Safeguards: an error above ``RESTART_FACTOR`` times the temperature's best drops the mixing history and restarts
    from the best iterate's update; a stall under mixing is retried with plain updates; an element stops (reported
    as not converged) when its temperature stalls (:data:`STALL_ITERS`) or the cap ``max_iter`` (default
    :data:`DEFAULT_MAX_ITER`) is reached.
    """
    B = problems[0].a.shape[0]
    device = problems[0].a.device
    cap = max_iter if max_iter is not None else DEFAULT_MAX_ITER
    n = 0
    last = len(schedule) - 1
    n_iter = [torch.zeros(B, dtype=torch.int64, device=device) for _ in problems]
    for k, eps in enumerate(schedule):
        d = damping(eps, rho)
        final = k == last
        # intermediate temperatures only prepare a warm start: a looser target
        target = tol if final else max(tol, MIX_STAGE_TOL)
        # stall rule: the best error must shrink by `shrink` within `window` updates
        shrink, window = (0.9, 4 * STALL_ITERS) if final else (0.5, STALL_ITERS)
        st = []
        for pb in problems:
            inf = torch.full((B,), math.inf, dtype=torch.float64, device=device)
            zeros = torch.zeros(B, dtype=torch.bool, device=device)
            st.append(dict(mix=Anderson(pb.state_weights, ANDERSON_MEMORY, ANDERSON_RIDGE), active=~zeros,
                           best=inf, ref=inf.clone(), ref_at=torch.zeros(B, dtype=torch.int64, device=device),
                           best_img=pb.state.clone(), best_comp=pb.companion, plain=zeros.clone(), met=zeros.clone()))
        stage = 0
        # every remaining temperature gets at least one update within the cap
        while n < cap - (last - k) or stage == 0:
            n += 1
            stage += 1
            for pb, s, n_it in zip(problems, st, n_iter):
                act = s["active"]
                if not bool(act.any()):
                    continue
                x = pb.state
                gx, err, keep = pb.mixing_step(eps, d, rho)
                err = err.double()
                met = err <= target
                if final:
                    # the plan after n - 1 updates met the tolerance
                    first = act & met & ~s["met"]
                    n_it.copy_(torch.where(first, n_it.new_tensor(n - 1), torch.where(act, n_it.new_tensor(n), n_it)))
                    s["met"] = s["met"] | (act & met)
                # safeguard: a blow-up (or NaN) drops the history and restarts from the best iterate's update
                blown = act & ~(err <= RESTART_FACTOR * s["best"])
                better = act & (err < s["best"])
                s["best"] = torch.where(better, err, s["best"])
                s["best_img"] = torch.where(better[:, None], keep, s["best_img"])
                if s["best_comp"] is not None:
                    s["best_comp"] = torch.where(better[:, None], pb.companion, s["best_comp"])
                progress = better & (err < shrink * s["ref"])
                s["ref"] = torch.where(progress, err, s["ref"])
                s["ref_at"] = torch.where(progress, s["ref_at"].new_tensor(stage), s["ref_at"])
                floor = torch.finfo(x.dtype).eps / eps * x.detach().abs().amax(-1).double()
                noisy = s["best"] <= floor
                stalled = act & ~met & ((stage - s["ref_at"]) > torch.where(noisy, NOISE_ITERS, window))
                if final and bool((stalled & noisy).any()):
                    _diag.warn(f"Sinkhorn: the marginal error stalled at the rounding floor of {x.dtype} potentials "
                               "(about finfo.eps * max|f| / eps); use float64 points for this tol and blur")
                # a stall under mixing is retried with plain updates (flat residuals, e.g. tiny masses between
                # far-apart atoms: Anderson's secant steps overshoot there, the plain drift gets through)
                retry = stalled & ~s["plain"] & ~noisy
                if bool(retry.any()):
                    s["plain"] = s["plain"] | retry
                    s["ref_at"] = torch.where(retry, s["ref_at"].new_tensor(stage), s["ref_at"])
                    s["ref"] = torch.where(retry, s["best"], s["ref"])
                    s["mix"].reset(retry)
                    stalled = stalled & ~retry
                still = act & ~met & ~stalled
                nxt = s["mix"](x, gx)
                nxt = torch.where(s["plain"][:, None], gx, nxt)
                if bool(blown.any()):
                    s["mix"].reset(blown)
                    nxt = torch.where(blown[:, None], s["best_img"], nxt)
                # elements that meet the target (or stall) stop (see mixing_step)
                pb.state = torch.where(still[:, None], nxt, keep)
                s["active"] = still
                if bool(stalled.any()):
                    _restore_best(pb, s, stalled)
            if not any(bool(s["active"].any()) for s in st):
                break
        for pb, s in zip(problems, st):  # out of updates: the best iterate of the temperature
            if bool(s["active"].any()):
                _restore_best(pb, s, s["active"])
    return n_iter


#: largest ``p`` the fixed schedule (``tol=None``) accepts (:func:`check_mode`)
FIXED_SCHEDULE_MAX_P = 2.0
#: smallest ``diameter`` the fixed schedule accepts, as a fraction of the largest side of the points' bounding box
#: (itself at most their largest distance). Measured (5 data sets, p = 1 and 2): from
#: 1 down to 0.5 of the side the values equal the default diameter's (within 0.5%); at 0.25 one case moved from -2.2%
#: to -6.4%; at 0.1 -15 to -20%; at 1e-6 one case gave 0.777 (converged 1.331)
DIAMETER_MIN_FRACTION = 0.5


def check_mode(prm: SinkhornParams) -> None:
    """Refuse the fixed schedule (``tol=None``) for ``p > 2``: a ``ValueError`` that names the supported range.

    Why: that schedule stops after one averaged update per temperature with a relative marginal error of
    0.1-1 whatever ``p``, and the dual value ``<a, f> + <b, g>`` is off by about that error times the spread of
    the potentials (``~ diameter^p / p``), while the value itself scales like the typical transport distance to
    the ``p``. For ``p <= 2`` that is a few percent (GeomLoss's numbers; its built-in costs are ``p`` = 1 and 2);
    from ``p`` = 2.5 on it grows like ``(diameter / distance)^p``: measured down to -111% at ``p`` = 2.5, -602% at
    ``p`` = 3 and S_eps = -2.79 instead of 2.80 at ``p`` = 4. Finer
    temperature steps do not cure it (scaling^(1/p) per step: still -85% at ``p`` = 4); solving each temperature
    to a tolerance does.

    Parameters
    ----------
    prm : SinkhornParams
        The solver parameters.

    Raises
    ------
    ValueError
        If ``prm.tol`` is ``None`` and ``prm.p`` exceeds :data:`FIXED_SCHEDULE_MAX_P`.
    """
    if prm.tol is None and prm.p > FIXED_SCHEDULE_MAX_P:
        raise ValueError(
            f"p={prm.p:g} needs tol= (e.g. tol=1e-4): the fixed eps-scaling schedule (tol=None, GeomLoss's) is "
            f"supported for 0 < p <= {FIXED_SCHEDULE_MAX_P:g} only; beyond, its unconverged potentials give values "
            "off by more than the value itself (S_eps = -2.79 instead of 2.80 at p = 4)"
        )


def _check_diameter(prm: SinkhornParams, ext: torch.Tensor, diag: float) -> None:
    """In the fixed schedule, a given ``diameter`` must reach :data:`DIAMETER_MIN_FRACTION` of the largest side of
    the points' bounding box (a ``ValueError`` otherwise)."""
    if prm.diameter is None or prm.tol is not None:
        return  # the converging mode solves every temperature: a late start costs updates, not accuracy
    side = float(ext.double().max()) if ext.numel() else 0.0
    low = DIAMETER_MIN_FRACTION * side
    if prm.diameter < low:
        raise ValueError(
            f"diameter={prm.diameter:.3g} is below the points' extent (largest side of their bounding box {side:.3g}, "
            f"diagonal {diag:.3g}): the fixed eps-scaling schedule (tol=None) starts at diameter^p and would skip the "
            f"temperatures that match far-apart points; pass diameter >= {low:.3g} ({DIAMETER_MIN_FRACTION:g} x that "
            "side), leave it None (the diagonal), or pass tol= to solve to convergence"
        )


def _resolvable(fe: float, scale: float, side: float, blur: float, p: float) -> bool:
    """``finfo.eps * scale * side^p / blur^p <= 1`` (in logs: no overflow)."""
    if side <= 0:
        return True
    return math.log(fe * scale) + p * (math.log(side) - math.log(blur)) <= 0.0


def _check_resolution(prm: SinkhornParams, dtype: torch.dtype, side: float) -> None:
    """For ``p > 2``: every temperature must be resolved by ``dtype``, ``finfo.eps * C_max / blur^p <= 1``.

    ``C_max >= scale * side^p`` (``side``: the largest side of the points' bounding box, a lower bound on the
    largest distance). Beyond, the potentials (of the size of the costs) carry rounding errors larger than ``eps``:
    each update is then an exact c-transform, which stops at once (a marginal error of 0, reported converged) at a
    feasible but far-from-optimal dual: measured ``S_eps = -8.3e58`` at ``p`` = 100 (exact OT 3.8e58) and
    ``-2.3e8`` at ``p`` = 16 (6.2e5). For ``p <= 2`` the eps-scaling's steps (``scaling^p >= 1/4``) always pass a
    resolved temperature first, and the c-transforms that follow keep its value (measured: float32 at
    ``finfo.eps * C_max / eps = 200`` gives the float64 value), so this check is for ``p > 2`` (whose fixed schedule
    :func:`check_mode` refuses) only.
    """
    p = prm.p
    if p <= FIXED_SCHEDULE_MAX_P:
        return
    fi = torch.finfo(dtype)
    scale = prm.cost.scale
    if _resolvable(fi.eps, scale, side, prm.blur, p):
        return
    name = str(dtype).replace("torch.", "")
    lc = math.log(scale) + p * math.log(side)
    b_min = side * math.exp(math.log(fi.eps * scale) / p)
    lo, hi = FIXED_SCHEDULE_MAX_P, p  # largest p that fits this blur (the cost's scale 1/p moves with p)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        sc = 1.0 / mid if prm.cost.halved else 1.0
        lo, hi = (mid, hi) if _resolvable(fi.eps, sc, side, prm.blur, mid) else (lo, mid)
    p_fit = "" if not _resolvable(fi.eps, 1.0 / lo if prm.cost.halved else 1.0, side, prm.blur, lo) else f", or p <= {math.floor(lo * 100) / 100:g} for this blur"
    raise ValueError(
        f"p={p:g}, blur={prm.blur:.3g} is outside the range {name} resolves: the costs {prm.cost.name} reach "
        f"{format_log(lc)} (the points span {side:.3g}), {format_log(lc - p * math.log(prm.blur))} times the final "
        f"temperature blur^p, so the potentials' rounding ({fi.eps:.2g} of the costs) exceeds eps and Sinkhorn stalls "
        f"at a wrong value; supported: finfo.eps * max cost / blur^p <= 1, i.e. blur >= {b_min:.3g} for this p"
        + p_fit + ("" if dtype == torch.float64 else ", or float64")
    )


def backend_and_schedule(P: Pair, prm: SinkhornParams, symmetric_only: bool = False) -> tuple[str, list[float]]:
    """Check the parameters against the points and resolve the backend and the eps-scaling schedule.

    Parameters
    ----------
    P : Pair
        The validated (batched) measures.
    prm : SinkhornParams
        Solver parameters.
    symmetric_only : bool
        Only self problems on ``P.x`` will run (the backend is chosen for ``N x N``).

    Returns
    -------
    backend : str
        The resolved backend name (:func:`otpipe.geometry.backends.choose_backend`).
    schedule : list of float
        The temperatures, from ``diameter^p`` (default: the points' bounding-box diagonal) down to ``blur^p``.

    Raises
    ------
    ValueError
        A mode, diameter, range or resolution the parameters do not support for these points.
    """
    B, N, M, D = P.shape
    check_mode(prm)
    backend = choose_backend(prm.backend, B, N, M if not symmetric_only else N, device=P.x.device,
                             dtype=P.x.dtype)
    sides = _box_extents(P.x, P.y, P.a, P.b)
    ext = _diagonal(sides)
    if prm.diameter is not None:
        diam = prm.diameter
    else:
        diam = ext if ext > 0 else prm.blur  # every point at one place: any positive scale works
    check_range(P.x.dtype, prm.cost, extent=ext, diameter=diam, blur=prm.blur, reach=prm.reach, diameter_given=prm.diameter is not None)
    _check_diameter(prm, sides, ext)
    _check_resolution(prm, P.x.dtype, float(sides.double().max()) if sides.numel() else 0.0)
    schedule = epsilon_schedule(prm.p, diam, prm.blur, prm.scaling)
    return backend, schedule


def needs_grad(*ts: torch.Tensor) -> bool:
    """Whether autograd is on and any of ``ts`` requires a gradient (the final update is then differentiable).

    Parameters
    ----------
    *ts : torch.Tensor
        The tensors to inspect.

    Returns
    -------
    bool
        ``True`` when a gradient is needed.
    """
    return torch.is_grad_enabled() and any(t.requires_grad for t in ts)


def run_full(P: Pair, prm: SinkhornParams, *, cross: bool, self_x: bool, self_y: bool,
             init: dict | None = None) -> RunOutput:
    """Run the requested problems on full (not truncated) operators: the engine of ``solve`` and the divergences.

    ``init``: warm-start potentials by problem name (``{"xy": (f, g), "xx": f, "yy": f}``, batched, validated
    by the caller; converged mode only). The eps-scaling then runs at the final temperature only: it exists to
    bring cold potentials near the final ones, which a warm start from a nearby problem at that temperature
    already is, and annealing down from ``diameter^p`` would first move them away again.

    Parameters
    ----------
    P : otpipe.problems.measures.Pair
        The validated, batched pair of measures.
    prm : SinkhornParams
        The solver parameters.
    cross : bool
        Solve the cross problem ``OT_eps(a, b)`` (``"xy"``).
    self_x : bool
        Solve the self problem ``OT_eps(a, a)`` (``"xx"``).
    self_y : bool
        Solve the self problem ``OT_eps(b, b)`` (``"yy"``).
    init : dict or None, default None
        Warm-start potentials by problem name.

    Returns
    -------
    otpipe.solvers.output.RunOutput
        The backend, the schedule, and for each requested problem its final (differentiable) potentials, ``n_iter``
        and marginal error.
    """
    backend, schedule = backend_and_schedule(P, prm, symmetric_only=not cross)
    init = init or {}
    if init:
        schedule = schedule[-1:]
    mod = get_backend(backend)
    cost, rho = prm.cost, prm.rho
    x, y, a, b = P.x, P.y, P.a, P.b
    xd, yd, ad, bd = x.detach(), y.detach(), a.detach(), b.detach()
    problems, names = [], []
    with torch.no_grad():
        if cross:
            op_xy = mod.operator(xd, yd, cost)
            problems.append(CrossProblem(op_xy, op_xy.transpose(), ad, bd, init.get("xy")))
            names.append("xy")
        if self_x:
            problems.append(SymmetricProblem(mod.operator(xd, xd, cost), ad, init.get("xx")))
            names.append("xx")
        if self_y:
            problems.append(SymmetricProblem(mod.operator(yd, yd, cost), bd, init.get("yy")))
            names.append("yy")
        n_iters = iterate(problems, schedule, rho, prm.tol, prm.max_iter)

    eps = schedule[-1]
    d = damping(eps, rho)
    out = RunOutput(backend, schedule, eps)
    grad_x, grad_y = needs_grad(x), needs_grad(y)
    for pb, name, n_it in zip(problems, names, n_iters):
        if name == "xy":
            op_xy = mod.operator(x, yd, cost) if grad_x else pb.op_xy
            op_yx = mod.operator(y, xd, cost) if grad_y else pb.op_yx
            f, g, err = pb.extrapolate(eps, d, op_xy, op_yx)
            out.solutions[name] = Solution(f, g, err, n_it, pb)
        else:
            pts, needs = (x, grad_x) if name == "xx" else (y, grad_y)
            op = mod.operator(pts, pts.detach(), cost) if needs else pb.op
            f, err = pb.extrapolate(eps, d, op)
            out.solutions[name] = Solution(f, None, err, n_it, pb)
    return out
