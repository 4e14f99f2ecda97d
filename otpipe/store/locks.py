"""One writer per output: an exclusive lock file beside every store otpipe writes.

``with output_lock(out):`` (or the :func:`locked` decorator) holds ``OUT.lock`` (beside ``OUT``,
so that ``--overwrite`` replacing ``OUT`` by a rename keeps the lock; ``inside=True`` puts it at
``OUT/.otpipe.lock`` for run directories, which are never replaced) for the whole run: a second
writer gets :class:`LockedError`, one line naming the holder (host, PID, command, start time).

Mechanism: the file is created with ``O_CREAT | O_EXCL`` and held with ``flock(LOCK_EX | LOCK_NB)``;
it records its holder as one JSON line, and a daemon thread touches its mtime every
``heartbeat`` seconds. On release the holder deletes it (after checking that the path is still
its file). A lock file found without a live holder was left by a killed process and is taken
over with a warning naming that process:

* same host: the kernel drops a ``flock`` when its process dies, so a lock file that can be
  flocked has no live holder (where ``flock`` is unsupported: the recorded PID is not running);
* another host: the record's heartbeat (mtime) is older than ``OTPIPE_LOCK_STALE_SECONDS``
  (default 300 s, a few times the heartbeat, generous for clock skew between hosts).

On NFS: ``O_EXCL`` creation is atomic (NFSv3 and later) and Linux maps ``flock`` to NFS byte-range
locks (NLM / NFSv4), so two hosts exclude each other and a crashed client's lock expires with its
lease. On mounts without working locks (``nolock``; Lustre without ``-o flock``) ``flock`` only
excludes processes of the same host; across hosts the record and its heartbeat decide, which
leaves a window of about a second in which two hosts starting together could both proceed.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import inspect
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["LockedError", "output_lock", "locked", "lock_path"]

log = logging.getLogger("otpipe.lock")

LOCK_SUFFIX = ".lock"
INSIDE_NAME = ".otpipe.lock"
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENOTSUP}
_HELD: dict[str, _Held] = {}  # lock file -> what this process holds (re-entrant in one thread)
_HELD_GUARD = threading.Lock()


class LockedError(OSError):
    """Another live process holds the lock of an output (the message names it)."""

    def __str__(self) -> str:  # one line, without OSError's errno prefix
        return str(self.args[0]) if self.args else "locked"


def stale_seconds() -> float:
    """Heartbeat age after which a lock held from another host counts as abandoned."""
    try:
        return max(1.0, float(os.environ.get("OTPIPE_LOCK_STALE_SECONDS", "300")))
    except ValueError:
        return 300.0


def lock_path(path: str | os.PathLike, *, inside: bool = False) -> Path:
    """The lock file of ``path``: ``PATH.lock`` beside it (``inside``: ``PATH/.otpipe.lock``).

    Parameters
    ----------
    path : str or os.PathLike
        The output being locked.
    inside : bool, default False
        Put the lock file inside ``path`` (a directory) instead of beside it.

    Returns
    -------
    pathlib.Path
        The lock file's path.
    """
    p = Path(os.path.realpath(os.fspath(path)))
    return p / INSIDE_NAME if inside else p.parent / (p.name + LOCK_SUFFIX)


class _Held:
    def __init__(self, fd: int, file: Path, record: dict, thread: int):
        self.fd, self.file, self.record, self.thread, self.count = fd, file, record, thread, 1
        self.stop = threading.Event()
        self.beat: threading.Thread | None = None


def _command() -> str:
    argv = list(sys.argv) or ["python"]
    if Path(argv[0]).name == "otpipe" or argv[0].endswith(os.path.join("otpipe", "cli", "__main__.py")):
        argv[0] = "otpipe"
    cmd = " ".join(argv)
    return cmd if len(cmd) <= 200 else cmd[:197] + "..."


def _record(target: Path) -> dict:
    return {
        "otpipe_lock": 1,
        "path": str(target),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": _command(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "token": uuid.uuid4().hex,
    }


def _read(fd: int) -> tuple[dict | None, bytes]:
    """The record of an open lock file: ``(dict, raw)``; ``(None, raw)`` if it is not one."""
    raw = os.pread(fd, 65536, 0)
    try:
        rec = json.loads(raw.decode()) if raw.strip() else None
    except (UnicodeDecodeError, ValueError):
        return None, raw
    return (rec if isinstance(rec, dict) and "otpipe_lock" in rec else None), raw


def _holder(rec: dict | None) -> str:
    if not rec:
        return "another process (no record yet)"
    return (f"pid {rec.get('pid')} on {rec.get('host')}, started {rec.get('started')}, "
            f"command {rec.get('command')!r}")


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True  # exists (another user's) or unreadable: assume alive
    return True


def _same_file(fd: int, file: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(file)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _try_flock(fd: int) -> bool:
    """``True``: flocked; ``False``: the filesystem has no flock. Raises ``BlockingIOError`` if held."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        raise
    except OSError as exc:
        if exc.errno in _NO_FLOCK:
            return False
        raise


