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
    """``v`` with numpy scalars made Python numbers, tuples made lists, dict keys made strings, anything else ``str``."""
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
    """``(sha256 of the canonical JSON, the JSON-safe content)`` of a run's parameters and inputs.

    ``canonical=False``: ``content`` is hashed as given (it must already be JSON-safe).
    """
    if canonical:
        content = jsonable(content)
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest(), content


def differences(stored: dict, new: dict, prefix: str = "") -> list[str]:
    """``"key: stored a, now b"`` for every leaf that differs between two nested dicts (sorted, dotted keys)."""
    out = []
    for k in sorted(set(stored) | set(new)):
        a, b = stored.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: stored {a!r}, now {b!r}")
    return out


def check_same(out, attrs: dict, fp: str, content: dict) -> None:
    """``ValueError`` naming up to four differences when the stored ``attrs`` were made with another fingerprint."""
    if attrs.get("fingerprint") != fp:
        diffs = differences(attrs.get("run") or {}, content)
        raise ValueError(f"cannot resume {out}: it was computed with different parameters or inputs ("
                         + ("; ".join(diffs[:4]) or "fingerprint differs") + "); use --overwrite to start again")


def versions(names=ALL_VERSIONS) -> dict:
    """``{package: version}`` of the installed ``names`` (those not installed are left out)."""
    import importlib.metadata as md

    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out
