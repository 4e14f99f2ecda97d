"""Pipelines over collections, each a set of keys, a task and an assembly on the engine: distance matrices
(:mod:`~otpipe.pipelines.pairwise`), two-sample tests, barycenters per group and sample-complexity studies."""
from __future__ import annotations

__all__: list[str] = []
