"""File readers: one function per input format, each returning ``(points, weights)``.

Formats
-------
``npy``
    A 2-D array ``(N, D)`` (a 1-D array is ``(N, 1)``); loaded with ``allow_pickle=False``.
``npz``
    Arrays ``points`` (or ``x``, ``X``, ``positions``, ``coords``) and optionally ``weights``
    (or ``a``, ``w``, ``mass``); an archive with a single array is the points. Never pickles.
``csv`` (``.csv``, ``.tsv``, ``.txt``) and ``xyz`` (``.xyz``, ``.pts``)
    UTF-8 text (a leading byte-order mark is ignored), numeric columns, delimiter detected from
    the first row (comma, semicolon, tab or whitespace), ``"``-quoted fields, ``#`` comments and
    blank lines skipped. The first row is a *header* (column names, usable as ``weight_column`` /
    ``columns``) only when none of its fields is a number or a missing-value marker (``NA``,
    ``N/A``, ``null``, ``none``, ``?``, ``-`` or an empty field), and it must have as many fields
    as the data rows; a first row mixing names and numbers (``NA,2``, ``"1,5",2``) is refused
    like any other row that does not parse, with its line number (lines of the file, from 1). A
    header is reported in :func:`read_file`'s ``notes`` (and in ``otpipe ingest``'s summary).
``ply``
    Point clouds and mesh vertices (the ``vertex`` element; ``x``, ``y`` and, if present, ``z``);
    faces are ignored. Read with ``plyfile``.
``image`` (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.tif``, ``.tiff``, ``.gif``)
    A density on the pixel grid: grey-level intensities (colour images are converted to luma by
    Pillow, 16-bit and float images keep their values) become weights, pixel centres become
    points, ``x = (j + 1/2) k`` (column) and ``y = (h - i - 1/2) k`` (row, pointing up) for a
    downsampling factor ``k``; zero-intensity pixels are dropped. Options: ``invert``
    (``vmax - v``, ``vmax`` = 255, 65535 or the image maximum), ``threshold`` (values below it
    become 0) and ``downsample`` (sum over ``k x k`` blocks, cropping the ragged edge: the mass
    is preserved up to the crop). Images with an alpha channel (RGBA, LA, palette images with a
    transparent colour) weigh each pixel by its opacity: ``weight = intensity x alpha / 255``,
    after ``invert`` and ``threshold`` (which act on the intensity), so transparent pixels carry
    no mass whatever their colour; an image that is transparent everywhere is refused.

For tabular formats (npy, npz points, csv, xyz) ``weight_column`` picks a column (index, negative
index, or header name) as weights, the others being coordinates unless ``columns`` selects them;
for PLY both are vertex property names. Every reader raises ``ValueError("<file>: <problem>")``;
a message quotes at most the first 40 characters of one offending token of the file, never a
line of it (the file may be anything a symbolic link points to).

Only regular files are read (a FIFO, socket or device gets an error naming it; see
:mod:`otpipe.store._files`), and each reader first estimates the memory the file needs (exactly
from the header for ``.npy``, ``.npz`` (uncompressed sizes: no zip bomb) and images, from the size
for text and PLY) and refuses files beyond :func:`otpipe.store._files.read_limit`.
"""
from __future__ import annotations

import csv
import io
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from otpipe._text import escape
from otpipe.store._files import check_size, open_regular, shown

__all__ = ["ReaderOptions", "FORMATS", "EXTENSIONS", "format_of", "read_file", "quote"]

