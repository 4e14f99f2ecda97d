"""Geometry: ground costs (:mod:`~otpipe.geometry.costs`), the reduction operators that apply a Gibbs kernel
``softmin_j(h_j - C_ij / eps)`` (:mod:`~otpipe.geometry.backends`, one module per backend) and the block masks of
multiscale solves (:mod:`~otpipe.geometry.blocks`). Numerics only: nothing here imports storage, Dask or the CLI."""
from __future__ import annotations

__all__: list[str] = []
