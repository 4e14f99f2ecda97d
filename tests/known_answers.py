"""Known-answer generators used across the test suite (exact references, no solver involved)."""
from __future__ import annotations

import numpy as np
import torch


def ot_1d_sorted(x: torch.Tensor, y: torch.Tensor, p: float, halved: bool = True) -> float:
    """Exact OT between two uniform 1-D clouds of equal size via sorted quantiles.

    ``W = mean_i |x_(i) - y_(i)|^p`` (divided by ``p`` for the ``|x-y|^p/p`` cost).
    """
    xs = np.sort(np.asarray(x, dtype=np.float64).ravel())
    ys = np.sort(np.asarray(y, dtype=np.float64).ravel())
    assert xs.shape == ys.shape
    w = float(np.mean(np.abs(xs - ys) ** p))
    return w / p if halved else w


def kernel_mmd(x, y, a, b, kernel) -> float:
    """``1/2 <a - b, K (a - b)>`` computed densely in float64 with NumPy, for a kernel ``K(D2)`` of squared distances."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)

    def k(u, v):
        d2 = ((u[:, None, :] - v[None, :, :]) ** 2).sum(-1)
        return kernel(d2)

    return float(0.5 * a @ k(x, x) @ a + 0.5 * b @ k(y, y) @ b - a @ k(x, y) @ b)


def blog_lines(n: int = 5, shifts=(1,)):
    """Example of the blog post 004: points (i, 0) and (i, s); OT with cost |x-y|^2 is s^2."""
    x = np.array([[[i, 0] for i in range(n)] for _ in shifts])
    y = np.array([[[i, s] for i in range(n)] for s in shifts])
    return x, y, [float(s) ** 2 for s in shifts]


def gaussian_cloud(n: int, d: int, mean=0.0, scale=1.0, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype) * scale + mean


def random_weights(n: int, seed: int = 0, dtype=torch.float64, zeros: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(n, generator=g, dtype=dtype) + 0.1
    if zeros:
        w[:zeros] = 0
    return w / w.sum()
