"""The result store of a pairwise run: an xarray Dataset in Zarr, written tile by tile.

Layout (``docs/storage.md``): dims ``("source", "target")`` with the measure names as
coordinates (``source_label``/``target_label`` when labelled); ``divergence``, ``ot`` (the cross
term ``OT_eps(a_i, b_j)``, Sinkhorn only), ``n_iter``, ``marginal_error`` chunked by the tile
size, so each tile is a region write of whole chunks (``array[r0:r1, c0:c1] = tile``; the
template itself is written by xarray with ``compute=False``); ``self_source``/``self_target`` (the self
terms ``OT_eps(a_i, a_i)``); the checkpoints ``tile_done (tile,)`` and ``self_done_source``/
``self_done_target`` (one chunk per element). A tile's data is written before its marker, so a
killed run never marks a tile it did not write. ``attrs["complete"]`` turns true only after
every tile is written; the parameters, their ``fingerprint``, library versions and the input
content hashes are in the attrs from the start.

Every result store carries one type tag, the attribute :data:`TAG` (``otpipe_result``) with the name of
the feature that wrote it (:data:`TYPES`: ``distances``, ``two_sample``, ``barycenter``, ``complexity``).
Stores written before that tag existed carry the attributes of :data:`LEGACY_TAGS` and still read the
same. The type of any otpipe store (results and collections) is read by :func:`result_type` only.
"""
from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from otpipe._made import check_replaceable, made_attrs

__all__ = ["TAG", "TYPES", "LEGACY_TAGS", "BOOKKEEPING", "tag", "stored_attrs", "result_type", "pairwise_attrs",
           "create", "load_state", "write_tile", "write_self", "mark_complete", "open_result", "is_result", "describe",
           "plain_strings", "plain_string_coords"]

_MATRIX_VARS = {"divergence": np.float64, "ot": np.float64, "n_iter": np.int64, "marginal_error": np.float64}


#: the attribute that names a result's type (one of :data:`TYPES`), written by every result store
TAG = "otpipe_result"
#: the result types: the features' names (``otpipe distances``, ``two-sample``, ``barycenter``, ``complexity``)
TYPES = ("distances", "two_sample", "barycenter", "complexity")
#: how stores written before :data:`TAG` existed are tagged, ``{type: (attribute, value)}``: read, never written
LEGACY_TAGS = {
    "distances": ("format", "otpipe.pairwise"),
    "two_sample": ("kind", "otpipe.tools.two_sample"),
}
_COLLECTION = "otpipe.collection"


def tag(kind: str) -> dict:
    """The type tag of a result store, to merge into its attrs.

    Parameters
    ----------
    kind : str
        The result type, one of :data:`TYPES`.

    Returns
    -------
    dict
        ``{"otpipe_result": kind}``.
    """
    if kind not in TYPES:
        raise ValueError(f"unknown result type {kind!r}: use one of {', '.join(TYPES)}")
    return {TAG: kind}


def stored_attrs(path) -> dict | None:
    """The attrs of the Zarr group at ``path`` (``None`` when there is none).

    Parameters
    ----------
    path : str or os.PathLike
        A folder that may hold a Zarr v3 group.

    Returns
    -------
    dict or None
        The group's attributes, read from its ``zarr.json`` (``{}`` when it has none); ``None`` when there is no
        readable ``zarr.json``.
    """
    try:
        return json.loads((Path(path) / "zarr.json").read_text()).get("attributes") or {}
    except (OSError, ValueError, AttributeError):
        return None


def result_type(attrs: dict | None) -> str | None:
    """The type of an otpipe store, read from its attrs (the only reader of the type tags).

    Parameters
    ----------
    attrs : dict or None
        The group attributes of the store (:func:`stored_attrs`).

    Returns
    -------
    str or None
        A result type of :data:`TYPES` (``"distances"``, ``"two_sample"``, ``"barycenter"``,
        ``"complexity"``; ``attrs["complete"]`` tells whether the run finished: an unfinished barycenter
        run is a checkpoint store, a finished one the collection of barycenters), ``"collection"`` for a
        collection of measures, ``None`` for anything else. Stores of earlier versions read by their
        :data:`LEGACY_TAGS` (and a collection with ``barycenter`` attrs as a barycenter result).
    """
    if not attrs:
        return None
    kind = attrs.get(TAG)
    if kind in TYPES:
        return kind
    if attrs.get("format") == _COLLECTION:
        return "barycenter" if "barycenter" in attrs else "collection"
    for kind, (key, value) in LEGACY_TAGS.items():
        if attrs.get(key) == value:
            return kind
    return None


