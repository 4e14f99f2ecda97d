"""A cache of compiled shared libraries that loads only what this user built there.

``dlopen`` runs a library's constructors: loading a planted ``softmin-<key>.so`` runs its code. So
:func:`load` loads a cached library only when

* the cache folder is owned by the current user and not writable by its group or others (checked
  on an open descriptor of the folder); otherwise it warns, builds the library in a private
  temporary folder (``mkdtemp``, mode 0700), loads it from there and deletes the folder;
* the library and its sidecar ``<name>.sha256`` are regular files (not symbolic links: opened with
  ``O_NOFOLLOW``) owned by the current user and not group- or world-writable;
* the library's sha256, computed from the descriptor that is then loaded (``/proc/self/fd/N``: no
  second path lookup; the descriptor stays open), equals the one the build recorded in the sidecar.

Anything else (missing, a hash mismatch, a symbolic link, another owner or writable mode) is built
again, under an ``fcntl`` lock file so that concurrent processes build once: into a private
temporary folder inside the cache (nobody else can open the file while the compiler writes it),
made read-only for others, hashed, then moved into place with atomic renames (library, then sidecar).

``OTPIPE_CACHE_DIR`` and ``CXX`` are trusted inputs (the README says so): whoever sets them chooses
the folder and the compiler whose output is loaded.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["load", "untrusted_reason"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
#: descriptors of the libraries loaded through ``/proc/self/fd`` (kept open: see :func:`_try_load`)
_KEEP: list[int] = []
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _uid() -> int:
    return os.geteuid() if hasattr(os, "geteuid") else -1


def _mode_problem(st: os.stat_result) -> str | None:
    """Why a folder or file with status ``st`` is not trusted (``None``: it is)."""
    if hasattr(os, "geteuid") and st.st_uid != _uid():
        return f"owned by another user (uid {st.st_uid})"
    if st.st_mode & 0o002:
        return f"writable by every user (mode {stat.S_IMODE(st.st_mode):04o})"
    if st.st_mode & 0o020:
        return f"writable by its group (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def untrusted_reason(folder) -> str | None:
    """Why libraries in ``folder`` would not be loaded.

    Parameters
    ----------
    folder : str or os.PathLike
        The cache folder.

    Returns
    -------
    str or None
        The reason (another owner, a group- or world-writable mode, a symbolic link); ``None`` when the folder is
        trusted or absent.
    """
    try:
        return _mode_problem(os.stat(folder))
    except FileNotFoundError:
        return None


def _open_dir(folder: Path) -> tuple[int | None, str | None]:
    """``(descriptor, None)`` of the trusted cache folder (created mode 0700), or ``(None, why)``."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
    except OSError as exc:
        return None, f"not usable ({exc.strerror or exc})"
    why = _mode_problem(os.fstat(fd))
    if why is not None:
        os.close(fd)
        return None, why
    return fd, None


def _open_file(name: str, dir_fd: int | None) -> int | None:
    """A read descriptor of the trusted regular file ``name`` (``None``: absent, a link, or not trusted)."""
    try:
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _CLOEXEC, dir_fd=dir_fd)
    except OSError:  # absent, or a symbolic link (ELOOP)
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or _mode_problem(st) is not None:
        os.close(fd)
        return None
    return fd


def _read(fd: int) -> bytes:
    chunks = []
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _try_load(folder: Path, name: str, dir_fd: int) -> ctypes.CDLL | None:
    """The verified library ``folder/name``, loaded; ``None`` when it is not there or does not verify."""
    fd = _open_file(name, dir_fd)
    if fd is None:
        return None
    try:
        side = _open_file(name + ".sha256", dir_fd)
        if side is None:
            return None
        try:
            recorded = _read(side).decode("ascii", "replace").split()
        finally:
            os.close(side)
        if not recorded or recorded[0] != _sha256(_read(fd)):
            return None
        proc = f"/proc/self/fd/{fd}"
        if not os.path.exists(proc):
            return ctypes.CDLL(str(folder / name))
        lib = ctypes.CDLL(proc)  # the very file just hashed: no second path lookup
        # dlopen reuses a loaded library of the same name: this descriptor stays open so that no other
        # library is ever loaded under the name /proc/self/fd/<fd> in this process
        _KEEP.append(fd)
        fd = None
        return lib
    finally:
        if fd is not None:
            os.close(fd)


@contextlib.contextmanager
def _locked(name: str, dir_fd: int) -> Iterator[None]:
    import fcntl

    fd = os.open(name, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _build_private(build: Callable[[str], None], where: str, name: str) -> tuple[str, str]:
    """Build into a new private folder under ``where``: ``(folder, sha256)`` of ``folder/name``."""
    tmp = tempfile.mkdtemp(prefix=".otpipe-build-", dir=where)  # mode 0700: nobody else can open what is inside
    out = os.path.join(tmp, name)
    build(out)
    os.chmod(out, 0o755)  # the compiler's umask may have left it group-writable
    with open(out, "rb") as fh:
        digest = _sha256(fh.read())
    with open(out + ".sha256", "w") as fh:
        fh.write(f"{digest}  {name}\n")
    os.chmod(out + ".sha256", 0o644)
    return tmp, digest


def load(folder, name: str, build: Callable[[str], None]) -> ctypes.CDLL:
    """Load ``folder/name``, building it first with ``build(path)`` when it is absent or does not verify.

    See the module docstring for what is checked. An untrusted ``folder`` gives a ``RuntimeWarning``
    and a library built and loaded privately (not cached).

    Parameters
    ----------
    folder : str or os.PathLike
        The cache folder.
    name : str
        File name of the library in ``folder``.
    build : callable
        ``build(path)`` writes the library to ``path`` (raises on a failed build).

    Returns
    -------
    ctypes.CDLL
        The loaded library.

    Raises
    ------
    RuntimeError
        If a freshly built library does not verify.
    """
    folder = Path(folder)
    dir_fd, why = _open_dir(folder)
    if dir_fd is None:
        warnings.warn(f"otpipe kernel cache {folder} is {why}: nothing is loaded from it or written to it; "
                      "building the kernels in a private temporary folder for this process (set OTPIPE_CACHE_DIR "
                      "to a folder that only you can write)", RuntimeWarning, stacklevel=3)
        tmp, _ = _build_private(build, tempfile.gettempdir(), name)
        try:
            dfd, _ = _open_dir(Path(tmp))
            try:
                lib = _try_load(Path(tmp), name, dfd)
            finally:
                os.close(dfd)
            if lib is None:
                raise RuntimeError(f"the library built in {tmp} does not verify")
            return lib
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    try:
        lib = _try_load(folder, name, dir_fd)
        if lib is not None:
            return lib
        with _locked(name + ".lock", dir_fd):
            lib = _try_load(folder, name, dir_fd)  # another process may have built it meanwhile
            if lib is not None:
                return lib
            tmp, _ = _build_private(build, str(folder), name)
            try:
                for n in (name, name + ".sha256"):  # a wrong file or a link there is replaced
                    os.replace(os.path.join(tmp, n), n, dst_dir_fd=dir_fd)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            lib = _try_load(folder, name, dir_fd)
            if lib is None:
                raise RuntimeError(f"the library just built in {folder} does not verify")
            return lib
    finally:
        os.close(dir_fd)
