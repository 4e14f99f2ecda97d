"""Reduction backends: each file implements the same small set of row-wise reductions.

An *operator* binds two batches of points ``x (B, N, D)`` (rows) and ``y (B, M, D)``
(columns) to a :class:`~otpipe.geometry.costs.Cost` and offers

* ``softmin(eps, h)``: ``f_i = -eps log sum_j exp(h_j - C(x_i, y_j) / eps)``, shape ``(B, N)``;
* ``softmax_mean(eps, h, v)``: ``sum_j softmax_j(h_j - C_ij / eps) v_j``, shape ``(B, N, K)``;
* ``softmax_cost(eps, h)``: ``sum_j softmax_j(h_j - C_ij / eps) C_ij``, shape ``(B, N)``;
* ``kernel_apply(kernel, sigma, v)``: ``sum_j k(x_i, y_j) v_j``, shape ``(B, N)``;
* ``transpose()``: the operator with rows and columns exchanged.

The solver only ever talks to operators, so a new backend is one new file here. Backends (:data:`BACKENDS`):
``tensorized`` (dense), ``chunked`` (dense over blocks of rows, bounded memory, any device), ``cpu`` (compiled
C++), ``triton`` (CUDA) and ``keops`` (pykeops, only when asked for by name: :func:`choose_backend` never picks
it). A backend name may also be a solver strategy (:data:`STRATEGIES`): ``multiscale`` (block-sparse on
clusters, :mod:`otpipe.solvers.multiscale`) runs on the ``cpu`` / ``triton`` kernels, ``fused`` (the whole loop of
small problems in one compiled call, :mod:`otpipe.solvers.fused`) on the ``cpu`` kernels or one Triton program per
problem; they are chosen, validated
and dispatched like a backend (``auto`` picks ``fused`` in the Sinkhorn solves, not here), but they are no operator: :func:`get_backend` serves it the native operator of the points'
device (:mod:`otpipe.geometry.backends.native`) for full reductions.
"""
from __future__ import annotations

import importlib

from otpipe.geometry.backends._limits import (
    AUTO_CPU_MIN_ENTRIES,
    AUTO_DENSE_MAX_ENTRIES,
    AUTO_MULTISCALE_MIN_ENTRIES,
    AUTO_MULTISCALE_MIN_ENTRIES_GPU,
)

__all__ = ["BACKENDS", "STRATEGIES", "get_backend", "choose_backend", "check_name", "triton_error", "AUTO_DENSE_MAX_ENTRIES",
           "AUTO_CPU_MIN_ENTRIES", "AUTO_MULTISCALE_MIN_ENTRIES", "AUTO_MULTISCALE_MIN_ENTRIES_GPU"]

BACKENDS = {
    "tensorized": "otpipe.geometry.backends.tensorized",
    "chunked": "otpipe.geometry.backends.chunked",
    "keops": "otpipe.geometry.backends.keops",
    "cpu": "otpipe.geometry.backends.cpu",
    "triton": "otpipe.geometry.backends.triton",
}
#: solver strategies accepted wherever a backend name is (dispatched by :func:`otpipe.solvers.sinkhorn.run_problems`)
STRATEGIES = ("multiscale", "fused")
_ALIASES = {"online": "keops", "dense": "tensorized"}

_warned_triton = False


