"""Collections of measures stored as Zarr v3 groups (CSR layout, shards of whole measures).

Public API (imported lazily, so that ``import otpipe`` never imports Zarr)::

    from otpipe import store
    c = store.create("blobs.zarr", measures)      # or: otpipe synth / otpipe ingest
    c = store.open("blobs.zarr")
    len(c), c[0], c["name"], c.shards, c.read_shard(0), c.select(label="circle"), c.verify()

See :mod:`otpipe.store.collection` for the on-disk format.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__all__ = ["open", "create", "Collection", "Measure", "FORMAT_NAME", "FORMAT_VERSION"]

if TYPE_CHECKING:  # pragma: no cover
    from otpipe.store.collection import FORMAT_NAME, FORMAT_VERSION, Collection, Measure, create, open  # noqa: F401


def __getattr__(name: str):
    if name in __all__:
        value = getattr(importlib.import_module(".collection", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'otpipe.store' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
