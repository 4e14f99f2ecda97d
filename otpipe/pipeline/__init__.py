"""Dask orchestration: cluster set-up, tiles of work, checkpoints and xarray assembly.

Nothing here knows the solver's internals: it calls the public functions of :mod:`otpipe`.
"""
from __future__ import annotations

__all__: list[str] = []
