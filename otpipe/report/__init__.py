"""``otpipe report``: one HTML page (``index.html`` + PNGs) with a short text summary for any otpipe result.

The result type is read from the store's attributes:

* a collection (``otpipe synth`` / ``ingest``): a sample of each label, images upright on one grid;
* barycenters (``otpipe barycenter``): the barycenters, as images or point clouds, with their
  convergence flags;
* a distance matrix (``otpipe distances``): the clustered heatmap with a label colour strip, an MDS
  embedding, the nearest-neighbour label accuracy and a convergence summary;
* two-sample tests (``otpipe two-sample``): a table of statistics, p-values and corrected p-values,
  and ``-log10 p`` with the corrections' rejections marked (or the permutation null of a single test);
* a sample-complexity study (``otpipe complexity``): the decay curves with the fitted rates and intervals.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from otpipe.engine.result import result_type, stored_attrs

__all__ = ["write_report", "result_kind", "KINDS"]

#: result kind -> module of this package that builds its page
KINDS = {"collection": "collection", "barycenter": "barycenter", "distances": "distances", "two-sample": "two_sample",
         "complexity": "complexity"}
#: result type (:func:`otpipe.engine.result.result_type`) -> report kind
_REPORTS = {"collection": "collection", "barycenter": "barycenter", "distances": "distances", "two_sample": "two-sample",
            "complexity": "complexity"}


def result_kind(path) -> str:
    """The kind of otpipe result stored at ``path`` (a key of :data:`KINDS`).

    Parameters
    ----------
    path : str or os.PathLike
        A result store.

    Returns
    -------
    str
        ``"collection"``, ``"barycenter"``, ``"distances"``, ``"two-sample"`` or ``"complexity"``.

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    ValueError
        Not an otpipe result store, or an unfinished barycenter run.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{path}: no such result")
    attrs = stored_attrs(p)
    kind = result_type(attrs)
    if kind == "barycenter" and not attrs.get("complete"):  # the checkpoint of a run that has not finished
        raise ValueError(f"{path} is an unfinished barycenter run: finish it with `otpipe barycenter ... --resume`")
    if kind in _REPORTS:
        return _REPORTS[kind]
    raise ValueError(f"{path}: not an otpipe result store (expected a collection, barycenters, a distance matrix, "
                     "two-sample tests or a complexity study)")


def write_report(result, out_dir, *, title: str | None = None, max_measures: int = 30, page: str = "index.html",
                 png_names: dict | None = None):
    """Write the report of ``result`` into ``out_dir``: ``page`` and its PNGs.

    Parameters
    ----------
    result : str or os.PathLike
        A result store (:func:`result_kind`).
    out_dir : str or os.PathLike
        The folder of the report (created if needed).
    title : str or None, default None
        Title of the page; ``None``: one naming the kind and the store.
    max_measures : int, default 30
        Most measures drawn (collections).
    page : str, default "index.html"
        File name of the page.
    png_names : dict or None, default None
        Figure names to file names (:meth:`~otpipe.report._page.Page.write`).

    Returns
    -------
    otpipe.report._page.ReportFiles
        The paths, summary lines and notes.
    """
    kind = result_kind(result)
    module = importlib.import_module(f"{__name__}.{KINDS[kind]}")
    pg = module.build(os.fspath(result), title=title, max_measures=max_measures)
    return pg.write(out_dir, page=page, png_names=png_names)
