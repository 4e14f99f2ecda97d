r"""Streaming ingest of files into a collection.

:func:`ingest` expands the sources (files, directories walked recursively, glob patterns),
derives unique names (file stems, or relative paths) and labels (parent directory names or a
manifest CSV), checks all of that before reading any data, then reads the files one at a time
and streams the measures into :func:`otpipe.store.collection.create` (new store) or
:meth:`~otpipe.store.collection.Collection.append`. Memory is bounded by one shard plus one file.
Any bad file stops the ingest with ``ValueError("<file>: <problem>")`` and leaves no new store
(or the existing store unchanged when appending).

Files are read only if they are regular files (or symlinks to one): a FIFO, socket or device
with an input extension, in a directory or given by name, is an error naming it (it would block
or never end), and so is a broken symbolic link; files of unknown types in directories are
skipped without being opened. File names are bytes to the operating system: a name that is not
valid UTF-8 is ingested with each undecodable byte written ``\xNN`` in the measure name
(``b"bad\xff.csv"`` -> measure ``bad\xff``, labels from such directory names likewise), and
messages show paths with such bytes and control characters escaped (one line, terminal-safe).
A manifest is read as CSV text only; its errors never quote its content.

Symbolic links are read only when they stay inside the folder being ingested (the directory
given, the fixed part of a glob pattern, or the folder of a file given by name): a link whose
target (fully resolved) lies outside it is refused with an error naming the link and its target,
before any data is read, unless ``follow_symlinks=True`` (``otpipe ingest --follow-symlinks``).
A folder of files from elsewhere cannot then make otpipe read, store or quote ``/etc/passwd``.
Symbolic links to directories are not descended into (``os.walk``'s default) either way.
"""
from __future__ import annotations

import csv
import glob
import io
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from otpipe.store._files import check_size, open_regular, safe_name, shown, stat_regular
from otpipe.store.collection import DEFAULT_SHARD_POINTS, Collection, Measure, create, open, validate_measure
from otpipe.store.locks import locked
from otpipe.store.readers import FORMATS, ReaderOptions, format_of, read_file

__all__ = ["Source", "discover", "list_sources", "ingest"]

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Source:
    """One input file: its path, the directory it was found under, name and label.

    Parameters
    ----------
    path : pathlib.Path
        The file.
    root : pathlib.Path
        The directory it was found under (names with ``names="relpath"`` are relative to it).
    fmt : str
        Its canonical format.
    name : str, default ""
        The measure's name (set once names are resolved).
    label : str or None, default None
        The measure's label.
    """

    path: Path
    root: Path
    fmt: str
    name: str = ""
    label: str | None = None


def _wanted(p: Path, fmt: str) -> bool:
    if fmt == "auto":
        return format_of(p) is not None
    return p.suffix.lower() in FORMATS[format_of(p, fmt)]


