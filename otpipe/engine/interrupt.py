"""Ctrl-C that keeps what is done: SIGINT handling of checkpointed runs.

A run wraps its work in :func:`guard`. Inside, SIGINT raises ``KeyboardInterrupt`` as usual,
except during :meth:`Guard.critical` sections (a checkpoint being written), where it is held until
the section ends, so a checkpoint is never half written, and while the run waits for its tasks
(:meth:`Guard.completed`), where it is checked every 0.1 s instead of being raised inside Dask. The run catches the
``KeyboardInterrupt``, writes what is done and raises :class:`Interrupted` with a message that
says how to resume; ``otpipe`` prints that message and exits with status 130.

Test hook: with the module attribute :data:`STOP_AFTER` set to ``K`` (by the test suite, in its own
process: ``tests/cli_hooks.py``), :meth:`Guard.task_done` raises ``KeyboardInterrupt`` after the
``K``-th task of the run, as a Ctrl-C at that moment would. No environment variable reaches it: a
user's environment cannot stop a run.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Interrupted", "Guard", "guard", "EXIT_CODE", "resume_hint"]

#: exit status of an interrupted command (128 + SIGINT, as shells report it)
EXIT_CODE = 130
#: tests only: a run stops (as by Ctrl-C) after this many tasks; ``None`` in every shipped code path
STOP_AFTER: int | None = None


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C after saving its finished work; ``str(exc)`` says how to resume."""


class Guard:
    """SIGINT state of one run (see the module docstring)."""

    def __init__(self) -> None:
        self._depth = 0
        self._pending = False
        self._count = 0
        self._stop_after = STOP_AFTER

    def _handler(self, signum, frame) -> None:
        if self._depth:
            self._pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A section that SIGINT does not interrupt (the interrupt is raised when it ends)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if not self._depth:
            self.check()

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` now if SIGINT arrived during a deferred section."""
        if self._pending:
            self._pending = False
            raise KeyboardInterrupt

    def task_done(self) -> None:
        """Count a finished task (the :data:`STOP_AFTER` test hook)."""
        self._count += 1
        if self._stop_after is not None and self._count >= self._stop_after:
            raise KeyboardInterrupt

    def completed(self, futures, poll: float = 0.1) -> Iterator:
        """The ``futures`` in order of completion, waiting in this thread (SIGINT is checked every
        ``poll`` seconds, never raised inside Dask's client code)."""
        from distributed import as_completed

        ac = as_completed(list(futures))
        self._depth += 1
        try:
            while not ac.is_empty():
                self.check()
                if ac.has_ready():
                    for f in ac.next_batch(block=False):
                        yield f
                        self.check()
                else:
                    time.sleep(poll)
        finally:
            self._depth -= 1
        self.check()


@contextlib.contextmanager
def guard() -> Iterator[Guard]:
    """Install the SIGINT handler of a :class:`Guard` (main thread only, and only over Python's
    default handler); restore the previous handler on exit."""
    g = Guard()
    installed = False
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGINT)
        if previous is signal.default_int_handler:
            signal.signal(signal.SIGINT, g._handler)
            installed = True
    try:
        yield g
    finally:
        if installed:
            signal.signal(signal.SIGINT, previous)


def resume_hint(out, api: str = "resume=True") -> str:
    """How to continue an interrupted run: the same ``otpipe`` command with ``--resume`` (or ``api``)."""
    import shlex

    argv = list(sys.argv)
    prog = Path(argv[0]).name if argv else ""
    is_cli = prog == "otpipe" or argv[0].replace("\\", "/").endswith("otpipe/cli/__main__.py") if argv else False
    if is_cli:
        args = [a for a in argv[1:] if a != "--overwrite"]
        cmd = "otpipe " + " ".join(shlex.quote(a) for a in args) + ("" if "--resume" in args else " --resume")
        return f"continue with: {cmd}"
    return f"continue with the same call and {api} (out={str(out)!r})"
