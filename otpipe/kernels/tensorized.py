"""Dense backend: the cost matrix is stored, ``(B, N, M)`` memory; exact and fast for small problems."""
from __future__ import annotations

import torch

from ..costs import Cost

__all__ = ["operator", "DenseOperator", "kernel_matrix"]


def kernel_matrix(kernel: str, sigma: float, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Dense kernel matrix: ``gaussian`` exp(-|x-y|^2 / 2 sigma^2), ``laplacian`` exp(-|x-y| / sigma), ``energy`` -|x-y|."""
    if kernel == "gaussian":
        return torch.exp(Cost(2.0, halved=True).dense(x, y) / -(sigma * sigma))
    r = Cost(1.0, halved=False).dense(x, y)
    if kernel == "laplacian":
        return torch.exp(-r / sigma)
    if kernel == "energy":
        return -r
    raise ValueError(f"unknown kernel {kernel!r}")


class DenseOperator:
    """Rows ``x``, columns ``y``; ``C`` is the ``(B, N, M)`` cost matrix (``dim`` = column axis)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, cost: Cost, C: torch.Tensor | None = None, dim: int = 2):
        self.x, self.y, self.cost = x, y, cost
        self.C = cost.dense(x, y) if C is None else C
        self.dim = dim

    def transpose(self) -> "DenseOperator":
        return DenseOperator(self.y, self.x, self.cost, C=self.C, dim=3 - self.dim)

    def _arg(self, eps: float, h: torch.Tensor) -> torch.Tensor:
        hh = h[:, None, :] if self.dim == 2 else h[:, :, None]
        return hh - self.C / eps

    def softmin(self, eps: float, h: torch.Tensor) -> torch.Tensor:
        return -eps * torch.logsumexp(self._arg(eps, h), dim=self.dim)

    def softmax_mean(self, eps: float, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self._arg(eps, h), dim=self.dim)
        return w @ v if self.dim == 2 else w.transpose(1, 2) @ v

    def softmax_cost(self, eps: float, h: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self._arg(eps, h), dim=self.dim)
        return (w * self.C).sum(self.dim)

    def dense_cost(self) -> torch.Tensor:
        return self.C if self.dim == 2 else self.C.transpose(1, 2)

    def kernel_apply(self, kernel: str, sigma: float, v: torch.Tensor) -> torch.Tensor:
        x, y = (self.x, self.y)
        K = kernel_matrix(kernel, sigma, x, y)
        return (K @ v[..., None])[..., 0]


def operator(x: torch.Tensor, y: torch.Tensor, cost: Cost) -> DenseOperator:
    """Dense operator with rows ``x`` and columns ``y``."""
    return DenseOperator(x, y, cost)