def is_result(path) -> bool:
    """Whether ``path`` holds an otpipe distance-matrix result (complete or not).

    Parameters
    ----------
    path : str or os.PathLike
        The store.

    Returns
    -------
    bool
        True when its type (:func:`result_type`) is ``"distances"``.
    """
    return result_type(stored_attrs(path)) == "distances"


def pairwise_attrs(path) -> dict:
    """The attrs of the pairwise result at ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The store.

    Returns
    -------
    dict
        A copy of its attributes.

    Raises
    ------
    ValueError
        If ``path`` is not an otpipe distance-matrix result.
    """
    attrs = stored_attrs(path)
    if result_type(attrs) != "distances":
        raise ValueError(f"{path} is not an otpipe pairwise result")
    return dict(attrs)


def create(
    path,
    *,
    names_source,
    names_target,
    labels_source=None,
    labels_target=None,
    tile: int,
    n_tiles: int,
    n_self_source: int,
    n_self_target: int,
    attrs: dict,
    overwrite: bool = False,
) -> None:
    """Write the empty template (metadata and coordinates only; ``compute=False``).

    The matrices are filled with NaN (``n_iter`` with 0) and chunked ``(tile, tile)``; every checkpoint marker is
    false; the attrs are ``attrs`` plus the type tag, ``complete=False``, ``created``, ``tile`` and ``n_tiles``.

    Parameters
    ----------
    path : str or os.PathLike
        The store to write.
    names_source, names_target : sequence of str
        The measure names, the coordinates of ``source`` and ``target``.
    labels_source, labels_target : sequence, optional
        Their labels, stored as ``source_label`` / ``target_label`` when given.
    tile : int
        The tile size (the chunk size of the matrices and self terms).
    n_tiles : int
        Number of tiles (markers of ``tile_done``).
    n_self_source, n_self_target : int
        Number of self-term chunks of each side (markers of ``self_done_source`` / ``self_done_target``).
    attrs : dict
        The run's attributes (parameters, fingerprint, versions, content hashes).
    overwrite : bool, default False
        Replace an existing otpipe result (or an empty folder); anything else at ``path`` is refused.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false, or it is neither an otpipe result nor an empty folder.
    """
    import dask.array as da
    import xarray as xr

    path = Path(path)
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path} exists: pass --overwrite to replace it or --resume to continue it")
        if not is_result(path) and (not path.is_dir() or any(path.iterdir())):
            raise FileExistsError(f"{path} exists and is not an otpipe result: refusing to overwrite it")
        check_replaceable(path)
        shutil.rmtree(path) if path.is_dir() else os.remove(path)
    forget(path)
    ns, nt = len(names_source), len(names_target)
    data = {}
    for name, dt in _MATRIX_VARS.items():
        fill = np.nan if dt == np.float64 else 0
        data[name] = (("source", "target"), da.full((ns, nt), fill, dtype=dt, chunks=(tile, tile)))
    data["self_source"] = (("source",), da.full(ns, np.nan, chunks=tile))
    data["self_target"] = (("target",), da.full(nt, np.nan, chunks=tile))
    data["tile_done"] = (("tile",), da.zeros(max(n_tiles, 1), dtype=bool, chunks=1))
    data["self_done_source"] = (("source_chunk",), da.zeros(max(n_self_source, 1), dtype=bool, chunks=1))
    data["self_done_target"] = (("target_chunk",), da.zeros(max(n_self_target, 1), dtype=bool, chunks=1))
    # variable-length strings in the store (Zarr v3's specified string type; fixed-width UTF-32 has no stable
    # specification); otpipe's readers return them as ``<U`` (:func:`plain_string_coords`)
    coords = {
        "source": np.asarray(names_source, dtype=object),
        "target": np.asarray(names_target, dtype=object),
    }
    if labels_source is not None:
        coords["source_label"] = ("source", np.asarray(labels_source, dtype=object))
    if labels_target is not None:
        coords["target_label"] = ("target", np.asarray(labels_target, dtype=object))
    a = dict(attrs)
    a.update(made_attrs("distances"), **tag("distances"))
    a.update(complete=False, created=_now(), tile=int(tile), n_tiles=int(n_tiles))
    ds = xr.Dataset(data, coords=coords, attrs=a)
    ds.to_zarr(path, mode="w", compute=False, consolidated=False)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_state(path) -> dict:
    """Checkpoints of a stored run: ``tile_done``, ``self_done_*``, the self terms and the attrs.

    Parameters
    ----------
    path : str or os.PathLike
        The result store.

    Returns
    -------
    dict
        ``attrs`` (dict), the boolean arrays ``tile_done``, ``self_done_source``, ``self_done_target`` and the
        arrays ``self_source``, ``self_target``.
    """
    import zarr

    g = zarr.open_group(str(path), mode="r", use_consolidated=False)
    return {
        "attrs": dict(g.attrs),
        "tile_done": np.asarray(g["tile_done"][:], dtype=bool),
        "self_done_source": np.asarray(g["self_done_source"][:], dtype=bool),
        "self_done_target": np.asarray(g["self_done_target"][:], dtype=bool),
        "self_source": np.asarray(g["self_source"][:]),
        "self_target": np.asarray(g["self_target"][:]),
    }


