"""What identifies a run: its parameters and inputs as canonical JSON, their fingerprint, the library
versions it ran with, and the refusal to resume a store made with other parameters."""
from __future__ import annotations

import hashlib
import json

import numpy as np

__all__ = ["jsonable", "fingerprint", "differences", "check_same", "versions", "ALL_VERSIONS"]

#: the packages whose versions a pairwise result records
ALL_VERSIONS = ("otpipe", "torch", "triton", "numpy", "dask", "distributed", "zarr", "xarray")


def jsonable(v):
    """``v`` made JSON-safe: numpy scalars as Python numbers, tuples as lists, dict keys as strings.

    Parameters
    ----------
    v : object
        Any value (nested dicts, lists and tuples are converted recursively).

    Returns
    -------
    object
        The converted value; anything that is not a number, string, bool, ``None``, dict or sequence becomes its
        ``str``.
    """
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def fingerprint(content: dict, *, canonical: bool = True) -> tuple[str, dict]:
    """The fingerprint of a run's parameters and inputs: the sha256 of their canonical JSON.

    Parameters
    ----------
    content : dict
        The parameters and inputs.
    canonical : bool, default True
        Make ``content`` JSON-safe first (:func:`jsonable`); ``False``: hash it as given (it must be JSON-safe).

    Returns
    -------
    fingerprint : str
        Hex sha256 of the JSON with sorted keys.
    content : dict
        The JSON-safe content that was hashed.
    """
    if canonical:
        content = jsonable(content)
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest(), content


def differences(stored: dict, new: dict, prefix: str = "") -> list[str]:
    """``"key: stored a, now b"`` for every leaf that differs between two nested dicts (sorted, dotted keys).

    Parameters
    ----------
    stored : dict
        The recorded content.
    new : dict
        The content of this run.
    prefix : str, default ""
        Prefix of the keys (the dotted path of a nested call).

    Returns
    -------
    list of str
        One line per differing leaf.
    """
    out = []
    for k in sorted(set(stored) | set(new)):
        a, b = stored.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: stored {a!r}, now {b!r}")
    return out


def check_same(out, attrs: dict, fp: str, content: dict) -> None:
    """Refuse to resume a store made with another fingerprint.

    Parameters
    ----------
    out : str or os.PathLike
        The store (for the message).
    attrs : dict
        Its stored attributes (``fingerprint`` and ``run``).
    fp : str
        This run's fingerprint.
    content : dict
        This run's content (to name the differences).

    Raises
    ------
    ValueError
        Naming up to four differences, when the fingerprints differ.
    """
    if attrs.get("fingerprint") != fp:
        diffs = differences(attrs.get("run") or {}, content)
        raise ValueError(f"cannot resume {out}: it was computed with different parameters or inputs ("
                         + ("; ".join(diffs[:4]) or "fingerprint differs") + "); use --overwrite to start again")


def versions(names=ALL_VERSIONS) -> dict:
    """The installed versions of the packages ``names`` (those not installed are left out).

    Parameters
    ----------
    names : sequence of str, default ALL_VERSIONS
        Distribution names.

    Returns
    -------
    dict
        ``{package: version}``.
    """
    import importlib.metadata as md

    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out