def _walk(root: Path, fmt: str) -> list[Path]:
    """Input files under ``root`` (hidden entries skipped); special files with an input extension are errors."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            p = Path(dirpath) / f
            if _wanted(p, fmt):
                stat_regular(p)  # a FIFO/device/socket/broken link named *.csv: error naming it
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


def _check_inside(p: Path, root: Path) -> None:
    """Refuse ``p`` when it resolves (through symbolic links) to a file outside ``root``."""
    real, base = os.path.realpath(p), os.path.realpath(root)
    if real != base and os.path.commonpath([real, base]) == base:
        return
    raise ValueError(
        f"{shown(p)}: symbolic link to {shown(real)}, outside the folder being ingested ({shown(root)}): "
        "refused (pass --follow-symlinks to read it)"
    )


def discover(sources: Sequence[str | os.PathLike], fmt: str = "auto", follow_symlinks: bool = False) -> list[Source]:
    """Expand files, directories and glob patterns into input files (sorted, deduplicated).

    Parameters
    ----------
    sources : sequence of path-like
        Files, directories and glob patterns.
    fmt : str
        ``auto`` or a format name (which files of a directory are inputs).
    follow_symlinks : bool
        Read symbolic links whose target is outside the folder being ingested (refused by
        default; see the module docstring).

    Returns
    -------
    list of Source
        The input files, sorted and without duplicates (names and labels not set yet).

    Raises
    ------
    FileNotFoundError
        A source that does not exist, or a pattern that matches nothing.
    ValueError
        An explicit file of unknown type, a symbolic link out of its folder (without
        ``follow_symlinks``), or no input files at all.
    """
    format_of("x", fmt)  # validates fmt
    found: list[Source] = []
    seen: set[Path] = set()

    def add(p: Path, root: Path) -> None:
        if not follow_symlinks:
            _check_inside(p, root)
        rp = p.resolve()
        if rp in seen:
            return
        f = format_of(p, fmt)
        if f is None:
            raise ValueError(f"{shown(p)}: unknown file type {shown(p.suffix)!r} (use --format)")
        seen.add(rp)
        found.append(Source(p, root, f))

    def kind(p: Path) -> int | None:
        """``st_mode`` of ``p`` (following links); ``None`` if nothing (or a broken link) is there."""
        try:
            return os.stat(p).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return None

    for src in sources:
        s = os.fsdecode(src)
        p = Path(s)
        mode = kind(p)
        if mode is not None and stat.S_ISDIR(mode):
            for q in _walk(p, fmt):
                add(q, p)
        elif mode is not None:
            stat_regular(p)  # a FIFO, device or socket given by name: error naming it
            add(p, p.parent)
        elif any(ch in s for ch in _GLOB_CHARS) and not os.path.islink(s):
            matches = sorted(glob.glob(s, recursive=True))
            if not matches:
                raise FileNotFoundError(f"{shown(s)}: no files match this pattern")
            root = _glob_root(s)
            for m in matches:
                q = Path(m)
                mq = kind(q)
                if mq is not None and stat.S_ISDIR(mq):
                    for r in _walk(q, fmt):
                        add(r, root)
                elif fmt != "auto" or format_of(q) is not None:
                    stat_regular(q)
                    add(q, root)
        else:
            stat_regular(p)  # raises: no such file, or a broken symbolic link
    if not found:
        raise ValueError(f"no input files found in {', '.join(shown(x) for x in sources)}")
    return found


#: columns naming the file of a manifest row, in order of preference
_MANIFEST_KEYS = ("file", "path", "filename", "name")


def _read_manifest(path: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """Manifest rows keyed by resolved path and by name/stem.

    Errors say why the file is not a valid manifest without quoting any of its content (the
    file given may be anything, a system file included).
    """
    try:
        fh, st = open_regular(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{shown(path)}: no such manifest file") from None
    by_path: dict[str, dict] = {}
    by_name: dict[str, dict] = {}
    bad = f"{shown(path)}: not a valid manifest"
    try:
        check_size(8 * st.st_size, f"a {st.st_size}-byte manifest")
        text = io.TextIOWrapper(fh, encoding="utf-8", errors="strict", newline="")
        reader = csv.DictReader(text)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        key = next((c for c in _MANIFEST_KEYS if c in cols), None)
        if key is None or "label" not in cols:
            need = [x for x, ok in (("'label'", "label" in cols), ("'file' (or 'path'/'name')", key is not None)) if not ok]
            raise ValueError(
                f"{bad}: its first line (the CSV header, {len(cols)} column(s)) has no {' and no '.join(need)} column"
            )
        for row in reader:
            row = {k.strip(): (v or "").strip() for k, v in row.items() if isinstance(k, str)}
            ref = row.get(key, "")
            if not ref:
                continue
            for col in ("label", "name", key):
                if not row.get(col, "").isprintable():
                    raise ValueError(f"{bad}: line {reader.line_num}: the {col!r} field has control characters")
            by_path[str((path.parent / ref).resolve())] = row
            by_name[ref] = row
            by_name.setdefault(Path(ref).stem, row)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{bad}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        # the csv module's messages name the syntax problem, never the data
        raise ValueError(f"{bad}: not CSV ({str(exc).splitlines()[0][:100] if str(exc) else 'csv.Error'})") from None
    except ValueError as exc:
        if str(exc).startswith(bad):
            raise
        raise ValueError(f"{bad}: {exc}") from None
    finally:
        fh.close()
    return by_path, by_name


def _name(src: Source, names: str) -> str:
    if names == "stem":
        return safe_name(src.path.stem)
    try:
        rel = src.path.relative_to(src.root)
    except ValueError:
        rel = Path(src.path.name)
    return safe_name(rel.with_suffix("").as_posix())


def list_sources(
    sources: Sequence[str | os.PathLike],
    *,
    fmt: str = "auto",
    labels: str = "none",
    manifest: str | os.PathLike | None = None,
    names: str = "stem",
    follow_symlinks: bool = False,
) -> list[Source]:
    """Discover the inputs and assign unique names and labels (reads no data).

    Parameters
    ----------
    sources : sequence of path-like
        Files, folders or glob patterns.
    fmt : str
        ``auto`` (by extension) or one of ``npy, npz, csv, xyz, ply, image``.
    labels : {"none", "parent"}
        ``parent``: the label of a file is the name of its directory.
    manifest : path-like, optional
        CSV with columns ``file``, ``label`` and optionally ``name``.
    names : {"stem", "relpath"}
        Measure names from file stems, or paths relative to the source directory without extension.
    follow_symlinks : bool
        Follow symbolic links that leave the ingested folder.

    Returns
    -------
    list of Source
        One per input file, in ingest order, with its unique name and its label.

    Raises
    ------
    ValueError
        Duplicate names (naming both files), files missing from the manifest, symbolic links
        out of the ingested folder (unless ``follow_symlinks``).
    """
    if labels not in ("none", "parent"):
        raise ValueError(f"labels must be 'none' or 'parent', got {labels!r}")
    if names not in ("stem", "relpath"):
        raise ValueError(f"names must be 'stem' or 'relpath', got {names!r}")
    found = discover(sources, fmt, follow_symlinks)
    man = _read_manifest(Path(manifest)) if manifest is not None else None
    out: list[Source] = []
    taken: dict[str, Path] = {}
    for src in found:
        name = _name(src, names)
        label = safe_name(src.path.parent.name) if labels == "parent" else None
        if man is not None:
            by_path, by_name = man
            row = by_path.get(str(src.path.resolve())) or by_name.get(src.path.name) or by_name.get(src.path.stem)
            if row is None:
                raise ValueError(f"{shown(src.path)}: not listed in manifest {shown(manifest)}")
            label = row["label"]
            if row.get("name"):
                name = row["name"]
        if name in taken:
            raise ValueError(
                f"{shown(src.path)}: duplicate measure name {name!r} (also from {shown(taken[name])}); rename one or use --names relpath"
            )
        taken[name] = src.path
        out.append(Source(src.path, src.root, src.fmt, name, label))
    return out


def _measures(plan_: list[Source], options: ReaderOptions, dtype: str, notes: list[str] | None) -> Iterator[Measure]:
    for src in plan_:
        said: list[str] = []
        points, weights = read_file(src.path, src.fmt, options, said)
        points, weights = validate_measure(points, weights, shown(src.path), dtype)
        if notes is not None:
            notes.extend(f"{shown(src.path)}: {n}" for n in said)
        yield Measure(points, weights, src.name, src.label, source=shown(src.path))


@locked("out", skip=())
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
    follow_symlinks: bool = False,
    notes: list[str] | None = None,
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
    follow_symlinks : bool
        Also read symbolic links to files outside the folder being ingested (refused by default).
    notes : list of str, optional
        Receives one line ``"<file>: <remark>"`` per remark on how a file was read (a text
        table's header line, an image's alpha channel), for the ingest summary.

    Returns
    -------
    Collection
        The collection at ``out``, opened for reading.

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
        p = list_sources(sources, fmt=fmt, labels=labels, manifest=manifest, names=names, follow_symlinks=follow_symlinks)
        existing = set(coll.names.tolist())
        for s in p:
            if s.name in existing:
                raise ValueError(f"{shown(s.path)}: measure name {s.name!r} already exists in {out}")
        has_labels = bool(coll.attrs.get("has_labels"))
        if p and (p[0].label is not None) != has_labels:
            what = "has labels" if has_labels else "has no labels"
            raise ValueError(f"{out}: collection {what}; use the same labelling (--labels/--manifest) when appending")
        return coll.append(_measures(p, options, str(coll.dtype), notes), dtype=dtype)
    p = list_sources(sources, fmt=fmt, labels=labels, manifest=manifest, names=names, follow_symlinks=follow_symlinks)
    dt = dtype or "float32"
    return create(out, _measures(p, options, dt, notes), overwrite=overwrite, shard_points=shard_points, dtype=dt)
