"""What a workflow run writes and replaces in its run folder, checked before anything runs.

A run writes ``run_dir/provenance.json`` and one folder per step, ``run_dir/<id>/``: a step
command writes ``<id>.zarr`` (replaced with ``--overwrite``), its log and figures there; a
``report`` step replaces the whole folder. otpipe writes into (and deletes) only step folders it
made: absent, empty, marked with ``.otpipe`` (:mod:`otpipe._made`), or, for runs of otpipe
versions without markers, recorded as a step of this run folder in its ``provenance.json``.
Anything else (``run_dir: .`` and a step id that names a user's folder) is refused in advance,
and ``otpipe run --dry-run`` lists what a run would replace and what it would refuse.
"""
from __future__ import annotations

import json
from pathlib import Path

from otpipe._made import check_replaceable, made_by_otpipe, mark_dir

__all__ = ["previous_step_ids", "list_replacements", "check_run_dir", "ensure_step_dir"]


def previous_step_ids(run_dir: Path) -> set[str]:
    """Step ids recorded by an otpipe run in ``run_dir/provenance.json``.

    Parameters
    ----------
    run_dir : pathlib.Path
        The run folder.

    Returns
    -------
    set of str
        The ids (empty when there is no otpipe provenance file).
    """
    doc = _provenance(Path(run_dir) / "provenance.json")
    return {s.get("id") for s in doc.get("steps", []) if isinstance(s, dict)} if doc else set()


def _provenance(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and "workflow" in doc and "steps" in doc else None


def _step_dir_ok(d: Path, previous: set[str]) -> bool:
    if d.is_symlink() or (d.exists() and not d.is_dir()):
        return False
    if not d.exists() or made_by_otpipe(d) or d.name in previous:
        return True
    return not any(d.iterdir())


def list_replacements(run_dir: Path, steps: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """What a run of ``steps`` in ``run_dir`` would replace, and what it would refuse to touch.

    Parameters
    ----------
    run_dir : pathlib.Path
        The run folder.
    steps : list of tuple of str
        The run's steps as ``(id, type)`` pairs.

    Returns
    -------
    lines : list of str
        What the run would replace (``"replaces <path>"``).
    refusals : list of str
        One-line reasons it would refuse.
    """
    run_dir = Path(run_dir)
    lines: list[str] = []
    refused: list[str] = []
    if run_dir.exists() and not run_dir.is_dir():
        return lines, [f"run_dir {run_dir} exists and is not a folder"]
    prov = run_dir / "provenance.json"
    if prov.exists():
        if _provenance(prov) is None:
            refused.append(f"{prov} exists and is not an otpipe provenance file: refusing to replace it")
        else:
            lines.append(f"replaces {prov}")
    previous = previous_step_ids(run_dir)
    for sid, typ in steps:
        d = run_dir / sid
        if not _step_dir_ok(d, previous):
            refused.append(f"{d} exists and was not made by otpipe (no otpipe marker): step {sid!r} refuses to "
                           "write into it; move it away or rename the step")
            continue
        if not d.exists():
            continue
        if typ == "report":
            lines.append(f"replaces {d}/ (report folder made by otpipe)")
            continue
        out = d / f"{sid}.zarr"
        try:
            check_replaceable(out, f"step {sid!r}")
        except FileExistsError as exc:
            refused.append(str(exc))
            continue
        if out.exists():
            lines.append(f"replaces {out}")
    return lines, refused


def check_run_dir(run_dir: Path, steps: list[tuple[str, str]]) -> list[str]:
    """Refuse a run that would touch what otpipe did not make; else list what it replaces.

    Parameters
    ----------
    run_dir : pathlib.Path
        The run folder.
    steps : list of tuple of str
        The run's steps as ``(id, type)`` pairs.

    Returns
    -------
    list of str
        The lines of :func:`list_replacements`.

    Raises
    ------
    FileExistsError
        One line: the first refusal (and how many more).
    """
    lines, refused = list_replacements(run_dir, steps)
    if refused:
        more = f" (and {len(refused) - 1} more; see otpipe run --dry-run)" if len(refused) > 1 else ""
        raise FileExistsError(refused[0] + more)
    return lines


def ensure_step_dir(d: Path, run_dir: Path) -> Path:
    """Create (and mark) step folder ``d``, or check that otpipe made the existing one (and mark it).

    Parameters
    ----------
    d : pathlib.Path
        The step folder.
    run_dir : pathlib.Path
        The run folder.

    Returns
    -------
    pathlib.Path
        ``d``.

    Raises
    ------
    FileExistsError
        If ``d`` exists and otpipe did not make it.
    """
    d = Path(d)
    if not _step_dir_ok(d, previous_step_ids(run_dir)):
        raise FileExistsError(f"{d} exists and was not made by otpipe (no otpipe marker): refusing to write into it")
    return mark_dir(d, "workflow step")