#: format -> file extensions (lower case)
FORMATS: dict[str, tuple[str, ...]] = {
    "npy": (".npy",),
    "npz": (".npz",),
    "csv": (".csv", ".tsv", ".txt"),
    "xyz": (".xyz", ".pts"),
    "ply": (".ply",),
    "image": (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif"),
}
#: extension -> format
EXTENSIONS: dict[str, str] = {ext: fmt for fmt, exts in FORMATS.items() for ext in exts}
#: names accepted by ``--format`` that mean another format
ALIASES = {"png": "image", "jpg": "image", "jpeg": "image", "txt": "csv"}

_POINT_KEYS = ("points", "x", "X", "positions", "coords")
_WEIGHT_KEYS = ("weights", "a", "w", "mass")


@dataclass(frozen=True)
class ReaderOptions:
    """Options shared by the readers.

    Parameters
    ----------
    weight_column : str or int, optional
        Column (tabular formats) or vertex property (PLY) holding the weights.
    columns : sequence of str or int, optional
        Coordinate columns / properties (default: all but the weight column; PLY: x, y[, z]).
    invert, threshold, downsample
        Image options (see the module docstring).
    """

    weight_column: str | int | None = None
    columns: Sequence[str | int] | None = None
    invert: bool = False
    threshold: float | None = None
    downsample: int = 1


def format_of(path: str | os.PathLike, fmt: str = "auto") -> str | None:
    """Canonical format of ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    fmt : str, default "auto"
        ``"auto"`` (by extension) or a format name or alias, which wins over the extension.

    Returns
    -------
    str or None
        The canonical format; ``None`` when ``fmt="auto"`` and the extension is unknown.

    Raises
    ------
    ValueError
        On an unknown ``fmt``.
    """
    if fmt != "auto":
        fmt = ALIASES.get(fmt, fmt)
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r} (choose from auto, {', '.join(sorted(set(FORMATS) | set(ALIASES)))})")
        return fmt
    return EXTENSIONS.get(Path(path).suffix.lower())


#: most characters of file content a message quotes
QUOTE_CHARS = 40


def quote(token: str, limit: int = QUOTE_CHARS) -> str:
    """``token`` (file content) for a message: its first ``limit`` characters, escaped, in quotes.

    Parameters
    ----------
    token : str
        The content to quote.
    limit : int, default QUOTE_CHARS
        Most characters shown (longer tokens are cut with an ellipsis).

    Returns
    -------
    str
        The quoted text, one line.
    """
    t = escape(token[:limit])
    return f"'{t}...'" if len(token) > limit else f"'{t}'"


#: quoted runs in a library's message longer than QUOTE_CHARS: cut (they may be file content)
_QUOTED = re.compile(r"(['\"])([^'\"]{" + str(QUOTE_CHARS) + r"})[^'\"]*\1")


def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    msg = _QUOTED.sub(lambda m: f"{m.group(1)}{m.group(2)}...{m.group(1)}", msg)
    return escape(msg if len(msg) <= 300 else msg[:297] + "...")