def _open(file: Path, target: Path) -> tuple[int, bool]:
    """Open (creating with ``O_EXCL`` when absent) the lock file: ``(fd, created)``."""
    try:
        return os.open(file, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
    except FileExistsError:
        pass
    except PermissionError:
        raise PermissionError(f"cannot lock {target}: no permission to create {file}") from None
    try:
        return os.open(file, os.O_RDWR), False
    except PermissionError:
        fd = os.open(file, os.O_RDONLY)
        try:
            rec, _ = _read(fd)
        finally:
            os.close(fd)
        raise LockedError(f"{target} is locked by {_holder(rec)}, through {file}, which you cannot write; "
                          "if that run is over, its owner can delete the file") from None


def _acquire(file: Path, target: Path) -> tuple[int, dict]:
    for _ in range(100):
        try:
            fd, created = _open(file, target)
        except FileNotFoundError:
            if not file.parent.is_dir():
                raise FileNotFoundError(f"cannot lock {target}: its folder {file.parent} does not exist") from None
            continue  # released between our two opens: try again
        try:
            try:
                flocked = _try_flock(fd)
            except BlockingIOError:
                rec, _ = _read(fd)
                raise LockedError(f"{target} is being written by another otpipe run ({_holder(rec)}); "
                                  f"wait for it to finish (lock file {file})") from None
            if flocked and not _same_file(fd, file):
                os.close(fd)  # the holder released and deleted it meanwhile: start over
                continue
            rec, raw = (None, b"") if created else _read(fd)
            if rec is None and raw.strip():
                raise LockedError(f"{file} exists and is not an otpipe lock file: move it away to write {target}")
            if not created and rec is None:
                rec = _wait_for_record(fd, file)
            if rec is not None:
                _check_previous(rec, fd, flocked, file, target)
            mine = _record(target)
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(mine) + "\n").encode(), 0)
            os.fsync(fd)
            return fd, mine
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
    raise LockedError(f"could not lock {target}: its lock file {file} keeps changing")


def _wait_for_record(fd: int, file: Path) -> dict | None:
    """An empty lock file: its creator (maybe on another host) is writing its record; wait briefly."""
    t_end = time.monotonic() + 3.0
    while time.monotonic() < t_end:
        try:
            age = time.time() - os.fstat(fd).st_mtime
        except OSError:
            return None
        if age > 3.0:
            return None  # a creator that died before writing: nothing to wait for
        time.sleep(0.1)
        rec, _ = _read(fd)
        if rec is not None:
            return rec
    return None


