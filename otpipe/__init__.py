"""otpipe: optimal-transport and kernel distances between collections of measures.

Importing :mod:`otpipe` is cheap: the numerical API (torch), the collection store (Zarr)
and the pipeline (Dask) are imported on first use of the names below.

Between two measures (NumPy in, NumPy out; torch in, torch out): ``solve``,
``sinkhorn_divergence``, ``energy_distance``, ``mmd``, ``hausdorff``, ``barycenter``,
``two_sample_test``. Over collections (Dask, Zarr results), named as the ``otpipe`` commands with the
commands' options as keywords: ``distances`` (distance matrices), ``two_sample`` (two-sample tests between
the labels or measures of a collection), and in :mod:`otpipe.api` every command (``api.barycenter``: one
barycenter per label, ``api.complexity``: sample-complexity grids, ``api.synth``, ``api.ingest``, ...).

The former names ``pairwise``, ``pairwise_two_sample``, ``group_barycenters`` and ``complexity_study``
still work and warn (``FutureWarning``) naming their replacement.
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
    "distances",
    "two_sample",
    "api",
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
    "distances": ("otpipe.api", "distances"),
    "two_sample": ("otpipe.api", "two_sample"),
    "api": ("otpipe.api", None),
    "ConvergenceWarning": ("otpipe.diagnostics", "ConvergenceWarning"),
    "complexity": ("otpipe.tools.complexity", None),
    "two_sample_test": ("otpipe.tools.two_sample", "two_sample_test"),
}

#: former name -> (module, function, what to use instead): the function still works and warns when called
_DEPRECATED = {
    "pairwise": ("otpipe.pipelines.pairwise", "pairwise", "otpipe.distances (same arguments)"),
    "pairwise_two_sample": ("otpipe.pipelines.two_sample", "many_two_sample_tests",
                            "otpipe.two_sample (same arguments; with out= it also writes OUT.png unless no_plot=True)"),
    "group_barycenters": ("otpipe.pipelines.barycenters", "group_barycenters",
                          "otpipe.api.barycenter (without out: the same {group: BarycenterResult}; "
                          "groups and weights as before, debiased=False is biased=True)"),
    "complexity_study": ("otpipe.pipelines.complexity", "run_study",
                         "otpipe.api.complexity (ns is n; divergences=(d,) is divergence=d, only=True)"),
}


def _deprecated(name: str):
    import functools
    import warnings

    module_name, attr, instead = _DEPRECATED[name]
    fn = getattr(importlib.import_module(module_name), attr)

    @functools.wraps(fn)
    def former(*args, **kwargs):
        warnings.warn(f"otpipe.{name} is deprecated and will be removed: use {instead}", FutureWarning, stacklevel=2)
        return fn(*args, **kwargs)

    return former


def __getattr__(name: str):
    if name in _DEPRECATED:
        value = _deprecated(name)
        globals()[name] = value
        return value
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
