"""Input files as the operating system sees them: regular files only, safe names, memory bounds.

* :func:`shown` writes a path for a message: unchanged when printable, otherwise with every byte
  that is not valid UTF-8 as ``\\xNN`` and control characters escaped (``\\n``, ``\\x1b``), so that
  an error stays one line and cannot drive the terminal.
* :func:`safe_name` is the measure name (or label) made from a file stem or directory name: a
  name that is not valid UTF-8 keeps its valid characters and writes each undecodable byte as
  ``\\xNN`` (``b"bad\\xff.csv"`` becomes the measure ``bad\\xff``, a literal backslash).
* :func:`stat_regular` / :func:`open_regular` accept regular files (or symlinks to them) only: a
  FIFO, socket, character or block device gets a one-line error naming the file and its kind,
  before anything opens it (opening a FIFO blocks, reading ``/dev/zero`` never ends). The file is
  opened with ``O_NONBLOCK`` and checked again with ``fstat`` on the open descriptor, so a file
  swapped for a FIFO in between cannot hang the reader either.
* :func:`read_limit` is the most memory one input file may need once read (half the machine's
  memory, or ``OTPIPE_MAX_READ_BYTES``); readers estimate their need from the file's header or
  size before reading it.
"""
from __future__ import annotations

import os
import stat
from typing import BinaryIO

from otpipe._text import escape

__all__ = ["shown", "safe_name", "stat_regular", "open_regular", "read_limit", "check_size", "human"]

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def shown(path: str | os.PathLike | bytes) -> str:
    """``path`` as text safe for a one-line message (see the module docstring).

    Parameters
    ----------
    path : str or os.PathLike or bytes
        The path.

    Returns
    -------
    str
        The path unchanged when printable, else with undecodable bytes as ``\\xNN`` and control characters
        escaped.
    """
    s = os.fsdecode(path)
    if s.isprintable():
        return s
    # undecodable bytes arrive as lone surrogates (surrogateescape): back to bytes, then \xNN
    return escape(os.fsencode(s).decode("utf-8", "backslashreplace"))


def safe_name(s: str) -> str:
    """A file stem or directory name as a storable (UTF-8) name: undecodable bytes as ``\\xNN``.

    Parameters
    ----------
    s : str
        The name as the file system gave it (undecodable bytes as lone surrogates).

    Returns
    -------
    str
        Valid UTF-8 text.
    """
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return os.fsencode(s).decode("utf-8", "backslashreplace")


def _kind(mode: int) -> str:
    for test, what in _KINDS:
        if test(mode):
            return what
    return "not a regular file"


def stat_regular(path: str | os.PathLike) -> os.stat_result:
    """``os.stat(path)`` (following symlinks) of a regular file; ``ValueError`` naming anything else.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    os.stat_result
        Its status.

    Raises
    ------
    FileNotFoundError
        Nothing there, or a broken symbolic link (the message says which).
    ValueError
        A FIFO, socket, device or directory (``"<path>: not a regular file: a FIFO (named pipe)"``).
    """
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        if os.path.islink(p):
            raise FileNotFoundError(f"{shown(p)}: broken symbolic link (to {shown(os.readlink(p))})") from None
        raise FileNotFoundError(f"{shown(p)}: no such file or directory") from None
    if not stat.S_ISREG(st.st_mode):
        link = f", via a symbolic link to {shown(os.path.realpath(p))}" if os.path.islink(p) else ""
        raise ValueError(f"{shown(p)}: not a regular file: {_kind(st.st_mode)}{link}")
    return st


def open_regular(path: str | os.PathLike) -> tuple[BinaryIO, os.stat_result]:
    """Open a regular file for binary reading without ever blocking on a FIFO.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    file : BinaryIO
        The open file (the caller closes it).
    status : os.stat_result
        ``fstat`` of the open descriptor.

    Raises
    ------
    FileNotFoundError
        Nothing there, or a broken symbolic link.
    ValueError
        Not a regular file (checked before opening and again on the open descriptor).
    """
    stat_regular(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(os.fspath(path), flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced since the check above
            raise ValueError(f"{shown(path)}: not a regular file: {_kind(st.st_mode)}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise


def read_limit() -> int:
    """Most bytes of memory one input file may need: ``OTPIPE_MAX_READ_BYTES`` or half the physical memory.

    Returns
    -------
    int
        The limit in bytes.

    Raises
    ------
    ValueError
        If ``OTPIPE_MAX_READ_BYTES`` is set to something other than a positive number.
    """
    env = os.environ.get("OTPIPE_MAX_READ_BYTES")
    if env:
        try:
            v = int(float(env))
            if v > 0:
                return v
        except ValueError:
            pass
        raise ValueError(f"OTPIPE_MAX_READ_BYTES must be a positive number of bytes, got {env!r}")
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def human(n: float) -> str:
    """Bytes in binary units (``1.5 GiB``).

    Parameters
    ----------
    n : float
        A number of bytes.

    Returns
    -------
    str
        ``"512 B"``, ``"1.5 KiB"`` ... ``"2.0 TiB"``.
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_size(need: float, what: str, limit: int | None = None) -> None:
    """Refuse to read a file that needs more than :func:`read_limit` bytes of memory.

    The message is raised without the path (readers add it).

    Parameters
    ----------
    need : float
        Estimated bytes of memory the file needs once read.
    what : str
        What the estimate is of (``"a (100000, 3) float64 array"``), for the message.
    limit : int or None, default None
        The limit in bytes; ``None``: :func:`read_limit`.

    Raises
    ------
    ValueError
        If ``need`` exceeds the limit.
    """
    limit = read_limit() if limit is None else int(limit)
    if need > limit:
        raise ValueError(
            f"needs about {human(need)} of memory to read ({what}), more than the limit of {human(limit)} "
            "(half this machine's memory; set OTPIPE_MAX_READ_BYTES to change it): split the file"
        )
