"""Dense backend: the cost matrix is stored, ``(B, N, M)`` memory; exact and fast for small problems.

:class:`ChunkedDenseOperator` computes the same reductions block of rows by block of rows (memory
``(B, rows, M)``, recomputed in the backward pass): the fallback of the compiled ``cpu`` backend for
large problems when its kernels are unavailable or autograd needs a dense computation (no pykeops).
"""
from __future__ import annotations

import torch

from otpipe.geometry.costs import Cost

__all__ = ["operator", "DenseOperator", "ChunkedDenseOperator", "kernel_matrix"]


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

    def transpose(self) -> DenseOperator:
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


class ChunkedDenseOperator:
    """:class:`DenseOperator`'s reductions over blocks of rows of at most ``max_entries / (B M)`` rows.

    Memory ``O(max_entries)`` whatever ``N``; under autograd each block is recomputed in the backward
    pass (``torch.utils.checkpoint``), so the gradient needs no ``(B, N, M)`` array either.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, cost: Cost, max_entries: int | None = None):
        from otpipe.geometry.backends._limits import AUTO_DENSE_MAX_ENTRIES

        self.x, self.y, self.cost = x, y, cost
        B, M = y.shape[0], y.shape[1]
        self.rows = max(1, int(max_entries or AUTO_DENSE_MAX_ENTRIES) // max(1, B * M))

    def transpose(self) -> ChunkedDenseOperator:
        return ChunkedDenseOperator(self.y, self.x, self.cost, self.rows * self.x.shape[0] * self.x.shape[1])

    def _map(self, fn, *args: torch.Tensor) -> torch.Tensor:
        """``fn(x_block, y, *args)`` over blocks of rows, concatenated along the row axis."""
        from torch.utils.checkpoint import checkpoint

        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (self.x, self.y, *args))
        out = []
        for s in range(0, self.x.shape[1], self.rows):
            xb = self.x[:, s : s + self.rows]
            out.append(checkpoint(fn, xb, self.y, *args, use_reentrant=False) if grad else fn(xb, self.y, *args))
        return torch.cat(out, dim=1)

    def softmin(self, eps: float, h: torch.Tensor) -> torch.Tensor:
        return self._map(lambda xb, y, hh: DenseOperator(xb, y, self.cost).softmin(eps, hh), h)

    def softmax_mean(self, eps: float, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self._map(lambda xb, y, hh, vv: DenseOperator(xb, y, self.cost).softmax_mean(eps, hh, vv), h, v)

    def softmax_cost(self, eps: float, h: torch.Tensor) -> torch.Tensor:
        return self._map(lambda xb, y, hh: DenseOperator(xb, y, self.cost).softmax_cost(eps, hh), h)

    def dense_cost(self) -> torch.Tensor:
        return self.cost.dense(self.x, self.y)

    def kernel_apply(self, kernel: str, sigma: float, v: torch.Tensor) -> torch.Tensor:
        return self._map(lambda xb, y, vv: (kernel_matrix(kernel, sigma, xb, y) @ vv[..., None])[..., 0], v)
