"""NumPy in, NumPy out: the functional API answers in the array type it was given.

``solve``, ``solve_symmetric``, ``sinkhorn_divergence``, ``energy_distance``, ``mmd`` and
``hausdorff`` compute with torch. When none of the point/weight arguments (``x, y, a, b``) is a
``torch.Tensor`` (NumPy arrays, lists), their results come back as NumPy: scalars as NumPy
scalars (``numpy.float64`` for float64 input), batched values and potentials as ``ndarray``, and
the tensors inside :class:`~otpipe.solvers.sinkhorn.OTResult` / :class:`~otpipe.tools.losses.DivergenceResult`
as ``ndarray``. With any tensor argument everything stays torch (device, dtype and autograd), as
before.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["numpy_io", "to_numpy", "is_numpy_call"]

_ARRAY_ARGS = ("x", "y", "a", "b")


def is_numpy_call(args: tuple, kwargs: dict) -> bool:
    """Whether a call answers in NumPy: none of its leading ``x, y, a, b`` arguments is a tensor.

    Parameters
    ----------
    args : tuple
        The call's positional arguments (the first four are ``x, y, a, b``).
    kwargs : dict
        Its keyword arguments.

    Returns
    -------
    bool
        ``True`` when at least one of them is given and none is a ``torch.Tensor``.
    """
    given = list(args[:4]) + [kwargs[k] for k in _ARRAY_ARGS if k in kwargs]
    given = [v for v in given if v is not None]
    return bool(given) and not any(isinstance(v, torch.Tensor) for v in given)


def to_numpy(obj: Any) -> Any:
    """Tensors (also inside tuples and result dataclasses) as NumPy; 0-d tensors as NumPy scalars.

    Parameters
    ----------
    obj : object
        A tensor, a tuple, a result dataclass (its public tensor fields are converted, and its ``_numpy`` flag set),
        or anything else (returned as it is).

    Returns
    -------
    object
        The converted object.
    """
    if isinstance(obj, torch.Tensor):
        arr = obj.detach().cpu().numpy()
        return arr[()] if arr.ndim == 0 else arr
    if isinstance(obj, tuple):
        return tuple(to_numpy(v) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: to_numpy(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                   if not f.name.startswith("_") and isinstance(getattr(obj, f.name), torch.Tensor)}
        new = dataclasses.replace(obj, **changes)
        if hasattr(new, "_numpy"):
            new._numpy = True
        return new
    return obj


def numpy_io(fn: Callable) -> Callable:
    """Decorator: results as NumPy when :func:`is_numpy_call` (see the module docstring).

    Parameters
    ----------
    fn : callable
        A function of the functional API.

    Returns
    -------
    callable
        The wrapped function.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        return to_numpy(out) if is_numpy_call(args, kwargs) else out

    return wrapper


def short(v: Any, fmt: str = ".6g") -> str:
    """A value for a repr: a number, ``None``, or ``[min .. max] (k values)`` for an array/tensor."""
    if v is None:
        return "None"
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    a = np.asarray(v)
    if a.ndim == 0:
        x = a.item()
        return repr(x) if isinstance(x, bool) else format(x, fmt)
    if a.size == 0:
        return "[]"
    if a.dtype == bool:
        return f"{int(a.sum())}/{a.size} True"
    return f"[{format(a.min().item(), fmt)} .. {format(a.max().item(), fmt)}] ({a.size} values)"
