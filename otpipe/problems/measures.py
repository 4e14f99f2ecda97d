"""Measures as tensors: validation of user input and padding of ragged batches.

A measure is ``alpha = sum_i a_i delta_{x_i}``: points ``x (N, D)`` and weights ``a (N,)``;
a batch stacks ``B`` measures as ``x (B, N, D)``, ``a (B, N)``. Measures of different sizes
share a batch by zero-weight padding (:func:`pad_batch`), which changes no result.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Pair", "as_points", "as_weights", "validate_pair", "pad_batch", "log_weights", "reject_meta", "Stack"]

#: log-weight given to zero-weight (padding) points: finite, so that online reductions never
#: see ``-inf - (-inf)``, and far below any real exponent.
_LOG_ZERO = -1e30


def reject_meta(v, name: str) -> None:
    """Reject a meta-device tensor (shape and dtype only, no values) with a one-line error.

    Torch's own error would come from deep inside (``Tensor.item() cannot be called on meta tensors``).

    Parameters
    ----------
    v : object
        The value to check (anything that is not a meta tensor passes).
    name : str
        Name of the argument, for the message.

    Raises
    ------
    ValueError
        If ``v`` is a tensor on the meta device.
    """
    if isinstance(v, torch.Tensor) and v.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (shape and dtype only, no values): pass a tensor with data, "
                         "e.g. created on cpu/cuda, or materialised with .to_empty(device=...) and filled")


def _to_tensor(v, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        t = v
    else:
        try:
            arr = np.asarray(v)
        except Exception as exc:  # noqa: BLE001 - report any conversion failure as bad input
            raise ValueError(f"{name} cannot be converted to an array: {exc}") from None
        if arr.dtype == object:
            raise ValueError(f"{name} must be a numeric array, got ragged or object data")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if like is not None:
        if t.device != like.device:
            raise ValueError(f"{name} is on {t.device} but the points are on {like.device}: put the weights on the "
                             "points' device")
        reject_meta(t, name)
        t = t.to(dtype=like.dtype)
    elif not t.is_floating_point():
        if t.dtype == torch.bool or t.is_complex():
            raise ValueError(f"{name} must be real numbers, got {t.dtype}")
        t = t.to(torch.get_default_dtype())
    elif t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    return t


def as_points(x, name: str = "x") -> torch.Tensor:
    """Validate points: a real tensor ``(N, D)`` or ``(B, N, D)`` with finite coordinates, ``N >= 1``.

    Parameters
    ----------
    x : array_like or torch.Tensor
        The points; NumPy arrays and nested sequences are converted. Integers become the default float dtype,
        floats other than float32 and float64 become float32.
    name : str, default "x"
        Name of the argument, for the messages.

    Returns
    -------
    torch.Tensor
        The points, ``(N, D)`` or ``(B, N, D)``.

    Raises
    ------
    ValueError
        On a wrong shape, ``D = 0``, no points, an empty batch, NaN or infinite coordinates, non-real data.
    """
    t = _to_tensor(x, name)
    reject_meta(t, name)  # after validate_pair's device check: "x is on cpu but y is on meta" says more
    if t.dim() not in (2, 3):
        raise ValueError(f"{name} must have shape (N, D) or (B, N, D), got shape {tuple(t.shape)}")
    if t.shape[-1] == 0:
        raise ValueError(f"{name} has dimension D = 0")
    if t.shape[-2] == 0:
        raise ValueError(f"{name} is empty: a measure needs at least one point")
    if t.dim() == 3 and t.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (B = 0)")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return t


def as_weights(a, x: torch.Tensor, name: str = "a") -> torch.Tensor:
    """Validate weights for points ``x``: shape ``x.shape[:-1]``, finite, ``>= 0``, positive total.

    Parameters
    ----------
    a : array_like or torch.Tensor or None
        The weights; ``None`` gives uniform weights ``1/N``.
    x : torch.Tensor
        The validated points (:func:`as_points`); the weights take their dtype and must be on their device.
    name : str, default "a"
        Name of the argument, for the messages.

    Returns
    -------
    torch.Tensor
        The weights, shape ``x.shape[:-1]`` (not normalised).

    Raises
    ------
    ValueError
        On a wrong shape or device, NaN or infinite values, negative weights or a zero total.
    """
    if a is None:
        n = x.shape[-2]
        return torch.full(x.shape[:-1], 1.0 / n, dtype=x.dtype, device=x.device)
    t = _to_tensor(a, name, like=x)
    if tuple(t.shape) != tuple(x.shape[:-1]):
        raise ValueError(f"{name} must have shape {tuple(x.shape[:-1])} to match the points, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite weights")
    if bool((t < 0).any()):
        raise ValueError(f"{name} contains negative weights")
    if bool((t.sum(-1) <= 0).any()):
        raise ValueError(f"{name} has zero total mass (all weights are zero)")
    return t


@dataclass
class Pair:
    """A validated (batch of) pair(s) of measures, always batched.

    Parameters
    ----------
    x : torch.Tensor
        Source points ``(B, N, D)``.
    a : torch.Tensor
        Source weights ``(B, N)``.
    y : torch.Tensor
        Target points ``(B, M, D)``, same dtype and device as ``x``.
    b : torch.Tensor
        Target weights ``(B, M)``.
    batched : bool
        Whether the caller passed batches (results are then returned batched too).
    """

    x: torch.Tensor
    a: torch.Tensor
    y: torch.Tensor
    b: torch.Tensor
    batched: bool

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(B, N, M, D)``."""
        return (self.x.shape[0], self.x.shape[1], self.y.shape[1], self.x.shape[2])


