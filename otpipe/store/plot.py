"""Pictures of measures: images upright on one common pixel grid, point clouds as scatter plots.

Images are stored as measures on a 2-D lattice with ``x`` = column and ``y`` = up (``otpipe ingest``
puts pixel ``(row, col)`` of an ``H``-row image at ``(col + 1/2, H - row - 1/2)``). :func:`pixel_grid`
finds the lattice shared by a set of measures and :func:`to_image` draws a measure on it with row 0
at the top (largest ``y``), so a digit reads as it did in its file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from otpipe.geometry.boxes import lattice

__all__ = ["PixelGrid", "pixel_grid", "to_image", "sample_by_label", "draw_measures", "plot_collection"]

#: largest image side (pixels) drawn as an image; beyond it measures are drawn as point clouds
MAX_SIDE = 2048


@dataclass(frozen=True)
class PixelGrid:
    """A 2-D lattice: points ``origin + spacing * (i, j)``, ``i < width`` (x), ``j < height`` (y).

    Parameters
    ----------
    origin : tuple of float
        The lattice point ``(x, y)`` of pixel ``(0, 0)`` (the lower left).
    spacing : float
        The step in x and y.
    width : int
        Pixels along x.
    height : int
        Pixels along y.
    """

    origin: tuple[float, float]
    spacing: float
    width: int
    height: int


def pixel_grid(point_sets) -> PixelGrid | None:
    """The common pixel lattice of 2-D point sets (one spacing in x and y, one origin).

    The lattice is :func:`otpipe.geometry.boxes.lattice`'s (the one the fixed-support barycenters find);
    points that all coincide are one pixel of side 1.

    Parameters
    ----------
    point_sets : sequence of array_like
        Non-empty ``(N_k, 2)`` point sets.

    Returns
    -------
    PixelGrid or None
        The lattice; ``None`` when there are no sets, a set is empty or not ``(N, 2)``, the points are not on one
        lattice (point clouds), or the lattice would exceed :data:`MAX_SIDE` pixels a side.
    """
    pts = [np.asarray(p, dtype=float) for p in point_sets]
    if not pts or any(p.ndim != 2 or p.shape[1] != 2 or len(p) == 0 for p in pts):
        return None
    found = lattice(np.concatenate(pts), empty_spacing=1.0, max_side=MAX_SIDE)
    if found is None:
        return None
    lo, h, (width, height) = found
    return PixelGrid((float(lo[0]), float(lo[1])), float(h), int(width), int(height))


def to_image(points, weights, grid: PixelGrid) -> np.ndarray:
    """The weights of a measure as an image on ``grid``; row 0 is the top (largest ``y``).

    Parameters
    ----------
    points : array_like
        ``(N, 2)`` points on the lattice.
    weights : array_like
        ``(N,)`` weights (points on one pixel add up).
    grid : PixelGrid
        The lattice.

    Returns
    -------
    numpy.ndarray
        ``(height, width)`` float64 image.
    """
    p = np.asarray(points, dtype=float)
    ij = np.round((p - np.asarray(grid.origin)) / grid.spacing).astype(int)
    img = np.zeros((grid.height, grid.width))
    np.add.at(img, (grid.height - 1 - ij[:, 1], ij[:, 0]), np.asarray(weights, dtype=float))
    return img


def sample_by_label(n: int, labels, n_max: int) -> list[int]:
    """Up to ``n_max`` of ``n`` indices with every label represented by the same number of measures.

    Each label (compared as ``str``, in natural order: integers numerically first) gives ``n_max // n_labels``
    (at least 1) of its indices, evenly spaced, or all of them when it has fewer; the list is cut at ``n_max``
    (the first ``n_max`` labels when there are more). Without labels, ``n_max`` evenly spaced indices.

    Parameters
    ----------
    n : int
        Number of measures.
    labels : array_like or None
        One label per measure, or ``None``.
    n_max : int
        Most indices returned.

    Returns
    -------
    list of int
        The indices (all of them when ``n <= n_max``).
    """
    if n <= n_max:
        return list(range(n))
    if labels is None:
        return sorted({int(round(v)) for v in np.linspace(0, n - 1, n_max)})
    labels = np.asarray([str(v) for v in labels])
    groups = [np.flatnonzero(labels == lab) for lab in _natural_sorted(set(labels.tolist()))]
    per = max(1, n_max // len(groups))
    out = []
    for idx in groups:
        out += [int(idx[int(round(t))]) for t in np.linspace(0, len(idx) - 1, min(per, len(idx)))]
    return out[:n_max]


def _natural_sorted(values) -> list[str]:
    return sorted(values, key=lambda s: (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s))


def draw_measures(measures, titles, *, grid: PixelGrid | None = None, suptitle: str = "", cols: int | None = None,
                  rows_by=None):
    """A matplotlib figure with one panel per ``(points, weights)``.

    With a grid, every measure is drawn as an image on it (greyscale, ink dark, upright); without one, 1-D
    measures as weighted histograms, 2-D clouds as scatter plots and clouds of 3 or more dimensions as 3-D scatter
    plots of their first three coordinates (marker area ~ weight). Uses matplotlib's ``Agg`` backend.

    Parameters
    ----------
    measures : sequence of tuple
        ``(points, weights)`` per panel.
    titles : sequence of str
        One title per panel.
    grid : PixelGrid or None, default None
        The common lattice of images; ``None``: found by :func:`pixel_grid` (point clouds when there is none).
    suptitle : str, default ""
        Title of the figure.
    cols : int or None, default None
        Panels per row of a plain grid (default: ``min(len(measures), 8)``); not used when ``rows_by`` sets the
        layout.
    rows_by : sequence or None, default None
        One key per measure (e.g. its label): the measures of each distinct key form one column (or one row,
        when there are fewer keys than measures per key: the wider picture); more than 20 keys: a plain grid.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (the caller saves and closes it).

    Raises
    ------
    ValueError
        If there are no measures.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = [(np.asarray(p, dtype=float), np.asarray(w, dtype=float)) for p, w in measures]
    if not measures:
        raise ValueError("nothing to draw: no measures")
    if grid is None:
        grid = pixel_grid([p for p, _ in measures])
    layout = _layout(len(measures), cols, rows_by)
    n_rows, n_cols = max(r for r, _ in layout) + 1, max(c for _, c in layout) + 1
    side = 1.7 if grid is not None else 2.4
    fig = plt.figure(figsize=(max(4.0, side * n_cols), side * n_rows + 0.6), layout="constrained")
    D = measures[0][0].shape[1]
    for (p, w), title, (r, c) in zip(measures, titles, layout):
        ax = fig.add_subplot(n_rows, n_cols, r * n_cols + c + 1, projection="3d" if grid is None and D >= 3 else None)
        if grid is not None:
            img = to_image(p, w, grid)
            ax.imshow(img, cmap="gray_r", vmin=0.0, vmax=max(float(img.max()), 1e-300), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for sp in ax.spines.values():  # a light frame: the extent of the common grid
                sp.set_color("0.75")
        elif D == 1:
            ax.hist(p[:, 0], bins=40, weights=w, color="0.3")
        else:
            s = 1 + min(30.0, 2000.0 / len(w)) * w / max(float(w.max()), 1e-300)
            if D == 2:
                ax.scatter(p[:, 0], p[:, 1], s=s, c="0.15", linewidths=0)
                ax.set_aspect("equal", adjustable="datalim")
            else:
                ax.scatter(p[:, 0], p[:, 1], p[:, 2], s=s, c="0.15", linewidths=0)
            ax.tick_params(labelsize=6)
        ax.set_title(title, fontsize=8)
    if suptitle:
        import textwrap

        fig.suptitle(textwrap.fill(suptitle, max(30, int(14 * side * n_cols))), fontsize=10)
    return fig


def _layout(n: int, cols: int | None, rows_by) -> list[tuple[int, int]]:
    """(row, column) of each panel: the measures of each distinct ``rows_by`` key (at most 20 keys) in
    one column, or in one row when there are fewer keys than measures per key (a wide grid); else a grid."""
    if rows_by is not None:
        keys = list(dict.fromkeys(rows_by))
        if len(keys) <= 20:
            out, count = [], {}
            for k in rows_by:
                out.append((count.get(k, 0), keys.index(k)))
                count[k] = count.get(k, 0) + 1
            if len(keys) < max(count.values()):
                out = [(c, r) for r, c in out]
            return out
    cols = cols or min(n, 8)
    return [divmod(k, cols) for k in range(n)]


def plot_collection(collection, out: str | os.PathLike, *, max_measures: int = 30, title: str | None = None) -> str:
    """Write a PNG of a sample of ``collection`` (:func:`sample_by_label`).

    Parameters
    ----------
    collection : Collection
        The collection (not empty).
    out : str or os.PathLike
        The PNG to write.
    max_measures : int, default 30
        Most measures drawn.
    title : str or None, default None
        Title of the figure; ``None``: the collection's folder name. When only a sample is drawn, ``" (k of n)"``
        is appended.

    Returns
    -------
    str
        ``out`` as a string.

    Raises
    ------
    ValueError
        If the collection is empty.
    """
    import matplotlib.pyplot as plt

    n = len(collection)
    if n == 0:
        raise ValueError("the collection is empty: nothing to plot")
    labels = collection.labels
    idx = sample_by_label(n, labels, max_measures)
    ms = [collection[i] for i in idx]
    titles = [f"{m.name}" + (f" [{m.label}]" if m.label not in (None, "") and str(m.label) != str(m.name) else "")
              for m in ms]
    more = f" ({len(idx)} of {n}" + (", evenly spread over the labels)" if labels is not None else ")") if n > len(idx) else ""
    fig = draw_measures([(m.points, m.weights) for m in ms], titles,
                        suptitle=(title or os.path.basename(str(collection.path))) + more,
                        rows_by=[str(m.label) for m in ms] if labels is not None else None)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return str(out)
