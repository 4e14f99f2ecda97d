"""Size thresholds of the backend registry (:func:`otpipe.geometry.backends.choose_backend`) and of the dense
fallbacks inside the backends: a leaf module, so that backends and registry share them without an import cycle."""
from __future__ import annotations

__all__ = ["AUTO_DENSE_MAX_ENTRIES", "AUTO_CPU_MIN_ENTRIES", "AUTO_MULTISCALE_MIN_ENTRIES",
           "AUTO_MULTISCALE_MIN_ENTRIES_GPU"]

#: above this many cost-matrix entries (B * N * M), ``auto`` leaves the dense backend (for ``chunked`` where
#: the fast kernels are missing)
AUTO_DENSE_MAX_ENTRIES = 5000 * 5000
#: on CPU tensors, ``auto`` uses the compiled ``cpu`` backend from this many entries (B * N * M) on: from there it
#: is faster than dense (benchmarks/RESULTS.md, "One reduction pass"); below, both cost the call overhead
AUTO_CPU_MIN_ENTRIES = 100 * 100
#: on CPU tensors, ``auto`` uses the ``multiscale`` solver for single pairs (B = 1) from this many entries on, in the
#: converging mode only (``tol`` given), where it stays within its stated bound of the full solve (README
#: "Backends"); the crossover in time with the full solve: benchmarks/RESULTS.md, "Multiscale"
AUTO_MULTISCALE_MIN_ENTRIES = 20_000 * 20_000
#: on CUDA tensors, the same from this many entries on (block-sparse Triton reductions, clustering and masks on
#: the device). Not measured on a GPU yet: a GPU pass is ~25-50x faster than a CPU pass while the multiscale
#: overhead (masks, launches, host synchronisations) shrinks less, so the crossover moves up by ~sqrt(25-50) in N;
#: ``benchmarks/bench_gpu.py`` times both at 200k and 1M to set it
AUTO_MULTISCALE_MIN_ENTRIES_GPU = 200_000 * 200_000
