"""The otpipe collection format: a Zarr v3 group holding many measures in CSR layout.

Layout
------
A collection of ``n_measures`` weighted point clouds in ``R^D`` is one Zarr v3 group::

    points        (n_rows, D)         float32 | float64   chunks (chunk_points, D)
    weights       (n_rows,)           same dtype          chunks (chunk_points,)
    offsets       (n_measures + 1,)   int64   CSR offsets: measure i has offsets[i+1] - offsets[i] points
    starts        (n_measures,)       int64   row of ``points`` where measure i begins
    names         (n_measures,)       str     unique
    labels        (n_measures,)       str     optional
    digests       (n_measures, 32)    uint8   sha256 of each measure (see "Content hash")
    shard_offsets (n_shards + 1,)     int64   shard k holds measures shard_offsets[k] : shard_offsets[k+1]
    shard_rows    (n_shards + 1,)     int64   shard k occupies rows shard_rows[k] : shard_rows[k+1]

Shards and chunks
-----------------
A *shard* is a contiguous range of whole measures holding at most ``shard_points`` points (or a
single measure when one measure is larger). Zarr v3 chunk grids are regular, so to make chunk
boundaries coincide with shard boundaries every shard starts on a chunk boundary and occupies
whole chunks of ``chunk_points`` rows: the rows between the end of a shard's data and the next
chunk boundary are *padding* (zero coordinates, zero weight; they compress to almost nothing).
Hence ``read_shard(k)`` reads exactly the chunks of shard ``k`` and no other, appends never
rewrite an existing points/weights chunk, and concurrent readers of different shards never
touch the same chunk.

Sizes are in bytes, not rows: ``chunk_points`` is the largest power of two of rows whose
coordinates fit in :data:`CHUNK_BYTES` (16 MiB; smaller for a collection that fits in one shard),
and by default ``shard_points`` is the same number, so the memory of a writer or reader (one
shard) follows the data whatever ``D``. A larger ``shard_points`` spans several chunks. Every
chunk is written, also one equal to the fill value, so a missing chunk file means damage
(:mod:`otpipe.store.integrity`, run by :func:`open`).

Because of the padding, ``offsets`` (the logical CSR offsets over the concatenated measures,
``offsets[-1] == n_points``) are not row numbers of ``points``: measure ``i`` is
``points[starts[i] : starts[i] + offsets[i+1] - offsets[i]]``. Use :meth:`Collection.__getitem__`
or :meth:`Collection.read_shard` rather than slicing the arrays by hand.

Content hash
------------
Each measure gets ``d_i = sha256(name, label, N, points bytes, weights bytes)`` (little-endian,
length-prefixed strings); the collection hash is
``sha256(format name, version, D, dtype, has_labels, d_0, d_1, ...)``. It depends on the
content only (not on chunking or padding), is computed while writing (streaming) and is
recorded in the attrs as ``"sha256:<hex>"``; :meth:`Collection.verify` recomputes it from the
stored data.

Attributes
----------
``format`` (``"otpipe.collection"``), ``format_version`` (1), ``dim``, ``dtype``,
``n_measures``, ``n_points``, ``n_shards``, ``chunk_points``, ``shard_points``, ``has_labels``,
``hash``, ``complete``, ``created_by``, ``created``, ``modified``.

Atomicity
---------
:func:`create` writes into a hidden temporary sibling directory, sets ``complete`` last and
renames it into place, so an interrupted write never leaves a store at the target path; the
next create or append of the same path removes temporaries a killed run left (only otpipe's,
only once their process is gone: see :mod:`otpipe.store.tmp`).
:meth:`Collection.append` writes new shards after the existing ones (new chunks only; the
per-measure arrays are extended, their existing entries rewritten with the same values, and
Zarr writes every chunk file atomically), then commits with a single atomic write of the group
metadata carrying the new counts and hash. Readers trust the committed counts and ignore rows
beyond them, so a reader never sees a half-done append, and an append that fails or is killed
leaves the previous collection, complete and verifiable (on an exception the array shapes are
also restored). There is one writer at a time. :func:`open` refuses stores whose
``complete`` flag is not set (such as the temporary directory of an interrupted create), and
damaged ones (:func:`otpipe.store.integrity.check_structure`).
"""
from __future__ import annotations

import hashlib
import math
import os
import shutil
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from otpipe._made import check_replaceable, made_attrs
from otpipe._version import __version__
from otpipe.store._layout import DTYPES, measure_digest, put_str, strings
from otpipe.store.locks import locked
from otpipe.store.tmp import remove_stale, tmp_sibling

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "DEFAULT_SHARD_POINTS",
    "CHUNK_BYTES",
    "Measure",
    "Collection",
    "CollectionView",
    "open",
    "create",
    "validate_measure",
]

#: Value of the ``format`` group attribute of every collection.
FORMAT_NAME = "otpipe.collection"
#: Version of the layout described in this module.
FORMAT_VERSION = 1
#: Default points per shard: ``None``, i.e. sized in bytes by :data:`CHUNK_BYTES` (memory follows
#: the data, not ``D``).
DEFAULT_SHARD_POINTS: int | None = None
#: Largest ``points`` chunk in bytes: ``chunk_points`` is the largest power of two with
#: ``chunk_points * D * itemsize <= CHUNK_BYTES`` (at least one row), and by default a shard
#: holds that many points (2^20 points in R^3 in float32: 12 MiB).
CHUNK_BYTES = 16 << 20
#: Smallest chunk (bytes) of a collection that fits in one shard (smaller collections get smaller chunks).
_MIN_CHUNK_BYTES = 1 << 20
#: Chunk length of the per-measure arrays (offsets, names, ...).
_MEASURE_CHUNK = 1 << 16
_DATA_ARRAYS = ("points", "weights")
_MEASURE_ARRAYS = ("offsets", "starts", "names", "labels", "digests")
_SHARD_ARRAYS = ("shard_offsets", "shard_rows")


