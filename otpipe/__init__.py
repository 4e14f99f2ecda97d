"""otpipe: optimal-transport and kernel distances between collections of measures.

Importing :mod:`otpipe` is cheap: the numerical API (torch), the collection store (Zarr)
and the pipeline (Dask) are imported on first use of the names below.
"""
from __future__ import annotations

import importlib

from ._version import __version__

__all__ = [
    "__version__",
    "solve",
    "OTResult",
    "sinkhorn_divergence",
    "energy_distance",
    "mmd",
    "hausdorff",
    "SamplesLoss",
    "store",
    "barycenter",
    "pairwise",
    "complexity",
    "two_sample_test",
]

_LAZY = {
    "solve": ("otpipe.sinkhorn", "solve"),
    "OTResult": ("otpipe.sinkhorn", "OTResult"),
    "sinkhorn_divergence": ("otpipe.losses", "sinkhorn_divergence"),
    "energy_distance": ("otpipe.losses", "energy_distance"),
    "mmd": ("otpipe.losses", "mmd"),
    "hausdorff": ("otpipe.losses", "hausdorff"),
    "SamplesLoss": ("otpipe.losses", "SamplesLoss"),
    "store": ("otpipe.store", None),
    "barycenter": ("otpipe.barycenter", "barycenter"),
    "pairwise": ("otpipe.pipeline.pairwise", "pairwise"),
    "complexity": ("otpipe.complexity", None),
    "two_sample_test": ("otpipe.two_sample", "two_sample_test"),
}


def __getattr__(name: str):
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'otpipe' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
