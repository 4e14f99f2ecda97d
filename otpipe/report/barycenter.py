"""Report of barycenters (``otpipe barycenter``): each group's barycenter, as an image on one common
pixel grid for image collections (with the pixel-wise mean of its inputs underneath, when the input
collection is still there) or as a point cloud otherwise, with its convergence flag and iterations."""
from __future__ import annotations

import os

import numpy as np

from otpipe.report._page import Page

__all__ = ["build"]


def build(path: str, *, title: str | None = None, max_measures: int = 30) -> Page:
    """The report page of a barycenter collection.

    The barycenters (images or point clouds) with their convergence flags.

    Parameters
    ----------
    path : str
        The barycenter collection (``otpipe barycenter``'s output).
    title : str or None, default None
        Title of the page; ``None``: ``"otpipe ...: <store name>"``.
    max_measures : int, default 30
        Not used (the signature is shared by every page builder).

    Returns
    -------
    Page
        The page, not written yet (:meth:`~otpipe.report._page.Page.write`).
    """
    from otpipe.store import open as open_collection
    from otpipe.store.plot import draw_measures, pixel_grid

    c = open_collection(path)
    groups = c.attrs.get("barycenter") or {}
    groups = groups.get("groups", groups)  # {group: {method, n_iter, converged, n_measures, n_points}}
    source = c.attrs.get("barycenter_source") or {}
    name = os.path.basename(os.path.normpath(path))
    pg = Page(title or f"otpipe barycenters: {name}", "barycenter")
    ms = list(c)
    info = [groups.get(str(m.name), {}) for m in ms]
    methods = sorted({i.get("method", "?") for i in info})
    n_conv = sum(bool(i.get("converged")) for i in info)
    pg.summary.append(f"{len(ms)} barycenter(s) ({', '.join(methods)} support), one per group of "
                      f"{source.get('collection') or 'the input collection'}; D = {c.dim}.")
    pg.summary.append(f"converged: {n_conv} of {len(ms)}" + (
        "" if n_conv == len(ms) else
        f"; stopped at the iteration cap: {', '.join(str(m.name) for m, i in zip(ms, info) if not i.get('converged'))}") + ".")
    if groups and n_conv < len(ms):
        pg.note(f"{len(ms) - n_conv} barycenter(s) stopped at --max-iter without meeting the tolerance: they are "
                "approximate. Rerun with a larger --max-iter (or a larger --blur, which converges faster).")
    inputs = _inputs(source)
    grid = pixel_grid([m.points for m in ms]) if c.dim == 2 else None
    titles = [f"{m.name}: " + ("converged" if i.get("converged") else "NOT converged" if i else "?")
              + (f", {i['n_iter']} it." if "n_iter" in i else "") for m, i in zip(ms, info)]
    pairs = [(m.points, m.weights) for m in ms]
    if grid is not None and inputs is not None:
        means = [_pixel_mean(inputs, str(m.name)) for m in ms]
        if all(mu is not None for mu in means):
            grid = pixel_grid([m.points for m in ms] + [mu[0] for mu in means])
            pairs += means
            titles += [f"{m.name}: pixel mean of {info[k].get('n_measures', '?')}" for k, m in enumerate(ms)]
    rows_by = None
    if len(pairs) > len(ms):  # barycenters on top, pixel means below, one column per group
        rows_by = [str(m.name) for m in ms] * 2
    what = "images on one common pixel grid (upright, ink dark)" if grid is not None else "point clouds (marker area ~ weight)"
    fig = draw_measures(pairs, titles, grid=grid, rows_by=rows_by, suptitle=f"{name}: barycenters")
    pg.figure("barycenters", fig, f"barycenters as {what}" + (
        "; top: the barycenters, bottom: the pixel-wise means of their inputs" if rows_by else ""))
    pg.heading("Groups")
    rows = [[str(m.name), i.get("method", "?"), i.get("n_measures", "?"), len(m.weights), i.get("n_iter", "?"),
             "yes" if i.get("converged") else "no" if i else "?"] for m, i in zip(ms, info)]
    pg.table(["group", "method", "input measures", "support points", "iterations", "converged"], rows)
    if c.attrs.get("barycenter_parameters"):
        pg.heading("Parameters")
        pg.table(["parameter", "value"], [[k, v] for k, v in c.attrs["barycenter_parameters"].items()])
    return pg


def _inputs(source: dict):
    """The input collection, if it is still there with the recorded content."""
    from otpipe.store import open as open_collection

    src = source.get("collection")
    if not src or not os.path.exists(src):
        return None
    try:
        c = open_collection(src)
    except (OSError, ValueError):
        return None
    return c if str(c.content_hash) == str(source.get("hash")) else None


def _pixel_mean(coll, group: str):
    """Pixel-wise mean of the normalised measures of ``group`` (by label; all measures for ``all``)."""
    labels = coll.labels
    idx = range(len(coll)) if group == "all" or labels is None else np.flatnonzero(np.asarray(labels).astype(str) == group)
    acc: dict[tuple, float] = {}
    n = 0
    for i in idx:
        m = coll[int(i)]
        w = np.asarray(m.weights, dtype=float)
        w = w / w.sum()
        for pt, v in zip(map(tuple, np.asarray(m.points, dtype=float)), w):
            acc[pt] = acc.get(pt, 0.0) + v
        n += 1
    if not n:
        return None
    pts = np.array(list(acc), dtype=float)
    return pts, np.array(list(acc.values())) / n
