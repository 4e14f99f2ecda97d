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
    "solve": ("otpipe.solvers.sinkhorn", "solve"),
    "OTResult": ("otpipe.solvers.sinkhorn", "OTResult"),
    "sinkhorn_divergence": ("otpipe.tools.losses", "sinkhorn_divergence"),
    "energy_distance": ("otpipe.tools.losses", "energy_distance"),
    "mmd": ("otpipe.tools.losses", "mmd"),
    "hausdorff": ("otpipe.tools.losses", "hausdorff"),
    "SamplesLoss": ("otpipe.tools.losses", "SamplesLoss"),
    "store": ("otpipe.store", None),
    "barycenter": ("otpipe.tools.barycenters", "barycenter"),
    "pairwise": ("otpipe.pipelines.pairwise", "pairwise"),
    "pairwise_two_sample": ("otpipe.pipelines.two_sample", "many_two_sample_tests"),
    "group_barycenters": ("otpipe.pipelines.barycenters", "group_barycenters"),
    "complexity_study": ("otpipe.pipelines.complexity", "run_study"),
    "ConvergenceWarning": ("otpipe.diagnostics", "ConvergenceWarning"),
    "complexity": ("otpipe.tools.complexity", None),
    "two_sample_test": ("otpipe.tools.two_sample", "two_sample_test"),
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
