"""Chunked backend: the dense computation over blocks of rows, in bounded memory, on any device.

Pure torch (no compiler, no Triton, no KeOps): :class:`otpipe.geometry.backends.tensorized.ChunkedDenseOperator`
runs the dense operator on blocks of at most ``AUTO_DENSE_MAX_ENTRIES`` cost entries ``(B, rows, M)``,
checkpointed under autograd, so memory stays ``O(AUTO_DENSE_MAX_ENTRIES + (N + M) D)`` whatever ``N x M``.
It is what ``auto`` falls back to on CUDA tensors without Triton (and on other devices) for large problems;
slower than the fused kernels (the cost blocks go through memory), but exact and everywhere.
"""
from __future__ import annotations

import torch

from otpipe.geometry.backends.tensorized import ChunkedDenseOperator
from otpipe.geometry.costs import Cost

__all__ = ["operator", "ChunkedDenseOperator"]


def operator(x: torch.Tensor, y: torch.Tensor, cost: Cost) -> ChunkedDenseOperator:
    """Chunked operator with rows ``x`` and columns ``y``.

    Parameters
    ----------
    x : torch.Tensor
        Points of the rows, ``(B, N, D)``.
    y : torch.Tensor
        Points of the columns, ``(B, M, D)``.
    cost : Cost
        The ground cost.

    Returns
    -------
    ChunkedDenseOperator
        The operator (dense reductions by blocks of rows, bounded memory).
    """
    return ChunkedDenseOperator(x, y, cost)
