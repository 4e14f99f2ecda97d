"""Ctrl-C that keeps what is done: SIGINT handling of checkpointed runs.

A run wraps its work in :func:`guard`. Inside, SIGINT raises ``KeyboardInterrupt`` as usual,
except during :meth:`Guard.critical` sections (a checkpoint being written), where it is held until
the section ends, so a checkpoint is never half written, and while the run waits for its tasks
(:meth:`Guard.completed`), where it is checked every 0.1 s instead of being raised inside Dask. The run catches the
``KeyboardInterrupt``, writes what is done and raises :class:`Interrupted` with a message that
says how to resume; ``otpipe`` prints that message and exits with status 130. :func:`interruptible` is that
frame, for every run: the guard, and the :class:`Interrupted` that names what is saved (:func:`saved_message`).

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
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["Interrupted", "Guard", "guard", "interruptible", "saved_message", "EXIT_CODE", "resume_hint"]

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
        """A section that SIGINT does not interrupt (the interrupt is raised when it ends).

        Yields
        ------
        None
            Control, for the body of the ``with`` block.
        """
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
        """The ``futures`` in order of completion, waiting in this thread.

        SIGINT is deferred while waiting and checked before and after each future is handed out and every
        ``poll`` seconds, so it is never raised inside Dask's client code.

        Parameters
        ----------
        futures : iterable of distributed.Future
            The futures to wait for.
        poll : float, default 0.1
            Seconds between checks while no future is ready.

        Yields
        ------
        distributed.Future
            Each future once it has finished (done, failed or cancelled).
        """
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
    """Install the SIGINT handler of a :class:`Guard`; restore the previous handler on exit.

    The handler is installed only in the main thread and only over Python's default handler; elsewhere the
    guard is returned without it (its :meth:`Guard.critical` sections then defer nothing).

    Yields
    ------
    Guard
        The SIGINT state of the run.
    """
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
    """How to continue an interrupted run: the same ``otpipe`` command with ``--resume`` (or ``api``).

    Parameters
    ----------
    out : path
        The result store of the run.
    api : str, default "resume=True"
        The argument that resumes a run started from Python (not from the ``otpipe`` command).

    Returns
    -------
    str
        ``"continue with: otpipe ... --resume"`` (the command line, ``--overwrite`` dropped), or
        ``"continue with the same call and resume=True (out='OUT')"``.
    """
    import shlex

    argv = list(sys.argv)
    prog = Path(argv[0]).name if argv else ""
    is_cli = prog == "otpipe" or argv[0].replace("\\", "/").endswith("otpipe/cli/__main__.py") if argv else False
    if is_cli:
        args = [a for a in argv[1:] if a != "--overwrite"]
        cmd = "otpipe " + " ".join(shlex.quote(a) for a in args) + ("" if "--resume" in args else " --resume")
        return f"continue with: {cmd}"
    return f"continue with the same call and {api} (out={str(out)!r})"


def saved_message(out, done: int, total: int | None, what: str) -> str:
    """The message of a run stopped by Ctrl-C after saving its finished work.

    Parameters
    ----------
    out : path
        The result store the run writes.
    done, total : int
        Keys saved and keys of the run (``total`` unknown or 0: the count is left out).
    what : str
        The keys in words, plural (``"tiles"``, ``"tests"``).

    Returns
    -------
    str
        ``"3 of 10 tiles are saved in OUT; continue with: ..."`` (:func:`resume_hint`).
    """
    kept = f"{done} of {total} {what} are saved in {out}" if total else f"the finished work is saved in {out}"
    return f"{kept}; {resume_hint(out)}"


@contextlib.contextmanager
def interruptible(out, *, what: str, saved: Callable[[], tuple[int, int | None] | None],
                  first: str = "key") -> Iterator[Guard]:
    """The Ctrl-C frame of a run that saves its work in ``out``: yields its :class:`Guard`.

    A ``KeyboardInterrupt`` inside (Ctrl-C, or the :data:`STOP_AFTER` hook) becomes :class:`Interrupted` with
    :func:`saved_message`, or ``"nothing was saved yet"`` while the store does not exist; an ``Interrupted``
    raised inside passes unchanged, and a run with nothing to keep (``out`` is ``None``) re-raises the plain
    ``KeyboardInterrupt``.

    Parameters
    ----------
    out : path or None
        The result store of the run (``None``: the run keeps nothing).
    what : str
        Its keys in words, plural (``"tiles"``).
    saved : callable
        ``saved() -> (done, total)``, read at the interrupt; ``None`` while the store is not created yet.
    first : str, default "key"
        One key in words (``"tile"``), for ``"interrupted before the first tile of OUT"``.

    Yields
    ------
    Guard
        The guard of the run (:meth:`Guard.critical` sections, :meth:`Guard.completed` waits).
    """
    with guard() as g:
        try:
            yield g
        except Interrupted:
            raise
        except KeyboardInterrupt:
            if out is None:
                raise
            state = saved()
            if state is None:
                raise Interrupted(f"nothing was saved yet (interrupted before the first {first} of {out})") from None
            raise Interrupted(saved_message(out, *state, what)) from None
