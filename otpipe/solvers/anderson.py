"""Windowed Anderson mixing of a batched fixed-point map (the converging mode of :mod:`otpipe.solvers.loop`).

Knows nothing of Sinkhorn: given iterates ``x`` and their images ``G(x)`` it proposes the next iterate.
"""
from __future__ import annotations

import torch

__all__ = ["Anderson"]


class Anderson:
    """Windowed (type II) Anderson mixing of a fixed-point map ``x -> G(x)`` on batched potentials ``(B, n)``.

    ``x+ = G(x_k) - sum_i gamma_i dG_i``, ``gamma = argmin |r_k - sum_i gamma_i dR_i|_w^2`` over the last
    ``memory`` differences ``dR_i = r_i+1 - r_i``, ``dG_i = G(x_i+1) - G(x_i)`` of the residuals
    ``r = G(x) - x`` (``|.|_w``: weighted by the marginal's weights; relative ridge ``ridge``),
    independently per batch element: a multisecant quasi-Newton step (GMRES on a linear map).
    :meth:`reset` forgets some elements' history. Ring buffers and an incrementally updated Gram matrix keep
    the overhead at ``O(memory n)`` per step. Calling the object with ``(x, G(x))`` returns the next iterate.

    Parameters
    ----------
    w : torch.Tensor
        ``(B, n)`` non-negative weights of the residual norm (the weights of the potential's points).
    memory : int, default 20
        Number of differences kept (the window).
    ridge : float, default 1e-10
        Ridge regularisation of the least-squares problem, relative to the largest diagonal entry of its Gram matrix.
    """

    def __init__(self, w: torch.Tensor, memory: int = 20, ridge: float = 1e-10):
        self.sw = w.detach().double().clamp(min=0).sqrt()
        self.m, self.ridge = memory, ridge
        B, n = w.shape
        self.dR = torch.zeros(B, memory, n, dtype=torch.float64, device=w.device)
        self.dG: torch.Tensor | None = None
        self.A = torch.zeros(B, memory, memory, dtype=torch.float64, device=w.device)
        self.r = self.g = None
        self.k = 0  # differences stored so far (slot k % memory is the next)
        self.fresh = None  # elements whose next difference would straddle a restart

    def reset(self, mask: torch.Tensor) -> None:
        """Forget the history of the selected batch elements (their next step is a plain fixed-point step).

        Parameters
        ----------
        mask : torch.Tensor
            ``(B,)`` bool, the elements to reset.
        """
        keep = (~mask).double()
        self.dR.mul_(keep[:, None, None])
        self.dG.mul_(keep.to(self.dG.dtype)[:, None, None])
        self.A.mul_(keep[:, None, None])
        self.fresh = mask if self.fresh is None else self.fresh | mask

    def __call__(self, x: torch.Tensor, gx: torch.Tensor) -> torch.Tensor:
        r = (gx - x).double().mul_(self.sw)
        if self.r is None:
            self.r, self.g = r, gx
            self.dG = torch.zeros(x.shape[0], self.m, x.shape[1], dtype=gx.dtype, device=gx.device)
            return gx
        i = self.k % self.m
        self.dR[:, i] = r - self.r
        self.dG[:, i] = gx - self.g
        if self.fresh is not None:
            self.dR[:, i].mul_((~self.fresh).double()[:, None])
            self.dG[:, i].mul_((~self.fresh).to(gx.dtype)[:, None])
            self.fresh = None
        self.r, self.g = r, gx
        self.k += 1
        row = torch.bmm(self.dR, self.dR[:, i, :, None])[..., 0]  # (B, m): <dR_j, dR_i>
        self.A[:, i, :] = row
        self.A[:, :, i] = row
        diag = self.A.diagonal(dim1=1, dim2=2)
        # empty (or reset) slots get a unit diagonal and a zero right-hand side: gamma = 0 there
        reg = torch.where(diag > 0, self.ridge * diag.amax(-1, keepdim=True), torch.ones_like(diag))
        gamma = torch.linalg.solve(self.A + torch.diag_embed(reg), torch.bmm(self.dR, r[..., None]))
        gamma = torch.nan_to_num(gamma, nan=0.0, posinf=0.0, neginf=0.0)
        return gx - torch.bmm(gamma.transpose(1, 2).to(gx.dtype), self.dG)[:, 0]
