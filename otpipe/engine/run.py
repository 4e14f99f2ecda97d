"""The run skeleton every distributed command shares: one key = one task = one region of the result.

A pipeline declares its keys (tiles and self-term chunks of a matrix, tests, cells, groups), the task
of a key (``submit(client, key) -> future``) and how a finished key is written into its region of the
result (``write(key, result)``), then assembles the result. The engine does the rest, once:

* :class:`Job`: the result store of a checkpointed run (:mod:`otpipe.engine.checkpoint`): what is
  already at ``out`` (refused, resumed or replaced: :meth:`Job.existing`), how many keys a dry run
  finds done (:meth:`Job.n_done`), the checkpoint to record into (:meth:`Job.checkpoint`);
* :func:`already_complete`: a resumed run that is already complete computes nothing;
* :func:`temporary_store`: where a run without ``out`` writes (a temporary store, removed at the end);
* :func:`worker_count` and :func:`remaining`: the ``--dry-run`` estimate of what is left to compute;
* :func:`session` and :func:`run_keys`: the client, progress, checkpoint flushes and Ctrl-C
  (:func:`~otpipe.engine.interrupt.interruptible`: :class:`~otpipe.engine.interrupt.Interrupted` with
  what is saved and the resume hint) of a run;
* :func:`execute`: the completion loop (each finished key written under the Ctrl-C guard).

The fingerprint of a run is :func:`otpipe.engine.identity.fingerprint`; its convergence attributes
come from :mod:`otpipe.engine.convergence`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from otpipe.engine import checkpoint as _ck
from otpipe.engine import estimate as _estimate
from otpipe.engine.result import result_type

__all__ = ["Job", "already_complete", "temporary_store", "is_temporary", "worker_count", "remaining", "session",
           "run_keys", "execute"]

#: the temporary stores of the runs going on in this process (:func:`temporary_store`)
_TEMPORARY: set[Path] = set()


def already_complete(out, stored: dict | None, log: logging.Logger) -> bool:
    """Whether the stored run to resume is already complete (then logged: nothing to compute).

    Parameters
    ----------
    out : path
        The result store.
    stored : dict or None
        Its attrs (``None``: nothing to resume).
    log : logging.Logger
        The pipeline's logger.

    Returns
    -------
    bool
        ``True`` when ``stored["complete"]``: the run opens its result instead of computing.
    """
    if stored is not None and stored.get("complete"):
        log.info("%s is already complete: nothing to compute", out)
        return True
    return False


@contextlib.contextmanager
def temporary_store(out, *, prefix: str, name: str) -> Iterator[Path]:
    """Where a run writes its result: ``out``, or without it a temporary store removed on exit.

    Parameters
    ----------
    out : path or None
        The result store asked for.
    prefix : str
        Prefix of the temporary folder (``"otpipe-pairwise-"``).
    name : str
        Name of the store in it (``"result.zarr"``).

    Yields
    ------
    pathlib.Path
        ``Path(out)``, or ``<temporary folder>/<name>`` (:func:`is_temporary` while it lasts): a run
        returns its result loaded, before the folder is removed.
    """
    if out is not None:
        yield Path(out)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        path = Path(d) / name
        _TEMPORARY.add(path)
        try:
            yield path
        finally:
            _TEMPORARY.discard(path)


def is_temporary(path) -> bool:
    """Whether ``path`` is the temporary store of a run going on (:func:`temporary_store`).

    Parameters
    ----------
    path : path
        A result store.

    Returns
    -------
    bool
        ``True`` for a store that the user did not name (messages then say "this run").
    """
    return Path(path) in _TEMPORARY


def worker_count(cluster=None, client=None) -> int:
    """Workers a dry run plans for: the client's, else the cluster spec's ``n_workers``, else up to 4 local cores.

    Parameters
    ----------
    cluster : ClusterSpec or None, default None
        The cluster the run would start (its ``n_workers``).
    client : distributed.Client or None, default None
        A running client: its workers count when it has any.

    Returns
    -------
    int
        The number of workers (at least 1).
    """
    n = getattr(cluster, "n_workers", None) or max(1, min(os.cpu_count() or 1, 4))
    if client is not None:
        n = len(client.scheduler_info().get("workers", {})) or n
    return n


def remaining(est: dict, done: int, total: int) -> dict:
    """Scale an estimate (:func:`otpipe.engine.estimate.summary`) to the ``total - done`` keys left; ``large`` again.

    Parameters
    ----------
    est : dict
        The estimate of the whole run; modified in place.
    done : int
        Keys already done.
    total : int
        Keys of the run.

    Returns
    -------
    dict
        ``est``, its ``estimated_seconds`` and ``estimated_cpu_seconds`` times ``1 - done / max(1, total)`` and
        ``large`` recomputed (more than :data:`otpipe.engine.estimate.LARGE_SECONDS`).
    """
    for k in ("estimated_seconds", "estimated_cpu_seconds"):
        est[k] *= 1.0 - done / max(1, total)
    est["large"] = est["estimated_seconds"] > _estimate.LARGE_SECONDS
    return est


@dataclass
class Job:
    """The result store of a checkpointed run of ``n`` keys.

    Parameters
    ----------
    out : pathlib.Path or None
        The store (``None``: in memory only).
    kind : str
        Its result type (the marker of :func:`otpipe._made.made_attrs`).
    what : str
        The keys in words, plural (``"cells"``).
    n : int
        Number of keys.
    fields : dict of str to Field
        The per-key rows (:class:`~otpipe.engine.checkpoint.Field`).
    fp : str
        The run's fingerprint.
    content : dict
        What the fingerprint is made of (named when a resume finds other parameters).
    chunk : int, default CHUNK
        Keys per checkpoint chunk (:data:`~otpipe.engine.checkpoint.CHUNK`).
    log : logging.Logger, default the ``otpipe`` logger
        The pipeline's logger.
    """

    out: Path | None
    kind: str
    what: str
    n: int
    fields: dict
    fp: str
    content: dict
    chunk: int = _ck.CHUNK
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("otpipe"))

    def existing(self, *, resume: bool, overwrite: bool, dry_run: bool = False, label: str | None = None,
                 is_ours: Callable[[dict], bool] | None = None) -> dict | None:
        """The stored attrs to resume from (``None``: start afresh); see :func:`~otpipe.engine.checkpoint.check_existing`.

        Parameters
        ----------
        resume : bool
            Continue the stored run.
        overwrite : bool
            Replace an existing result of this type.
        dry_run : bool, default False
            A dry run looks at ``out`` only when it resumes.
        label : str or None, default None
            The result type named in the refusals (default ``kind``).
        is_ours : callable or None, default None
            ``is_ours(attrs) -> bool``: whether stored attrs are a result of this run's type (default: their
            :func:`~otpipe.engine.result.result_type` is ``kind``).

        Returns
        -------
        dict or None
            The stored attrs when resuming; ``None`` with no ``out``, for a dry run that does not resume, or when
            the run starts afresh.
        """
        if self.out is None or (dry_run and not resume):
            return None
        if is_ours is None:
            def is_ours(attrs: dict) -> bool:
                return result_type(attrs) == self.kind
        return _ck.check_existing(self.out, is_ours=is_ours, what=label or self.kind, resume=resume,
                                  overwrite=overwrite, fp=self.fp, content=self.content)

    def already_complete(self, stored: dict | None) -> bool:
        """Whether the stored run is already complete (:func:`already_complete`).

        Parameters
        ----------
        stored : dict or None
            The attrs returned by :meth:`existing`.

        Returns
        -------
        bool
            ``True`` when ``stored["complete"]`` (then logged).
        """
        return already_complete(self.out, stored, self.log)

    def n_done(self, stored: dict | None) -> int:
        """Keys already done in the stored run (all of them when it is complete).

        Parameters
        ----------
        stored : dict or None
            The attrs returned by :meth:`existing` (``None``: nothing stored).

        Returns
        -------
        int
            0 without ``stored``, ``n`` when it is complete, else the keys its checkpoint marks done.
        """
        if stored is None:
            return 0
        if stored.get("complete"):
            return self.n
        return _ck.Checkpoint.load(self.out, self.n, self.fields, chunk=self.chunk).n_done

    def checkpoint(self, stored: dict | None, attrs: dict) -> _ck.Checkpoint:
        """The checkpoint to record into: in memory, a new store, or the stored one.

        Parameters
        ----------
        stored : dict or None
            The attrs of an unfinished run to resume (:meth:`existing`); ``None``: start afresh.
        attrs : dict
            The attributes of a new store.

        Returns
        -------
        Checkpoint
            In memory without ``out``; with ``stored``, the stored one (loaded, the resume logged); else a new
            store with ``attrs`` at ``out`` (an old result of ours there is removed first).
        """
        if self.out is None:
            return _ck.Checkpoint(None, self.n, self.fields, chunk=self.chunk)
        if stored is None:
            _ck.remove(self.out)
            return _ck.Checkpoint.create(self.out, attrs, self.n, self.fields, kind=self.kind, chunk=self.chunk)
        ck = _ck.Checkpoint.load(self.out, self.n, self.fields, chunk=self.chunk)
        self.log.info("resuming %s: %d of %d %s done", self.out, ck.n_done, self.n, self.what)
        return ck


def execute(g, futures: dict, write: Callable[[object, object], None]) -> None:
    """Wait for ``futures`` through the guard ``g`` and write each result as it finishes.

    Each write runs under ``g.critical()`` (a Ctrl-C never splits a region write); the future is then released
    and counted done (:meth:`~otpipe.engine.interrupt.Guard.task_done`).

    Parameters
    ----------
    g : Guard
        The run's guard (:func:`~otpipe.engine.interrupt.guard`).
    futures : dict
        ``{future: key}``.
    write : callable
        ``write(key, result)``: writes a finished key into its region of the result.
    """
    for f in g.completed(futures):
        res = f.result()
        with g.critical():
            write(futures[f], res)
        f.release()
        g.task_done()


@contextlib.contextmanager
def session(ck: _ck.Checkpoint, *, client, cluster, progress: bool, desc: str, unit: str, what: str):
    """The frame of a checkpointed run: yields ``(client, guard, progress bar)``.

    Inside, the run records finished keys in ``ck`` (flushing under ``guard.critical()``). At the
    end, and on Ctrl-C before the cluster is closed, ``ck`` is flushed; a Ctrl-C then raises
    :class:`~otpipe.engine.interrupt.Interrupted` saying how many ``what`` are saved and how to
    resume (a plain ``KeyboardInterrupt`` when ``ck`` is in memory only).

    Parameters
    ----------
    ck : Checkpoint
        The run's checkpoint.
    client : distributed.Client or None
        An existing client (left open), else one is opened on ``cluster`` (:func:`otpipe.engine.cluster.open_client`).
    cluster : ClusterSpec or None
        Where to run without ``client``.
    progress : bool
        Show the progress bar (on stderr).
    desc : str
        The progress bar's label.
    unit : str
        The progress bar's unit.
    what : str
        The keys in words, plural, for the Ctrl-C message.

    Yields
    ------
    tuple
        ``(client, guard, bar)``: the ``distributed.Client``, the :class:`~otpipe.engine.interrupt.Guard` and the
        :class:`~otpipe.engine.progress.Progress` bar (starting at ``ck.n_done`` of ``ck.n``).
    """
    from otpipe.engine.cluster import open_client
    from otpipe.engine.interrupt import interruptible
    from otpipe.engine.progress import Progress

    with interruptible(ck.out, what=what, saved=lambda: (ck.n_done, ck.n)) as g:
        with open_client(cluster, client=client) as c:
            bar = Progress(ck.n, initial=ck.n_done, desc=desc, unit=unit, enabled=progress)
            try:
                yield c, g, bar
                with g.critical():
                    ck.flush()
            except KeyboardInterrupt:
                with g.critical():
                    ck.flush()  # before the cluster closes (which takes a while)
                raise
            finally:
                bar.close()


def run_keys(ck: _ck.Checkpoint, pending, submit, record, *, client, cluster, progress: bool, desc: str, unit: str,
             what: str) -> None:
    """Run the tasks of the ``pending`` keys on Dask and record each in ``ck`` as it finishes.

    ``submit(client, key) -> future`` starts the task of a key; ``record(key, result)`` stores its
    result in ``ck``. Progress on stderr (``desc``, ``unit``); checkpoint flushes at most every
    :data:`~otpipe.engine.checkpoint.FLUSH_SECONDS`; Ctrl-C as in :func:`session` (the pending tasks
    are cancelled). Nothing is started when no key is pending.

    Parameters
    ----------
    ck : Checkpoint
        The run's checkpoint.
    pending : iterable
        The keys to run.
    submit : callable
        ``submit(client, key) -> future``: starts the task of a key.
    record : callable
        ``record(key, result)``: stores a finished key's result in ``ck``.
    client, cluster, progress, desc, unit, what
        As for :func:`session`.
    """
    pending = list(pending)
    if not pending:
        return
    with session(ck, client=client, cluster=cluster, progress=progress, desc=desc, unit=unit, what=what) as (c, g, bar):
        futs: dict = {}

        def write(key, res):
            record(key, res)
            bar.update(1)
            if ck.due():
                ck.flush()

        try:
            for key in pending:
                futs[submit(c, key)] = key
            execute(g, futs, write)
        except KeyboardInterrupt:
            with g.critical():
                ck.flush()  # before cancelling (which takes a while)
            with contextlib.suppress(Exception):
                c.cancel(list(futs))
            raise
