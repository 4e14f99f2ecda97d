"""Typed output of the solver runs (:func:`otpipe.solvers.loop.run_full`,
:func:`otpipe.solvers.multiscale.run_multiscale`), read by :mod:`otpipe.solvers.sinkhorn` and
:mod:`otpipe.tools.losses`, which compute the values from it."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Solution", "RunOutput"]


@dataclass
class Solution:
    """The final state of one problem of a run.

    Parameters
    ----------
    f : Tensor, ``(B, N)``
        Final (differentiable) potential on the rows.
    g : Tensor or None, ``(B, M)``
        Final potential on the columns of a cross problem; ``None`` for a symmetric one (``g = f``).
    marginal_error : Tensor, ``(B,)``
        Relative L1 marginal error of the plan at the returned potentials.
    n_iter : Tensor, ``(B,)``
        Updates (schedule included).
    problem : object
        The problem as solved (its operators and detached potentials, in the original point order), for the
        transport-cost variant.
    """

    f: torch.Tensor
    g: torch.Tensor | None
    marginal_error: torch.Tensor
    n_iter: torch.Tensor
    problem: object

    def converged(self, tol: float | None) -> torch.Tensor | None:
        """Whether each batch element converged, ``marginal_error <= tol``.

        Parameters
        ----------
        tol : float or None
            The stopping tolerance of the run; ``None``: the fixed schedule.

        Returns
        -------
        torch.Tensor or None
            ``(B,)`` bool; ``None`` in the fixed schedule (no tolerance to meet).
        """
        return None if tol is None else self.marginal_error <= tol


@dataclass
class RunOutput:
    """What a run returns: the backend, the temperatures, and the solution of each problem by name.

    Parameters
    ----------
    backend : str
        The backend (or solver strategy) that ran.
    schedule : list of float
        The temperatures.
    eps : float
        The final temperature.
    solutions : dict, default {}
        :class:`Solution` by problem name: ``"xy"`` (``OT_eps(a, b)``), ``"xx"`` (``OT_eps(a, a)``), ``"yy"``
        (``OT_eps(b, b)``), in that order among those solved.
    fine_backend : str or None, default None
        The kernels of a multiscale run's point-level reductions.
    """

    backend: str
    schedule: list
    eps: float
    solutions: dict = field(default_factory=dict)
    fine_backend: str | None = None

    def __getitem__(self, name: str) -> Solution:
        return self.solutions[name]
