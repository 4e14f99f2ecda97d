"""Bounding boxes of point sets on the host (NumPy): the corners of a box, the union of boxes, the diagonal,
and the regular lattice holding a point set (images are measures on a pixel lattice).

The diameter that starts an eps-schedule is the diagonal ``|hi - lo|_2`` of the bounding box of the points.
Here it is computed in NumPy from boxes that may come from many places (one per shard of a collection,
computed on the workers, then joined: the one schedule of a distributed run), in the points' dtype as given
(the pipelines pass float64). :func:`otpipe.geometry.costs.diameter` is the solver's own: torch tensors on
their device, in their compute dtype, masking zero-weight padding, overflow-safe. The two are kept apart on
purpose: the torch one on float32 points rounds the diagonal in float32, so a run whose diameter came from it
would solve on another eps-schedule, to other last bits, than the float64 diameter of the pipelines.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = ["bounds", "union", "box_diagonal", "lattice", "LATTICE_TOL"]

#: how far (in steps) a point may sit from its lattice node, for :func:`lattice`
LATTICE_TOL = 1e-4


def bounds(points) -> tuple[np.ndarray, np.ndarray] | None:
    """Corners of the bounding box of ``points``.

    Parameters
    ----------
    points : array_like
        Points ``(N, D)``.

    Returns
    -------
    tuple of numpy.ndarray, or None
        ``(min, max)`` per coordinate, ``(D,)`` each, in the points' dtype; ``None`` when there is no point.
    """
    x = np.asarray(points)
    if len(x) == 0:
        return None
    return x.min(axis=0), x.max(axis=0)


def union(boxes: Iterable) -> tuple[np.ndarray, np.ndarray] | None:
    """The bounding box of boxes.

    Parameters
    ----------
    boxes : iterable of (lo, hi) or None
        Boxes as :func:`bounds` gives them (``None`` or ``(None, None)``: an empty one, skipped).

    Returns
    -------
    tuple of numpy.ndarray, or None
        ``(min of the lo, max of the hi)``; ``None`` when every box is empty.
    """
    kept = [b for b in boxes if b is not None and b[0] is not None]
    if not kept:
        return None
    return np.min([lo for lo, _ in kept], axis=0), np.max([hi for _, hi in kept], axis=0)


def box_diagonal(box: tuple[np.ndarray, np.ndarray] | None, fallback: float) -> float:
    """Length ``|hi - lo|_2`` of the diagonal of a bounding box.

    Parameters
    ----------
    box : (lo, hi) or None
        The corners (:func:`bounds`, :func:`union`); ``None``: no point.
    fallback : float
        The value where there is no point, every point coincides (a zero diagonal) or the length is not finite.

    Returns
    -------
    float
        The diagonal, or ``fallback``.
    """
    if box is None:
        return float(fallback)
    lo, hi = box
    d = float(np.linalg.norm(hi - lo))
    return d if d > 0 and math.isfinite(d) else float(fallback)


def lattice(points, spacing: float | None = None, *, empty_spacing: float | None = None, max_cells: int | None = None,
            max_side: int | None = None) -> tuple[np.ndarray, float, tuple[int, ...]] | None:
    """The regular lattice ``lo + spacing * k`` (one step on every axis, ``k`` integer) that holds every point.

    Parameters
    ----------
    points : array_like
        Points ``(N, D)``, ``N >= 1`` (images: pixel centres).
    spacing : float, optional
        The step; default: the smallest gap between distinct values of one coordinate (gaps under
        ``1e-9 max(1, max |x|)`` are rounding, not gaps).
    empty_spacing : float, optional
        The step when no coordinate has two distinct values (every point the same); default: no lattice.
    max_cells, max_side : int, optional
        No lattice when it would have more nodes in all, or more along one axis.

    Returns
    -------
    tuple or None
        ``(lo, spacing, shape)``: the lowest corner ``(D,)``, the step, the nodes per axis (the bounding box of
        the points); ``None`` when some point is off the lattice by more than :data:`LATTICE_TOL` steps (a point
        cloud), or a limit is exceeded.
    """
    z = np.asarray(points)
    lo, hi = z.min(axis=0), z.max(axis=0)
    if spacing is None:
        tiny = 1e-9 * max(1.0, float(np.abs(z).max()))
        gaps = [g[g > tiny] for g in (np.diff(np.unique(z[:, d])) for d in range(z.shape[1]))]
        gaps = [g for g in gaps if len(g)]
        if gaps:
            spacing = float(min(g.min() for g in gaps))
        elif empty_spacing is not None:
            spacing = float(empty_spacing)
        else:
            return None
    idx = (z - lo) / spacing
    if np.abs(idx - np.round(idx)).max() > LATTICE_TOL:
        return None
    shape = tuple(int(s) + 1 for s in np.round((hi - lo) / spacing))
    if (max_cells is not None and math.prod(shape) > max_cells) or (max_side is not None and max(shape) > max_side):
        return None
    return lo, spacing, shape
