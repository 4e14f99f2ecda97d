"""Solvers: the eps-scaling schedule and parameters, the Sinkhorn loops (fixed schedule, converging mode,
over-relaxation, Anderson mixing), multiscale solves, and the public solve functions with their typed output."""
from __future__ import annotations

__all__: list[str] = []
