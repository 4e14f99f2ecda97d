"""The native operator of the points' device: the compiled ``cpu`` kernels for CPU tensors, the ``triton`` ones
for CUDA tensors, the ``chunked`` torch computation where neither is available.

Not a backend name of its own: it is what a solver strategy that picks its kernels by device (the
``multiscale`` solve, :mod:`otpipe.solvers.multiscale`) uses for its full (not truncated) reductions, such as
transport maps and kernel sums.
"""
from __future__ import annotations

import torch

from otpipe.geometry.backends import cpu
from otpipe.geometry.costs import Cost

__all__ = ["operator"]


def operator(x: torch.Tensor, y: torch.Tensor, cost: Cost):
    """The full (not truncated) operator with rows ``x`` and columns ``y`` on the kernels of their device.

    Parameters
    ----------
    x, y : Tensor, ``(B, N, D)`` / ``(B, M, D)``
        Points.
    cost : Cost
        Ground cost.

    Returns
    -------
    operator
        ``cpu`` for CPU tensors, ``triton`` for CUDA tensors when Triton imports, ``chunked`` otherwise.
    """
    if x.device.type == "cpu":
        return cpu.operator(x, y, cost)
    from otpipe.geometry.backends import triton_error

    if x.device.type == "cuda" and triton_error() is None:
        from otpipe.geometry.backends.triton import TritonOperator

        return TritonOperator(x, y, cost)
    from otpipe.geometry.backends.chunked import ChunkedDenseOperator

    return ChunkedDenseOperator(x, y, cost)
