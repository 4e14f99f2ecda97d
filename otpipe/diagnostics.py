"""Warnings about the accuracy of solves, shared by the numerical API and the pipeline.

This module imports nothing: the solver (:mod:`otpipe.solvers.loop`, :mod:`otpipe.tools.losses`) and the pipeline
(:mod:`otpipe.engine.convergence`) both raise :class:`ConvergenceWarning` from here.

Thresholds of the functional API (``sinkhorn_divergence``, ``SamplesLoss``):

* converged mode (``tol`` set): a warning when a solve ends above ``tol``;
* fixed schedule (``tol=None``, GeomLoss's): a warning when a solve ends with a relative L1 marginal error
  above :data:`FIXED_SCHEDULE_MAX_ERROR`. That mode stops after one update per temperature, so its errors are
  large by design: measured on about 900 ordinary default calls (digits; clouds
  of 1 to 3,000 points in 1 to 50 dimensions; ``p`` in 0.5-2; blur 0.001-1; float32 and float64) the cross solve
  ended at medians of 0.002-0.57 and at most 1.27 (values still within 0.3-10% of the converged ones there), the
  self solves at most 0.40. The pipeline's thresholds (``otpipe.engine.convergence``: median 1e-2, max 1e-1)
  would fire on nearly every default call; this one fires where the plan has lost its marginals (float32 below
  the blur it resolves: 31.8 at blur 3e-4, 1.8e9 at 1e-4 on 30 x 25 points).
"""
from __future__ import annotations

import contextlib
import contextvars

__all__ = ["FIXED_SCHEDULE_MAX_ERROR", "ConvergenceWarning", "warn", "quiet"]

#: set by :func:`quiet` in the current thread (context): :func:`warn` then says nothing
_QUIET = contextvars.ContextVar("otpipe_quiet_warnings", default=False)

#: relative L1 marginal error above which a fixed-schedule (``tol=None``) solve of the functional API warns
FIXED_SCHEDULE_MAX_ERROR = 2.0


class ConvergenceWarning(RuntimeWarning):
    """Solves ended far from convergence (a marginal error above the threshold of the mode), or a value had to
    be corrected for it (see :mod:`otpipe.diagnostics` and :mod:`otpipe.engine.convergence`)."""


def warn(msg: str, category: type[Warning] = ConvergenceWarning) -> None:
    """``warnings.warn(msg, category)`` attributed to the first caller outside otpipe.

    Frames of otpipe (and torch's module calls, for :class:`otpipe.SamplesLoss`) are skipped, whatever wrappers lie
    between.

    Parameters
    ----------
    msg : str
        The warning text.
    category : type of Warning, default ConvergenceWarning
        The warning class.
    """
    import os
    import sys
    import warnings

    if _QUIET.get():
        return
    pkg = os.path.dirname(os.path.abspath(__file__)) + os.sep
    skip = [pkg]
    torch_mod = sys.modules.get("torch")
    if torch_mod is not None and getattr(torch_mod, "__file__", None):
        skip.append(os.path.join(os.path.dirname(os.path.abspath(torch_mod.__file__)), "nn") + os.sep)
    f, level = sys._getframe(1), 2
    while f is not None and os.path.abspath(f.f_code.co_filename).startswith(tuple(skip)):
        f, level = f.f_back, level + 1
    warnings.warn(msg, category, stacklevel=level)


@contextlib.contextmanager
def quiet():
    """Within this block, in this thread only, :func:`warn` says nothing.

    For the tasks of a distributed run, which record every solve's marginal error and summarise them once (a
    worker's warning would print raw, once per batch). A context variable, not ``warnings.catch_warnings``
    (process-wide, so not safe with several task threads).

    Yields
    ------
    None
        Nothing; the block runs quietly.
    """
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)