_GROUPS: dict[str, object] = {}


def _group(path):
    """The result group opened for writing (cached: one open per run, not per tile)."""
    import zarr

    key = str(Path(path).resolve())
    g = _GROUPS.get(key)
    if g is None:
        if len(_GROUPS) > 16:
            _GROUPS.clear()
        g = _GROUPS[key] = zarr.open_group(key, mode="r+", use_consolidated=False)
    return g


def _region_write(path, data: dict, region: dict) -> None:
    """Write ``{var: (dims, array)}`` into the slices ``region`` (whole chunks: the regions are tile-aligned)."""
    g = _group(path)
    for name, (dims, arr) in data.items():
        g[name][tuple(region[d] for d in dims)] = arr


def forget(path) -> None:
    """Drop the cached handle of ``path`` (after it was deleted or replaced)."""
    _GROUPS.pop(str(Path(path).resolve()), None)


def write_tile(path, tile, out: dict, symmetric: bool) -> None:
    """Write one tile's arrays (and their mirror for an off-diagonal symmetric tile), then its marker.

    Parameters
    ----------
    path : str or os.PathLike
        The result store.
    tile : Tile
        The tile: its rows ``r0:r1``, columns ``c0:c1``, ``index`` and ``diagonal``.
    out : dict
        One ``(r1 - r0, c1 - c0)`` array per matrix variable (``divergence``, ``ot``, ``n_iter``,
        ``marginal_error``).
    symmetric : bool
        Whether the run is symmetric (target = source): an off-diagonal tile is also written transposed.
    """
    st = ("source", "target")
    _region_write(
        path,
        {k: (st, np.asarray(out[k], dtype=dt)) for k, dt in _MATRIX_VARS.items()},
        {"source": slice(tile.r0, tile.r1), "target": slice(tile.c0, tile.c1)},
    )
    if symmetric and not tile.diagonal:
        _region_write(
            path,
            {k: (st, np.asarray(out[k], dtype=dt).T) for k, dt in _MATRIX_VARS.items()},
            {"source": slice(tile.c0, tile.c1), "target": slice(tile.r0, tile.r1)},
        )
    _region_write(path, {"tile_done": (("tile",), np.array([True]))}, {"tile": slice(tile.index, tile.index + 1)})


def write_self(path, which: str, chunk: int, r0: int, r1: int, values, mirror: bool = False) -> None:
    """Write the self terms of measures ``r0:r1``, then the chunk marker.

    Parameters
    ----------
    path : str or os.PathLike
        The result store.
    which : {"source", "target"}
        The side.
    chunk : int
        The index of the self-term chunk (its ``self_done_{which}`` marker).
    r0, r1 : int
        The measures of the chunk.
    values : array_like
        The ``r1 - r0`` self terms.
    mirror : bool, default False
        Symmetric runs: the same values go to ``self_target`` too.
    """
    v = np.asarray(values, dtype=np.float64)
    _region_write(path, {f"self_{which}": ((which,), v)}, {which: slice(r0, r1)})
    if mirror:
        _region_write(path, {"self_target": (("target",), v)}, {"target": slice(r0, r1)})
    _region_write(path, {f"self_done_{which}": ((f"{which}_chunk",), np.array([True]))}, {f"{which}_chunk": slice(chunk, chunk + 1)})


def update_attrs(path, **attrs) -> None:
    """Merge ``attrs`` into the stored group attributes."""
    import zarr

    g = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    g.update_attributes(attrs)  # one write of zarr.json (attrs.update writes once per key)


def mark_complete(path, **attrs) -> None:
    """Set ``complete=True`` (last step of a run) and consolidate the metadata.

    Parameters
    ----------
    path : str or os.PathLike
        The result store.
    **attrs
        Attributes merged in first, with ``completed`` (the time, UTC).
    """
    import zarr

    update_attrs(path, **attrs, completed=_now())
    update_attrs(path, complete=True)
    forget(path)
    import warnings

    with warnings.catch_warnings():  # "consolidated metadata is not in the Zarr v3 spec": known, harmless
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(path))


