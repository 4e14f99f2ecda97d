"""Entropic OT problems as the solvers see them: the weights, the reduction operators and the dual potentials.

:class:`CrossProblem` is ``OT_eps(a, b)`` (potentials ``f`` on the rows, ``g`` on the columns);
:class:`SymmetricProblem` is ``OT_eps(a, a)`` (one potential ``f = g``). Both are balanced or unbalanced: the
damping ``d = 1 / (1 + eps / rho)`` (:func:`damping`) enters each update, and the unbalanced translation step
takes ``rho``. They talk only to reduction operators (:mod:`otpipe.geometry.backends`); the schedule, the
stopping rule and the mixing live in :mod:`otpipe.solvers.loop`.
"""
from __future__ import annotations

import torch

from otpipe.problems.measures import log_weights

__all__ = ["CrossProblem", "SymmetricProblem", "damping", "rel_error", "softmin_pair", "transposes"]



def damping(eps: float, rho: float | None) -> float:
    """Damping factor of the updates at temperature ``eps``: ``1 / (1 + eps / rho)`` (``1`` when balanced).

    Parameters
    ----------
    eps : float
        Temperature.
    rho : float or None
        KL penalty strength of unbalanced marginals; ``None`` for balanced ones.

    Returns
    -------
    float
        The factor multiplying each SoftMin update.
    """
    return 1.0 if rho is None else 1.0 / (1.0 + eps / rho)


def rel_error(a: torch.Tensor, f_old: torch.Tensor, f_new: torch.Tensor, eps: float) -> torch.Tensor:
    """Marginal error of a potential update, ``sum_i a_i |exp((f_old_i - f_new_i) / eps) - 1| / sum_i a_i``.

    Parameters
    ----------
    a : torch.Tensor
        ``(B, N)`` weights.
    f_old : torch.Tensor
        ``(B, N)`` potential before the update.
    f_new : torch.Tensor
        ``(B, N)`` potential after it.
    eps : float
        Temperature.

    Returns
    -------
    torch.Tensor
        ``(B,)`` the error per batch element (the exponent is clamped at 80, so it stays finite).
    """
    r = torch.expm1(((f_old - f_new) / eps).clamp(max=80.0)).abs()
    return (a * r).sum(-1) / a.sum(-1)


def transposes(op_xy, op_yx) -> bool:
    """Whether ``op_yx`` is ``op_xy.transpose()``: same class, same points, transposed block pattern.

    Parameters
    ----------
    op_xy : operator
        Reduction from ``y`` to ``x``.
    op_yx : operator
        Reduction from ``x`` to ``y``.

    Returns
    -------
    bool
        ``True`` when the two operators are transposes of each other.
    """
    if type(op_xy) is not type(op_yx) or op_yx.x is not op_xy.y or op_yx.y is not op_xy.x:
        return False
    bxy, byx = getattr(op_xy, "blocks", None), getattr(op_yx, "blocks", None)
    return (bxy is None and byx is None) or (bxy is not None and byx is bxy.transpose())


def softmin_pair(op_xy, op_yx, eps, h_y, h_x):
    """The two half-updates of a parallel (averaged) step, ``(op_xy.softmin(eps, h_y), op_yx.softmin(eps, h_x))``.

    Computed in one launch (``softmin_both``) when the operator fuses them and ``op_yx`` is its transpose.

    Parameters
    ----------
    op_xy : operator
        Reduction from ``y`` to ``x``.
    op_yx : operator
        Reduction from ``x`` to ``y``.
    eps : float
        Temperature.
    h_y : torch.Tensor
        ``(B, M)`` column offsets of ``op_xy``.
    h_x : torch.Tensor
        ``(B, N)`` column offsets of ``op_yx``.

    Returns
    -------
    f : torch.Tensor
        ``(B, N)`` soft-min over ``y``.
    g : torch.Tensor
        ``(B, M)`` soft-min over ``x``.
    """
    both = getattr(op_xy, "softmin_both", None)
    if both is not None and transposes(op_xy, op_yx):
        return both(eps, h_y, h_x)
    return op_xy.softmin(eps, h_y), op_yx.softmin(eps, h_x)


