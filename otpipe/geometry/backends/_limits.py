"""Size thresholds of the backend registry (:func:`otpipe.geometry.backends.choose_backend`) and of the dense
fallbacks inside the backends: a leaf module, so that backends and registry share them without an import cycle."""
from __future__ import annotations

__all__ = ["AUTO_DENSE_MAX_ENTRIES", "AUTO_CPU_MIN_ENTRIES", "AUTO_MULTISCALE_MIN_ENTRIES",
           "AUTO_MULTISCALE_MIN_ENTRIES_GPU"]

#: above this many cost-matrix entries (B * N * M), ``auto`` leaves the dense backend (for ``chunked`` where
#: the fast kernels are missing)
AUTO_DENSE_MAX_ENTRIES = 5000 * 5000
#: on CPU tensors, ``auto`` uses the compiled ``cpu`` backend from this many entries (B * N * M) on;
#: measured: it is 2x faster than dense at N = M = 100 and 50x at 1000; below, both take ~10-30 us a call
AUTO_CPU_MIN_ENTRIES = 100 * 100
#: on CPU tensors, ``auto`` uses the ``multiscale`` solver for single pairs (B = 1) from this many entries on, in the
#: converging mode only (``tol`` given: there it is within 1.4e-6 of the full solve, measured at tol 1e-2 to 1e-4; in
#: the fixed schedule it was up to 1.7e-3 from the full fixed-schedule value, README "Backends").
#: Measured (fixed schedule, D = 3, x in the unit cube and y in [0.25, 0.75]^3, 2 shared cores): at 20k
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