def read_file(
    path: str | os.PathLike,
    fmt: str = "auto",
    options: ReaderOptions | None = None,
    notes: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one file as a measure.

    Parameters
    ----------
    path : path-like
        The file (a regular file, or a symbolic link to one).
    fmt : str
        ``auto`` (by extension) or a format name.
    options : ReaderOptions, optional
        Reader options.
    notes : list of str, optional
        Receives one line (without the path) per remark on how the file was read, such as a
        text table's header line (``"line 1 read as a header: 'x', 'y'"``).

    Returns
    -------
    (points, weights) : numpy arrays ``(N, D)`` and ``(N,)``, or ``weights=None`` (uniform)
        Not yet validated (see :func:`otpipe.store.collection.validate_measure`).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist (or is a broken symbolic link).
    ValueError
        ``"<path>: <problem>"`` for unknown formats, files that are not regular files (FIFOs,
        devices, sockets), files too large for memory, and unreadable, corrupt or malformed files.
    """
    options = options or ReaderOptions()
    path = Path(path)
    f = format_of(path, fmt)
    if f is None:
        raise ValueError(f"{shown(path)}: unknown file type {shown(path.suffix)!r} (use --format)")
    reader: Callable = _READERS[f]
    fh, st = open_regular(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return reader(fh, st.st_size, options, notes if notes is not None else [])
    except _ParseError as exc:
        raise ValueError(f"{shown(path)}: cannot read as {f}: {exc}") from None
    except _FileError as exc:
        raise ValueError(f"{shown(path)}: {exc}") from None
    except (FileNotFoundError, PermissionError) as exc:
        raise type(exc)(f"{shown(path)}: {exc.strerror or _one_line(exc)}") from None
    except MemoryError:
        raise ValueError(f"{shown(path)}: out of memory while reading it as {f}") from None
    except Exception as exc:  # noqa: BLE001 - any library failure means an unreadable file
        raise ValueError(f"{shown(path)}: cannot read as {f}: {_one_line(exc)}") from None
    finally:
        fh.close()


class _FileError(Exception):
    """A problem with the file's content (message without the path)."""


class _ParseError(_FileError):
    """Content that does not parse as the format (message without the path and the format)."""


# --------------------------------------------------------------------------------------------
# tabular
# --------------------------------------------------------------------------------------------
def _column_index(col: str | int, header: list[str] | None, ncols: int, what: str) -> int:
    if isinstance(col, str) and re.fullmatch(r"-?\d+", col.strip()):
        col = int(col)
    if isinstance(col, str):
        if header is None or col not in header:
            raise _FileError(f"no {what} column named {col!r} (columns: {header if header else 'no header'})")
        return header.index(col)
    if not -ncols <= col < ncols:
        raise _FileError(f"{what} column {col} out of range for {ncols} columns")
    return col % ncols


def _split_table(table: np.ndarray, opts: ReaderOptions, header: list[str] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    if table.ndim == 1:
        table = table[:, None]
    if table.ndim != 2:
        raise _FileError(f"expected a 2-D array (N, D), got shape {table.shape}")
    ncols = table.shape[1]
    wcol = None if opts.weight_column is None else _column_index(opts.weight_column, header, ncols, "weight")
    if opts.columns:
        cols = [_column_index(c, header, ncols, "coordinate") for c in opts.columns]
    else:
        cols = [j for j in range(ncols) if j != wcol]
    if not cols:
        raise _FileError("no coordinate columns left besides the weight column")
    points = table[:, cols]
    weights = None if wcol is None else table[:, wcol]
    return points, weights


def _check_array(a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype == object or a.dtype.kind not in "iuf" or a.dtype.names:
        raise _FileError(f"{what} must be a numeric array, got dtype {a.dtype}")
    return a


def _need(nbytes: float, what: str) -> None:
    try:
        check_size(nbytes, what)
    except ValueError as exc:
        raise _FileError(str(exc)) from None


def _npy_bytes(fh: BinaryIO) -> tuple[int, str]:
    """Bytes of the array in a ``.npy`` stream from its header (the stream is rewound)."""
    pos = fh.tell()
    try:
        version = np.lib.format.read_magic(fh)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            return 0, ""
        shape, _fortran, dtype = read(fh)  # the header only
    except Exception:  # noqa: BLE001 - np.load reports a corrupt header properly
        return 0, ""
    finally:
        fh.seek(pos)
    n = int(np.prod(shape, dtype=np.float64)) if shape else 1
    return n * dtype.itemsize, f"a {shape} {dtype} array"


def _read_npy(fh: BinaryIO, size: int, opts: ReaderOptions, notes: list[str]):
    nbytes, what = _npy_bytes(fh)
    _need(2 * nbytes, what)  # the array and one cast copy
    a = np.load(fh, allow_pickle=False)
    if not isinstance(a, np.ndarray):
        raise _FileError("not a single .npy array")
    return _split_table(_check_array(a, "the array"), opts)


def _read_npz(fh: BinaryIO, size: int, opts: ReaderOptions, notes: list[str]):
    import zipfile

    with zipfile.ZipFile(fh) as zf:  # the uncompressed sizes, before inflating anything
        total = sum(i.file_size for i in zf.infolist())
    fh.seek(0)
    _need(2 * total, f"{total} bytes uncompressed")
    with np.load(fh, allow_pickle=False) as z:
        keys = list(z.files)
        pkey = next((k for k in _POINT_KEYS if k in keys), None)
        if pkey is None:
            if len(keys) != 1:
                raise _FileError(f"no points array (expected one of {list(_POINT_KEYS)}; found {keys})")
            pkey = keys[0]
        wkey = next((k for k in _WEIGHT_KEYS if k in keys), None)
        table = _check_array(z[pkey], f"array {pkey!r}")
        weights = None if wkey is None else _check_array(z[wkey], f"array {wkey!r}")
    if weights is not None:
        if opts.weight_column is not None:
            raise _FileError(f"has a {wkey!r} array and a weight column was also requested")
        if table.ndim == 1:
            table = table[:, None]
        points = table if not opts.columns else _split_table(table, opts)[0]
        return points, weights.reshape(-1) if weights.ndim == 2 and 1 in weights.shape else weights
    return _split_table(table, opts)


def _text(fh: BinaryIO) -> io.TextIOWrapper:
    """The file as UTF-8 text from its start; a leading byte-order mark is not part of the text."""
    fh.seek(0)
    return io.TextIOWrapper(fh, encoding="utf-8-sig", errors="strict", newline=None)


#: fields that mean "no value" (compared in lower case): never column names, never numbers
_MISSING = frozenset({"", "na", "n/a", "#n/a", "nan", "null", "none", "nil", "?", "-", "--", "missing"})
_QUOTE = '"'


def _tokens(s: str, delim: str | None) -> list[str]:
    """Fields of one line (comment already removed) as ``np.loadtxt`` splits them, unquoted and stripped."""
    if delim is None:
        return [t.strip(_QUOTE) for t in s.split()]
    row = next(csv.reader([s], delimiter=delim, quotechar=_QUOTE, skipinitialspace=True), [])
    return [t.strip() for t in row]


def _is_number(t: str) -> bool:
    if "_" in t:  # float() reads 1_000, np.loadtxt does not
        return False
    try:
        float(t)
    except ValueError:
        return False
    return True


def _delimiter(s: str) -> str | None:
    for d in (",", ";", "\t"):
        if d in s:
            return d
    return None


@dataclass(frozen=True)
class _Layout:
    """What :func:`_sniff` found: delimiter, header (names and line number), lines before the data."""

    delim: str | None
    header: list[str] | None
    header_line: int
    skip: int


def _sniff(fh: BinaryIO) -> _Layout:
    """Delimiter, header and number of lines to skip of a text table (see the module docstring).

    Raises ``_ParseError`` naming the line when the first row mixes numbers and other fields.
    """
    text = _text(fh)
    try:
        for n, line in enumerate(text, 1):
            s = line.split("#", 1)[0].strip()
            if not s:
                continue
            delim = _delimiter(s)
            tokens = _tokens(s, delim)
            numeric = [_is_number(t) for t in tokens]
            if all(numeric):
                return _Layout(delim, None, 0, n - 1)
            missing = [k for k, t in enumerate(tokens) if t.lower() in _MISSING and not numeric[k]]
            if not any(numeric) and not missing:
                return _Layout(delim, tokens, n, n)
            k = missing[0] if missing else numeric.index(False)
            why = "is a missing value" if missing else "is not a number"
            raise _ParseError(
                f"line {n}, field {k + 1}: {quote(tokens[k])} {why} (a header line has only column names, "
                "a data line only numbers)"
            )
        return _Layout(None, None, 0, 0)
    finally:
        text.detach()


def _first_bad_line(fh: BinaryIO, lay: _Layout) -> str | None:
    """Where a text table stops parsing (line number and the offending token), or ``None``."""
    text = _text(fh)
    try:
        ncols, first = (len(lay.header), lay.header_line) if lay.header else (None, 0)
        for n, line in enumerate(text, 1):
            if n <= lay.skip:
                continue
            s = line.split("#", 1)[0].strip()
            if not s:
                continue
            tokens = _tokens(s, lay.delim)
            for k, t in enumerate(tokens):
                if not _is_number(t):
                    why = "is a missing value" if t.lower() in _MISSING else "is not a number"
                    return f"line {n}, field {k + 1}: {quote(t)} {why}"
            if ncols is None:
                ncols, first = len(tokens), n
            elif len(tokens) != ncols:
                return f"line {n} has {len(tokens)} fields, line {first} has {ncols}"
        return None
    finally:
        text.detach()


#: bytes of float64 table per byte of text, at worst ("1,2,3\n": 2 characters per 8-byte value)
_TEXT_FACTOR = 4


def _read_text(fh: BinaryIO, size: int, opts: ReaderOptions, notes: list[str]):
    _need(_TEXT_FACTOR * size, f"a {size}-byte text table, as float64")
    lay = _sniff(fh)
    text = _text(fh)
    failed: ValueError | None = None
    try:
        table = np.loadtxt(text, delimiter=lay.delim, skiprows=lay.skip, comments="#", ndmin=2, dtype=np.float64,
                           quotechar=_QUOTE)
    except ValueError as exc:
        failed = exc
    finally:
        text.detach()
    if failed is not None:  # say where, quoting one token at most (never numpy's message: a whole field)
        where = _first_bad_line(fh, lay)
        if where is None:
            at = re.search(r"at row (\d+), column (\d+)", str(failed))
            where = "not a table of numbers" + (f" (data row {int(at[1]) + 1}, column {at[2]})" if at else "")
        raise _ParseError(where)
    if table.size == 0:
        if lay.header is not None:
            raise _ParseError(
                f"no rows of numbers: line {lay.header_line} ({', '.join(quote(t) for t in lay.header[:3])}"
                f"{', ...' if len(lay.header) > 3 else ''}) is not numeric and no numeric line follows it"
            )
        raise _FileError("empty measure (no points)")
    if lay.header is not None:
        if len(lay.header) != table.shape[1]:
            raise _ParseError(
                f"line {lay.header_line} (the header) has {len(lay.header)} fields, the data lines {table.shape[1]}"
            )
        shown_names = ", ".join(quote(t) for t in lay.header[:8]) + (", ..." if len(lay.header) > 8 else "")
        notes.append(f"line {lay.header_line} read as a header: {shown_names}")
    return _split_table(table, opts, lay.header)


# --------------------------------------------------------------------------------------------
# PLY
# --------------------------------------------------------------------------------------------
def _read_ply(fh: BinaryIO, size: int, opts: ReaderOptions, notes: list[str]):
    from plyfile import PlyData

    _need(_TEXT_FACTOR * size, f"a {size}-byte PLY file")
    ply = PlyData.read(fh)
    try:
        vertex = ply["vertex"]
    except KeyError:
        raise _FileError(f"no 'vertex' element (elements: {[e.name for e in ply.elements]})") from None
    props = [p.name for p in vertex.properties]
    if opts.columns:
        cols = [str(c) for c in opts.columns]
    else:
        cols = [c for c in ("x", "y", "z") if c in props]
        if "x" not in cols or "y" not in cols:
            raise _FileError(f"vertex element has no x/y properties (properties: {props})")
    for c in cols:
        if c not in props:
            raise _FileError(f"no vertex property {c!r} (properties: {props})")
    data = vertex.data
    if len(data) == 0:
        raise _FileError("empty measure (no points)")
    points = np.stack([np.asarray(data[c]) for c in cols], axis=1)
    weights = None
    if opts.weight_column is not None:
        w = str(opts.weight_column)
        if w not in props:
            raise _FileError(f"no vertex property {w!r} for the weights (properties: {props})")
        weights = np.asarray(data[w])
    return points, weights


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _alpha(im, raw: np.ndarray) -> np.ndarray | None:
    """Opacity ``(H, W)`` in ``[0, 255]`` of an image with transparency data, else ``None``."""
    if not getattr(im, "has_transparency_data", "A" in im.getbands() or "transparency" in im.info):
        return None
    if im.mode in _WIDE_MODES:  # only a transparent colour key (PNG tRNS) exists for these
        key = im.info.get("transparency")
        return None if not isinstance(key, (int, float)) else np.where(raw == key, 0.0, 255.0)
    alpha = np.asarray(im.convert("RGBA").getchannel("A"), dtype=np.float64)
    return None if (alpha == 255).all() else alpha


def image_array(path: Path | BinaryIO) -> tuple[np.ndarray, float, np.ndarray | None]:
    """Grey-level intensities of an image as float64 ``(H, W)``, the nominal maximum value, and its opacity.

    The opacity is ``None`` for an image without transparency (or one fully opaque), else the
    alpha channel (or the transparent colour key as 0/255) as float64 ``(H, W)`` in ``[0, 255]``.
    """
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        _need(6 * 8 * w * h, f"a {w} x {h} image as float64 points, weights and opacity")  # header only so far
        im.load()
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
            a, vmax = np.asarray(im, dtype=np.float64), 65535.0
        elif mode in ("I", "F"):
            a = np.asarray(im, dtype=np.float64)
            vmax = float(a.max()) if a.size else 0.0
        elif mode == "L":
            a, vmax = np.asarray(im, dtype=np.float64), 255.0
        else:  # colour (luma from R, G, B), LA, palette: the alpha channel is read apart
            a, vmax = np.asarray(im.convert("L"), dtype=np.float64), 255.0
        alpha = _alpha(im, a) if a.ndim == 2 else None
    if a.ndim != 2:
        raise _FileError(f"unsupported image layout (shape {a.shape}, mode {mode})")
    return a, vmax, alpha


def image_to_measure(
    a: np.ndarray,
    vmax: float,
    *,
    invert: bool = False,
    threshold: float | None = None,
    downsample: int = 1,
    alpha: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn an intensity array into ``(points, weights)`` (see the module docstring).

    ``alpha`` (opacity in ``[0, 255]``, same shape as ``a``) multiplies the intensity by
    ``alpha / 255`` after ``invert`` and ``threshold`` and before ``downsample``.
    """
    if invert:
        a = vmax - a
    if threshold is not None:
        a = np.where(a >= threshold, a, 0.0)
    if alpha is not None:
        a = a * (np.asarray(alpha, dtype=np.float64) / 255.0)
    k = int(downsample)
    if k < 1:
        raise _FileError(f"downsample factor must be >= 1, got {k}")
    if k > 1:
        h, w = a.shape[0] // k, a.shape[1] // k
        if h == 0 or w == 0:
            raise _FileError(f"image of shape {a.shape} is smaller than the downsample factor {k}")
        a = a[: h * k, : w * k].reshape(h, k, w, k).sum(axis=(1, 3))
    h = a.shape[0]
    i, j = np.nonzero(a > 0)
    points = np.stack([(j + 0.5) * k, (h - i - 0.5) * k], axis=1).astype(np.float64)
    return points, a[i, j]


def _read_image(fh: BinaryIO, size: int, opts: ReaderOptions, notes: list[str]):
    a, vmax, alpha = image_array(fh)
    if alpha is not None and not (alpha > 0).any():
        raise _FileError("fully transparent image (alpha is 0 at every pixel): no mass to ingest")
    points, weights = image_to_measure(a, vmax, invert=opts.invert, threshold=opts.threshold,
                                       downsample=opts.downsample, alpha=alpha)
    if points.shape[0] == 0:
        what = "positive intensity" if alpha is None else "positive intensity and opacity"
        raise _FileError(f"empty measure (no pixel with {what})")
    if alpha is not None:
        notes.append(f"alpha channel used: weight = intensity x alpha/255 ({int((alpha == 0).sum())} transparent pixels)")
    return points, weights


_READERS: dict[str, Callable] = {
    "npy": _read_npy,
    "npz": _read_npz,
    "csv": _read_text,
    "xyz": _read_text,
    "ply": _read_ply,
    "image": _read_image,
}
