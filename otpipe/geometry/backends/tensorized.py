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
    """Dense kernel matrix ``k(x_i, y_j)``.

    Parameters
    ----------
    kernel : str
        ``"gaussian"`` (``exp(-|x-y|^2 / 2 sigma^2)``), ``"laplacian"`` (``exp(-|x-y| / sigma)``) or ``"energy"``
        (``-|x-y|``).
    sigma : float
        Kernel width (not used by ``"energy"``).
    x : torch.Tensor
        Points ``(B, N, D)``.
    y : torch.Tensor
        Points ``(B, M, D)``.

    Returns
    -------
    torch.Tensor
        ``(B, N, M)``.

    Raises
    ------
    ValueError
        If ``kernel`` is not one of the three.
    """
    if kernel == "gaussian":
        return torch.exp(Cost(2.0, halved=True).dense(x, y) / -(sigma * sigma))
    r = Cost(1.0, halved=False).dense(x, y)
    if kernel == "laplacian":
        return torch.exp(-r / sigma)
    if kernel == "energy":
        return -r
    raise ValueError(f"unknown kernel {kernel!r}")


class DenseOperator:
    """Dense operator: the backend reductions on a stored ``(B, N, M)`` cost matrix.

    Parameters
    ----------
    x : torch.Tensor
        Points of the rows, ``(B, N, D)``.
    y : torch.Tensor
        Points of the columns, ``(B, M, D)``.
    cost : Cost
        The ground cost.
    C : torch.Tensor or None, default None
        The ``(B, N, M)`` cost matrix, computed from ``x`` and ``y`` when ``None`` (a transposed operator shares it).
    dim : int, default 2
        Axis of ``C`` that the reductions run over: 2 (columns ``y``), or 1 for the transposed operator.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, cost: Cost, C: torch.Tensor | None = None, dim: int = 2):
        self.x, self.y, self.cost = x, y, cost
        self.C = cost.dense(x, y) if C is None else C
        self.dim = dim

    def transpose(self) -> DenseOperator:
        """The operator with rows and columns exchanged (``y`` as rows, ``x`` as columns).

        Returns
        -------
        DenseOperator
            The transposed operator, on the same cost.
        """
        return DenseOperator(self.y, self.x, self.cost, C=self.C, dim=3 - self.dim)

    def _arg(self, eps: float, h: torch.Tensor) -> torch.Tensor:
        hh = h[:, None, :] if self.dim == 2 else h[:, :, None]
        return hh - self.C / eps

    def softmin(self, eps: float, h: torch.Tensor) -> torch.Tensor:
        """Soft-min over the columns, ``f_i = -eps log sum_j exp(h_j - C(x_i, y_j) / eps)``.

        Parameters
        ----------
        eps : float
            Temperature.
        h : torch.Tensor
            ``(B, M)`` column offsets (log-weights plus potential over eps, ``log b_j + g_j / eps``).

        Returns
        -------
        torch.Tensor
            ``(B, N)``.
        """
        return -eps * torch.logsumexp(self._arg(eps, h), dim=self.dim)

    def softmax_mean(self, eps: float, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Softmax-weighted mean of column values, ``sum_j softmax_j(h_j - C_ij / eps) v_j``.

        Parameters
        ----------
        eps : float
            Temperature.
        h : torch.Tensor
            ``(B, M)`` column offsets (log-weights plus potential over eps, ``log b_j + g_j / eps``).
        v : torch.Tensor
            ``(B, M, K)`` values at the columns (the points ``y`` for a transport map).

        Returns
        -------
        torch.Tensor
            ``(B, N, K)``.
        """
        w = torch.softmax(self._arg(eps, h), dim=self.dim)
        return w @ v if self.dim == 2 else w.transpose(1, 2) @ v

    def softmax_cost(self, eps: float, h: torch.Tensor) -> torch.Tensor:
        """Softmax-weighted mean cost per row, ``sum_j softmax_j(h_j - C_ij / eps) C_ij``.

        Parameters
        ----------
        eps : float
            Temperature.
        h : torch.Tensor
            ``(B, M)`` column offsets (log-weights plus potential over eps, ``log b_j + g_j / eps``).

        Returns
        -------
        torch.Tensor
            ``(B, N)``.
        """
        w = torch.softmax(self._arg(eps, h), dim=self.dim)
        return (w * self.C).sum(self.dim)

    def dense_cost(self) -> torch.Tensor:
        """The cost matrix ``C(x_i, y_j)``, materialised (for small problems and tests).

        Returns
        -------
        torch.Tensor
            ``(B, N, M)``.
        """
        return self.C if self.dim == 2 else self.C.transpose(1, 2)

    def kernel_apply(self, kernel: str, sigma: float, v: torch.Tensor) -> torch.Tensor:
        """Kernel product ``sum_j k(x_i, y_j) v_j``.

        Parameters
        ----------
        kernel : str
            ``"gaussian"`` (``exp(-|x-y|^2 / 2 sigma^2)``), ``"laplacian"`` (``exp(-|x-y| / sigma)``) or ``"energy"``
            (``-|x-y|``).
        sigma : float
            Kernel width (not used by ``"energy"``).
        v : torch.Tensor
            ``(B, M)`` values at the columns.

        Returns
        -------
        torch.Tensor
            ``(B, N)``.
        """
        x, y = (self.x, self.y)
        K = kernel_matrix(kernel, sigma, x, y)
        return (K @ v[..., None])[..., 0]


