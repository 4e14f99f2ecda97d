"""Report of a collection: its size and labels, and a sample of each label drawn as images or clouds."""
from __future__ import annotations

import os

import numpy as np

from otpipe.report._page import Page

__all__ = ["build"]


def build(path: str, *, title: str | None = None, max_measures: int = 30) -> Page:
    """The report page of a collection.

    Its summary and a sample of measures of each label, images upright on one grid.

    Parameters
    ----------
    path : str
        The collection.
    title : str or None, default None
        Title of the page; ``None``: ``"otpipe ...: <store name>"``.
    max_measures : int, default 30
        Most measures drawn (sampled evenly across the labels).

    Returns
    -------
    Page
        The page, not written yet (:meth:`~otpipe.report._page.Page.write`).
    """
    from otpipe.store import open as open_collection
    from otpipe.store.plot import draw_measures, pixel_grid, sample_by_label

    c = open_collection(path)
    info = c.info()
    name = os.path.basename(os.path.normpath(path))
    pg = Page(title or f"otpipe collection: {name}", "collection")
    sizes = info["points_per_measure"]
    pg.summary.append(f"{info['n_measures']} measures, {info['n_points']} points in D = {info['dim']} "
                      f"({info['dtype']}); points per measure: min {sizes['min']}, median {sizes['median']:g}, "
                      f"max {sizes['max']}.")
    labels = info.get("labels")
    if labels:
        pg.summary.append(f"{len(labels)} labels: " + ", ".join(f"{k} ({v})" for k, v in labels.items()) + ".")
    idx = sample_by_label(len(c), c.labels, max_measures)
    ms = [c[i] for i in idx]
    grid = pixel_grid([m.points for m in ms]) if c.dim == 2 else None
    shown = (f"all {len(idx)} measures" if len(idx) == len(c) else
             f"{len(idx)} of {len(c)} measures" + (", the same number of each label (evenly spaced)" if labels else
                                                   " (evenly spaced)"))
    how = (f"images on one common {grid.width} x {grid.height} pixel grid, upright, ink dark" if grid is not None
           else "point clouds (marker area ~ weight)" if c.dim > 1 else "weighted histograms")
    pg.summary.append(f"Shown: {shown}, as {how}.")
    titles = [f"{m.name}" + (f" [{m.label}]" if m.label not in (None, "") and str(m.label) != str(m.name) else "")
              for m in ms]
    fig = draw_measures([(m.points, m.weights) for m in ms], titles, grid=grid, suptitle=f"{name}: {shown}",
                        rows_by=[str(m.label) for m in ms] if labels else None)
    pg.figure("measures", fig, "one column per label" if labels and len(labels) <= 20 else "")
    masses = np.array([float(np.sum(m.weights, dtype=np.float64)) for m in ms])
    pg.heading("Store")
    pg.table(["field", "value"], [
        ["path", info["path"]], ["content hash", info["hash"]], ["shards", info["n_shards"]],
        ["total mass of the shown measures", f"min {masses.min():.4g}, max {masses.max():.4g}"],
        ["created by", info.get("created_by")],
    ])
    return pg
