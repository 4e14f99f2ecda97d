"""Reduction backends: each file implements the same small set of row-wise reductions.

An *operator* binds two batches of points ``x (B, N, D)`` (rows) and ``y (B, M, D)``
(columns) to a :class:`~otpipe.costs.Cost` and offers

* ``softmin(eps, h)``: ``f_i = -eps log sum_j exp(h_j - C(x_i, y_j) / eps)``, shape ``(B, N)``;
* ``softmax_mean(eps, h, v)``: ``sum_j softmax_j(h_j - C_ij / eps) v_j``, shape ``(B, N, K)``;
* ``softmax_cost(eps, h)``: ``sum_j softmax_j(h_j - C_ij / eps) C_ij``, shape ``(B, N)``;
* ``kernel_apply(kernel, sigma, v)``: ``sum_j k(x_i, y_j) v_j``, shape ``(B, N)``;
* ``transpose()``: the operator with rows and columns exchanged.

The solver only ever talks to operators, so a new backend is one new file here. Backends: ``tensorized``
(dense), ``chunked`` (dense over blocks of rows, bounded memory, any device), ``cpu`` (compiled C++),
``triton`` (CUDA), ``multiscale`` (block-sparse on clusters, over ``cpu`` / ``triton`` kernels) and ``keops``
(pykeops, only when asked for by name: :func:`choose_backend` never picks it).
"""
from __future__ import annotations

import importlib

__all__ = ["BACKENDS", "get_backend", "choose_backend", "check_name", "triton_error"]

BACKENDS = {
    "tensorized": "otpipe.kernels.tensorized",
    "chunked": "otpipe.kernels.chunked",
    "keops": "otpipe.kernels.keops",
    "cpu": "otpipe.kernels.cpu",
    "multiscale": "otpipe.kernels.multiscale",
    "triton": "otpipe.kernels.triton",
}
_ALIASES = {"online": "keops", "dense": "tensorized"}

#: above this many cost-matrix entries (B * N * M), ``auto`` leaves the dense backend (for ``chunked`` where
#: the fast kernels are missing)
AUTO_DENSE_MAX_ENTRIES = 5000 * 5000
#: on CPU tensors, ``auto`` uses the compiled ``cpu`` backend from this many entries (B * N * M) on;
#: measured: it is 2x faster than dense at N = M = 100 and 50x at 1000; below, both take ~10-30 us a call
AUTO_CPU_MIN_ENTRIES = 100 * 100
#: on CPU tensors, ``auto`` uses the ``multiscale`` solver for single pairs (B = 1) from this many entries on, in the
#: converging mode only (``tol`` given: there it is within 1.4e-6 of the full solve, measured at tol 1e-2 to 1e-4; in
#: the fixed schedule it was up to 1.7e-3 from the full fixed-schedule value, README "Backends").
#: Measured (fixed schedule, D = 3, issue 14's geometry, 2 shared cores; notes/issue-14-converge.md): at 20k
#: multiscale took 2.4 / 3.1 / 6.8 / 3.3 s against the full solve's 4.2 / 7.4 / 6.3 / 4.4 s at blur 0.01 / 0.05 /
#: 0.1 / 0.5, within 2e-5 of its value; at 10k it was slower (2.7 vs 2.0 s at blur 0.1, 1.7 vs 1.4 s at 0.5)
AUTO_MULTISCALE_MIN_ENTRIES = 20_000 * 20_000
#: on CUDA tensors, the same from this many entries on (block-sparse Triton reductions, clustering and masks on
#: the device). NOT measured on a GPU (none was available): reasoned from the CPU measurements. On the CPU,
#: multiscale overtakes the full solve at ~20k x 20k and is ~9x faster at 50k x 50k (1.35 s vs 12.6 s: a full
#: pass ~0.25 s against ~0.05-0.1 s of clustering and masks per temperature). A GPU pass is ~25-50x faster
#: (flash-sinkhorn's full tf32 solve of 200k takes 1.45 s on an H200) while the multiscale overhead (masks over
#: up to 4096 x 4096 clusters, launches, host synchronisations) shrinks less, so the crossover moves up by
#: ~sqrt(25-50) = 5-7x in N. Set at 200k (1M-point problems are certainly multiscale); ``benchmarks/bench_gpu.py``
#: times both at 200k and 1M
AUTO_MULTISCALE_MIN_ENTRIES_GPU = 200_000 * 200_000

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
    """Why Triton cannot be imported (``None`` when it can); imports it on first call."""
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

    if dtype is not None and name in ("cpu", "triton", "multiscale") and dtype not in (torch.float32, torch.float64):
        raise ValueError(f"backend {name!r} computes in float32 or float64, got {str(dtype).replace('torch.', '')} "
                         "points: convert them, or use backend='tensorized'")
    if name == "cpu" and dev != "cpu":
        raise ValueError(f"backend 'cpu' runs on CPU tensors, but the points are on a {dev} device: use "
                         "backend='triton' (or 'auto') for CUDA tensors, or move the points to the CPU")
    if name == "triton" and dev != "cuda":
        if dev == "cpu" and os.environ.get("TRITON_INTERPRET", "") in ("1", "true", "True"):
            return  # Triton's interpreter runs the kernels on CPU tensors (the CPU tests)
        raise ValueError(f"backend 'triton' runs on CUDA tensors, but the points are on a {dev} device: use "
                         "backend='cpu' (or 'auto') for CPU tensors")


def check_name(name: str) -> str:
    """``name`` with aliases resolved (``"auto"`` stays), or a one-line ``ValueError`` for an unknown name."""
    name = _ALIASES.get(name, name)
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {sorted(BACKENDS) + ['auto']}")
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
            from otpipe.kernels import cpu

            if cpu.available():
                return "multiscale" if converging and B == 1 and N * M >= AUTO_MULTISCALE_MIN_ENTRIES else "cpu"
            cpu._warn_unavailable()
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
    """The backend module for a resolved backend name (imported on first use)."""
    return importlib.import_module(BACKENDS[name])
