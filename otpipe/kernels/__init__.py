"""Reduction backends: each file implements the same small set of row-wise reductions.

An *operator* binds two batches of points ``x (B, N, D)`` (rows) and ``y (B, M, D)``
(columns) to a :class:`~otpipe.costs.Cost` and offers

* ``softmin(eps, h)``: ``f_i = -eps log sum_j exp(h_j - C(x_i, y_j) / eps)``, shape ``(B, N)``;
* ``softmax_mean(eps, h, v)``: ``sum_j softmax_j(h_j - C_ij / eps) v_j``, shape ``(B, N, K)``;
* ``softmax_cost(eps, h)``: ``sum_j softmax_j(h_j - C_ij / eps) C_ij``, shape ``(B, N)``;
* ``kernel_apply(kernel, sigma, v)``: ``sum_j k(x_i, y_j) v_j``, shape ``(B, N)``;
* ``transpose()``: the operator with rows and columns exchanged.

The solver only ever talks to operators, so a new backend is one new file here.
"""
from __future__ import annotations

import importlib

__all__ = ["BACKENDS", "get_backend", "choose_backend"]

BACKENDS = {
    "tensorized": "otpipe.kernels.tensorized",
    "keops": "otpipe.kernels.keops",
    "cpu": "otpipe.kernels.cpu",
    "multiscale": "otpipe.kernels.multiscale",
    "triton": "otpipe.kernels.triton",
}
_ALIASES = {"online": "keops", "dense": "tensorized"}

#: above this many cost-matrix entries (B * N * M), ``auto`` leaves the dense backend
AUTO_DENSE_MAX_ENTRIES = 5000 * 5000
#: on CPU tensors, ``auto`` uses the compiled ``cpu`` backend from this many entries (B * N * M) on;
#: measured: it is 2x faster than dense at N = M = 100 and 50x at 1000; below, both take ~10-30 us a call
AUTO_CPU_MIN_ENTRIES = 100 * 100
#: on CPU tensors, ``auto`` uses the ``multiscale`` solver for single pairs (B = 1) from this many entries on
AUTO_MULTISCALE_MIN_ENTRIES = 50_000 * 50_000
#: on GPU tensors, the same from this many entries on (KeOps block-sparse reductions). Not yet measured on a
#: GPU: a full KeOps pass over 4e10 pairs takes ~0.1-0.4 s there, against ~0.1 s of CPU-side clustering and
#: masks per temperature for the multiscale solver, so the crossover is at or below this size
AUTO_MULTISCALE_MIN_ENTRIES_GPU = 200_000 * 200_000


def _on_cpu(device) -> bool:
    import torch

    if device is None:  # unknown: CPU unless this machine has CUDA
        return not torch.cuda.is_available()
    return torch.device(device).type == "cpu"


def choose_backend(name: str, B: int, N: int, M: int, *, device=None) -> str:
    """Resolve ``"auto"`` and aliases to a backend name; validate explicit names.

    ``auto`` picks ``multiscale`` for single CPU pairs with at least :data:`AUTO_MULTISCALE_MIN_ENTRIES`
    entries (GPU pairs: :data:`AUTO_MULTISCALE_MIN_ENTRIES_GPU`), else ``cpu`` for CPU tensors (``device``; when ``None``: when CUDA is absent) with at least
    :data:`AUTO_CPU_MIN_ENTRIES` entries if its kernels compile (warning once and falling back to dense
    reductions, by blocks of rows above :data:`AUTO_DENSE_MAX_ENTRIES`, otherwise),
    else ``tensorized`` up to :data:`AUTO_DENSE_MAX_ENTRIES` entries, else ``keops``.
    """
    name = _ALIASES.get(name, name)
    if name == "auto":
        if B == 1 and N * M >= AUTO_MULTISCALE_MIN_ENTRIES_GPU and not _on_cpu(device):
            return "multiscale"
        if B * N * M >= AUTO_CPU_MIN_ENTRIES and _on_cpu(device):
            from . import cpu

            if cpu.available():
                return "multiscale" if B == 1 and N * M >= AUTO_MULTISCALE_MIN_ENTRIES else "cpu"
            cpu._warn_unavailable()
            if B * max(N, M) * max(N, M) > AUTO_DENSE_MAX_ENTRIES:
                return "cpu"  # its operator falls back to the dense reductions by blocks of rows (no KeOps)
        return "tensorized" if B * max(N, M) * max(N, M) <= AUTO_DENSE_MAX_ENTRIES else "keops"
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {sorted(BACKENDS) + ['auto']}")
    return name


def get_backend(name: str):
    """The backend module for a resolved backend name (imported on first use)."""
    return importlib.import_module(BACKENDS[name])
