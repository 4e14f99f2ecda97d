"""The run engine: clusters and their security, locks, fingerprints, checkpoints and resume, estimates, progress,
Ctrl-C, result-store attributes and convergence summaries. It knows Dask and Zarr, never the Sinkhorn loop."""
from __future__ import annotations

__all__: list[str] = []
