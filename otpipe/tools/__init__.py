"""Tools built on the solvers (numerics only): losses (Sinkhorn divergence, kernel distances), barycenters,
two-sample tests and sample-complexity estimates."""
from __future__ import annotations

__all__: list[str] = []