def validate_pair(x, y, a=None, b=None) -> Pair:
    """Validate two measures (or two batches of measures) and return them batched.

    Points of two float dtypes are promoted to the wider one.

    Parameters
    ----------
    x : array_like or torch.Tensor
        Source points ``(N, D)`` or ``(B, N, D)``.
    y : array_like or torch.Tensor
        Target points ``(M, D)`` or ``(B, M, D)``, same ``D`` (and ``B``), same device.
    a : array_like or torch.Tensor or None, default None
        Source weights; ``None``: uniform.
    b : array_like or torch.Tensor or None, default None
        Target weights; ``None``: uniform.

    Returns
    -------
    Pair
        The validated pair, batched (``B = 1`` for single measures, with ``batched=False``).

    Raises
    ------
    ValueError
        On NaN/inf, empty clouds, negative or all-zero weights, mismatched dimensions,
        batch sizes, dtypes or devices, or wrong shapes; the message names the problem.
    """
    x, y = _to_tensor(x, "x"), _to_tensor(y, "y")
    if x.device != y.device:  # before any value check: those would run on two devices
        raise ValueError(f"x is on {x.device} but y is on {y.device}: put both measures on one device")
    x = as_points(x, "x")
    y = as_points(y, "y")
    if x.dim() != y.dim():
        raise ValueError(f"x and y must both be single measures (N, D) or both batches (B, N, D); got {x.dim()}-d and {y.dim()}-d")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"dimension mismatch: x has D = {x.shape[-1]}, y has D = {y.shape[-1]}")
    if x.dim() == 3 and x.shape[0] != y.shape[0]:
        raise ValueError(f"batch size mismatch: x has B = {x.shape[0]}, y has B = {y.shape[0]}")
    if x.dtype != y.dtype:
        dt = torch.promote_types(x.dtype, y.dtype)
        x, y = x.to(dt), y.to(dt)
    a = as_weights(a, x, "a")
    b = as_weights(b, y, "b")
    batched = x.dim() == 3
    if not batched:
        x, y, a, b = x[None], y[None], a[None], b[None]
    return Pair(x=x, a=a, y=y, b=b, batched=batched)


def log_weights(a: torch.Tensor, detach: bool = True) -> torch.Tensor:
    """``log a`` with zero weights mapped to a huge finite negative number (padding).

    Parameters
    ----------
    a : torch.Tensor
        Non-negative weights.
    detach : bool, default True
        Detach ``a`` from the autograd graph first.

    Returns
    -------
    torch.Tensor
        ``log a`` where ``a > 0``, ``-1e30`` where ``a = 0`` (finite, so online reductions never meet
        ``-inf - (-inf)``).
    """
    if detach:
        a = a.detach()
    return torch.where(a > 0, torch.log(torch.where(a > 0, a, torch.ones_like(a))), torch.full_like(a, _LOG_ZERO))