def _device_type(device) -> str:
    """``"cpu"``, ``"cuda"`` or another device type; ``device=None`` means CUDA when this machine has it."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type


def _on_cpu(device) -> bool:
    return _device_type(device) == "cpu"


def triton_error() -> str | None:
    """Why Triton cannot be imported; imports it on the first call.

    Returns
    -------
    str or None
        The first line of the import error; ``None`` when Triton imports.
    """
    try:
        import triton  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken installation
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def _warn_no_triton(why: str) -> None:
    global _warned_triton
    if not _warned_triton:
        _warned_triton = True
        import warnings

        warnings.warn(f"otpipe: the 'triton' backend is unavailable on CUDA tensors ({why}); falling back to the "
                      "'tensorized' / 'chunked' torch backends (much slower): pip install triton",
                      RuntimeWarning, stacklevel=4)


def _dense_or_chunked(B: int, N: int, M: int) -> str:
    return "tensorized" if B * max(N, M) * max(N, M) <= AUTO_DENSE_MAX_ENTRIES else "chunked"


def _check_serves(name: str, dev: str, dtype) -> None:
    """One-line ``ValueError`` when backend ``name`` cannot serve tensors of device type ``dev`` / ``dtype``."""
    import os

    import torch

    if dtype is not None and name in ("cpu", "triton", "multiscale", "fused") and dtype not in (torch.float32, torch.float64):
        raise ValueError(f"backend {name!r} computes in float32 or float64, got {str(dtype).replace('torch.', '')} "
                         "points: convert them, or use backend='tensorized'")
    if name == "fused" and dev not in ("cpu", "cuda"):
        raise ValueError(f"backend 'fused' runs on CPU or CUDA tensors, but the points are on a {dev} device")
    if name == "cpu" and dev != "cpu":
        raise ValueError(f"backend {name!r} runs on CPU tensors, but the points are on a {dev} device: use "
                         "backend='triton' (or 'auto') for CUDA tensors, or move the points to the CPU")
    if name == "triton" and dev != "cuda":
        if dev == "cpu" and os.environ.get("TRITON_INTERPRET", "") in ("1", "true", "True"):
            return  # Triton's interpreter runs the kernels on CPU tensors (the CPU tests)
        raise ValueError(f"backend 'triton' runs on CUDA tensors, but the points are on a {dev} device: use "
                         "backend='cpu' (or 'auto') for CPU tensors")


def check_name(name: str) -> str:
    """Resolve the aliases of a backend name and reject unknown names.

    Parameters
    ----------
    name : str
        A key of :data:`BACKENDS`, a strategy of :data:`STRATEGIES`, an alias (``"online"``, ``"dense"``) or
        ``"auto"``.

    Returns
    -------
    str
        The name with aliases resolved (``"auto"`` stays).

    Raises
    ------
    ValueError
        If the name is unknown (the message lists the choices).
    """
    name = _ALIASES.get(name, name)
    if name != "auto" and name not in BACKENDS and name not in STRATEGIES:
        raise ValueError(f"unknown backend {name!r}: choose one of {sorted([*BACKENDS, *STRATEGIES]) + ['auto']}")
    return name


def choose_backend(name: str, B: int, N: int, M: int, *, device=None, dtype=None, converging: bool = False) -> str:
    """Resolve ``"auto"`` and aliases to a backend name; validate explicit names against the device and dtype.

    ``auto`` on CPU tensors (``device``; ``None``: CPU when CUDA is absent): ``multiscale`` for single pairs
    (``B = 1``) with at least :data:`AUTO_MULTISCALE_MIN_ENTRIES` entries when ``converging`` (a solve with ``tol``;
    the fixed schedule always gets a full backend), else the compiled ``cpu`` kernels
    from :data:`AUTO_CPU_MIN_ENTRIES` entries on if they build (else, warning once, ``tensorized`` up to
    :data:`AUTO_DENSE_MAX_ENTRIES` entries and ``cpu`` above, whose operator then computes the dense reductions
    by blocks of rows), else ``tensorized``. On CUDA tensors: ``multiscale`` for single
    pairs from :data:`AUTO_MULTISCALE_MIN_ENTRIES_GPU` entries on (``converging`` only), else ``triton``; without Triton (warning
    once) ``tensorized`` / ``chunked``. ``keops`` only ever runs when asked for by name.

    Parameters
    ----------
    name : str
        ``"auto"``, a backend or strategy name, or an alias.
    B : int
        Batch size (pairs solved together).
    N : int
        Points per source measure.
    M : int
        Points per target measure.
    device : torch.device or str or None, default None
        Device of the points; ``None``: CUDA when this machine has it, else CPU.
    dtype : torch.dtype or None, default None
        Dtype of the points (``cpu``, ``triton`` and ``multiscale`` take float32 or float64); ``None``: not checked.
    converging : bool, default False
        Whether the solve runs to a tolerance (only then may ``auto`` pick ``multiscale``).

    Returns
    -------
    str
        A key of :data:`BACKENDS` or a strategy of :data:`STRATEGIES`.

    Raises
    ------
    ValueError
        An unknown name, or a backend that cannot serve the device or dtype (``cpu`` with CUDA tensors,
        ``triton`` with CPU tensors or float16, ...).
    """
    name = check_name(name)
    dev = _device_type(device)
    if name != "auto":
        _check_serves(name, dev, dtype)
        return name
    if dev == "cpu":
        if B * N * M >= AUTO_CPU_MIN_ENTRIES:
            from otpipe.geometry.backends import cpu

            if cpu.available():
                return "multiscale" if converging and B == 1 and N * M >= AUTO_MULTISCALE_MIN_ENTRIES else "cpu"
            cpu.warn_unavailable()
            if B * max(N, M) * max(N, M) > AUTO_DENSE_MAX_ENTRIES:
                return "cpu"  # its operator falls back to the dense reductions by blocks of rows (no KeOps)
        return _dense_or_chunked(B, N, M)
    if dev == "cuda":
        why = triton_error()
        if why is None:
            return "multiscale" if converging and B == 1 and N * M >= AUTO_MULTISCALE_MIN_ENTRIES_GPU else "triton"
        _warn_no_triton(why)
    return _dense_or_chunked(B, N, M)


def get_backend(name: str):
    """The operator module (with ``operator(x, y, cost)``) for a resolved backend name, imported on first use.

    Parameters
    ----------
    name : str
        A key of :data:`BACKENDS`, or a solver strategy of :data:`STRATEGIES`, which gets the native operator of
        the points' device (:mod:`otpipe.geometry.backends.native`) for its full reductions.

    Returns
    -------
    module
        The backend module.
    """
    if name in STRATEGIES:
        return importlib.import_module("otpipe.geometry.backends.native")
    return importlib.import_module(BACKENDS[name])