class CrossProblem:
    """The cross problem ``OT_eps(a, b)``: operators both ways and the potentials ``(f, g)``.

    Parameters
    ----------
    op_xy, op_yx : operator
        Reductions from ``y`` to ``x`` and back (:mod:`otpipe.geometry.backends`); ``op_yx`` is usually
        ``op_xy.transpose()``. The multiscale solver sets them per temperature.
    a, b : Tensor, ``(B, N)`` / ``(B, M)``
        Weights (detached).
    start : tuple of Tensor, optional
        Warm-start potentials ``(f, g)``; ``None`` starts from the first SoftMin of the weights.

    Attributes
    ----------
    f, g : Tensor
        The current potentials (set by :meth:`init`).
    la, lb : Tensor
        Log-weights of ``a`` and ``b``.
    """

    symmetric = False

    def __init__(self, op_xy, op_yx, a, b, start=None):
        self.op_xy, self.op_yx = op_xy, op_yx
        self.a, self.b = a, b
        self.la, self.lb = log_weights(a), log_weights(b)
        self.start = start  # warm start (f, g), or None

    def init(self, eps, d):
        """Set the potentials: the warm start, or one parallel update from zero potentials.

        Parameters
        ----------
        eps : float
            Temperature.
        d : float
            Damping factor ``1 / (1 + eps / rho)`` (:func:`damping`; 1 when balanced).
        """
        if self.start is not None:
            self.f, self.g = self.start
            return
        f, g = softmin_pair(self.op_xy, self.op_yx, eps, self.lb, self.la)
        self.f, self.g = d * f, d * g

    def averaged_step(self, eps, d):
        """One parallel averaged update ``(f, g) <- ((f + d Tf(g)) / 2, (g + d Tg(f)) / 2)`` (the fixed schedule).

        Parameters
        ----------
        eps : float
            Temperature.
        d : float
            Damping factor ``1 / (1 + eps / rho)`` (:func:`damping`; 1 when balanced).
        """
        ft, gt = softmin_pair(self.op_xy, self.op_yx, eps, self.lb + self.g / eps, self.la + self.f / eps)
        self.f, self.g = 0.5 * (self.f + d * ft), 0.5 * (self.g + d * gt)

    def converging_step(self, eps, d, omega=1.0, rho=None):
        """One alternating (over-relaxed) update of ``f``, then ``g``.

        Parameters
        ----------
        eps : float
            Temperature.
        d : float
            Damping factor ``1 / (1 + eps / rho)`` (:func:`damping`; 1 when balanced).
        omega : float, default 1.0
            Over-relaxation factor: ``f <- f + omega (d Tf(g) - f)`` (1: the plain alternating update).
        rho : float or None, default None
            KL penalty strength (``reach^p``) of an unbalanced problem: each update is followed by the translation
            ``(f + c, g - c)`` that is optimal along the dual's flat direction; ``None``: balanced.

        Returns
        -------
        torch.Tensor
            ``(B,)`` the marginal error of the plan the step starts from (the larger of the two updates' errors).
        """
        ft = d * self.op_xy.softmin(eps, self.lb + self.g / eps)
        err_f = rel_error(self.a, self.f, ft, eps)
        self.f = ft if omega == 1.0 else self.f + omega * (ft - self.f)
        gt = d * self.op_yx.softmin(eps, self.la + self.f / eps)
        err_g = rel_error(self.b, self.g, gt, eps)
        self.g = gt if omega == 1.0 else self.g + omega * (gt - self.g)
        if rho is not None:
            # the dual is flat-ish along (f + c, g - c) when rho >> eps: move there optimally
            # (translation-invariant Sinkhorn), c = rho/2 log(<a, e^{-f/rho}> / <b, e^{-g/rho}>)
            la_ = torch.logsumexp(self.la - self.f / rho, dim=-1)
            lb_ = torch.logsumexp(self.lb - self.g / rho, dim=-1)
            c = (0.5 * rho) * (la_ - lb_)
            self.f, self.g = self.f + c[:, None], self.g - c[:, None]
        return torch.maximum(err_f, err_g)

    def mixing_step(self, eps, d, rho=None):
        """One alternating update from the current ``g``: ``f = d Tf(g)``, then ``G(g) = d Tg(f)``.

        ``G(g)`` is translated when unbalanced; the marginal error is that of the plan ``(f, g)``, ``sum_j b_j
        |exp((g_j - d Tg(f)_j) / eps) - 1| / sum b`` (its rows are exact when balanced). An element that stops here
        keeps ``g`` itself, so that :meth:`extrapolate` finds ``f`` exact and reports this error; its potentials ``(f,
        d Tg(f))`` have exact columns, so ``<a, f> + <b, g>`` is the semi-dual objective, accurate to second order in
        the error. ``f`` is kept; ``g`` is left to the caller (:func:`otpipe.solvers.loop.iterate` mixes and sets
        :attr:`state`).

        Parameters
        ----------
        eps : float
            Temperature.
        d : float
            Damping factor ``1 / (1 + eps / rho)`` (:func:`damping`; 1 when balanced).
        rho : float or None, default None
            KL penalty strength (``reach^p``) of an unbalanced problem: each update is followed by the translation
            ``(f + c, g - c)`` that is optimal along the dual's flat direction; ``None``: balanced.

        Returns
        -------
        update : torch.Tensor
            ``(B, M)`` the map's value ``G(g)``.
        error : torch.Tensor
            ``(B,)`` the marginal error of the plan ``(f, g)``.
        keep : torch.Tensor
            ``(B, M)`` what an element that stops here keeps (``g``).
        """
        self.f = d * self.op_xy.softmin(eps, self.lb + self.g / eps)
        gt = d * self.op_yx.softmin(eps, self.la + self.f / eps)
        err = rel_error(self.b, self.g, gt, eps)
        if rho is not None:
            # the dual is flat-ish along (f + c, g - c) when rho >> eps: move there optimally
            # (translation-invariant Sinkhorn), c = rho/2 log(<a, e^{-f/rho}> / <b, e^{-g/rho}>)
            la_ = torch.logsumexp(self.la - self.f / rho, dim=-1)
            lb_ = torch.logsumexp(self.lb - gt / rho, dim=-1)
            gt = gt - (0.5 * rho) * (la_ - lb_)[:, None]
        return gt, err, self.g

    @property
    def state(self):
        """The iterated potential of the converging mode (``f`` follows from it)."""
        return self.g

    @state.setter
    def state(self, v):
        self.g = v

    @property
    def state_weights(self):
        """Weights of the :attr:`state` potential's points (``b``)."""
        return self.b

    @property
    def companion(self):
        """The potential that follows from :attr:`state` (``f = d Tf(g)`` as of the last step)."""
        return self.f

    @companion.setter
    def companion(self, v):
        self.f = v

    def extrapolate(self, eps, d, op_xy, op_yx):
        """Final (differentiable) update of both potentials from the current ones, in parallel.

        Parameters
        ----------
        eps : float
            Temperature.
        d : float
            Damping factor.
        op_xy : operator
            Reduction from ``y`` to ``x`` for this update (the full operator, where the loop ran on a truncated one).
        op_yx : operator
            Reduction from ``x`` to ``y``.

        Returns
        -------
        f : torch.Tensor
            ``(B, N)`` updated potential on ``x``.
        g : torch.Tensor
            ``(B, M)`` updated potential on ``y``.
        error : torch.Tensor
            ``(B,)`` marginal error of the potentials the update starts from (detached).
        """
        f, g = softmin_pair(op_xy, op_yx, eps, self.lb + self.g / eps, self.la + self.f / eps)
        f, g = d * f, d * g
        err = torch.maximum(
            rel_error(self.a, self.f.detach(), f.detach(), eps), rel_error(self.b, self.g.detach(), g.detach(), eps)
        )
        return f, g, err


    def final_error(self, eps, d):
        """The marginal error :meth:`extrapolate` would report from the current potentials (no state change).

        Parameters
        ----------
        eps : float
            Temperature.
        d : float
            Damping factor.

        Returns
        -------
        torch.Tensor
            ``(B,)`` the error, detached.
        """
        return self.extrapolate(eps, d, self.op_xy, self.op_yx)[2].detach()


