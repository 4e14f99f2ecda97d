"""The fused solver strategy: the whole Sinkhorn loop of a batch of small problems in one compiled call.

Many small problems (digits, patients, shapes: tens to a few hundred points) spend most of a general solve
between the reductions: one Python step, a kernel call and padding per update. Here each problem is solved
by one thread of the compiled CPU kernel (:func:`otpipe.geometry.backends.cpu.fused_loop`): its cost matrix
computed once and kept in cache, the eps-scaling, the converging mode's stopping rules and the extrapolation
with no Python in between, padding skipped. The updates are those of :func:`otpipe.solvers.loop.iterate` on
each problem alone, so values equal the general path's to float rounding (the fixed schedule: the batched
general path's; with ``tol``: each problem solved alone, where the batched general path keeps every element
updating until the whole batch meets the tolerance). The final update runs again through the operators
when a gradient is needed. On CUDA tensors one Triton program solves one problem
(:func:`otpipe.geometry.backends.triton.fused_loop`: the cost tile and the potentials on chip for the whole
schedule), for the fixed schedule and measures of at most 128 points.

``backend="auto"`` picks it on CPU tensors for problems of at most :func:`max_entries` point pairs (128 x 128
in D <= 3, 1024 x 1024 above; :func:`eligible`), and, with ``tol``, only where the general path would not mix
the updates (fewer than :data:`otpipe.solvers.loop.ANDERSON_MIN_POINTS` points per iterated potential); on CUDA
tensors wherever the Triton program applies; ``backend="fused"`` asks for it.
"""
from __future__ import annotations

import torch

from otpipe.geometry.backends import cpu
from otpipe.problems.measures import Pair, log_weights
from otpipe.problems.problems import CrossProblem, SymmetricProblem, damping, rel_error
from otpipe.solvers.loop import (
    ANDERSON_MIN_POINTS,
    DEFAULT_MAX_ITER,
    OVERRELAX,
    STAGE_TOL,
    STALL_ITERS,
    SinkhornParams,
    backend_and_schedule,
    needs_grad,
)
from otpipe.solvers.output import RunOutput, Solution

__all__ = ["run_fused", "eligible", "unsupported", "max_entries", "FUSED_MAX_ENTRIES", "FUSED_MAX_ENTRIES_LOW_D",
           "PLAIN_FIRST"]

#: largest problem (``N * M`` point pairs, padded) that ``auto`` sends to the fused loop in dimension ``D >= 4``: its
#: cost matrix (packed twice) then takes at most 16 MiB (float64) per thread. Measured (one EPYC core, fixed schedule,
#: blur 0.05, ms per pair, general path / fused): D = 30, N = M = 64: 0.61 / 0.21; 256: 6.8 / 2.5; 1000: 105 / 37
FUSED_MAX_ENTRIES = 1024 * 1024
#: the same for ``D <= 3``, where the general kernels compute distances inline at least as fast as the fused loop
#: reads them: D = 2, float64, N = M = 64: 0.12 / 0.11 ms; 128: 0.39 / 0.39; 256: 1.41 / 1.55; 1000: 20.8 / 29.6
#: (float32 at 64: 0.08 / 0.05)
FUSED_MAX_ENTRIES_LOW_D = 128 * 128
#: plain (not over-relaxed) updates after each change of temperature in the converging mode (as in
#: :func:`otpipe.solvers.loop.iterate`)
PLAIN_FIRST = 5


def _state_sizes(P: Pair, cross: bool, self_x: bool, self_y: bool) -> list[int]:
    """Points of each requested problem's iterated potential (``g`` of the cross problem, ``f`` of a self one)."""
    _, N, M, _ = P.shape
    return [n for n, want in ((M, cross), (N, self_x), (M, self_y)) if want]


def unsupported(P: Pair, prm: SinkhornParams, *, cross: bool, self_x: bool, self_y: bool,
                init: dict | None = None) -> str | None:
    """Why the fused loop cannot run these problems (``None``: it can).

    Parameters
    ----------
    P : Pair
        The validated measures.
    prm : SinkhornParams
        Solver parameters.
    cross, self_x, self_y : bool
        Which of ``OT_eps(a, b)``, ``OT_eps(a, a)``, ``OT_eps(b, b)`` run.
    init : dict or None, default None
        Warm-start potentials.

    Returns
    -------
    str or None
        The reason, one clause; ``None`` when supported.
    """
    if P.x.dtype not in (torch.float32, torch.float64):
        return f"it computes in float32 or float64, got {str(P.x.dtype).replace('torch.', '')}"
    if init:
        return "it has no warm start (init=)"
    if P.x.device.type == "cuda":
        from otpipe.geometry.backends import triton_error

        why = triton_error()
        if why is not None:
            return f"on CUDA it needs Triton ({why})"
        if prm.tol is not None:
            return "on CUDA it runs the fixed schedule only (tol=None)"
        _, N, M, _ = P.shape
        from otpipe.geometry.backends.triton import FUSED_MAX_POINTS

        if max(N, M) > FUSED_MAX_POINTS:
            return f"on CUDA it takes measures of at most {FUSED_MAX_POINTS} points (one program per problem)"
        return None
    if P.x.device.type != "cpu":
        return f"it runs on CPU or CUDA tensors, the points are on {P.x.device.type}"
    if prm.tol is not None and max(_state_sizes(P, cross, self_x, self_y)) >= ANDERSON_MIN_POINTS:
        return (f"with tol= it runs the plain converging updates, which the solver uses below {ANDERSON_MIN_POINTS} "
                "points per measure (above, it mixes them)")
    if not cpu.available():
        return f"the compiled CPU kernels are unavailable ({cpu.build_error()})"
    return None


