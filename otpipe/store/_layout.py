"""Byte-level conventions of the collection layout shared by the writer (:mod:`otpipe.store.collection`) and the
checker (:mod:`otpipe.store.integrity`): storage dtypes, string arrays and the per-measure digest."""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

__all__ = ["DTYPES", "put_str", "measure_digest", "strings"]

#: storage dtypes of points and weights (little-endian)
DTYPES = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}


def put_str(h: hashlib._Hash, s: str | None) -> None:
    """Feed ``s`` to ``h`` unambiguously (a marker byte, the length, the UTF-8 bytes; ``None`` apart).

    Parameters
    ----------
    h : hashlib._Hash
        The hash being computed.
    s : str or None
        The string (``None`` hashes as one distinct marker byte).
    """
    if s is None:
        h.update(b"\x00")
        return
    b = s.encode("utf-8")
    h.update(b"\x01" + len(b).to_bytes(8, "little") + b)


def measure_digest(name: str, label: str | None, points: np.ndarray, weights: np.ndarray) -> bytes:
    """The sha256 of a measure: its name, label, number of points, points and weights (as stored).

    Parameters
    ----------
    name : str
        The measure's name.
    label : str or None
        Its label.
    points : numpy.ndarray
        ``(N, D)`` points in the storage dtype.
    weights : numpy.ndarray
        ``(N,)`` weights in the storage dtype.

    Returns
    -------
    bytes
        The 32-byte digest.
    """
    h = hashlib.sha256()
    put_str(h, name)
    put_str(h, label)
    h.update(int(points.shape[0]).to_bytes(8, "little"))
    h.update(memoryview(np.ascontiguousarray(points)).cast("B"))
    h.update(memoryview(np.ascontiguousarray(weights)).cast("B"))
    return h.digest()


def strings(values: Any) -> np.ndarray:
    """Zarr variable-length strings (NumPy ``StringDType``) as a fixed-width ``str`` array.

    Parameters
    ----------
    values : array_like
        The strings as Zarr returns them.

    Returns
    -------
    numpy.ndarray
        A NumPy ``str`` (``<U``) array of the same shape.
    """
    return np.asarray(np.asarray(values).tolist(), dtype=str)
