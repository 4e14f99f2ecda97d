"""The picture of a barycenter run: one panel per group (images as images, point clouds as
scatter plots over their faint inputs, 1-D measures as densities)."""
from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["plot_barycenters"]


def _image(res):
    if res.image is not None:
        return res.image
    return None


def plot_barycenters(results: dict, inputs: dict, path: str | os.PathLike, *, max_inputs: int = 20) -> str:
    """Write a PNG with one panel per group.

    Grid (image) barycenters are drawn as images with, underneath, the plain pixel-wise mean of the group's inputs
    for comparison.

    Parameters
    ----------
    results : dict
        Group -> :class:`otpipe.tools.barycenters.BarycenterResult`.
    inputs : dict
        Group -> list of ``(points, weights)``.
    path : str or os.PathLike
        The PNG to write.
    max_inputs : int, default 20
        Most inputs of a group used for the pixel-wise mean.

    Returns
    -------
    str
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(results)
    n = len(groups)
    images = all(results[g].image is not None and results[g].image.ndim == 2 for g in groups)
    cols = min(n, 10)
    rows = math.ceil(n / cols)
    if images:
        fig, axes = plt.subplots(2 * rows, cols, figsize=(1.6 * cols, 3.4 * rows), squeeze=False)
        for k, g in enumerate(groups):
            r, c = divmod(k, cols)
            res = results[g]
            img = res.image.T[::-1]  # axis 0 = x (columns), axis 1 = y (up): back to rows/cols
            axes[2 * r, c].imshow(img, cmap="gray_r")
            axes[2 * r, c].set_title(f"{g}", fontsize=10)
            mean = _mean_image(inputs[g], res)
            axes[2 * r + 1, c].imshow(mean, cmap="gray_r")
        for ax in axes.ravel():
            ax.set_xticks([]), ax.set_yticks([])
        axes[0, 0].set_ylabel("barycenter", fontsize=9)
        axes[1, 0].set_ylabel("pixel mean", fontsize=9)
        fig.suptitle("Debiased Sinkhorn barycenters (top) vs pixel-wise means (bottom)", fontsize=10)
    else:
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
        for k, g in enumerate(groups):
            ax = axes.ravel()[k]
            res = results[g]
            D = res.points.shape[1]
            if D == 1:
                allp = np.concatenate([m[0][:, 0] for m in inputs[g]] + [res.points[:, 0]])
                bins = np.linspace(allp.min(), allp.max(), 60)
                for pts, w in inputs[g][:max_inputs]:
                    ax.hist(pts[:, 0], bins=bins, weights=w / w.sum(), histtype="step", color="0.6", lw=0.8)
                ax.hist(res.points[:, 0], bins=bins, weights=res.weights, histtype="step", color="C3", lw=1.8)
            else:
                for pts, w in inputs[g][:max_inputs]:
                    ax.scatter(pts[:, 0], pts[:, 1], s=4, color="0.75", alpha=0.5, lw=0)
                ax.scatter(res.points[:, 0], res.points[:, 1], s=60 * res.weights * len(res.weights), color="C3", lw=0)
                ax.set_aspect("equal", adjustable="datalim")
            ax.set_title(f"{g} ({len(inputs[g])} measures, {res.n_iter} it.)", fontsize=9)
        for ax in axes.ravel()[n:]:
            ax.axis("off")
        fig.suptitle("Barycenters (red) over their inputs (grey)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _mean_image(ms, res) -> np.ndarray:
    origin = np.asarray(res.params.get("grid_origin", np.zeros(2)))
    spacing = res.params.get("grid_spacing", 1.0)
    H = np.zeros(res.image.shape)
    for pts, w in ms:
        idx = np.round((pts - origin) / spacing).astype(int)
        np.add.at(H, tuple(idx.T), w / w.sum())
    return (H / len(ms)).T[::-1]