def max_entries(dim: int) -> int:
    """Largest ``N * M`` that ``auto`` sends to the fused loop in dimension ``dim``.

    Parameters
    ----------
    dim : int
        Dimension of the points.

    Returns
    -------
    int
        :data:`FUSED_MAX_ENTRIES_LOW_D` for ``dim <= 3``, else :data:`FUSED_MAX_ENTRIES`.
    """
    return FUSED_MAX_ENTRIES_LOW_D if dim <= 3 else FUSED_MAX_ENTRIES


def eligible(P: Pair, prm: SinkhornParams, *, cross: bool, self_x: bool, self_y: bool,
             init: dict | None = None) -> bool:
    """Whether ``backend="auto"`` runs these problems in the fused loop.

    Parameters
    ----------
    P : Pair
        The validated measures.
    prm : SinkhornParams
        Solver parameters.
    cross, self_x, self_y : bool
        Which of ``OT_eps(a, b)``, ``OT_eps(a, a)``, ``OT_eps(b, b)`` run.
    init : dict or None, default None
        Warm-start potentials.

    Returns
    -------
    bool
        ``True`` for small problems (:func:`max_entries`) that :func:`unsupported` accepts.
    """
    _, N, M, D = P.shape
    big = max(N, M) if (self_x or self_y) else 0
    limit = max_entries(D) if P.x.device.type == "cpu" else max(N, M, 1) ** 2  # CUDA: unsupported() sizes it
    if N * M > limit or big * big > limit:
        return False
    return unsupported(P, prm, cross=cross, self_x=self_x, self_y=self_y, init=init) is None


def _kernels(device: torch.device):
    """The module with ``fused_loop`` and ``operator`` for the points' device: compiled CPU or Triton."""
    if device.type == "cuda":
        from otpipe.geometry.backends import triton

        return triton
    return cpu


def run_fused(P: Pair, prm: SinkhornParams, *, cross: bool, self_x: bool, self_y: bool) -> RunOutput:
    """Counterpart of :func:`otpipe.solvers.loop.run_full` in the fused loop: same inputs and output.

    Parameters
    ----------
    P : Pair
        The validated, batched measures (CPU, float32 or float64).
    prm : SinkhornParams
        The solver parameters.
    cross, self_x, self_y : bool
        Which of ``OT_eps(a, b)`` (``"xy"``), ``OT_eps(a, a)`` (``"xx"``), ``OT_eps(b, b)`` (``"yy"``) to solve.

    Returns
    -------
    RunOutput
        Backend ``"fused"``, the schedule, and each problem's :class:`~otpipe.solvers.output.Solution`.

    Raises
    ------
    ValueError
        When the fused loop cannot run these problems (:func:`unsupported`).
    """
    why = unsupported(P, prm, cross=cross, self_x=self_x, self_y=self_y)
    if why is not None:
        raise ValueError(f"backend 'fused' cannot solve these problems: {why}; use backend='auto'")
    _, schedule = backend_and_schedule(P, prm, symmetric_only=not cross)
    rho, cost = prm.rho, prm.cost
    damps = [damping(e, rho) for e in schedule]
    eps, d = schedule[-1], damps[-1]
    conv = None
    if prm.tol is not None:
        conv = dict(tol=prm.tol, stage_tol=STAGE_TOL, overrelax=OVERRELAX, stall=STALL_ITERS, plain_first=PLAIN_FIRST,
                    max_iter=prm.max_iter if prm.max_iter is not None else DEFAULT_MAX_ITER)
    x, y, a, b = P.x, P.y, P.a, P.b
    xd, yd, ad, bd = x.detach(), y.detach(), a.detach(), b.detach()
    la, lb = log_weights(ad), log_weights(bd)
    kern = _kernels(P.x.device)
    grad_x, grad_y = needs_grad(x), needs_grad(y)
    out = RunOutput("fused", schedule, eps)
    if cross:
        with torch.no_grad():
            f, g, fe, ge, n_it = kern.fused_loop(xd, yd, ad, bd, la, lb, cost, schedule, damps, converging=conv,
                                                 rho=rho)
            op_xy = kern.operator(xd, yd, cost)
            pb = CrossProblem(op_xy, op_xy.transpose(), ad, bd)
            pb.f, pb.g = f, g
        if grad_x or grad_y:
            op_g = kern.operator(x, yd, cost) if grad_x else pb.op_xy
            op_gt = kern.operator(y, xd, cost) if grad_y else pb.op_yx
            fe, ge, err = pb.extrapolate(eps, d, op_g, op_gt)
        else:
            err = torch.maximum(rel_error(ad, f, fe, eps), rel_error(bd, g, ge, eps))
        out.solutions["xy"] = Solution(fe, ge, err, n_it, pb)
    for name, want, pts, w, lw, needs in (("xx", self_x, x, ad, la, grad_x), ("yy", self_y, y, bd, lb, grad_y)):
        if not want:
            continue
        ptsd = pts.detach()
        with torch.no_grad():
            f, _, fe, _, n_it = kern.fused_loop(ptsd, None, w, None, lw, None, cost, schedule, damps, converging=conv,
                                                rho=rho)
            pb = SymmetricProblem(kern.operator(ptsd, ptsd, cost), w)
            pb.f = f
        if needs:
            fe, err = pb.extrapolate(eps, d, kern.operator(pts, ptsd, cost))
        else:
            err = rel_error(w, f, fe, eps)
        out.solutions[name] = Solution(fe, None, err, n_it, pb)
    return out
