"""A picture of a collection: one panel per measure (images on a pixel grid, clouds as scatter)."""
from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["plot_collection"]


def _as_image(points: np.ndarray, weights: np.ndarray):
    """Weights on an integer or half-integer 2-D pixel grid as an image, else None."""
    if points.shape[1] != 2 or len(points) == 0:
        return None
    q = points - np.floor(points.min(0))
    frac = q - np.floor(q)
    if not np.allclose(frac, frac[0], atol=1e-6):
        return None
    ij = np.floor(q).astype(int)
    if ij.max() > 4096:
        return None
    img = np.zeros(ij.max(0) + 1)
    np.add.at(img, (ij[:, 0], ij[:, 1]), weights)
    return img


def plot_collection(collection, out: str | os.PathLike, *, max_measures: int = 30, title: str | None = None) -> str:
    """Write a PNG showing up to ``max_measures`` measures of ``collection``; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(len(collection), max_measures)
    if n == 0:
        raise ValueError("the collection is empty: nothing to plot")
    cols = min(n, 6)
    rows = math.ceil(n / cols)
    fig = plt.figure(figsize=(2.4 * cols, 2.4 * rows + 0.4))
    for k in range(n):
        m = collection[k]
        pts, w = np.asarray(m.points, dtype=float), np.asarray(m.weights, dtype=float)
        img = _as_image(pts, w)
        D = pts.shape[1]
        ax = fig.add_subplot(rows, cols, k + 1, projection="3d" if (img is None and D >= 3) else None)
        if img is not None:
            ax.imshow(img, cmap="magma", origin="upper")
            ax.set_xticks([])
            ax.set_yticks([])
        elif D == 1:
            ax.hist(pts[:, 0], bins=40, weights=w, color="tab:blue")
        else:
            s = 4 + 40 * w / max(w.max(), 1e-300)
            if D == 2:
                ax.scatter(pts[:, 0], pts[:, 1], s=s, c="tab:red", linewidths=0)
                ax.set_aspect("equal", adjustable="datalim")
            else:
                ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], s=s, c="tab:red", linewidths=0)
        label = f" [{m.label}]" if m.label not in (None, "") and str(m.label) != str(m.name) else ""
        ax.set_title(f"{m.name}{label}", fontsize=8)
    more = f" (first {n} of {len(collection)})" if len(collection) > n else ""
    fig.suptitle((title or os.path.basename(str(collection.path))) + more)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return str(out)
