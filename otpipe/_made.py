"""otpipe deletes only what it made: markers on what it writes, and the check before any delete.

Every Zarr store otpipe writes carries the group attribute ``otpipe_made``
(:func:`made_attrs`); every other folder it creates (workflow run and step folders, report
folders, job folders) holds a small marker file ``.otpipe`` (:func:`mark_dir`). Before
``--overwrite`` or a report step replaces ``path``, :func:`check_replaceable` requires that
``path`` is absent, an empty folder, or carries one of these markers; anything else (a user's
folder or file, a symbolic link, a Zarr store of another program) is refused with a one-line
``FileExistsError`` naming it, before any work starts.

Stores written by earlier otpipe versions have no marker but do carry otpipe's type
attributes (``format: otpipe.collection`` / ``otpipe.pairwise``, ``kind: otpipe.tools.two_sample``,
``otpipe_result``): they are accepted as otpipe-made, so ``--overwrite`` keeps working on them.
"""
from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["MARKER", "made_attrs", "mark_dir", "made_by_otpipe", "check_replaceable", "remove_made"]

MARKER = ".otpipe"
ATTR = "otpipe_made"


def _by() -> str:
    from otpipe._version import __version__

    return f"otpipe {__version__}"


def made_attrs(kind: str) -> dict:
    """The group attribute that marks a Zarr store as written by otpipe.

    Parameters
    ----------
    kind : str
        What the store is (``"collection"``, ``"distances"``...).

    Returns
    -------
    dict
        ``{"otpipe_made": {"by": "otpipe <version>", "kind": kind}}``.
    """
    return {ATTR: {"by": _by(), "kind": kind}}


def mark_dir(path: str | os.PathLike, kind: str) -> Path:
    """Create folder ``path`` if needed and write its ``.otpipe`` marker (kept if already there).

    Parameters
    ----------
    path : str or os.PathLike
        The folder.
    kind : str
        What the folder is (recorded in the marker).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    m = p / MARKER
    if not m.is_file():
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        m.write_text(json.dumps({ATTR: {"by": _by(), "kind": kind, "created": now}}) + "\n")
    return p


def _zarr_attrs(p: Path) -> dict | None:
    try:
        doc = json.loads((p / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    return attrs if isinstance(attrs, dict) else None


def _legacy_otpipe_store(attrs: dict) -> bool:
    """Format attributes of stores written before the ``otpipe_made`` marker existed."""
    for key in ("format", "kind"):
        v = attrs.get(key)
        if isinstance(v, str) and v.startswith("otpipe."):
            return True
    return "otpipe_result" in attrs


def made_by_otpipe(path: str | os.PathLike) -> bool:
    """Whether folder ``path`` carries an otpipe marker (``.otpipe`` file, ``otpipe_made`` or legacy attrs).

    Parameters
    ----------
    path : str or os.PathLike
        The path.

    Returns
    -------
    bool
        ``False`` for a symbolic link, a file, or a folder without a marker.
    """
    p = Path(path)
    if p.is_symlink() or not p.is_dir():
        return False
    try:
        if ATTR in json.loads((p / MARKER).read_text()):
            return True
    except (OSError, ValueError, TypeError):
        pass
    attrs = _zarr_attrs(p)
    return attrs is not None and (ATTR in attrs or _legacy_otpipe_store(attrs))


def check_replaceable(path: str | os.PathLike, why: str = "--overwrite") -> None:
    """Refuse to let otpipe delete ``path`` unless it made it.

    Allowed: nothing at ``path``, an empty folder, or a folder :func:`made_by_otpipe`.

    Parameters
    ----------
    path : str or os.PathLike
        The path.
    why : str, default "--overwrite"
        What wants to replace it (for the message).

    Raises
    ------
    FileExistsError
        One line naming ``path``: a symbolic link, a file, or a non-empty folder without an otpipe marker.
    """
    p = Path(path)
    if p.is_symlink():
        raise FileExistsError(f"{p} is a symbolic link: {why} refuses to replace it (remove the link yourself)")
    if not p.exists():
        return
    if not p.is_dir():
        raise FileExistsError(f"{p} is a file that otpipe did not make: {why} refuses to replace it")
    if made_by_otpipe(p):
        return
    try:
        empty = not any(p.iterdir())
    except OSError:
        empty = False
    if not empty:
        raise FileExistsError(f"{p} was not made by otpipe (no otpipe marker): {why} refuses to replace it; "
                              "move it away or choose another output")


def remove_made(path: str | os.PathLike, why: str = "--overwrite") -> None:
    """Delete ``path`` after :func:`check_replaceable` (nothing if absent).

    Parameters
    ----------
    path : str or os.PathLike
        The path.
    why : str, default "--overwrite"
        What wants to replace it (for the message).

    Raises
    ------
    FileExistsError
        If otpipe may not delete ``path``.
    """
    check_replaceable(path, why)
    p = Path(path)
    if p.is_dir():
        shutil.rmtree(p)
