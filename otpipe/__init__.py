"""otpipe: optimal-transport and kernel distances between collections of measures.

Importing :mod:`otpipe` is cheap: the numerical API (torch), the collection store (Zarr)
and the pipeline (Dask) are imported on first use of the names below.

Between two measures (NumPy in, NumPy out; torch in, torch out): ``solve``,
``sinkhorn_divergence``, ``energy_distance``, ``mmd``, ``hausdorff``, ``barycenter``,
``two_sample_test``. Over collections (Dask, Zarr results): ``pairwise`` (distance matrices),
``pairwise_two_sample`` (two-sample tests between the labels or measures of a collection),
``group_barycenters`` (one barycenter per label), ``complexity_study`` (sample-complexity grids).
"""
from __future__ import annotations

import importlib

from otpipe._version import __version__

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
    "pairwise_two_sample",
    "group_barycenters",
    "complexity_study",
    "complexity",
    "two_sample_test",
    "ConvergenceWarning",
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
    "pairwise_two_sample": ("otpipe.pipeline.two_sample", "many_two_sample_tests"),
    "group_barycenters": ("otpipe.pipeline.barycenter", "group_barycenters"),
    "complexity_study": ("otpipe.pipeline.complexity", "run_study"),
    "ConvergenceWarning": ("otpipe.diagnostics", "ConvergenceWarning"),
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
