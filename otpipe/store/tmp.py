"""Temporary sibling stores (``.OUT.tmp-*``) and the removal of those a killed run left behind.

Writers that replace an output atomically build it in a hidden sibling directory and rename it
into place; a run killed in between leaves that directory. :func:`tmp_sibling` names it
``.OUT.tmp-<host>-<pid>-<start>-<random>``: ``host`` is a short hash of the host name, ``pid`` and
``start`` the process id and its start time (clock ticks since boot, from ``/proc``; 0 where
unknown), so the directory says who made it. :func:`remove_stale` (run by the next writer of the
same output) deletes a sibling only if all of these hold:

* its name is exactly otpipe's pattern for *this* output (``.OUT.tmp-`` + the fields above), and
  it is a real directory (not a symbolic link) that is empty or holds a Zarr store (``zarr.json``);
* the process that made it is gone: on this host, no process has that pid, or the process with
  that pid started at another time (the pid was reused); for another host (shared file systems),
  nothing in it changed for :data:`STALE_AGE` seconds.

Temporaries of earlier otpipe versions (``.OUT.tmp-<12 or 8 hex digits>`` or ``.OUT.tmp-<pid>``,
which do not say who made them) are removed when they hold a Zarr store and nothing in them changed
for :data:`STALE_AGE` seconds. Nothing else is ever deleted; each removal is logged (warning).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path

__all__ = ["tmp_sibling", "remove_stale", "STALE_AGE"]

#: seconds without a change after which a temporary whose maker cannot be checked is stale
STALE_AGE = 24 * 3600

log = logging.getLogger("otpipe.store")


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]


def _start_time(pid: int) -> int:
    """Start time of process ``pid`` in clock ticks since boot (``/proc``), 0 if unknown, -1 if no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        return int(data[data.rindex(b")") + 2 :].split()[19])
    except FileNotFoundError:
        return -1 if os.path.isdir("/proc/self") else _alive_only(pid)
    except (OSError, ValueError, IndexError):
        return _alive_only(pid)


def _alive_only(pid: int) -> int:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return -1
    except (PermissionError, OSError):
        return 0
    return 0


def tmp_sibling(target: str | os.PathLike) -> Path:
    """A fresh name ``.NAME.tmp-<host>-<pid>-<start>-<random>`` next to ``target`` (not created).

    Parameters
    ----------
    target : str or os.PathLike
        The final path.

    Returns
    -------
    pathlib.Path
        The temporary path, in ``target``'s directory.
    """
    t = Path(target)
    pid = os.getpid()
    start = max(0, _start_time(pid))
    return t.parent / f".{t.name}.tmp-{_host()}-{pid}-{start}-{uuid.uuid4().hex[:8]}"


def _newest_mtime(d: Path) -> float:
    newest = d.lstat().st_mtime
    for root, dirs, files in os.walk(d):
        for f in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(root, f)).st_mtime)
            except OSError:
                pass
    return newest


def _stale_reason(d: Path, m: re.Match, now: float) -> str | None:
    if m.group("pid") is not None and m.group("host") is not None:  # this version's names
        pid, start = int(m.group("pid")), int(m.group("start"))
        if m.group("host") == _host():
            cur = _start_time(pid)
            if cur == -1:
                return f"made by process {pid}, which is no longer running"
            if start and cur and cur != start:
                return f"made by process {pid}, which is no longer running (its pid now belongs to another process)"
            return None
    age = now - _newest_mtime(d)
    if age > STALE_AGE:
        return f"unchanged for {age / 3600:.0f} h"
    return None


def remove_stale(target: str | os.PathLike) -> list[Path]:
    """Delete the stale temporaries otpipe left next to ``target`` (see the module docstring).

    Parameters
    ----------
    target : str or os.PathLike
        The final path whose temporaries are looked for.

    Returns
    -------
    list of pathlib.Path
        The temporaries removed.
    """
    t = Path(target)
    parent = t.parent if str(t.parent) else Path(".")
    name = re.escape(t.name)
    pat = re.compile(
        rf"\.{name}\.tmp-(?:(?P<host>[0-9a-f]{{8}})-(?P<pid>\d+)-(?P<start>\d+)-[0-9a-f]{{8}}|[0-9a-f]{{12}}|[0-9a-f]{{8}}|\d+)"
    )
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return []
    removed = []
    now = time.time()
    for e in entries:
        m = pat.fullmatch(e.name)
        if m is None or e.is_symlink() or not e.is_dir(follow_symlinks=False):
            continue
        d = Path(e.path)
        try:
            contents = os.listdir(d)
        except OSError:
            continue
        if contents and "zarr.json" not in contents:
            continue  # not a store: not ours to judge
        reason = _stale_reason(d, m, now)
        if reason is None:
            continue
        shutil.rmtree(d, ignore_errors=True)
        if not d.exists():
            removed.append(d)
            log.warning("removed %s: a temporary store left by an interrupted otpipe run (%s)", d, reason)
    return removed