def _check_previous(rec: dict, fd: int, flocked: bool, file: Path, target: Path) -> None:
    """A record without a lock: refuse if its holder may be alive, else warn and take over."""
    here = rec.get("host") == socket.gethostname()
    if here:
        alive = (not flocked) and _pid_alive(rec.get("pid"))
        why = f"pid {rec.get('pid')} is no longer running"
    else:
        age = time.time() - os.fstat(fd).st_mtime
        alive = age < stale_seconds()
        why = f"no heartbeat for {age:.0f} s"
    if alive:
        raise LockedError(f"{target} is being written by another otpipe run ({_holder(rec)}); "
                          f"wait for it to finish (lock file {file})")
    log.warning("taking over the lock of %s left by a killed run (%s; %s)", target, _holder(rec), why)


def _heartbeat(h: _Held, every: float) -> None:
    while not h.stop.wait(every):
        with contextlib.suppress(OSError):
            os.utime(h.fd)


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, *, inside: bool = False) -> Iterator[dict]:
    """Hold the lock of output ``path`` for the ``with`` block; yields the holder record.

    Re-entrant within one thread (a command locking ``out`` may call a function that locks it
    again); another thread or process gets :class:`LockedError` naming the holder.

    Parameters
    ----------
    path : str or os.PathLike
        The output being written.
    inside : bool, default False
        Lock file inside ``path`` instead of beside it (:func:`lock_path`).

    Yields
    ------
    dict
        The holder record written to the lock file (host, pid, command, start time, token).

    Raises
    ------
    LockedError
        If another thread or a live process holds the lock.
    """
    target = Path(os.path.realpath(os.fspath(path)))
    file = lock_path(path, inside=inside)
    key = str(file)
    me = threading.get_ident()
    with _HELD_GUARD:
        h = _HELD.get(key)
        if h is not None and h.thread == me:
            h.count += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield h.record
        finally:
            with _HELD_GUARD:
                h.count -= 1
        return
    if h is not None:
        raise LockedError(f"{target} is being written by another thread of this process ({_holder(h.record)})")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)  # the output's folder: the command would make it anyway
    except PermissionError:
        raise PermissionError(f"cannot lock {target}: no permission to create its folder {file.parent}") from None
    fd, rec = _acquire(file, target)
    h = _Held(fd, file, rec, me)
    with _HELD_GUARD:
        _HELD[key] = h
    every = max(0.2, min(30.0, stale_seconds() / 5))
    h.beat = threading.Thread(target=_heartbeat, args=(h, every), name=f"otpipe-lock-{file.name}", daemon=True)
    h.beat.start()
    try:
        yield rec
    finally:
        with _HELD_GUARD:
            _HELD.pop(key, None)
        _release(h)


def _release(h: _Held) -> None:
    h.stop.set()
    try:
        still_mine = _same_file(h.fd, h.file) and (_read(h.fd)[0] or {}).get("token") == h.record["token"]
        if still_mine:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(h.file)  # while still flocked: a waiter then sees a deleted inode and retries
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(h.fd, fcntl.LOCK_UN)
        os.close(h.fd)


def locked(arg: str | Callable = "out", *, skip: tuple[str, ...] = ("dry_run",), inside: bool = False):
    """Decorator: hold :func:`output_lock` on the argument ``arg`` while the function runs.

    Parameters
    ----------
    arg : str or callable, default "out"
        The name of the parameter holding the output path, or a callable of the bound arguments (a dict) that
        returns it; no lock when the path is ``None``.
    skip : tuple of str, default ("dry_run",)
        Parameters that, when true, mean nothing is written: no lock then.
    inside : bool, default False
        Lock file inside the output (:func:`lock_path`).

    Returns
    -------
    callable
        The decorator.
    """

    def deco(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            bound = sig.bind_partial(*args, **kwargs).arguments
            target = arg(bound) if callable(arg) else bound.get(arg)
            if target is None or any(bound.get(s) for s in skip):
                return fn(*args, **kwargs)
            with output_lock(target, inside=inside):
                return fn(*args, **kwargs)

        return wrapper

    return deco