# --------------------------------------------------------------------------------------------
# Measures
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Measure:
    """One weighted point cloud ``sum_i w_i delta_{x_i}``.

    Parameters
    ----------
    points : numpy.ndarray
        Coordinates, shape ``(N, D)``.
    weights : numpy.ndarray or None
        Non-negative weights, shape ``(N,)``; ``None`` means uniform ``1/N`` (filled in when the
        measure is written to a collection).
    name : str, optional
        Unique name inside a collection.
    label : str, optional
        Class or group label.
    source : str, optional
        Where the measure came from (a file path); used in error messages only, not stored.
    """

    points: np.ndarray
    weights: np.ndarray | None = None
    name: str | None = None
    label: str | None = None
    source: str | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        """Number of points ``N``."""
        return int(self.points.shape[0])

    @property
    def dim(self) -> int:
        """Dimension ``D``."""
        return int(self.points.shape[1])

    @property
    def mass(self) -> float:
        """Total mass ``sum(weights)`` (1 for uniform weights)."""
        return 1.0 if self.weights is None else float(np.sum(self.weights, dtype=np.float64))

    def normalized(self) -> Measure:
        """Return a copy whose weights sum to one (the stored weights are never changed).

        Returns
        -------
        Measure
            The same points, name, label and source, with normalised weights (uniform ``1/N`` for ``None``).
        """
        w = self.weights
        if w is None:
            w = np.full(self.n, 1.0 / self.n, dtype=self.points.dtype)
        else:
            w = (w / np.sum(w, dtype=np.float64)).astype(w.dtype)
        return Measure(self.points, w, self.name, self.label, self.source)

    def __repr__(self) -> str:
        return f"Measure(name={self.name!r}, label={self.label!r}, n={self.n}, dim={self.dim}, dtype={self.points.dtype})"


def _where(m: Measure, index: int | None = None) -> str:
    if m.source:
        return str(m.source)
    if m.name is not None:
        return f"measure {m.name!r}"
    return f"measure #{index}" if index is not None else "measure"


def _numeric(arr: Any, what: str, where: str) -> np.ndarray:
    try:
        a = np.asarray(arr)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is bad input
        raise ValueError(f"{where}: {what} cannot be converted to an array ({exc})") from None
    if a.dtype == object or a.dtype.kind not in "iuf":
        raise ValueError(f"{where}: {what} must be real numbers, got dtype {a.dtype}")
    return a


def validate_measure(
    points: Any, weights: Any, where: str, dtype: str | np.dtype = "float32"
) -> tuple[np.ndarray, np.ndarray]:
    """Check one measure and cast it to the storage dtype.

    Parameters
    ----------
    points, weights
        Array-likes of shapes ``(N, D)`` and ``(N,)``; ``weights=None`` gives uniform ``1/N``.
    where : str
        Prefix of error messages (a file path or a measure name).
    dtype : {"float32", "float64"}
        Storage dtype.

    Returns
    -------
    (points, weights) : tuple of numpy.ndarray
        C-contiguous little-endian arrays of the storage dtype.

    Raises
    ------
    ValueError
        ``"<where>: <problem>"`` for non-numeric data, wrong shapes, an empty measure, NaN or
        infinite values, values beyond the storage dtype's range (finite in the input, infinite
        once cast), negative weights, zero total mass, or weights that lose part of their mass
        in the cast (see below).

    Notes
    -----
    Weights are stored raw (never rescaled). Weights below the storage dtype's smallest
    subnormal (about ``1.4e-45`` for float32) round to zero, and those below its smallest normal
    number (``1.2e-38``) keep only a few digits: when the cast changes the total mass by more
    than ``1e-6`` relative (a float32 cast of normal numbers changes it by less than ``6e-8``),
    the measure is refused rather than stored with points silently dropped or reweighted, with
    a message saying so and the remedy (rescale the weights, or store ``float64``).
    """
    dt = DTYPES[str(np.dtype(dtype))]
    p = _numeric(points, "coordinates", where)
    if p.ndim != 2:
        raise ValueError(f"{where}: points must have shape (N, D), got shape {p.shape}")
    if p.shape[0] == 0:
        raise ValueError(f"{where}: empty measure (no points)")
    if p.shape[1] == 0:
        raise ValueError(f"{where}: points have dimension D = 0")
    raw_p = p
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below as inf
        p = np.ascontiguousarray(p, dtype=dt)
    if not np.isfinite(p).all():
        if np.isfinite(raw_p).all():
            raise ValueError(f"{where}: coordinates beyond the {dt.name} range (largest magnitude "
                             f"{float(np.abs(raw_p).max()):.3g} > {float(np.finfo(dt).max):.3g}): rescale them or store float64")
        raise ValueError(f"{where}: contains NaN or infinite coordinates")
    n = p.shape[0]
    if weights is None:
        w = np.full(n, 1.0 / n, dtype=dt)
    else:
        w = _numeric(weights, "weights", where)
        if w.shape != (n,):
            raise ValueError(f"{where}: weights must have shape ({n},) to match the points, got {w.shape}")
        raw = w
        with np.errstate(over="ignore", invalid="ignore"):
            w = np.ascontiguousarray(w, dtype=dt)
        if not np.isfinite(raw).all():
            raise ValueError(f"{where}: contains NaN or infinite weights")
        if (raw < 0).any():
            raise ValueError(f"{where}: contains negative weights")
        if not np.isfinite(w).all():
            raise ValueError(f"{where}: weights beyond the {dt.name} range (largest {float(raw.max()):.3g} > "
                             f"{float(np.finfo(dt).max):.3g}): rescale them or store float64")
        if not (raw > 0).any():
            raise ValueError(f"{where}: zero total mass (all weights are zero)")
        _check_mass_kept(raw, w, dt, where)
    return p, w


