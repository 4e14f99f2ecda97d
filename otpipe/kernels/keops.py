"""KeOps backend: symbolic (lazy) cost matrices reduced on the fly, linear memory, CPU or CUDA.

pykeops is imported on first use; each new formula is compiled once (10-20 s) and cached.
"""
from __future__ import annotations

import torch

from ..costs import Cost

__all__ = ["operator", "KeOpsOperator"]


def _lazy():
    try:
        from pykeops.torch import LazyTensor
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError("the 'keops' backend needs pykeops (pip install pykeops) and a C++ compiler") from exc
    return LazyTensor


class KeOpsOperator:
    """Rows ``x (B, N, D)``, columns ``y (B, M, D)``; reductions over ``j`` (KeOps axis 2)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, cost: Cost):
        self.x, self.y, self.cost = x, y, cost
        LT = _lazy()
        self._LT = LT
        self.x_i = LT(x[:, :, None, :].contiguous())
        self.y_j = LT(y[:, None, :, :].contiguous())
        self.C_ij = cost.keops(self.x_i, self.y_j)

    def transpose(self) -> "KeOpsOperator":
        return KeOpsOperator(self.y, self.x, self.cost)

    def _h_j(self, h: torch.Tensor):
        return self._LT(h[:, None, :, None].contiguous())

    def _inv_eps(self, eps: float):
        # a parameter, so that every eps shares one compiled formula
        return self._LT(torch.tensor([1.0 / eps], dtype=self.x.dtype, device=self.x.device))

    def _arg(self, eps: float, h: torch.Tensor):
        return self._h_j(h) - self.C_ij * self._inv_eps(eps)

    def softmin(self, eps: float, h: torch.Tensor) -> torch.Tensor:
        return -eps * self._arg(eps, h).logsumexp(dim=2)[..., 0]

    def softmax_mean(self, eps: float, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        v_j = self._LT(v[:, None, :, :].contiguous())
        return self._arg(eps, h).sumsoftmaxweight(v_j, dim=2)

    def softmax_cost(self, eps: float, h: torch.Tensor) -> torch.Tensor:
        return self._arg(eps, h).sumsoftmaxweight(self.C_ij, dim=2)[..., 0]

    def dense_cost(self) -> torch.Tensor:
        return self.cost.dense(self.x, self.y)

    def kernel_apply(self, kernel: str, sigma: float, v: torch.Tensor) -> torch.Tensor:
        d2 = ((self.x_i - self.y_j) ** 2).sum(-1)
        if kernel == "gaussian":
            K = (d2 * (-0.5 / (sigma * sigma))).exp()
        elif kernel == "laplacian":
            K = (d2.sqrt() * (-1.0 / sigma)).exp()
        elif kernel == "energy":
            K = -d2.sqrt()
        else:
            raise ValueError(f"unknown kernel {kernel!r}")
        return (K * self._h_j(v)).sum(dim=2)[..., 0]


def operator(x: torch.Tensor, y: torch.Tensor, cost: Cost) -> KeOpsOperator:
    """KeOps operator with rows ``x`` and columns ``y``."""
    return KeOpsOperator(x, y, cost)