#: checkpoint variables of the store (and their dims): internal, not part of the returned Dataset
BOOKKEEPING = ("tile_done", "self_done_source", "self_done_target")


def open_result(path, *, require_complete: bool = True, bookkeeping: bool = False):
    """Open a pairwise result as an ``xarray.Dataset`` (lazy, Dask-backed).

    The checkpoint variables (:data:`BOOKKEEPING`, dims ``tile``, ``source_chunk``, ``target_chunk``)
    stay in the store but are dropped from the Dataset unless ``bookkeeping=True``.

    Parameters
    ----------
    path : str or os.PathLike
        The result store.
    require_complete : bool, default True
        Refuse a run that has not finished.
    bookkeeping : bool, default False
        Keep the checkpoint variables.

    Returns
    -------
    xarray.Dataset
        The result (consolidated metadata read when it is complete).

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    ValueError
        Not an otpipe result, or an incomplete one (unless ``require_complete=False``).
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no result at {path}")
    attrs = pairwise_attrs(path)
    if require_complete and not attrs.get("complete"):
        raise ValueError(f"{path} is an incomplete run: finish it with `otpipe distances ... --resume`")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_zarr(path, consolidated=bool(attrs.get("complete")))
    if not bookkeeping:
        ds = ds.drop_vars([v for v in BOOKKEEPING if v in ds.variables])
    return plain_string_coords(ds)


def plain_strings(values) -> np.ndarray:
    """Names and labels as a fixed-width unicode array (``<U``): what otpipe's readers return (Zarr's variable-length
    strings read back as NumPy's ``StringDType``, which scikit-learn's estimators reject).

    Parameters
    ----------
    values : iterable
        The names or labels (converted with ``str``).

    Returns
    -------
    numpy.ndarray
        ``<U`` array (``<U1`` when empty).
    """
    out = np.array([str(v) for v in values], dtype=str)
    return out if out.size else np.array([], dtype="<U1")


def plain_string_coords(ds):
    """``ds`` with every string coordinate as ``<U`` (the stores hold variable-length strings, Zarr v3's specified
    string type, which read back as NumPy's ``StringDType``).

    Parameters
    ----------
    ds : xarray.Dataset
        An opened result.

    Returns
    -------
    xarray.Dataset
        The same Dataset, string coordinates converted.
    """
    fix = {}
    for name, c in ds.coords.items():
        kind = getattr(c.dtype, "kind", "")
        if kind == "T" or (kind == "O" and c.size and isinstance(c.values.flat[0], str)):
            fix[name] = (c.dims, plain_strings(c.values.tolist()))
    return ds.assign_coords(fix) if fix else ds


#: attributes of a result that ``otpipe info`` shows (when present)
_INFO_ATTRS = ("complete", "created", "completed", "loss", "statistic", "by", "n_tests", "n_permutations", "diameter",
               "symmetric", "tile", "pairs_computed", "seconds", "marginal_error_median", "marginal_error_max",
               "solves_above_tol", "convergence_warning")


def describe(path) -> dict | None:
    """What an otpipe result store holds, for ``otpipe info``: its type, arrays and main attributes.

    Parameters
    ----------
    path : str or os.PathLike
        A store.

    Returns
    -------
    dict or None
        ``path``, ``type`` (:func:`result_type`), ``arrays`` (``{name: {"shape", "dtype", "dims"}}``, the
        checkpoint bookkeeping left out), ``parameters`` and the attributes of :data:`_INFO_ATTRS` that are
        present; ``None`` when ``path`` is no otpipe result (a collection, another store or nothing).
    """
    import zarr

    attrs = stored_attrs(path)
    kind = result_type(attrs)
    if kind is None or kind == "collection":
        return None
    g = zarr.open_group(str(path), mode="r", use_consolidated=False)
    arrays = {}
    for name in sorted(g.array_keys()):
        if name in BOOKKEEPING:
            continue
        a = g[name]
        dims = a.metadata.dimension_names if hasattr(a.metadata, "dimension_names") else None
        arrays[name] = {"shape": list(a.shape), "dtype": str(a.dtype), "dims": list(dims) if dims else None}
    out = {"path": str(path), "type": kind, "arrays": arrays, "parameters": attrs.get("parameters")}
    out.update({k: attrs[k] for k in _INFO_ATTRS if k in attrs})
    return out