def _check_mass_kept(raw: np.ndarray, w: np.ndarray, dt: np.dtype, where: str) -> None:
    """Refuse weights whose cast to ``dt`` loses mass (underflow; see :func:`validate_measure`)."""
    if np.can_cast(raw.dtype, dt, "safe"):  # exact: nothing to lose
        return
    big = np.longdouble if raw.dtype == np.longdouble else np.float64
    total = np.sum(raw, dtype=big)
    kept = np.sum(w, dtype=big)
    if total > 0 and abs(kept - total) <= 1e-6 * total:
        return
    fi = np.finfo(dt)
    span = f"{dt.name} holds full precision only above {float(fi.smallest_normal):.2g} and nothing below {float(fi.smallest_subnormal):.2g}"
    pos = raw[raw > 0]
    if not kept > 0:
        what = (f"all weights underflow to zero when stored as {dt.name} (they range from {float(pos.min()):.3g} to "
                f"{float(pos.max()):.3g}; {span})")
    else:
        lost = float(abs(1 - kept / total))
        zeroed = int(np.count_nonzero((raw > 0) & (w == 0)))
        what = (f"storing the weights as {dt.name} would change the total mass by {lost:.2g} relative (smallest weight "
                f"{float(pos.min()):.3g}, {zeroed} weight(s) would become zero; {span})")
    raise ValueError(f"{where}: {what}: rescale the weights (normalised losses depend only on their ratios) "
                     "or store them as float64 (--dtype float64)")


def _as_measure(obj: Any, index: int) -> Measure:
    if isinstance(obj, Measure):
        return obj
    if isinstance(obj, dict):
        return Measure(obj["points"], obj.get("weights"), obj.get("name"), obj.get("label"), obj.get("source"))
    if isinstance(obj, tuple):
        if not 1 <= len(obj) <= 4:
            raise ValueError(f"measure #{index}: expected (points[, weights[, name[, label]]]), got a {len(obj)}-tuple")
        return Measure(*obj)
    return Measure(obj)


# --------------------------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------------------------
def _collection_hash(dim: int, dtype: str, has_labels: bool, digests: np.ndarray) -> str:
    h = hashlib.sha256()
    put_str(h, FORMAT_NAME)
    h.update(int(FORMAT_VERSION).to_bytes(8, "little"))
    h.update(int(dim).to_bytes(8, "little"))
    put_str(h, dtype)
    h.update(b"\x01" if has_labels else b"\x00")
    h.update(np.ascontiguousarray(digests, dtype=np.uint8).tobytes())
    return "sha256:" + h.hexdigest()


# --------------------------------------------------------------------------------------------
# Zarr helpers
# --------------------------------------------------------------------------------------------
def _zarr():
    import zarr

    return zarr


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _open_group(path: Path, mode: str):
    zarr = _zarr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zarr.open_group(store=str(path), mode=mode, zarr_format=3)


