"""Checkpoints of runs made of many independent tasks (two-sample tests, complexity cells).

The result store is created before any work: a Zarr group whose attrs hold the run's parameters,
their ``fingerprint`` and ``complete = False``, with a hidden ``_checkpoint`` group holding one
row per task (``(n_tasks, *shape)`` arrays, chunks of :data:`CHUNK` rows) and a ``done`` mark per
task. The client keeps the rows in memory and writes the changed chunks when the first task
finishes, then at most every :data:`FLUSH_SECONDS` (data first, then the ``done`` marks, so a killed run never marks a task it
did not write), at the end and on Ctrl-C. :func:`finalise` writes the result Dataset into the
store, then sets ``complete = True``, then removes ``_checkpoint``: a result either looks complete
and is, or says ``complete = False`` and can be resumed. The runs themselves: :mod:`otpipe.engine.run`.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from otpipe.engine.identity import check_same, fingerprint, jsonable
from otpipe.engine.result import TAG, stored_attrs

__all__ = ["Checkpoint", "Field", "finalise", "check_existing", "remove", "fingerprint", "stored_attrs",
           "FLUSH_SECONDS", "CHUNK"]

#: finished tasks are written at most this often (and at the end, and on Ctrl-C)
FLUSH_SECONDS = 2.0
#: tasks per chunk of the checkpoint arrays
CHUNK = 256
GROUP = "_checkpoint"


class Field:
    """One per-task array: ``shape`` after the task axis, dtype, fill value, and how many tasks have it.

    Parameters
    ----------
    shape : tuple of int, default ()
        The shape of one task's value (the array is ``(rows, *shape)``).
    dtype : str, default "float64"
        The array's dtype.
    fill : scalar, default numpy.nan
        The value of the rows of tasks not done.
    rows : int or None, default None
        Rows of the array: tasks ``t < rows`` have the field (:meth:`Checkpoint.record` skips the others);
        ``None``: every task.
    """

    def __init__(self, shape: tuple = (), dtype: str = "float64", fill=np.nan, rows: int | None = None):
        self.shape, self.dtype, self.fill, self.rows = tuple(int(s) for s in shape), dtype, fill, rows


def check_existing(out: Path, *, is_ours, what: str, resume: bool, overwrite: bool, fp: str, content: dict) -> dict | None:
    """What to do with ``out`` before a run: resume from its stored attrs, or start afresh.

    With ``None`` the caller starts afresh (removing an old result of ours with :func:`remove`); anything
    else (a symbolic link, a file, a store otpipe did not make: :mod:`otpipe._made`) is refused.

    Parameters
    ----------
    out : pathlib.Path
        The result store of the run.
    is_ours : callable
        ``is_ours(attrs) -> bool``: whether stored attrs belong to a ``what`` result.
    what : str
        The kind of result, as named in the error messages.
    resume : bool
        Continue the run stored at ``out``: its stored fingerprint must be ``fp``
        (:func:`otpipe.engine.identity.check_same`).
    overwrite : bool
        Replace an existing result of ours (or an empty folder).
    fp : str
        The fingerprint of this run's parameters.
    content : dict
        The parameters the fingerprint is made of (named in the message of a mismatch).

    Returns
    -------
    dict or None
        The stored attrs when resuming; ``None`` when ``out`` does not exist or is to be replaced.

    Raises
    ------
    ValueError
        If both ``resume`` and ``overwrite`` are given, ``resume`` finds no ``what`` result at ``out``, or its
        fingerprint differs.
    FileExistsError
        If ``out`` is a symbolic link, exists without ``overwrite`` or ``resume``, or is neither an empty folder
        nor a ``what`` result.
    """
    from otpipe._made import check_replaceable

    if resume and overwrite:
        raise ValueError("give either --resume or --overwrite, not both")
    out = Path(out)
    if out.is_symlink():
        check_replaceable(out, "--resume" if resume else "--overwrite")
    if not out.exists():
        return None
    attrs = stored_attrs(out)
    ours = attrs is not None and is_ours(attrs)
    if resume:
        if not ours:
            raise ValueError(f"cannot resume {out}: it is not an otpipe {what} result")
        check_same(out, attrs, fp, content)
        return attrs
    if not overwrite:
        raise FileExistsError(f"output exists: {out} (use --overwrite to replace it, or --resume to continue it)")
    check_replaceable(out)  # a link, a file, or a store otpipe did not make: refused, named
    if out.is_dir() and not any(out.iterdir()):
        return None
    if not ours:
        raise FileExistsError(f"refusing to overwrite {out}: it is not an otpipe {what} result")
    return None


def remove(out: Path) -> None:
    """Remove the otpipe result store at ``out`` (only what otpipe made: :func:`otpipe._made.remove_made`).

    Parameters
    ----------
    out : pathlib.Path
        The result store.
    """
    from otpipe._made import remove_made

    remove_made(out)


class Checkpoint:
    """The per-task rows of a run (see the module docstring); ``out=None``: in memory only.

    The constructor only allocates the rows (every task not done); :meth:`create` and :meth:`load` open a store.

    Parameters
    ----------
    out : pathlib.Path or None
        The result store holding the ``_checkpoint`` group; ``None``: nothing is written.
    n : int
        Number of tasks.
    fields : dict of str to Field
        The per-task arrays, by name.
    chunk : int, default CHUNK
        Tasks per chunk of the stored arrays (at most ``n``).
    """

    def __init__(self, out: Path | None, n: int, fields: dict[str, Field], *, chunk: int = CHUNK):
        self.out = None if out is None else Path(out)
        self.n, self.fields = int(n), dict(fields)
        self.data = {k: np.full(((f.rows if f.rows is not None else self.n),) + f.shape, f.fill, dtype=f.dtype)
                     for k, f in self.fields.items()}
        self.done = np.zeros(self.n, dtype=bool)
        #: per-task JSON notes (e.g. the warnings a task raised), stored in the ``_checkpoint`` attrs
        self.notes: dict[int, object] = {}
        self._dirty: set[int] = set()
        self._notes_dirty = False
        self._last = -float("inf")  # the first finished task is written at once
        self._chunk = min(int(chunk), max(1, self.n))

    # ---- store ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, out: Path, attrs: dict, n: int, fields: dict[str, Field], *, kind: str,
               chunk: int = CHUNK) -> Checkpoint:
        """A new store at ``out`` (which must not exist) with ``attrs``, ``complete = False`` and empty rows.

        Parameters
        ----------
        out : pathlib.Path
            The store to create (its parent folders are made).
        attrs : dict
            The run's attributes (parameters, fingerprint).
        n : int
            Number of tasks.
        fields : dict of str to Field
            The per-task arrays, by name.
        kind : str
            The kind of result, written as otpipe's marker (:func:`otpipe._made.made_attrs`).
        chunk : int, default CHUNK
            Tasks per chunk (1: every task is its own region of the store, written alone).

        Returns
        -------
        Checkpoint
            The checkpoint of the new store, no task done.
        """
        import zarr

        from otpipe._made import made_attrs

        self = cls(out, n, fields, chunk=chunk)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        root = zarr.open_group(str(out), mode="w-")
        root.update_attributes(jsonable(dict(attrs, **made_attrs(kind), complete=False)))
        ck = root.create_group(GROUP)
        for k, f in self.fields.items():
            rows = f.rows if f.rows is not None else self.n
            if rows:
                ck.create_array(k, shape=(rows,) + f.shape, chunks=(min(self._chunk, rows),) + f.shape,
                                dtype=f.dtype, fill_value=f.fill)
        ck.create_array("done", shape=(max(1, self.n),), chunks=(self._chunk,), dtype="bool", fill_value=False)
        return self

    @classmethod
    def load(cls, out: Path, n: int, fields: dict[str, Field], *, chunk: int = CHUNK) -> Checkpoint:
        """The rows stored at ``out`` (an unfinished run).

        Parameters
        ----------
        out : pathlib.Path
            The store of the unfinished run.
        n : int
            Number of tasks.
        fields : dict of str to Field
            The per-task arrays, by name (those the store lacks keep their fill value).
        chunk : int, default CHUNK
            As given to :meth:`create`.

        Returns
        -------
        Checkpoint
            The stored rows, ``done`` marks and notes (of tasks done).

        Raises
        ------
        ValueError
            If ``out`` has no ``_checkpoint`` group.
        """
        import zarr

        self = cls(out, n, fields, chunk=chunk)
        root = zarr.open_group(str(out), mode="r")
        if GROUP not in root:
            raise ValueError(f"{out}: no checkpoint to resume from (an unfinished run without its _checkpoint group)")
        ck = root[GROUP]
        for k in self.fields:
            if k in ck:
                self.data[k][...] = ck[k][...]
        self.done[:] = np.asarray(ck["done"][: self.n], dtype=bool)
        self.notes = {int(t): v for t, v in (ck.attrs.get("notes") or {}).items() if self.done[int(t)]}
        return self

    # ---- rows ----------------------------------------------------------------------------------
    @property
    def n_done(self) -> int:
        """Number of tasks done."""
        return int(self.done.sum())

    def record(self, t: int, note=None, **values) -> None:
        """Task ``t`` finished with ``values`` and an optional note (kept in memory until :meth:`flush`).

        Parameters
        ----------
        t : int
            The task.
        note : object, optional
            A JSON-able note (e.g. the warnings the task raised).
        **values
            One value per field name; ``None``, or a field whose ``rows`` excludes ``t``, is skipped.
        """
        for k, v in values.items():
            if v is None or t >= self.data[k].shape[0]:
                continue
            self.data[k][t] = v
        if note is not None:
            self.notes[t] = jsonable(note)
            self._notes_dirty = True
        self.done[t] = True
        self._dirty.add(t // self._chunk)

    def due(self) -> bool:
        """Whether a flush is due (changes older than :data:`FLUSH_SECONDS`).

        Returns
        -------
        bool
            True when there are unwritten changes, a store, and :data:`FLUSH_SECONDS` have passed since the
            last flush.
        """
        return bool(self._dirty) and self.out is not None and time.monotonic() - self._last >= FLUSH_SECONDS

    def flush(self) -> None:
        """Write the changed chunks: data first, then the ``done`` marks."""
        if not self._dirty or self.out is None:
            self._dirty.clear()
            return
        import zarr

        ck = zarr.open_group(str(self.out), mode="r+")[GROUP]
        chunks = sorted(self._dirty)
        for k, arr in self.data.items():
            if k not in ck:
                continue
            for c in chunks:
                lo, hi = c * self._chunk, min((c + 1) * self._chunk, arr.shape[0])
                if lo < hi:
                    ck[k][lo:hi] = arr[lo:hi]
        if self._notes_dirty:
            ck.attrs.update({"notes": {str(t): v for t, v in sorted(self.notes.items())}})
            self._notes_dirty = False
        for c in chunks:
            lo, hi = c * self._chunk, min((c + 1) * self._chunk, self.n)
            ck["done"][lo:hi] = self.done[lo:hi]
        self._dirty.clear()
        self._last = time.monotonic()


def finalise(out: Path, ds) -> None:
    """Write ``ds`` into the store at ``out``, then ``complete = True``, then drop ``_checkpoint`` and consolidate
    the metadata.

    Arrays left by an interrupted finalisation are removed first; the attrs written are those of ``ds`` plus the
    markers written at creation.

    Parameters
    ----------
    out : pathlib.Path
        The store made by :meth:`Checkpoint.create`.
    ds : xarray.Dataset
        The result.
    """
    import warnings

    import zarr

    out = Path(out)
    root = zarr.open_group(str(out), mode="r+")
    for name in list(root.array_keys()):  # left by a finalisation interrupted earlier
        del root[name]
    body = ds.copy()
    keep = {k: v for k, v in root.attrs.items() if k in ("otpipe_made", TAG)}  # the markers written at creation
    body.attrs = jsonable({**{k: v for k, v in ds.attrs.items() if k != "complete"}, **keep})
    body.attrs["complete"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        body.to_zarr(out, mode="a", consolidated=False)
    zarr.open_group(str(out), mode="r+").attrs.update({"complete": True})
    shutil.rmtree(out / GROUP, ignore_errors=True)
    with warnings.catch_warnings():  # "consolidated metadata is not in the Zarr v3 spec": known, harmless
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(out))  # xr.open_zarr then reads it without a warning
