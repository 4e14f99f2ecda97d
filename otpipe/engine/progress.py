"""Progress of long runs on stderr: a bar on a terminal, plain lines in log files.

On a terminal (``stderr.isatty()``) :class:`Progress` draws a ``tqdm`` bar. Anywhere else (a log
file, a batch job's output, a pipe) it writes one plain line each time another
:data:`EVERY_PERCENT` percent of the work is done or :data:`EVERY_SECONDS` seconds have passed,
whichever comes first (at most one line a second, plus the last one), and never a carriage return::

    otpipe: two-sample: 450/44850 tests (1%), 3.2 tests/s, 2 min elapsed, ETA 3 h 51 min
"""
from __future__ import annotations

import math
import sys
import time
from typing import TextIO

__all__ = ["Progress", "EVERY_PERCENT", "EVERY_SECONDS", "MIN_SECONDS", "human_seconds"]

#: a plain progress line each time this share of the work (in percent) is done ...
EVERY_PERCENT = 5.0
#: ... or this many seconds have passed since the last line, whichever comes first
EVERY_SECONDS = 30.0
#: but never more often than this (short runs: a few lines, not one per task), except the last line
MIN_SECONDS = 1.0


def human_seconds(s: float) -> str:
    """A duration for people: ``42 s``, ``3 min 5 s``, ``2 h 14 min``, ``3.2 days``.

    Parameters
    ----------
    s : float
        Seconds (negative values count as 0).

    Returns
    -------
    str
        The duration; ``"?"`` when ``s`` is not finite.
    """
    if not math.isfinite(s):
        return "?"
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    if s < 86400 * 2:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{s / 86400:.1f} days"


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """Progress over ``total`` units of work (tests, pairs, cells, groups) on ``stream`` (stderr).

    Parameters
    ----------
    total : int
        Units of work of the whole run (resumed ones included).
    desc : str
        What runs (``"two-sample"``), the start of every line.
    unit : str
        Name of one unit (``"test"``).
    initial : int
        Units already done (a resumed run).
    enabled : bool
        ``False``: nothing is written.
    stream : file, optional
        Default ``sys.stderr``; a bar only when it is a terminal.
    every_percent : float, default EVERY_PERCENT
        Plain mode (not a terminal): a line each time the work crosses a multiple of this percentage...
    every_seconds : float, default EVERY_SECONDS
        ... or when this many seconds have passed since the last line, whichever comes first.
    min_seconds : float, default MIN_SECONDS
        Plain mode: never a line more often than this (except the last one).
    """

    def __init__(self, total: int, *, desc: str, unit: str = "task", initial: int = 0, enabled: bool = True,
                 stream: TextIO | None = None, every_percent: float = EVERY_PERCENT,
                 every_seconds: float = EVERY_SECONDS, min_seconds: float = MIN_SECONDS):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.n = self._start_n = int(initial)
        self.enabled = bool(enabled) and self.total > 0
        self.stream = stream if stream is not None else sys.stderr
        self.every_percent, self.every_seconds = float(every_percent), float(every_seconds)
        self.min_seconds = float(min_seconds)
        self.postfix = ""
        self._t0 = time.monotonic()
        self._last_t = -math.inf
        self._last_pct = self._pct(self.n)
        self._bar = None
        if self.enabled and _isatty(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.n, unit=unit, desc=desc, file=self.stream,
                             dynamic_ncols=True, smoothing=0.1)

    def _pct(self, n: int) -> float:
        return 100.0 * n / self.total if self.total else 100.0

    def set_postfix(self, text: str) -> None:
        """Set the extra text after the counts (e.g. ``tiles 12/91``).

        Parameters
        ----------
        text : str
            The text.
        """
        self.postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done (and write a line or move the bar when due).

        Parameters
        ----------
        n : int, default 1
            Units done since the last call.
        """
        self.n += int(n)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        pct = self._pct(self.n)
        step = math.floor(pct / self.every_percent) > math.floor(self._last_pct / self.every_percent)
        due = (step and now - self._last_t >= self.min_seconds) or now - max(self._last_t, self._t0) >= self.every_seconds
        if due or self.n >= self.total:
            self._line(now)
            self._last_t, self._last_pct = now, pct

    def _line(self, now: float) -> None:
        elapsed = now - self._t0
        done_now = self.n - self._start_n
        rate = done_now / elapsed if elapsed > 0 else float("nan")
        left = self.total - self.n
        eta = left / rate if rate and rate > 0 and math.isfinite(rate) else float("nan")
        rate_s = f"{rate:.3g} {self.unit}s/s" if rate >= 1 or not math.isfinite(rate) else f"{1 / rate:.3g} s/{self.unit}"
        parts = [f"{self.n}/{self.total} {self.unit}s ({self._pct(self.n):.0f}%)", rate_s,
                 f"{human_seconds(elapsed)} elapsed"]
        if left > 0:
            parts.append(f"ETA {human_seconds(eta)}")
        if self.postfix:
            parts.append(self.postfix)
        self.stream.write(f"otpipe: {self.desc}: " + ", ".join(parts) + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Close the bar (plain mode: nothing; the last line was written at 100%)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