class SymmetricProblem:
    """The symmetric problem ``OT_eps(a, a)``: one potential ``f = g``, symmetric averaged updates.

    Parameters
    ----------
    op : operator
        Reduction from the points to themselves (:mod:`otpipe.geometry.backends`).
    a : Tensor, ``(B, N)``
        Weights (detached).
    start : Tensor, optional
        Warm-start potential ``f``; ``None`` starts from the first SoftMin of the weights.

    Attributes
    ----------
    f : Tensor
        The current potential (set by :meth:`init`).
    la : Tensor
        Log-weights of ``a``.
    """

    symmetric = True

    def __init__(self, op, a, start=None):
        self.op, self.a, self.la = op, a, log_weights(a)
        self.start = start  # warm start f, or None

    def init(self, eps, d):
        """Set the potential: the warm start, or one update from a zero potential.

        Parameters
        ----------
        eps : float
            Temperature.
        d : float
            Damping factor ``1 / (1 + eps / rho)`` (:func:`damping`; 1 when balanced).
        """
        if self.start is not None:
            self.f = self.start
            return
        self.f = d * self.op.softmin(eps, self.la)

    def averaged_step(self, eps, d):
        """One symmetric averaged update ``f <- (f + d T(f)) / 2``.

        Parameters
        ----------
        eps : float
            Temperature.
        d : float
            Damping factor ``1 / (1 + eps / rho)`` (:func:`damping`; 1 when balanced).
        """
        ft = d * self.op.softmin(eps, self.la + self.f / eps)
        self.f = 0.5 * (self.f + ft)

    def converging_step(self, eps, d, omega=1.0, rho=None):
        """One symmetric averaged update ``f <- (f + d T(f)) / 2`` (the converging mode of the symmetric problem).

        Parameters
        ----------
        eps : float
            Temperature.
        d : float
            Damping factor ``1 / (1 + eps / rho)`` (:func:`damping`; 1 when balanced).
        omega : float, default 1.0
            Not used: the symmetric problem always takes the averaged update (the signature is the cross problem's).
        rho : float or None, default None
            Not used (the signature is the cross problem's).

        Returns
        -------
        torch.Tensor
            ``(B,)`` the marginal error of the plan ``(f, f)`` the step starts from.
        """
        ft = d * self.op.softmin(eps, self.la + self.f / eps)
        err = rel_error(self.a, self.f, ft, eps)
        self.f = 0.5 * (self.f + ft)
        return err

    def mixing_step(self, eps, d, rho=None):
        """The averaged update ``G(f) = (f + d T(f)) / 2`` and the marginal error of the plan ``(f, f)``.

        An element that stops keeps the update (a strong contraction: one more step makes ``2 <a, d T(f)>`` more
        accurate).

        Parameters
        ----------
        eps : float
            Temperature.
        d : float
            Damping factor ``1 / (1 + eps / rho)`` (:func:`damping`; 1 when balanced).
        rho : float or None, default None
            Not used (the signature is the cross problem's).

        Returns
        -------
        update : torch.Tensor
            ``(B, N)`` the map's value ``G(f)``.
        error : torch.Tensor
            ``(B,)`` the marginal error of the plan ``(f, f)``.
        keep : torch.Tensor
            ``(B, N)`` what an element that stops here keeps (the update).
        """
        ft = d * self.op.softmin(eps, self.la + self.f / eps)
        avg = 0.5 * (self.f + ft)
        return avg, rel_error(self.a, self.f, ft, eps), avg

    @property
    def state(self):
        """The iterated potential of the converging mode (``f``)."""
        return self.f

    @state.setter
    def state(self, v):
        self.f = v

    @property
    def state_weights(self):
        """Weights of the :attr:`state` potential's points (``a``)."""
        return self.a

    companion = None

    def extrapolate(self, eps, d, op):
        """Final (differentiable) update of the potential from the current one.

        Parameters
        ----------
        eps : float
            Temperature.
        d : float
            Damping factor.
        op : operator
            Reduction from the points to themselves for this update.

        Returns
        -------
        f : torch.Tensor
            ``(B, N)`` updated potential.
        error : torch.Tensor
            ``(B,)`` marginal error of the potential the update starts from (detached).
        """
        f = d * op.softmin(eps, self.la + self.f / eps)
        return f, rel_error(self.a, self.f.detach(), f.detach(), eps)

    def final_error(self, eps, d):
        """The marginal error :meth:`extrapolate` would report from the current potential (no state change).

        Parameters
        ----------
        eps : float
            Temperature.
        d : float
            Damping factor.

        Returns
        -------
        torch.Tensor
            ``(B,)`` the error, detached.
        """
        return self.extrapolate(eps, d, self.op)[1].detach()
