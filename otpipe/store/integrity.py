"""Structural checks of a collection at open: cheap, always run, no point data read.

:func:`check_structure` is what :func:`otpipe.store.open` runs on every store before anything is
read from it (every command that reads a collection goes through it, Dask workers included). It
reads the group and array metadata, the small per-measure and per-shard arrays (``offsets``,
``starts``, ``names``, ``shard_offsets``, ``shard_rows``) and the *listing* of the chunk files
of ``points`` and ``weights``; never the point data. It checks:

* the attributes: format name and version (:func:`otpipe.store.collection._read_attrs`), types
  and ranges of ``dim``, ``dtype``, the counts, ``chunk_points``, ``hash``;
* the arrays: present, with the dtype, shape and chunking the attributes say;
* ``offsets``: ``n_measures + 1`` long, start at 0, strictly increasing (no measure is empty),
  end at ``n_points``; ``shard_offsets`` and ``shard_rows`` likewise, shards on chunk
  boundaries and exactly as long as their measures rounded up to whole chunks; ``starts``
  exactly the rows the layout implies (so any edit of ``offsets`` is caught);
* ``names``: ``n_measures`` non-empty, unique strings; ``labels`` and ``digests`` long enough;
* chunks present: every ``points``/``weights`` chunk of the grid holding data has its file.
  Zarr reads a missing chunk as its fill value (zeros) silently; otpipe writes every chunk, so a
  missing one means damage. Stores written before that (where a chunk equal to the fill value
  was not written) are told apart by re-hashing the measures of the missing chunk's shard:
  if they match their digests the zeros are the data.

What it cannot see is a changed *value* inside a chunk: ``otpipe info --verify`` (and
``otpipe distances --verify``) re-hash everything for that. Reading a measure also checks its
weights (finite, non-negative, positive mass) and coordinates (finite) and names the measure.

A chunk file that exists but does not decode (truncated, emptied, overwritten: the codec raises
``RuntimeError: Zstd decompression error`` or the like) is reported by :func:`read_rows`, through
which every read of a collection's arrays goes (:class:`~otpipe.store.collection.Collection`,
hence Dask workers too): a :class:`CorruptCollection` naming the store, the array, the chunk and
its file, and the measures it holds, suggesting ``otpipe info --verify``. Errors of the file
system itself (``OSError``: permissions, I/O) pass through unchanged; they name the file.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from otpipe.store._layout import DTYPES, measure_digest, strings

__all__ = ["check_structure", "check_block", "read_rows", "CorruptCollection"]


class CorruptCollection(ValueError):
    """A collection store whose structure or data is damaged (message names the problem)."""


def _fail(path: Path, what: str) -> CorruptCollection:
    return CorruptCollection(f"{path}: damaged collection: {what}; re-create it (or restore it from a copy)")


def _bad_chunks(arr, r0: int, r1: int) -> list[int]:
    """Indices of the chunks (along the first axis) of rows ``r0:r1`` of ``arr`` that fail to read."""
    c = int(arr.chunks[0])
    bad = []
    for j in range(r0 // c, -(-r1 // c)):
        try:
            arr[j * c : min((j + 1) * c, arr.shape[0])]
        except Exception:  # noqa: BLE001 - any failure of this chunk alone
            bad.append(j)
    return bad


def _list_names(names: list[str], most: int = 3) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def read_rows(
    path: Path, arr, name: str, r0: int | None = None, r1: int | None = None,
    holders: Callable[[int, int], list[str]] | None = None,
) -> np.ndarray:
    """``arr[r0:r1]`` as a NumPy array; a chunk that does not decode raises :class:`CorruptCollection`.

    Parameters
    ----------
    path : Path
        The store (for the message).
    arr : zarr.Array
        One of its arrays, called ``name``.
    name : str
        The array's name (for the message).
    r0, r1 : int, optional
        Rows to read (default: all).
    holders : callable, optional
        ``holders(a, b)`` -> descriptions of the measures stored in rows ``a:b`` (for the message).

    Returns
    -------
    numpy.ndarray
        The rows read.

    Raises
    ------
    CorruptCollection
        ``"<path>: damaged collection: points chunk 0 (file points/c/0/0, rows 0:64) cannot be
        decoded (RuntimeError: ...); it holds measures ...: check the store with otpipe info
        --verify <path>, then re-create it or restore it from a copy"``.
    OSError
        The file system's own errors, unchanged.
    """
    r0 = 0 if r0 is None else int(r0)
    r1 = int(arr.shape[0]) if r1 is None else int(r1)
    try:
        return np.asarray(arr[r0:r1])
    except (OSError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - a codec's error on damaged bytes, whatever its type
        cause = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        bad = _bad_chunks(arr, r0, r1)
        c = int(arr.chunks[0])
        if not bad:
            where = f"array {name!r} (rows {r0}:{r1}) cannot be read"
        else:
            keys = [arr.metadata.encode_chunk_key((j,) + (0,) * (len(arr.shape) - 1)) for j in bad]
            js = ", ".join(str(j) for j in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            where = (f"{name} chunk{'s' if len(bad) > 1 else ''} {js} (file {name}/{keys[0]}"
                     f"{', ...' if len(bad) > 1 else ''}, rows {bad[0] * c}:{min((bad[0] + 1) * c, arr.shape[0])}"
                     f"{', ...' if len(bad) > 1 else ''}) cannot be decoded")
        held = ""
        if holders is not None:
            who = holders(bad[0] * c, (bad[-1] + 1) * c) if bad else holders(r0, r1)
            if who:
                held = f"; measures affected: {_list_names(who)}"
        raise CorruptCollection(
            f"{path}: damaged collection: {where} ({cause}){held}: check the store with `otpipe info --verify {path}`, "
            "then re-create it or restore it from a copy"
        ) from None


def _int_attr(attrs: dict, key: str, path: Path, minimum: int) -> int:
    v = attrs.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise _fail(path, f"attribute {key!r} is {v!r}, expected an integer >= {minimum}")
    return v


def _array(group, name: str, path: Path):
    try:
        return group[name]
    except KeyError:
        raise _fail(path, f"array {name!r} is missing") from None
    except Exception as exc:  # noqa: BLE001 - unreadable metadata
        raise _fail(path, f"array {name!r} has unreadable metadata ({type(exc).__name__})") from None


def _need(arr, name: str, path: Path, length: int, ndim: int = 1, trailing: tuple = ()) -> None:
    shape = tuple(arr.shape)
    if len(shape) != ndim or shape[0] < length or tuple(shape[1:]) != tuple(trailing):
        want = f"({length}{', ' if trailing else ''}{', '.join(map(str, trailing))})"
        raise _fail(path, f"array {name!r} has shape {shape}, expected at least {want}")


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_csr(path: Path, offsets: np.ndarray, n_points: int, names_of) -> None:
    if offsets[0] != 0:
        raise _fail(path, f"offsets[0] is {int(offsets[0])}, not 0")
    sizes = np.diff(offsets)
    if len(sizes) and (sizes <= 0).any():
        i = _first(sizes <= 0)
        kind = "decrease" if sizes[i] < 0 else "repeat"
        raise _fail(path, f"offsets {kind} at measure {names_of(i)} (offsets[{i}] = {int(offsets[i])}, offsets[{i + 1}] = {int(offsets[i + 1])})")
    if offsets[-1] != n_points:
        raise _fail(path, f"offsets end at {int(offsets[-1])}, but the collection has {n_points} points")


def check_structure(path: Path, attrs: dict, group) -> dict[str, Any]:
    """Check a collection's structure (see the module docstring) and return its small arrays.

    Parameters
    ----------
    path : Path
        The store (for the messages).
    attrs : dict
        Its group attributes.
    group : zarr.Group
        The open group.

    Returns
    -------
    dict
        ``offsets``, ``starts``, ``shard_offsets``, ``shard_rows`` (int64, sliced to the
        committed counts) and ``names`` (array of str).

    Raises
    ------
    CorruptCollection
        A ``ValueError`` ``"<path>: damaged collection: <what>; ..."`` naming the first problem.
    """

    n = _int_attr(attrs, "n_measures", path, 1)
    s = _int_attr(attrs, "n_shards", path, 1)
    dim = _int_attr(attrs, "dim", path, 1)
    n_points = _int_attr(attrs, "n_points", path, n)
    cp = _int_attr(attrs, "chunk_points", path, 1)
    _int_attr(attrs, "shard_points", path, 1)
    dtype = attrs.get("dtype")
    if dtype not in DTYPES:
        raise _fail(path, f"attribute 'dtype' is {dtype!r}, expected float32 or float64")
    has_labels = attrs.get("has_labels")
    if not isinstance(has_labels, bool):
        raise _fail(path, f"attribute 'has_labels' is {has_labels!r}, expected true or false")
    h = attrs.get("hash")
    if not isinstance(h, str) or not h.startswith("sha256:") or len(h) != 7 + 64:
        raise _fail(path, "attribute 'hash' is not a sha256 content hash")
    if s > n:
        raise _fail(path, f"{s} shards for {n} measures")

    # -- arrays: presence, dtype, shape, chunking (metadata only) ---------------------------
    pts, wts = _array(group, "points", path), _array(group, "weights", path)
    dt = DTYPES[dtype]
    for name, arr, ndim in (("points", pts, 2), ("weights", wts, 1)):
        if np.dtype(arr.dtype) != dt:
            raise _fail(path, f"array {name!r} has dtype {arr.dtype}, but the attributes say {dtype}")
        if len(arr.shape) != ndim:
            raise _fail(path, f"array {name!r} has shape {tuple(arr.shape)}")
    if pts.shape[1] != dim:
        raise _fail(path, f"points have D = {pts.shape[1]}, but the attributes say D = {dim}")
    if tuple(pts.chunks) != (cp, dim) or tuple(wts.chunks) != (cp,):
        raise _fail(path, f"points/weights chunks {tuple(pts.chunks)}/{tuple(wts.chunks)} do not match chunk_points = {cp}")
    arrs = {k: _array(group, k, path) for k in ("offsets", "starts", "names", "digests", "shard_offsets", "shard_rows")}
    _need(arrs["offsets"], "offsets", path, n + 1)
    _need(arrs["starts"], "starts", path, n)
    _need(arrs["names"], "names", path, n)
    _need(arrs["digests"], "digests", path, n, 2, (32,))
    _need(arrs["shard_offsets"], "shard_offsets", path, s + 1)
    _need(arrs["shard_rows"], "shard_rows", path, s + 1)
    if has_labels:
        _need(_array(group, "labels", path), "labels", path, n)

    # -- names ------------------------------------------------------------------------------
    names = strings(read_rows(path, arrs["names"], "names", 0, n))
    if len(names) != n:
        raise _fail(path, f"{len(names)} names for {n} measures")
    empty = names == ""
    if empty.any():
        raise _fail(path, f"measure #{_first(empty)} has an empty name")
    uniq, first_idx, counts = np.unique(names, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][0]
        raise _fail(path, f"measure name {str(dup)!r} appears {int(counts[counts > 1][0])} times")

    def names_of(i: int) -> str:
        return f"{str(names[i])!r} (#{i})"

    # -- CSR offsets and the shard layout -----------------------------------------------------
    offsets = np.asarray(read_rows(path, arrs["offsets"], "offsets", 0, n + 1), dtype=np.int64)
    _check_csr(path, offsets, n_points, names_of)
    so = np.asarray(read_rows(path, arrs["shard_offsets"], "shard_offsets", 0, s + 1), dtype=np.int64)
    if so[0] != 0 or so[-1] != n or (np.diff(so) <= 0).any():
        raise _fail(path, f"shard_offsets are not increasing from 0 to {n}")
    rows = np.asarray(read_rows(path, arrs["shard_rows"], "shard_rows", 0, s + 1), dtype=np.int64)
    if rows[0] != 0 or (rows % cp != 0).any() or (np.diff(rows) <= 0).any():
        raise _fail(path, f"shard_rows are not increasing multiples of chunk_points = {cp} from 0")
    shard_points = offsets[so[1:]] - offsets[so[:-1]]
    want_rows = -(-shard_points // cp) * cp
    bad = np.diff(rows) != want_rows
    if bad.any():
        k = _first(bad)
        raise _fail(path, f"shard {k} spans {int(rows[k + 1] - rows[k])} rows for {int(shard_points[k])} points (offsets or shard_rows edited)")
    for name, arr in (("points", pts), ("weights", wts)):  # longer during an append: fine
        if rows[-1] > arr.shape[0]:
            raise _fail(path, f"the shards need {int(rows[-1])} rows of {name}, the array has {arr.shape[0]}")
    shard_of = np.repeat(np.arange(s), np.diff(so))
    expected = rows[shard_of] + offsets[:-1] - offsets[so[shard_of]]
    starts = np.asarray(read_rows(path, arrs["starts"], "starts", 0, n), dtype=np.int64)
    bad = starts != expected
    if bad.any():
        i = _first(bad)
        raise _fail(path, f"measure {names_of(i)} starts at row {int(starts[i])}, but the offsets put it at row {int(expected[i])}")

    out = {"offsets": offsets, "starts": starts, "shard_offsets": so, "shard_rows": rows, "names": names}
    _check_chunks(path, group, pts, wts, int(rows[-1]) // cp, out)
    return out


def _chunk_files(path: Path, arr, name: str, grid: int, trailing: tuple) -> list[int]:
    """Indices ``j < grid`` of the chunks ``(j, *trailing)`` of array ``name`` with no file (one listing per directory)."""
    base = os.path.join(str(path), name)
    enc = arr.metadata.encode_chunk_key
    listed: dict[str, set[str]] = {}
    missing = []
    for j in range(grid):
        parent, _, leaf = enc((j,) + trailing).rpartition("/")
        entries = listed.get(parent)
        if entries is None:
            try:
                entries = set(os.listdir(os.path.join(base, parent) if parent else base))
            except OSError:
                entries = set()
            listed[parent] = entries
        if leaf not in entries:
            missing.append(j)
    return missing


def _check_chunks(path: Path, group, pts, wts, grid: int, small: dict) -> None:
    lost = {"points": _chunk_files(path, pts, "points", grid, (0,)), "weights": _chunk_files(path, wts, "weights", grid, ())}
    if not (lost["points"] or lost["weights"]):
        return
    # stores written before every chunk was written: a missing chunk may be all fill value (0).
    # Re-hash the measures of the shards it belongs to; damage unless they match their digests.

    cp = int(wts.chunks[0])
    rows, so, starts, offsets, names = small["shard_rows"], small["shard_offsets"], small["starts"], small["offsets"], small["names"]
    n = len(names)
    digests = np.asarray(read_rows(path, group["digests"], "digests", 0, n), dtype=np.uint8)
    labels = strings(read_rows(path, group["labels"], "labels", 0, n)) if "labels" in group else None
    for arr_name, missing in lost.items():
        for j in missing:
            k = int(np.searchsorted(rows, j * cp, side="right") - 1)
            r0, r1 = int(rows[k]), int(rows[k + 1])
            P, W = read_rows(path, pts, "points", r0, r1), read_rows(path, wts, "weights", r0, r1)
            for i in range(int(so[k]), int(so[k + 1])):
                r = int(starts[i]) - r0
                m = int(offsets[i + 1] - offsets[i])
                lab = None if labels is None else str(labels[i])
                d = measure_digest(str(names[i]), lab, P[r : r + m], W[r : r + m])
                if not np.array_equal(np.frombuffer(d, dtype=np.uint8), digests[i]):
                    raise _fail(
                        path,
                        f"{arr_name} chunk {j} (rows {j * cp}:{(j + 1) * cp}, shard {k}) is missing and "
                        f"measure {str(names[i])!r} (#{i}) no longer matches its digest",
                    )


def check_block(path: Path, P: np.ndarray, W: np.ndarray, first: int, starts, sizes, names) -> None:
    """Check the data of one shard as read: finite coordinates and weights, ``w >= 0``, mass > 0.

    Parameters
    ----------
    path : Path
        The store (for the message).
    P : numpy.ndarray
        The shard's points ``(rows, D)``.
    W : numpy.ndarray
        The shard's weights ``(rows,)``.
    first : int
        Index of the shard's first measure.
    starts : numpy.ndarray
        Rows of the shard's measures ``first, first + 1, ...``, relative to the block.
    sizes : numpy.ndarray
        Their numbers of points.
    names : numpy.ndarray
        Their names (for the message).

    Raises
    ------
    CorruptCollection
        Naming the first bad measure (the writer never stores such data).
    """
    ok_w = np.isfinite(W) & (W >= 0)
    ok_p = np.isfinite(P).all(axis=1) if P.size else np.ones(len(P), dtype=bool)
    if ok_w.all() and ok_p.all():
        mass = np.add.reduceat(W.astype(np.float64), np.asarray(starts, dtype=np.int64)) if len(starts) else np.ones(0)
        # reduceat sums up to the next start: subtract any padding rows (zero weight: no effect)
        if not (mass > 0).all():
            k = _first(~(mass > 0))
            raise _fail(path, f"measure {str(names[k])!r} (#{first + k}) has zero total mass")
        return
    for k, (r, m) in enumerate(zip(starts, sizes)):
        w, p = W[r : r + m], ok_p[r : r + m]
        if not p.all():
            raise _fail(path, f"measure {str(names[k])!r} (#{first + k}) has NaN or infinite coordinates")
        if not np.isfinite(w).all():
            raise _fail(path, f"measure {str(names[k])!r} (#{first + k}) has NaN or infinite weights")
        if (w < 0).any():
            raise _fail(path, f"measure {str(names[k])!r} (#{first + k}) has negative weights")
