"""KeOps backend: symbolic (lazy) cost matrices reduced on the fly, linear memory, CPU or CUDA.

pykeops is imported on first use; each new formula is compiled once (10-20 s) and cached.

Block-sparse mode (the ``multiscale`` backend on GPUs): given a :class:`~otpipe.geometry.backends.cpu.Blocks`
pattern of a single pair of cluster-sorted clouds, every reduction passes KeOps its ``ranges`` argument
(row clusters, and for each the column ranges to visit; the transposed triple for reductions over ``i``,
which KeOps's autograd uses), so only the kept cluster pairs are computed, on CPU or CUDA alike.
"""
from __future__ import annotations

import torch

from otpipe.geometry.costs import Cost

__all__ = ["operator", "KeOpsOperator", "keops_ranges"]


def _lazy():
    try:
        from pykeops.torch import LazyTensor
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError("the 'keops' backend needs pykeops (pip install pykeops) and a C++ compiler") from exc
    return LazyTensor


def keops_ranges(blocks, device) -> tuple[torch.Tensor, ...]:
    """KeOps's 6-tuple ``ranges`` for a :class:`~otpipe.geometry.backends.cpu.Blocks` pattern.

    ``(ranges_i, slices_i, redranges_j, ranges_j, slices_j, redranges_i)``: row clusters ``[start, end)``,
    for each the end of its slice of column ranges, the column ranges; then the same with rows and
    columns exchanged (used by reductions over ``i``, e.g. in gradients).

    Parameters
    ----------
    blocks : otpipe.geometry.backends.cpu.Blocks
        The block-sparsity pattern.
    device : torch.device or str
        Device of the returned arrays.

    Returns
    -------
    tuple of torch.Tensor
        The six int32 arrays, contiguous on ``device``.
    """
    def half(bl):
        r = bl.rows
        clusters = torch.stack([r[:-1], r[1:]], dim=1)
        return clusters, bl.cptr[1:], bl.rng.view(-1, 2)

    out = (*half(blocks), *half(blocks.transpose()))
    return tuple(t.to(device=device, dtype=torch.int32).contiguous() for t in out)


class KeOpsOperator:
    """Rows ``x (B, N, D)``, columns ``y (B, M, D)``; reductions over ``j`` (KeOps axis 2) by symbolic KeOps formulas.

    With ``blocks`` (``B = 1``, points sorted by cluster) every reduction visits only the kept cluster pairs
    (KeOps block-sparse ``ranges``).

    Parameters
    ----------
    x : torch.Tensor
        Points of the rows, ``(B, N, D)``.
    y : torch.Tensor
        Points of the columns, ``(B, M, D)``.
    cost : Cost
        The ground cost.
    blocks : otpipe.geometry.backends.cpu.Blocks or None, default None
        Block-sparsity pattern of a single (``B = 1``) cluster-sorted pair: every reduction visits only the kept
        cluster pairs (KeOps ``ranges``).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, cost: Cost, blocks=None):
        self.x, self.y, self.cost, self.blocks = x, y, cost, blocks
        LT = _lazy()
        self._LT = LT
        if blocks is None:
            self.x_i = LT(x[:, :, None, :].contiguous())
            self.y_j = LT(y[:, None, :, :].contiguous())
            self._ranges = None
        else:
            if x.shape[0] != 1:
                raise ValueError(f"block-sparse KeOps reductions take one pair (B = 1), got B = {x.shape[0]}")
            if int(blocks.rows[-1]) != x.shape[1] or int(blocks.cols[-1]) != y.shape[1]:
                raise ValueError(f"block pattern for {int(blocks.rows[-1])} x {int(blocks.cols[-1])} points used on "
                                 f"{x.shape[1]} x {y.shape[1]}")
            # 2-D LazyTensors (KeOps does not combine batch dimensions with ranges); outputs get B = 1 back
            self.x_i = LT(x[0][:, None, :].contiguous())
            self.y_j = LT(y[0][None, :, :].contiguous())
            self._ranges = keops_ranges(blocks, x.device)
        self.C_ij = cost.keops(self.x_i, self.y_j)

    def transpose(self) -> KeOpsOperator:
        """The operator with rows and columns exchanged (``y`` as rows, ``x`` as columns).

        Block patterns are transposed too.

        Returns
        -------
        KeOpsOperator
            The transposed operator, on the same cost.
        """
        return KeOpsOperator(self.y, self.x, self.cost, None if self.blocks is None else self.blocks.transpose())

    @property
    def _jdim(self) -> int:
        return 2 if self._ranges is None else 1

    def _red(self, out: torch.Tensor) -> torch.Tensor:
        """Batched shape for a block-sparse (2-D) reduction."""
        return out if self._ranges is None else out[None]

    def _h_j(self, h: torch.Tensor):
        if self._ranges is not None:
            return self._LT(h[0][None, :, None].contiguous())
        return self._LT(h[:, None, :, None].contiguous())

    def _inv_eps(self, eps: float):
        # a parameter, so that every eps shares one compiled formula
        return self._LT(torch.tensor([1.0 / eps], dtype=self.x.dtype, device=self.x.device))

    def _arg(self, eps: float, h: torch.Tensor):
        return self._h_j(h) - self.C_ij * self._inv_eps(eps)

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
        lse = self._arg(eps, h).logsumexp(dim=self._jdim, ranges=self._ranges)
        return -eps * self._red(lse)[..., 0]

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
        if self._ranges is None:
            v_j = self._LT(v[:, None, :, :].contiguous())
        else:
            v_j = self._LT(v[0][None, :, :].contiguous())
        return self._red(self._arg(eps, h).sumsoftmaxweight(v_j, dim=self._jdim, ranges=self._ranges))

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
        out = self._arg(eps, h).sumsoftmaxweight(self.C_ij, dim=self._jdim, ranges=self._ranges)
        return self._red(out)[..., 0]

    def dense_cost(self) -> torch.Tensor:
        """The cost matrix ``C(x_i, y_j)``, materialised (for small problems and tests).

        Returns
        -------
        torch.Tensor
            ``(B, N, M)``.
        """
        return self.cost.dense(self.x, self.y)

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
        d2 = ((self.x_i - self.y_j) ** 2).sum(-1)
        if kernel == "gaussian":
            K = (d2 * (-0.5 / (sigma * sigma))).exp()
        elif kernel == "laplacian":
            K = (d2.sqrt() * (-1.0 / sigma)).exp()
        elif kernel == "energy":
            K = -d2.sqrt()
        else:
            raise ValueError(f"unknown kernel {kernel!r}")
        return self._red((K * self._h_j(v)).sum(dim=self._jdim, ranges=self._ranges))[..., 0]


def operator(x: torch.Tensor, y: torch.Tensor, cost: Cost, blocks=None) -> KeOpsOperator:
    """KeOps operator with rows ``x`` and columns ``y`` (block-sparse with ``blocks``).

    Parameters
    ----------
    x : torch.Tensor
        Points of the rows, ``(B, N, D)``.
    y : torch.Tensor
        Points of the columns, ``(B, M, D)``.
    cost : Cost
        The ground cost.
    blocks : otpipe.geometry.backends.cpu.Blocks or None, default None
        Block-sparsity pattern of a single (``B = 1``) cluster-sorted pair: every reduction visits only the kept
        cluster pairs (KeOps ``ranges``).

    Returns
    -------
    KeOpsOperator
        The operator (pykeops is imported now).
    """
    return KeOpsOperator(x, y, cost, blocks)