def operator(x: torch.Tensor, y: torch.Tensor, cost: Cost) -> DenseOperator:
    """Dense operator with rows ``x`` and columns ``y``.

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
    DenseOperator
        The operator (the ``(B, N, M)`` cost matrix computed now).
    """
    return DenseOperator(x, y, cost)


class ChunkedDenseOperator:
    """:class:`DenseOperator`'s reductions over blocks of rows of at most ``max_entries / (B M)`` rows.

    Memory ``O(max_entries)`` whatever ``N``; under autograd each block is recomputed in the backward
    pass (``torch.utils.checkpoint``), so the gradient needs no ``(B, N, M)`` array either.

    Parameters
    ----------
    x : torch.Tensor
        Points of the rows, ``(B, N, D)``.
    y : torch.Tensor
        Points of the columns, ``(B, M, D)``.
    cost : Cost
        The ground cost.
    max_entries : int or None, default None
        Most cost entries per block; ``None``: ``AUTO_DENSE_MAX_ENTRIES``.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, cost: Cost, max_entries: int | None = None):
        from otpipe.geometry.backends._limits import AUTO_DENSE_MAX_ENTRIES

        self.x, self.y, self.cost = x, y, cost
        B, M = y.shape[0], y.shape[1]
        self.rows = max(1, int(max_entries or AUTO_DENSE_MAX_ENTRIES) // max(1, B * M))

    def transpose(self) -> ChunkedDenseOperator:
        """The operator with rows and columns exchanged (``y`` as rows, ``x`` as columns).

        Returns
        -------
        ChunkedDenseOperator
            The transposed operator, on the same cost.
        """
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
        """Soft-min over the columns, ``f_i = -eps log sum_j exp(h_j - C(x_i, y_j) / eps)``.

        Computed by blocks of rows (checkpointed under autograd).

        Parameters
        ----------
        eps : float
            Temperature.
        h : torch.Tensor
            ``(B, M)`` column offsets (log-weights plus potential over eps, ``log b_j + g_j / eps``).

        Returns
        -------
        torch.Tensor
            ``(B, N)``.
        """
        return self._map(lambda xb, y, hh: DenseOperator(xb, y, self.cost).softmin(eps, hh), h)

    def softmax_mean(self, eps: float, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Softmax-weighted mean of column values, ``sum_j softmax_j(h_j - C_ij / eps) v_j``.

        Computed by blocks of rows (checkpointed under autograd).

        Parameters
        ----------
        eps : float
            Temperature.
        h : torch.Tensor
            ``(B, M)`` column offsets (log-weights plus potential over eps, ``log b_j + g_j / eps``).
        v : torch.Tensor
            ``(B, M, K)`` values at the columns (the points ``y`` for a transport map).

        Returns
        -------
        torch.Tensor
            ``(B, N, K)``.
        """
        return self._map(lambda xb, y, hh, vv: DenseOperator(xb, y, self.cost).softmax_mean(eps, hh, vv), h, v)

    def softmax_cost(self, eps: float, h: torch.Tensor) -> torch.Tensor:
        """Softmax-weighted mean cost per row, ``sum_j softmax_j(h_j - C_ij / eps) C_ij``.

        Computed by blocks of rows (checkpointed under autograd).

        Parameters
        ----------
        eps : float
            Temperature.
        h : torch.Tensor
            ``(B, M)`` column offsets (log-weights plus potential over eps, ``log b_j + g_j / eps``).

        Returns
        -------
        torch.Tensor
            ``(B, N)``.
        """
        return self._map(lambda xb, y, hh: DenseOperator(xb, y, self.cost).softmax_cost(eps, hh), h)

    def dense_cost(self) -> torch.Tensor:
        """The cost matrix ``C(x_i, y_j)``, materialised whole (for small problems and tests).

        Returns
        -------
        torch.Tensor
            ``(B, N, M)``.
        """
        return self.cost.dense(self.x, self.y)

    def kernel_apply(self, kernel: str, sigma: float, v: torch.Tensor) -> torch.Tensor:
        """Kernel product ``sum_j k(x_i, y_j) v_j``.

        Computed by blocks of rows (checkpointed under autograd).

        Parameters
        ----------
        kernel : str
            ``"gaussian"`` (``exp(-|x-y|^2 / 2 sigma^2)``), ``"laplacian"`` (``exp(-|x-y| / sigma)``) or ``"energy"``
            (``-|x-y|``).
        sigma : float
            Kernel width (not used by ``"energy"``).
        v : torch.Tensor
            ``(B, M)`` values at the columns.

        Returns
        -------
        torch.Tensor
            ``(B, N)``.
        """
        return self._map(lambda xb, y, vv: (kernel_matrix(kernel, sigma, xb, y) @ vv[..., None])[..., 0], v)
