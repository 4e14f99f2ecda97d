"""Worker processes of the embedded ``LocalCluster``: when they are safe, and Ctrl-C left to the client.

Dask starts worker processes with multiprocessing's ``spawn``: each new process imports the main
script again (as ``__mp_main__``) and runs its top-level code. A plain script that calls
``otpipe.pairwise(...)`` at top level, without an ``if __name__ == "__main__":`` guard, would start
a cluster again in every worker ("Nanny failed to start"). :func:`processes_are_safe` detects that
situation (and a main module that cannot be re-imported at all, such as ``python - < script``), so
the embedded cluster then runs its workers as threads of this process, with a one-line warning
that says how to get processes back.

:class:`IgnoreSigint`: a worker plugin that makes worker processes ignore SIGINT. A Ctrl-C on a
terminal reaches every process of the foreground group; the client alone handles it (it saves the
finished work and closes the cluster), instead of every worker printing a traceback.

:class:`QuietTaskErrors`: a worker plugin that drops the workers' ``Compute Failed`` log record (a
dozen lines with the remote traceback) of the embedded cluster: the client re-raises the task's
exception, which the CLI prints as one line (``--debug`` shows its traceback, remote frames
included). Clusters otpipe does not start (``--scheduler``) and batch jobs keep their logs.

:class:`ComputeThreads`: a worker plugin that gives each task as many torch (and OpenMP) compute threads as its
worker has task slots. Dask's nanny does not limit torch's intra-op pool, which defaults to every core of the
machine: two single-threaded workers on two cores each ran the compiled kernels on two threads, four threads on
two cores (a tile of 1,936 digit pairs: 59 ms per worker instead of 33 ms alone). OpenMP's thread count is a
setting of each thread, so the plugin publishes the count in the worker's environment
(:data:`TASK_THREADS_ENV`) and the tasks apply it in their own thread
(:func:`otpipe.pipelines.tasks.apply_task_threads`).
"""
from __future__ import annotations

import ast
import logging
import os
import sys

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["processes_are_safe", "local_processes", "IgnoreSigint", "QuietTaskErrors", "ComputeThreads", "GUARD_ADVICE",
           "TASK_THREADS_ENV"]

#: environment variable of a worker process: the compute threads of each of its tasks (:class:`ComputeThreads`)
TASK_THREADS_ENV = "OTPIPE_TASK_THREADS"

GUARD_ADVICE = ('put the call under `if __name__ == "__main__":` in your script to run the workers as '
                "processes (they would re-run the script's top-level code)")


def _is_main_guard(node: ast.AST) -> bool:
    """``__name__ == "__main__"`` (either order)."""
    if not isinstance(node, ast.Compare) or len(node.ops) != 1 or not isinstance(node.ops[0], ast.Eq):
        return False
    sides = [node.left, node.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    consts = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(consts) == 1


def _guarded_lines(source: str) -> list[tuple[int, int]]:
    """Line ranges of the top-level ``if __name__ == "__main__":`` blocks of a module."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [(n.lineno, n.end_lineno or n.lineno) for n in tree.body if isinstance(n, ast.If) and _is_main_guard(n.test)]


def processes_are_safe(frame=None) -> tuple[bool, str]:
    """Whether spawned worker processes can start without re-running this call.

    Unsafe when ``__main__`` is re-imported by ``spawn`` (a script, or ``python -m module`` of a
    plain module) and this call runs from its top-level code outside an
    ``if __name__ == "__main__":`` block, or when ``__main__`` names a file that does not exist
    (``python - < script``). Interactive sessions, notebooks, ``python -c`` and package ``__main__`` modules (like
    ``python -m otpipe.cli``) are safe.

    Parameters
    ----------
    frame : frame, optional
        The frame to start the search for the main script's top level from (default: the caller's).

    Returns
    -------
    safe : bool
        Whether worker processes are safe.
    why : str
        The reason, for messages.
    """
    main = sys.modules.get("__main__")
    if main is None:
        return True, "no __main__ module"
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name is not None and (name == "__main__" or name.endswith(".__main__")):
        return True, "package __main__ (not re-run by spawn)"
    path = getattr(spec, "origin", None) if name is not None else getattr(main, "__file__", None)
    if not path:
        return True, "interactive session (nothing to re-run)"
    if not os.path.isfile(path):
        return False, f"the main script {path} cannot be re-imported by worker processes"
    f = frame if frame is not None else sys._getframe(1)
    top = None
    while f is not None:
        if f.f_globals is main.__dict__ and f.f_code.co_name == "<module>":
            top = f
        f = f.f_back
    if top is None:
        return True, "not called from the main script's top level"
    try:
        with open(path, encoding="utf-8") as fh:
            source = fh.read()
    except (OSError, UnicodeDecodeError):
        return True, "main script unreadable (assumed guarded)"
    line = top.f_lineno
    if any(a <= line <= b for a, b in _guarded_lines(source)):
        return True, 'called under `if __name__ == "__main__":`'
    return False, f"{os.path.basename(path)} line {line} runs at import time (no __main__ guard)"


def local_processes(n_workers: int) -> bool:
    """``processes=`` for the embedded ``LocalCluster``.

    Parameters
    ----------
    n_workers : int
        Workers of the cluster (for the warning).

    Returns
    -------
    bool
        ``True`` unless :func:`processes_are_safe` says no, then ``False`` with a :class:`RuntimeWarning` that says
        why and what to do.
    """
    import warnings

    safe, why = processes_are_safe()
    if not safe:
        warnings.warn(f"running the {n_workers} Dask worker(s) as threads of this process: {why}; {GUARD_ADVICE}",
                      RuntimeWarning, stacklevel=2)
    return safe


class _NoComputeFailed(logging.Filter):
    """Drops ``distributed.worker``'s ``Compute Failed`` records (the client reports the error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("Compute Failed"))


class QuietTaskErrors(WorkerPlugin):
    """Worker plugin: no ``Compute Failed`` log of a failed task (see the module docstring)."""

    name = "otpipe-quiet-task-errors"

    def setup(self, worker) -> None:
        """Install the filter on the ``distributed.worker`` logger of the worker (once).

        Parameters
        ----------
        worker : distributed.Worker
            The worker the plugin is registered on.
        """
        lg = logging.getLogger("distributed.worker")
        if not any(isinstance(f, _NoComputeFailed) for f in lg.filters):
            lg.addFilter(_NoComputeFailed())
        # "Async instruction for <Task cancelled ...>" after Ctrl-C: the client cancelled the tasks on purpose
        logging.getLogger("distributed.worker.state_machine").setLevel(logging.ERROR)


class IgnoreSigint(WorkerPlugin):
    """Worker plugin: the worker process ignores SIGINT (see the module docstring)."""

    name = "otpipe-ignore-sigint"

    def setup(self, worker) -> None:
        """Make the worker process ignore SIGINT (from its main thread only: a threaded worker is left alone).

        Parameters
        ----------
        worker : distributed.Worker
            The worker the plugin is registered on.
        """
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)



class ComputeThreads(WorkerPlugin):
    """Worker plugin: torch's compute threads = the worker's task slots (see the module docstring)."""

    name = "otpipe-compute-threads"

    def setup(self, worker) -> None:
        """Publish the worker's number of threads (its concurrent tasks) as :data:`TASK_THREADS_ENV`.

        Parameters
        ----------
        worker : distributed.Worker
            The worker the plugin is registered on (a process of its own).
        """
        n = int(getattr(getattr(worker, "state", None), "nthreads", 0) or getattr(worker, "nthreads", 1) or 1)
        os.environ[TASK_THREADS_ENV] = str(max(1, n))