def pad_batch(
    points: Sequence, weights: Sequence | None = None, *, dtype: torch.dtype | None = None, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack measures of different sizes into one batch by zero-weight padding.

    Padding points sit at the first point of their measure, so they never move the bounding box. Points and
    weights are moved to ``device`` (default: the first measure's) and ``dtype``; the batch is made there.

    Parameters
    ----------
    points : sequence of array_like
        ``B >= 1`` point clouds ``(N_k, D)``, one ``D``.
    weights : sequence of array_like or None, default None
        Their weights, one array per measure; ``None``: uniform weights for every measure.
    dtype : torch.dtype or None, default None
        Dtype of the batch; ``None``: the points' dtypes promoted together.
    device : torch.device or str or None, default None
        Device of the batch; ``None``: the first measure's.

    Returns
    -------
    x : torch.Tensor
        ``(B, Nmax, D)`` points.
    a : torch.Tensor
        ``(B, Nmax)`` weights, zero on padding.

    Raises
    ------
    ValueError
        If ``points`` is empty, a measure is not ``(N, D)``, the dimensions differ or a measure is invalid.
    """
    if len(points) == 0:
        raise ValueError("pad_batch needs at least one measure")
    xs = [as_points(p, f"points[{k}]") for k, p in enumerate(points)]
    if any(x.dim() != 2 for x in xs):
        raise ValueError("pad_batch takes single measures of shape (N, D)")
    dims = {x.shape[1] for x in xs}
    if len(dims) != 1:
        raise ValueError(f"dimension mismatch in batch: D values {sorted(dims)}")
    if dtype is None:
        dtype = xs[0].dtype
        for x in xs[1:]:
            dtype = torch.promote_types(dtype, x.dtype)
    device = torch.device(device) if device is not None else xs[0].device
    xs = [x.to(dtype=dtype, device=device) for x in xs]
    ws = [as_weights(None if weights is None else _to_tensor(weights[k], f"weights[{k}]").to(device=device),
                     x, f"weights[{k}]") for k, x in enumerate(xs)]
    nmax = max(x.shape[0] for x in xs)
    D = xs[0].shape[1]
    X = torch.empty(len(xs), nmax, D, dtype=dtype, device=device)
    A = torch.zeros(len(xs), nmax, dtype=dtype, device=device)
    for k, (x, w) in enumerate(zip(xs, ws)):
        n = x.shape[0]
        X[k, :n] = x
        X[k, n:] = x[0]
        A[k, :n] = w
    return X, A


class Stack:
    """Measures concatenated into one array on a device: padded batches cut out by one gather each.

    ``batch(idx)`` equals :func:`pad_batch` of the measures ``idx`` (padding points at the measure's first point with
    zero weight) without validating each measure again (the caller has: a store, or :func:`pad_batch`'s checks).

    Parameters
    ----------
    measures : sequence of tuple
        ``(points (N_k, D), weights (N_k,))`` NumPy arrays or tensors.
    dtype : torch.dtype
        The dtype of the batches.
    device : torch.device or str, default "cpu"
        Where the batches live.
    """

    def __init__(self, measures, dtype: torch.dtype, device="cpu"):
        import numpy as np

        def arr(v):
            return v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)

        self.sizes = np.array([len(x) for x, _ in measures], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        npdt = torch.empty((), dtype=dtype).numpy().dtype
        pts = np.concatenate([arr(x).astype(npdt, copy=False).reshape(len(x), -1) for x, _ in measures])
        w = np.concatenate([arr(w).astype(npdt, copy=False).reshape(-1) for _, w in measures])
        self.device = torch.device(device)
        self.points = torch.from_numpy(np.ascontiguousarray(pts)).to(self.device)
        self.weights = torch.from_numpy(np.ascontiguousarray(w)).to(self.device)

    def batch(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, Nmax, D)``, ``a (B, Nmax)`` of the measures ``idx`` (positions in the stack).

        Parameters
        ----------
        idx : sequence of int
            The measures of the batch.

        Returns
        -------
        x : torch.Tensor
            ``(B, Nmax, D)`` points, padding at each measure's first point.
        a : torch.Tensor
            ``(B, Nmax)`` weights, zero on padding.
        """
        import numpy as np

        idx = np.asarray(idx, dtype=np.int64)
        n = self.sizes[idx]
        j = np.arange(int(n.max()), dtype=np.int64)
        valid = j[None, :] < n[:, None]
        gather = self.starts[idx][:, None] + np.where(valid, j[None, :], 0)
        g = torch.from_numpy(gather).to(self.device)
        keep = torch.from_numpy(valid).to(self.device)
        w = self.weights[g]
        return self.points[g], torch.where(keep, w, torch.zeros((), dtype=w.dtype, device=w.device))
