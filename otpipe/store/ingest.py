"""Streaming ingest of files into a collection.

:func:`ingest` expands the sources (files, directories walked recursively, glob patterns),
derives unique names (file stems, or relative paths) and labels (parent directory names or a
manifest CSV), checks all of that before reading any data, then reads the files one at a time
and streams the measures into :func:`otpipe.store.collection.create` (new store) or
:meth:`~otpipe.store.collection.Collection.append`. Memory is bounded by one shard plus one file.
Any bad file stops the ingest with ``ValueError("<file>: <problem>")`` and leaves no new store
(or the existing store unchanged when appending).
"""
from __future__ import annotations

import csv
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .collection import DEFAULT_SHARD_POINTS, Collection, Measure, create, open, validate_measure
from .readers import FORMATS, ReaderOptions, format_of, read_file

__all__ = ["Source", "discover", "ingest"]

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Source:
    """One input file: its path, the directory it was found under, name and label."""

    path: Path
    root: Path
    fmt: str
    name: str = ""
    label: str | None = None


def _walk(root: Path, fmt: str) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            p = Path(dirpath) / f
            if fmt == "auto":
                if format_of(p) is not None:
                    out.append(p)
            elif p.suffix.lower() in FORMATS[format_of(p, fmt)]:
                out.append(p)
    return out


def _glob_root(pattern: str) -> Path:
    """The directory part of a glob pattern before its first wildcard component."""
    parts = Path(pattern).parts
    keep = []
    for part in parts:
        if any(ch in part for ch in _GLOB_CHARS):
            break
        keep.append(part)
    return Path(*keep) if keep else Path(".")


def discover(sources: Sequence[str | os.PathLike], fmt: str = "auto") -> list[Source]:
    """Expand files, directories and glob patterns into input files (sorted, deduplicated).

    Raises
    ------
    FileNotFoundError
        A source that does not exist, or a pattern that matches nothing.
    ValueError
        An explicit file of unknown type, or no input files at all.
    """
    format_of("x", fmt)  # validates fmt
    found: list[Source] = []
    seen: set[Path] = set()

    def add(p: Path, root: Path) -> None:
        rp = p.resolve()
        if rp in seen:
            return
        f = format_of(p, fmt)
        if f is None:
            raise ValueError(f"{p}: unknown file type {p.suffix!r} (use --format)")
        seen.add(rp)
        found.append(Source(p, root, f))

    for src in sources:
        s = str(src)
        p = Path(s)
        if p.is_dir():
            for q in _walk(p, fmt):
                add(q, p)
        elif p.is_file():
            add(p, p.parent)
        elif any(ch in s for ch in _GLOB_CHARS):
            matches = sorted(glob.glob(s, recursive=True))
            if not matches:
                raise FileNotFoundError(f"{s}: no files match this pattern")
            root = _glob_root(s)
            for m in matches:
                q = Path(m)
                if q.is_dir():
                    for r in _walk(q, fmt):
                        add(r, root)
                elif q.is_file() and (fmt != "auto" or format_of(q) is not None):
                    add(q, root)
        else:
            raise FileNotFoundError(f"{s}: no such file or directory")
    if not found:
        raise ValueError(f"no input files found in {', '.join(map(str, sources))}")
    return found


