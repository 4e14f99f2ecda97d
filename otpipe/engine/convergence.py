"""Convergence honesty: the marginal errors of a run's solves, summarised, recorded and warned about.

Every Sinkhorn solve reports the relative L1 error of its plan's marginal,
``err = |pi 1 - a|_1 / |a|_1``. A run summarises the errors of all its solves by their median and
maximum; when ``median > MEDIAN_THRESHOLD`` or ``max > MAX_THRESHOLD`` it warns once
(:class:`ConvergenceWarning`, shown by ``otpipe`` as one line on stderr) with the figures and the
remedy, and records them in the result's attributes (:func:`attrs`).

Why 1e-2 (median) and 1e-1 (max): on pairs of scikit-learn digits and of Gaussian clouds (measured,
``notes/issue-12-newcomer-api.md``), solves that end with marginal errors of at most 1e-2 give
divergences within 6e-4 (relative) of the fully converged value, while the fixed schedule's typical
0.1-0.45 gives 2-20% (up to 49%). A median above 1e-2 means the typical value is off by more than
about 1e-3; a single solve above 1e-1 is off by several percent.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from otpipe.diagnostics import (
    ConvergenceWarning,  # one class for the solver and the pipeline
)

__all__ = ["ConvergenceWarning", "MEDIAN_THRESHOLD", "MAX_THRESHOLD", "summarise", "attrs", "result_attrs", "warn"]

MEDIAN_THRESHOLD = 1e-2
MAX_THRESHOLD = 1e-1




def summarise(errors, tol: float | None = None) -> dict:
    """Median, maximum and counts of the finite entries of ``errors``.

    Parameters
    ----------
    errors : array_like
        Marginal errors of a run's solves, any shape (non-finite entries are skipped).
    tol : float or None, default None
        The tolerance the solves ran to (converging mode); ``None``: the fixed schedule.

    Returns
    -------
    dict
        ``{"median", "max", "n", "n_above", "tol", "n_above_tol"}``: NaN median and max when no entry is finite;
        ``n_above`` counts the solves above :data:`MAX_THRESHOLD`, ``n_above_tol`` those above ``tol`` (0 without it).
    """
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    e = e[np.isfinite(e)]
    if e.size == 0:
        return {"median": math.nan, "max": math.nan, "n": 0, "n_above": 0, "tol": tol, "n_above_tol": 0}
    return {"median": float(np.median(e)), "max": float(e.max()), "n": int(e.size),
            "n_above": int(np.count_nonzero(e > MAX_THRESHOLD)), "tol": tol,
            "n_above_tol": 0 if tol is None else int(np.count_nonzero(e > tol))}


def message(s: dict, *, what: str, remedy: str, note: str = "", unit: str = "solves") -> str:
    """The warning text for summary ``s`` (empty when the errors are below both thresholds).

    Parameters
    ----------
    s : dict
        A summary from :func:`summarise`.
    what : str
        What did not converge (starts the message: ``"the distance matrix"``).
    remedy : str
        What to do about it.
    note : str, default ""
        A remark appended to the message.
    unit : str, default "solves"
        What the summary counts.

    Returns
    -------
    str
        One line with the figures, the thresholds (the converging mode: the count above ``tol``) and the remedy, or
        ``""``.
    """
    if s.get("tol") is not None:  # the converging mode: the requested tolerance is the criterion
        if not s.get("n_above_tol"):
            return ""
        return (f"{what}: {s['n_above_tol']} of {s['n']} {unit} stopped above tol={s['tol']:g} (marginal error median "
                f"{s['median']:.2g}, max {s['max']:.2g}); {remedy}" + (f"; {note}" if note else ""))
    if not s["n"] or not (s["median"] > MEDIAN_THRESHOLD or s["max"] > MAX_THRESHOLD):
        return ""
    return (f"{what} did not converge: marginal error median {s['median']:.2g}, max {s['max']:.2g} over {s['n']} {unit} "
            f"(thresholds {MEDIAN_THRESHOLD:g} median / {MAX_THRESHOLD:g} max); {remedy}" + (f"; {note}" if note else ""))


def attrs(s: dict, msg: str) -> dict:
    """Result attributes of a run's convergence.

    Parameters
    ----------
    s : dict
        A summary from :func:`summarise`.
    msg : str
        The warning text (``""`` when none).

    Returns
    -------
    dict
        ``marginal_error_median``, ``marginal_error_max`` (``None`` when not finite), ``marginal_error_threshold``
        (the two thresholds) and ``convergence_warning`` (``msg``); in the converging mode also
        ``marginal_error_tol`` and ``solves_above_tol``.
    """
    def f(v):
        return None if not math.isfinite(v) else float(v)

    out = {
        "marginal_error_median": f(s["median"]),
        "marginal_error_max": f(s["max"]),
        "marginal_error_threshold": {"median": MEDIAN_THRESHOLD, "max": MAX_THRESHOLD},
        "convergence_warning": msg,
    }
    if s.get("tol") is not None:
        out["marginal_error_tol"] = float(s["tol"])
        out["solves_above_tol"] = int(s["n_above_tol"])
    return out


def result_attrs(s: dict, *, what: str, remedy: str, note: str = "", unit: str = "solves") -> dict:
    """The convergence attributes of a run (:func:`attrs`) for summary ``s``, with its :func:`message`.

    Parameters
    ----------
    s : dict
        A summary from :func:`summarise`.
    what : str
        What did not converge (starts the message: ``"the distance matrix"``).
    remedy : str
        What to do about it.
    note : str, default ""
        A remark appended to the message.
    unit : str, default "solves"
        What the summary counts.

    Returns
    -------
    dict
        The attributes of :func:`attrs`.
    """
    return attrs(s, message(s, what=what, remedy=remedy, note=note, unit=unit))


def warn(msg: str, stacklevel: int | None = None) -> None:
    """Issue ``msg`` as a :class:`ConvergenceWarning` (nothing when empty).

    The warning is attributed to the first caller outside the otpipe package (whatever wrappers lie between),
    unless ``stacklevel`` is given.

    Parameters
    ----------
    msg : str
        The warning text.
    stacklevel : int or None, default None
        ``stacklevel`` of :func:`warnings.warn`; ``None``: the first frame outside otpipe.
    """
    if not msg:
        return
    if stacklevel is None:
        import os
        import sys

        pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
        f, stacklevel = sys._getframe(0), 1
        while f is not None and os.path.abspath(f.f_code.co_filename).startswith(pkg):
            f, stacklevel = f.f_back, stacklevel + 1
    warnings.warn(msg, ConvergenceWarning, stacklevel=stacklevel)