def _create_1d(group, name: str, n: int, dtype, chunk: int = _MEASURE_CHUNK, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return group.create_array(name, shape=(n,) + kw.pop("extra", ()), chunks=(chunk,) + kw.pop("extra_chunks", ()), dtype=dtype, **kw)


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def _rows_in(nbytes: int, dim: int, dtype: str) -> int:
    """Largest power of two of rows ``(D,)`` of ``dtype`` that fit in ``nbytes`` (at least 1)."""
    rows = max(1, int(nbytes) // (int(dim) * DTYPES[dtype].itemsize))
    return 1 << (rows.bit_length() - 1)


class _Builder:
    """Streams measures into shards of a group (shared by :func:`create` and ``append``)."""

    def __init__(
        self,
        group,
        *,
        dtype: str,
        shard_points: int | None,
        dim: int | None = None,
        has_labels: bool | None = None,
        chunk_points: int | None = None,
        row_end: int = 0,
        point_end: int = 0,
        names: Iterable[str] = (),
        store_path: str = "",
    ) -> None:
        self.group = group
        self.dtype = dtype
        self.shard_points = None if shard_points is None else int(shard_points)
        self.dim = dim
        self.has_labels = has_labels
        self.chunk_points = chunk_points
        self.row_end = int(row_end)
        self.point_end = int(point_end)
        self.seen = set(names)
        self.first_where: str | None = None  # the measure that fixed D (None: an existing store)
        self.store_path = store_path
        # new per-measure / per-shard entries
        self.sizes: list[int] = []
        self.starts: list[int] = []
        self.names: list[str] = []
        self.labels: list[str] = []
        self.digests: list[bytes] = []
        self.shard_sizes: list[int] = []  # measures per new shard
        self.shard_row_ends: list[int] = []
        self._buf: list[tuple[np.ndarray, np.ndarray]] = []
        self._buf_points = 0
        self._count = len(self.seen)

    # -- adding -----------------------------------------------------------------------------
    def add(self, obj: Any) -> None:
        index = self._count
        m = _as_measure(obj, index)
        where = _where(m, index)
        points, weights = validate_measure(m.points, m.weights, where, self.dtype)
        d = points.shape[1]
        if self.dim is None:
            self.dim = d
            self.first_where = where
            if self.shard_points is None:  # sized in bytes: memory follows the data, not D
                self.shard_points = _rows_in(CHUNK_BYTES, d, self.dtype)
        elif d != self.dim:
            ref = self.first_where or f"the collection {self.store_path}"
            raise ValueError(f"{where}: mixed dimensions: D = {d}, but {ref} has D = {self.dim}")
        name = m.name if m.name is not None else f"m{index:06d}"
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: measure names must be non-empty strings, got {name!r}")
        if name in self.seen:
            raise ValueError(f"{where}: duplicate measure name {name!r}")
        label = None if m.label is None else str(m.label)
        if self.has_labels is None:
            self.has_labels = label is not None
        elif self.has_labels and label is None:
            raise ValueError(f"{where}: has no label but the collection has labels")
        elif not self.has_labels and label is not None:
            raise ValueError(f"{where}: has a label but the collection has none")
        n = points.shape[0]
        if self._buf and self._buf_points + n > self.shard_points:
            self._flush(final=False)
        self.seen.add(name)
        self._count += 1
        self.names.append(name)
        self.labels.append(label if label is not None else "")
        self.sizes.append(n)
        self.digests.append(measure_digest(name, label, points, weights))
        self._buf.append((points, weights))
        self._buf_points += n

    def _flush(self, final: bool) -> None:
        if not self._buf:
            return
        n = self._buf_points
        if self.chunk_points is None:  # first shard of a new collection: choose the chunking
            c = min(self.shard_points, _rows_in(CHUNK_BYTES, self.dim, self.dtype))
            if final and n < c:  # the whole collection fits in one shard: smaller chunks
                c = min(c, max(_rows_in(_MIN_CHUNK_BYTES, self.dim, self.dtype), _next_pow2(n)))
            self.chunk_points = int(c)
        c = self.chunk_points
        rows = math.ceil(n / c) * c
        dt = DTYPES[self.dtype]
        if "points" not in self.group:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.group.create_array("points", shape=(0, self.dim), chunks=(c, self.dim), dtype=dt, fill_value=0)
                self.group.create_array("weights", shape=(0,), chunks=(c,), dtype=dt, fill_value=0)
        s = self.row_end
        # every chunk is written, also one equal to the fill value, so that a missing chunk file
        # always means a damaged store (see otpipe.store.integrity)
        parr = self.group["points"].with_config({"write_empty_chunks": True})
        warr = self.group["weights"].with_config({"write_empty_chunks": True})
        parr.resize((s + rows, self.dim))
        warr.resize((s + rows,))
        # one chunk at a time: memory is the buffered shard plus one chunk (never a padded copy)
        P = np.zeros((c, self.dim), dtype=dt)
        W = np.zeros((c,), dtype=dt)
        r = 0  # rows of the current chunk filled
        chunk0 = s
        for p, w in self._buf:
            self.starts.append(chunk0 + r)
            k, done = p.shape[0], 0
            while done < k:
                take = min(c - r, k - done)
                P[r : r + take] = p[done : done + take]
                W[r : r + take] = w[done : done + take]
                r += take
                done += take
                if r == c:
                    parr[chunk0 : chunk0 + c] = P
                    warr[chunk0 : chunk0 + c] = W
                    chunk0 += c
                    r = 0
        if r:
            P[r:] = 0
            W[r:] = 0
            parr[chunk0 : chunk0 + c] = P
            warr[chunk0 : chunk0 + c] = W
        del P, W
        self.row_end = s + rows
        self.point_end += n
        self.shard_sizes.append(len(self._buf))
        self.shard_row_ends.append(self.row_end)
        self._buf = []
        self._buf_points = 0

    # -- finishing --------------------------------------------------------------------------
    def finish(self, old: dict | None = None) -> dict:
        """Flush, write the per-measure arrays and return the attrs to commit."""
        self._flush(final=True)
        g = self.group
        n_old = 0 if old is None else int(old["n_measures"])
        s_old = 0 if old is None else int(old["n_shards"])
        n_new = n_old + len(self.sizes)
        s_new = s_old + len(self.shard_sizes)
        p_old = 0 if old is None else int(old["n_points"])
        offsets = p_old + np.concatenate([[0], np.cumsum(np.asarray(self.sizes, dtype=np.int64))]).astype(np.int64)
        digests = np.frombuffer(b"".join(self.digests), dtype=np.uint8).reshape(-1, 32)
        m_old0 = 0 if old is None else int(g["shard_offsets"][s_old])
        shard_offsets = m_old0 + np.cumsum(np.asarray(self.shard_sizes, dtype=np.int64))
        shard_rows = np.asarray(self.shard_row_ends, dtype=np.int64)
        if old is None:
            _create_1d(g, "offsets", n_new + 1, np.int64)
            _create_1d(g, "starts", n_new, np.int64)
            _create_1d(g, "names", n_new, str)
            if self.has_labels:
                _create_1d(g, "labels", n_new, str)
            _create_1d(g, "digests", n_new, np.uint8, extra=(32,), extra_chunks=(32,))
            _create_1d(g, "shard_offsets", s_new + 1, np.int64)
            _create_1d(g, "shard_rows", s_new + 1, np.int64)
            g["offsets"][:] = offsets
            g["shard_offsets"][:] = np.concatenate([[0], shard_offsets])
            g["shard_rows"][:] = np.concatenate([[0], shard_rows])
        else:
            g["offsets"].resize((n_new + 1,))
            g["offsets"][n_old:] = offsets
            g["shard_offsets"].resize((s_new + 1,))
            g["shard_offsets"][s_old + 1 :] = shard_offsets
            g["shard_rows"].resize((s_new + 1,))
            g["shard_rows"][s_old + 1 :] = shard_rows
            for name in ("starts", "names", "digests") + (("labels",) if self.has_labels else ()):
                arr = g[name]
                arr.resize((n_new,) + arr.shape[1:])
        if n_new > n_old:
            g["starts"][n_old:] = np.asarray(self.starts, dtype=np.int64)
            g["names"][n_old:] = np.asarray(self.names, dtype=str)
            if self.has_labels:
                g["labels"][n_old:] = np.asarray(self.labels, dtype=str)
            g["digests"][n_old:] = digests
        all_digests = digests if old is None else np.concatenate([g["digests"][:n_old], digests])
        return {
            "dim": int(self.dim),
            "dtype": self.dtype,
            "n_measures": n_new,
            "n_points": int(self.point_end),
            "n_shards": s_new,
            "chunk_points": int(self.chunk_points),
            "shard_points": self.shard_points,
            "has_labels": bool(self.has_labels),
            "hash": _collection_hash(self.dim, self.dtype, bool(self.has_labels), all_digests),
        }


def _check_dtype(dtype: Any) -> str:
    key = str(np.dtype(dtype)) if dtype is not None else "float32"
    if key not in DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return key


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@locked("path", skip=())
def create(
    path: str | os.PathLike,
    measures: Iterable[Any],
    *,
    overwrite: bool = False,
    shard_points: int | None = DEFAULT_SHARD_POINTS,
    dtype: str = "float32",
    attrs: dict | None = None,
) -> Collection:
    """Write a new collection from an iterable of measures (streamed, one shard in memory).

    Parameters
    ----------
    path : path-like
        Target directory (a Zarr v3 group).
    measures : iterable
        :class:`Measure` objects, ``(points[, weights[, name[, label]]])`` tuples, dicts with
        keys ``points``/``weights``/``name``/``label``, or bare ``(N, D)`` arrays. Missing names
        become ``m000000``, ``m000001``, ...; either all measures have labels or none.
    overwrite : bool
        Replace an existing collection at ``path`` (only Zarr stores are ever replaced).
    shard_points : int, optional
        Target number of points per shard; default (``None``): as many as fit in
        :data:`CHUNK_BYTES` (memory is one shard, whatever ``D``). Chunks of ``points`` never
        exceed :data:`CHUNK_BYTES`: a larger shard spans several chunks.
    dtype : {"float32", "float64"}
        Storage dtype of coordinates and weights.
    attrs : dict, optional
        Extra group attributes (JSON-safe) written with the others, before ``complete``: a reader
        never sees the collection without them. They cannot replace the format's own attributes.

    Returns
    -------
    Collection
        The new collection, opened for reading.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    ValueError
        Bad measures (message names the measure or file), or no measures at all.
    """
    path = Path(path)
    dtype = _check_dtype(dtype)
    if shard_points is not None and int(shard_points) < 1:
        raise ValueError(f"shard_points must be >= 1, got {shard_points}")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{path}: already exists (use --overwrite)")
        check_replaceable(path)  # only what otpipe made (a user's folder or Zarr store stays)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)  # what a killed earlier run of this output left behind
    tmp = tmp_sibling(path)
    try:
        group = _open_group(tmp, "w")
        group.update_attributes(
            {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "complete": False, "created_by": f"otpipe {__version__}",
             **made_attrs("collection")}
        )
        b = _Builder(group, dtype=dtype, shard_points=None if shard_points is None else int(shard_points), store_path=str(path))
        for m in measures:
            b.add(m)
        if b.dim is None:
            raise ValueError(f"{path}: no measures to write")
        fmt = b.finish()
        now = _now()
        extra = {k: v for k, v in (attrs or {}).items() if k not in ("complete", "format", "format_version")}
        group.update_attributes({**extra, **fmt, "created": now, "modified": now})
        group.update_attributes({"complete": True})  # last
        if path.exists() or path.is_symlink():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:12]}"
            os.rename(path, old)
            os.rename(tmp, path)
            if old.is_dir() and not old.is_symlink():
                _remove_tree(old)
            else:
                old.unlink()
        else:
            os.rename(tmp, path)
    except BaseException:
        _remove_tree(tmp)
        raise
    return open(path)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def _read_attrs(path: Path) -> dict:
    import json

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such collection")
    meta = path / "zarr.json"
    if not path.is_dir() or not meta.exists():
        if (path / ".zgroup").exists() or (path / ".zarray").exists():
            raise ValueError(f"{path}: is a Zarr v2 store, not an otpipe collection (Zarr v3)")
        raise ValueError(f"{path}: not an otpipe collection (no Zarr v3 metadata)")
    try:
        doc = json.loads(meta.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable Zarr metadata ({exc})") from None
    if not isinstance(doc, dict) or doc.get("node_type") != "group":
        raise ValueError(f"{path}: is a Zarr array, not an otpipe collection" if isinstance(doc, dict) else f"{path}: unreadable Zarr metadata")
    attrs = doc.get("attributes", {}) or {}
    if not isinstance(attrs, dict):
        raise ValueError(f"{path}: not an otpipe collection (its attributes are not a mapping)")
    fmt = attrs.get("format")
    if fmt != FORMAT_NAME:
        raise ValueError(f"{path}: not an otpipe collection (format attribute is {fmt!r}, expected {FORMAT_NAME!r})")
    ver = attrs.get("format_version")
    if not isinstance(ver, int):
        raise ValueError(f"{path}: otpipe collection without a valid format_version ({ver!r})")
    if ver > FORMAT_VERSION:
        raise ValueError(
            f"{path}: collection format version {ver} is newer than this otpipe supports ({FORMAT_VERSION}); upgrade otpipe"
        )
    if ver < FORMAT_VERSION:
        raise ValueError(
            f"{path}: collection format version {ver} is older than this otpipe supports ({FORMAT_VERSION}); re-create it with `otpipe ingest`"
        )
    if attrs.get("complete") is not True:
        raise ValueError(
            f"{path}: incomplete collection (an ingest or append was interrupted or failed); re-create it"
        )
    return attrs


def open(path: str | os.PathLike) -> Collection:  # noqa: A001 - public API name
    """Open a complete collection for reading (and :meth:`Collection.append`).

    Parameters
    ----------
    path : str or os.PathLike
        The collection's Zarr store.

    Returns
    -------
    Collection
        The open collection (its structure checked, no point data read).

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    ValueError
        ``path`` is not an otpipe collection (foreign Zarr store, Zarr v2, other format
        version) or is incomplete; the message says which.
    """
    path = Path(path)
    attrs = _read_attrs(path)
    return Collection(path, attrs)


class _Reader:
    """Read access shared by :class:`Collection` and :class:`CollectionView`."""

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[Measure]:
        for i in self.indices:
            yield self._base[int(i)]


class Collection:
    """A collection of measures stored as Zarr (use :func:`open` or :func:`create`).

    ``len(c)``, ``c[i]`` / ``c[name]`` (a :class:`Measure`), iteration in storage order,
    :attr:`shards` (measure ranges, one Dask task each), :meth:`read_shard`, :meth:`select`,
    :meth:`verify`, :meth:`append`. Picklable: it pickles as its path, so Dask workers reopen it.

    Parameters
    ----------
    path : pathlib.Path
        The collection's Zarr store.
    attrs : dict
        Its group attributes, as read and checked by :func:`open`.
    """

    def __init__(self, path: Path, attrs: dict) -> None:
        self.path = Path(path)
        self._load(attrs)

    def _load(self, attrs: dict) -> None:
        from otpipe.store.integrity import check_structure

        self.attrs = dict(attrs)
        self._group = _open_group(self.path, "r")
        # arrays may be longer than the committed counts after an interrupted append: the check
        # slices them to the committed counts, and refuses a damaged store (no point data read)
        small = check_structure(self.path, self.attrs, self._group)
        self.offsets = small["offsets"]
        self.starts = small["starts"]
        self.shard_offsets = small["shard_offsets"]
        self.shard_rows = small["shard_rows"]
        self._names: np.ndarray | None = small["names"]
        self._labels: np.ndarray | None = None
        self._index: dict[str, int] | None = None
        self._sizes: np.ndarray | None = None
        self._cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def __reduce__(self):
        return (open, (str(self.path),))

    # -- metadata ---------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Dimension ``D`` of every point."""
        return int(self.attrs["dim"])

    @property
    def dtype(self) -> np.dtype:
        """Storage dtype of points and weights."""
        return np.dtype(self.attrs["dtype"])

    @property
    def n_points(self) -> int:
        """Total number of points (padding excluded)."""
        return int(self.attrs["n_points"])

    @property
    def content_hash(self) -> str:
        """Recorded content hash, ``"sha256:<hex>"``."""
        return str(self.attrs["hash"])

    @property
    def sizes(self) -> np.ndarray:
        """Number of points of each measure."""
        if self._sizes is None:
            self._sizes = np.diff(self.offsets)
        return self._sizes

    @property
    def names(self) -> np.ndarray:
        """Measure names (array of str)."""
        if self._names is None:
            self._names = strings(self._group["names"][: len(self)])
        return self._names

    @property
    def labels(self) -> np.ndarray | None:
        """Measure labels (array of str), or ``None`` for an unlabelled collection."""
        if not self.attrs.get("has_labels"):
            return None
        if self._labels is None:
            from otpipe.store.integrity import read_rows

            self._labels = strings(read_rows(self.path, self._group["labels"], "labels", 0, len(self)))
        return self._labels

    @property
    def shards(self) -> list[range]:
        """Measure index ranges of the shards, in order (schedule one task per shard)."""
        so = self.shard_offsets
        return [range(int(so[k]), int(so[k + 1])) for k in range(len(so) - 1)]

    @property
    def n_shards(self) -> int:
        """Number of shards."""
        return len(self.shard_offsets) - 1

    @property
    def indices(self) -> np.ndarray:
        """``arange(len(self))``."""
        return np.arange(len(self))

    @property
    def _base(self) -> Collection:
        return self

    def __len__(self) -> int:
        return int(self.attrs["n_measures"])

    def __repr__(self) -> str:
        return (
            f"Collection({str(self.path)!r}, n_measures={len(self)}, n_points={self.n_points}, "
            f"dim={self.dim}, dtype={self.dtype}, n_shards={self.n_shards})"
        )

    def index(self, name: str) -> int:
        """Position of the measure called ``name``.

        Parameters
        ----------
        name : str
            The measure's name.

        Returns
        -------
        int
            Its index in storage order.

        Raises
        ------
        KeyError
            If no measure has that name.
        """
        if self._index is None:
            self._index = {n: i for i, n in enumerate(self.names.tolist())}
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"{self.path}: no measure named {name!r}") from None

    def shard_of(self, i: int) -> int:
        """Shard holding measure ``i``.

        Parameters
        ----------
        i : int
            Index of the measure.

        Returns
        -------
        int
            Index of its shard.
        """
        return int(np.searchsorted(self.shard_offsets, i, side="right") - 1)

    # -- data -------------------------------------------------------------------------------
    def _shard_block(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        c = self._cache
        if c is not None and c[0] == k:
            return c[1], c[2]
        from otpipe.store.integrity import check_block, read_rows

        r0, r1 = int(self.shard_rows[k]), int(self.shard_rows[k + 1])
        P = read_rows(self.path, self._group["points"], "points", r0, r1, self._holders)
        W = read_rows(self.path, self._group["weights"], "weights", r0, r1, self._holders)
        i0, i1 = int(self.shard_offsets[k]), int(self.shard_offsets[k + 1])
        check_block(self.path, P, W, i0, self.starts[i0:i1] - r0, self.sizes[i0:i1], self.names[i0:i1])
        self._cache = (k, P, W)
        return P, W

    def _holders(self, r0: int, r1: int) -> list[str]:
        """The measures stored in rows ``r0:r1`` of ``points`` (for error messages)."""
        lo = int(np.searchsorted(self.starts + self.sizes, r0, side="right"))
        hi = int(np.searchsorted(self.starts, r1, side="left"))
        return [f"{str(self.names[i])!r} (#{i})" for i in range(lo, max(lo, hi))]

    def _measure_from_block(self, i: int, k: int, P: np.ndarray, W: np.ndarray) -> Measure:
        r = int(self.starts[i] - self.shard_rows[k])
        n = int(self.offsets[i + 1] - self.offsets[i])
        labels = self.labels
        return Measure(
            P[r : r + n].copy(),
            W[r : r + n].copy(),
            str(self.names[i]),
            None if labels is None else str(labels[i]),
        )

    def __getitem__(self, key: int | str) -> Measure:
        if isinstance(key, str):
            i = self.index(key)
        elif isinstance(key, (int, np.integer)):
            i = int(key)
            if i < 0:
                i += len(self)
            if not 0 <= i < len(self):
                raise IndexError(f"measure index {key} out of range for a collection of {len(self)}")
        else:
            raise TypeError(f"collection indices must be int or str, not {type(key).__name__}")
        k = self.shard_of(i)
        P, W = self._shard_block(k)
        return self._measure_from_block(i, k, P, W)

    def read_shard(self, k: int) -> list[Measure]:
        """All measures of shard ``k`` (reads exactly that shard's chunks).

        Parameters
        ----------
        k : int
            Index of the shard, ``0 <= k < n_shards``.

        Returns
        -------
        list of Measure
            The shard's measures in storage order.

        Raises
        ------
        IndexError
            If ``k`` is out of range.
        """
        if not 0 <= k < self.n_shards:
            raise IndexError(f"shard {k} out of range ({self.n_shards} shards)")
        P, W = self._shard_block(k)
        return [self._measure_from_block(i, k, P, W) for i in self.shards[k]]

    def __iter__(self) -> Iterator[Measure]:
        for k in range(self.n_shards):
            yield from self.read_shard(k)

    def select(self, label: str | Sequence[str] | None = None, names: Sequence[str] | None = None) -> CollectionView:
        """A view of the measures with the given label(s) and/or names, in storage order.

        Parameters
        ----------
        label : str or sequence of str, optional
            Keep the measures with this label (or one of these labels).
        names : sequence of str, optional
            Keep the measures with these names.

        Returns
        -------
        CollectionView
            The selected measures (both filters apply when both are given).

        Raises
        ------
        ValueError
            If ``label`` is given and the collection has no labels.
        KeyError
            If a name is not in the collection.
        """
        mask = np.ones(len(self), dtype=bool)
        if label is not None:
            labels = self.labels
            if labels is None:
                raise ValueError(f"{self.path}: collection has no labels")
            wanted = [label] if isinstance(label, str) else [str(x) for x in label]
            mask &= np.isin(labels, wanted)
        if names is not None:
            idx = np.asarray([self.index(n) for n in names], dtype=np.int64)
            m2 = np.zeros(len(self), dtype=bool)
            m2[idx] = True
            mask &= m2
        return CollectionView(self, np.flatnonzero(mask))

    # -- integrity --------------------------------------------------------------------------
    def verify(self, raise_on_error: bool = False) -> bool:
        """Recompute every measure digest and the content hash from the stored data.

        Reads shard by shard (bounded memory).

        Parameters
        ----------
        raise_on_error : bool, default False
            Raise on a mismatch instead of returning ``False``.

        Returns
        -------
        bool
            ``True`` when everything matches.

        Raises
        ------
        ValueError
            With ``raise_on_error``, on a mismatch, naming the first bad measure.
        """
        from otpipe.store.integrity import read_rows

        stored = np.asarray(read_rows(self.path, self._group["digests"], "digests", 0, len(self)), dtype=np.uint8)
        problem = None
        digests = np.empty_like(stored)
        for k in range(self.n_shards):
            for i, m in zip(self.shards[k], self.read_shard(k)):
                d = np.frombuffer(measure_digest(m.name, m.label, m.points, m.weights), dtype=np.uint8)
                digests[i] = d
                if problem is None and not np.array_equal(d, stored[i]):
                    problem = f"{self.path}: measure {m.name!r} (#{i}) does not match its recorded digest"
        self._cache = None
        h = _collection_hash(self.dim, str(self.dtype), bool(self.attrs.get("has_labels")), digests)
        if problem is None and h != self.content_hash:
            problem = f"{self.path}: content hash {h} does not match the recorded {self.content_hash}"
        if problem is not None and raise_on_error:
            raise ValueError(problem)
        return problem is None

    def info(self) -> dict:
        """Summary for ``otpipe info``: counts, dimension, sizes, labels, dtype, hash, chunking.

        Returns
        -------
        dict
            JSON-ready fields: ``path``, ``format``, ``n_measures``, ``n_points``, ``dim``, ``dtype``,
            ``points_per_measure`` (min, median, max), ``labels`` (counts per label or ``None``), ``hash``, the shard
            and chunk sizes, ``data_bytes`` and ``stored_bytes``, ``complete`` and the creation attributes.
        """
        sizes = self.sizes
        labels = self.labels
        label_counts = None
        if labels is not None:
            u, c = np.unique(labels, return_counts=True)
            label_counts = {str(a): int(b) for a, b in zip(u, c)}
        stored = 0
        for root, _dirs, files in os.walk(self.path):
            for f in files:
                try:
                    stored += os.path.getsize(os.path.join(root, f))
                except OSError:
                    pass
        a = self.attrs
        return {
            "path": str(self.path),
            "format": a["format"],
            "format_version": a["format_version"],
            "n_measures": len(self),
            "n_points": self.n_points,
            "dim": self.dim,
            "dtype": str(self.dtype),
            "points_per_measure": {
                "min": int(sizes.min()) if len(sizes) else 0,
                "median": float(np.median(sizes)) if len(sizes) else 0.0,
                "max": int(sizes.max()) if len(sizes) else 0,
            },
            "labels": label_counts,
            "hash": self.content_hash,
            "n_shards": self.n_shards,
            "shard_points": int(a["shard_points"]),
            "chunk_points": int(a["chunk_points"]),
            "n_rows": int(self.shard_rows[-1]),
            "data_bytes": int(self.n_points * (self.dim + 1) * self.dtype.itemsize),
            "stored_bytes": stored,
            "complete": bool(a["complete"]),
            "created_by": a.get("created_by"),
            "created": a.get("created"),
            "modified": a.get("modified"),
        }

    # -- writing ----------------------------------------------------------------------------
    @locked(lambda a: a["self"].path, skip=())
    def append(self, measures: Iterable[Any], dtype: str | None = None) -> Collection:
        """Append measures in new shards; all-or-nothing.

        Measures must have the collection's dimension and labelling and new unique names; they
        are cast to the collection's dtype (``dtype``, if given, must equal it). On any error the
        collection is restored as it was and the error re-raised. Holds the collection's lock.

        Parameters
        ----------
        measures : iterable
            :class:`Measure` objects (or what :func:`create` accepts as measures).
        dtype : str, optional
            The storage dtype, checked against the collection's.

        Returns
        -------
        Collection
            ``self``, reloaded.

        Raises
        ------
        ValueError
            On a dtype other than the collection's, or a measure that does not fit (dimension, labels, duplicate
            name, invalid values).
        """
        attrs = _read_attrs(self.path)
        remove_stale(self.path)
        if dtype is not None and _check_dtype(dtype) != attrs["dtype"]:
            raise ValueError(f"{self.path}: collection dtype is {attrs['dtype']}, cannot append as {_check_dtype(dtype)}")
        g = _open_group(self.path, "r+")
        names = strings(g["names"][: attrs["n_measures"]]).tolist()
        shapes = {k: g[k].shape for k in _DATA_ARRAYS + _MEASURE_ARRAYS + _SHARD_ARRAYS if k in g}
        old_attrs = dict(g.attrs)
        try:
            b = _Builder(
                g,
                dtype=attrs["dtype"],
                shard_points=int(attrs["shard_points"]),
                dim=int(attrs["dim"]),
                has_labels=bool(attrs["has_labels"]),
                chunk_points=int(attrs["chunk_points"]),
                row_end=int(g["shard_rows"][attrs["n_shards"]]),
                point_end=int(attrs["n_points"]),
                names=names,
                store_path=str(self.path),
            )
            for m in measures:
                b.add(m)
            if not b.sizes:
                return self
            new = b.finish(old=attrs)
            # the commit: one atomic write of the group metadata (not attrs.update, which
            # rewrites zarr.json once per key, so that a reader could see half the new counts)
            g.update_attributes({**new, "modified": _now()})
        except BaseException:
            for k, shape in shapes.items():
                try:
                    g[k].resize(shape)
                except Exception:  # noqa: BLE001 - best effort, the attrs below decide
                    pass
            g.attrs.put(old_attrs)
            raise
        self._load(_read_attrs(self.path))
        return self


class CollectionView(_Reader):
    """A subset of a :class:`Collection` (from :meth:`Collection.select`), in storage order.

    Parameters
    ----------
    base : Collection
        The collection.
    indices : numpy.ndarray
        Indices of the selected measures, in storage order.
    """

    def __init__(self, base: Collection, indices: np.ndarray) -> None:
        self._base = base
        self.indices = np.asarray(indices, dtype=np.int64)

    @property
    def names(self) -> np.ndarray:
        """Names of the selected measures."""
        return self._base.names[self.indices]

    @property
    def labels(self) -> np.ndarray | None:
        """Labels of the selected measures (or ``None``)."""
        lab = self._base.labels
        return None if lab is None else lab[self.indices]

    def __getitem__(self, key: int | str) -> Measure:
        if isinstance(key, str):
            i = self._base.index(key)
            if i not in set(self.indices.tolist()):
                raise KeyError(f"measure {key!r} is not in this selection")
            return self._base[i]
        return self._base[int(self.indices[key])]

    def __repr__(self) -> str:
        return f"CollectionView({str(self._base.path)!r}, n_measures={len(self)})"
