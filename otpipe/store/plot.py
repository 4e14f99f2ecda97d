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
    """A 2-D lattice: points ``origin + spacing * (i, j)``, ``i < width`` (x), ``j < height`` (y)."""

    origin: tuple[float, float]
    spacing: float
    width: int
    height: int


def pixel_grid(point_sets) -> PixelGrid | None:
    """The common pixel lattice of 2-D point sets (one spacing in x and y, one origin), or ``None``
    when they are not on one lattice (point clouds) or it would exceed :data:`MAX_SIDE` pixels.

    The lattice is :func:`otpipe.geometry.boxes.lattice`'s (the one the fixed-support barycenters find);
    points that all coincide are one pixel of side 1.
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
    """``(height, width)`` array of the weights on ``grid``; row 0 is the top (largest ``y``)."""
    p = np.asarray(points, dtype=float)
    ij = np.round((p - np.asarray(grid.origin)) / grid.spacing).astype(int)
    img = np.zeros((grid.height, grid.width))
    np.add.at(img, (grid.height - 1 - ij[:, 1], ij[:, 0]), np.asarray(weights, dtype=float))
    return img


def sample_by_label(n: int, labels, n_max: int) -> list[int]:
    """Up to ``n_max`` of ``n`` indices with every label represented by the same number of measures
    (evenly spaced within each label, in label order; the first ``n_max`` labels if there are more);
    without labels, ``n_max`` evenly spaced indices."""
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
    """A matplotlib figure with one panel per ``(points, weights)``: images (greyscale, ink dark,
    upright, all on ``grid``, the common lattice found by :func:`pixel_grid` when ``None``), 1-D
    measures as weighted histograms, 2-D/3-D clouds as scatter plots with marker area ~ weight.

    ``rows_by``: one key per measure; the measures of each distinct key (e.g. a label) form one column
    (or one row, whichever gives the wider picture).
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
    """Write a PNG of a sample of ``collection`` (:func:`sample_by_label`); returns its path."""
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