def _read_manifest(path: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """Manifest rows keyed by resolved path and by name/stem."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest file")
    by_path: dict[str, dict] = {}
    by_name: dict[str, dict] = {}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = [c.strip() for c in (reader.fieldnames or [])]
            key = next((c for c in ("file", "path", "filename", "name") if c in cols), None)
            if key is None or "label" not in cols:
                raise ValueError(f"{path}: manifest needs a 'label' column and a 'file' (or 'path'/'name') column, got {cols}")
            for row in reader:
                row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
                ref = row[key]
                if not ref:
                    continue
                by_path[str((path.parent / ref).resolve())] = row
                by_name[ref] = row
                by_name.setdefault(Path(ref).stem, row)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: manifest is not UTF-8 text ({exc.reason})") from None
    return by_path, by_name


def _name(src: Source, names: str) -> str:
    if names == "stem":
        return src.path.stem
    try:
        rel = src.path.relative_to(src.root)
    except ValueError:
        rel = Path(src.path.name)
    return rel.with_suffix("").as_posix()


def plan(
    sources: Sequence[str | os.PathLike],
    *,
    fmt: str = "auto",
    labels: str = "none",
    manifest: str | os.PathLike | None = None,
    names: str = "stem",
) -> list[Source]:
    """Discover the inputs and assign unique names and labels (reads no data).

    Raises
    ------
    ValueError
        Duplicate names (naming both files), files missing from the manifest.
    """
    if labels not in ("none", "parent"):
        raise ValueError(f"labels must be 'none' or 'parent', got {labels!r}")
    if names not in ("stem", "relpath"):
        raise ValueError(f"names must be 'stem' or 'relpath', got {names!r}")
    found = discover(sources, fmt)
    man = _read_manifest(Path(manifest)) if manifest is not None else None
    out: list[Source] = []
    taken: dict[str, Path] = {}
    for src in found:
        name = _name(src, names)
        label = src.path.parent.name if labels == "parent" else None
        if man is not None:
            by_path, by_name = man
            row = by_path.get(str(src.path.resolve())) or by_name.get(src.path.name) or by_name.get(src.path.stem)
            if row is None:
                raise ValueError(f"{src.path}: not listed in manifest {manifest}")
            label = row["label"]
            if row.get("name"):
                name = row["name"]
        if name in taken:
            raise ValueError(
                f"{src.path}: duplicate measure name {name!r} (also from {taken[name]}); rename one or use --names relpath"
            )
        taken[name] = src.path
        out.append(Source(src.path, src.root, src.fmt, name, label))
    return out


def _measures(plan_: list[Source], options: ReaderOptions, dtype: str) -> Iterator[Measure]:
    for src in plan_:
        points, weights = read_file(src.path, src.fmt, options)
        points, weights = validate_measure(points, weights, str(src.path), dtype)
        yield Measure(points, weights, src.name, src.label, source=str(src.path))


def ingest(
    sources: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    fmt: str = "auto",
    append: bool = False,
    overwrite: bool = False,
    labels: str = "none",
    manifest: str | os.PathLike | None = None,
    names: str = "stem",
    options: ReaderOptions | None = None,
    dtype: str | None = None,
    shard_points: int | None = DEFAULT_SHARD_POINTS,
) -> Collection:
    """Ingest files into a new collection at ``out`` (or append to the one there).

    Parameters
    ----------
    sources : sequence of path-like
        Files, directories (walked recursively; files of unknown type skipped) or glob patterns.
    out : path-like
        The collection.
    fmt : str
        ``auto`` (by extension) or one of ``npy, npz, csv, xyz, ply, image`` (``png``/``jpg``).
    append, overwrite : bool
        What to do when ``out`` exists (one of them is required then; not both).
    labels : {"none", "parent"}
        ``parent``: the label of a file is the name of its directory.
    manifest : path-like, optional
        CSV with columns ``file`` (path relative to the manifest, or a file name/stem),
        ``label`` and optionally ``name``.
    names : {"stem", "relpath"}
        Measure names from file stems, or paths relative to the source directory without
        extension (to disambiguate equal stems in different folders).
    options : ReaderOptions
        Reader options (weight column, coordinate columns, image options).
    dtype : {"float32", "float64"}, optional
        Storage dtype (default float32 for a new store, the store's for ``append``).
    shard_points : int, optional
        Points per shard of a new store (default: sized in bytes, see
        :data:`otpipe.store.collection.CHUNK_BYTES`).

    Raises
    ------
    FileExistsError
        ``out`` exists and neither ``append`` nor ``overwrite`` is set.
    FileNotFoundError, ValueError
        Missing or bad input (message ``"<file>: <problem>"``).
    """
    out = Path(out)
    if append and overwrite:
        raise ValueError("--append and --overwrite are mutually exclusive")
    exists = out.exists()
    if exists and not (append or overwrite):
        raise FileExistsError(f"{out}: already exists (use --append or --overwrite)")
    options = options or ReaderOptions()
    if append and exists:
        coll = open(out)
        p = plan(sources, fmt=fmt, labels=labels, manifest=manifest, names=names)
        existing = set(coll.names.tolist())
        for s in p:
            if s.name in existing:
                raise ValueError(f"{s.path}: measure name {s.name!r} already exists in {out}")
        has_labels = bool(coll.attrs.get("has_labels"))
        if p and (p[0].label is not None) != has_labels:
            what = "has labels" if has_labels else "has no labels"
            raise ValueError(f"{out}: collection {what}; use the same labelling (--labels/--manifest) when appending")
        return coll.append(_measures(p, options, str(coll.dtype)), dtype=dtype)
    p = plan(sources, fmt=fmt, labels=labels, manifest=manifest, names=names)
    dt = dtype or "float32"
    return create(out, _measures(p, options, dt), overwrite=overwrite, shard_points=shard_points, dtype=dt)
