"""Cost estimates for ``--dry-run``: time a small sample of the real work here, scale it up.

``seconds ~ units x (measured seconds per unit) / workers``, where the unit is a pair solve
(distances), a permutation of one test (two-sample) or one repetition of a cell (complexity).
The sample runs in this process on one torch thread, as a worker task does. Measured
(``notes/issue-12-newcomer-api.md``): 45 Sinkhorn tests of 99 permutations between the digit
labels were estimated at 2 min 53 s on 2 workers and took 6 min 51 s on a machine loaded 6x over
its cores; runs of seconds are dominated by the cluster's start-up, which is not included.
Anything above :data:`LARGE_SECONDS` is flagged as large.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from otpipe.engine.progress import human_seconds

__all__ = ["LARGE_SECONDS", "timed", "one_thread", "summary", "warning_text"]

#: estimates above this (seconds of wall time on the given workers) get a warning
LARGE_SECONDS = 3600.0


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread for the ``with`` block (the workers' tasks run one thread each).

    Yields
    ------
    None
        The previous thread count is restored on exit.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` takes on one torch thread (after one untimed warm-up call when it is fast).

    Parameters
    ----------
    fn : callable
        A sample of the real work, called with no arguments (once, or twice when the first call takes under 0.5 s).

    Returns
    -------
    float
        Wall seconds of the timed call.
    """
    with one_thread():
        t0 = time.perf_counter()
        fn()
        t = time.perf_counter() - t0
        if t < 0.5:  # first calls pay for imports/compilation: time a second one
            t0 = time.perf_counter()
            fn()
            t = time.perf_counter() - t0
    return t


def summary(units: float, seconds_per_unit: float, n_workers: int, unit: str) -> dict:
    """The estimate of a run: ``units`` of the work, each measured at ``seconds_per_unit``, on ``n_workers``.

    Parameters
    ----------
    units : float
        Number of units of work (pair solves, permutations, repetitions).
    seconds_per_unit : float
        Measured seconds per unit (:func:`timed`).
    n_workers : int
        Workers the run would have (at least 1 is assumed).
    unit : str
        Name of the unit (a key ``seconds_per_<unit>``).

    Returns
    -------
    dict
        ``{"estimated_seconds", "estimated_cpu_seconds", "seconds_per_<unit>", "workers", "large"}`` (``large``:
        above :data:`LARGE_SECONDS` of wall time).
    """
    cpu = float(units) * float(seconds_per_unit)
    wall = cpu / max(1, int(n_workers))
    return {
        "estimated_seconds": wall,
        "estimated_cpu_seconds": cpu,
        f"seconds_per_{unit}": float(seconds_per_unit),
        "workers": int(n_workers),
        "large": wall > LARGE_SECONDS,
    }


def line(est: dict) -> str:
    """``estimated time: about 2 h 5 min on 4 workers (8 h 20 min of CPU)``."""
    return (f"estimated time: about {human_seconds(est['estimated_seconds'])} on {est['workers']} worker(s) "
            f"({human_seconds(est['estimated_cpu_seconds'])} of CPU; rough: a small sample timed here, on an idle "
            "machine, without the cluster's start-up of 10-30 s)")


def warning_text(est: dict, advice: str) -> str:
    """The warning for a large estimate (empty otherwise).

    Parameters
    ----------
    est : dict
        An estimate from :func:`summary`.
    advice : str
        What to do about it (ends the message).

    Returns
    -------
    str
        The warning, or ``""`` when the estimate is not large.
    """
    if not est.get("large"):
        return ""
    return f"this run would take about {human_seconds(est['estimated_seconds'])} on {est['workers']} worker(s): {advice}"
