"""Deprecated location of the distance-matrix report: see :mod:`otpipe.report` (``otpipe report``).

:func:`make_report` keeps its old call form (``out`` a PNG path, the HTML page next to it) for one
release and warns; the helpers are re-exported from :mod:`otpipe.report.matrix`.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from otpipe.report.matrix import classical_mds, cluster_order, nn_accuracy

__all__ = ["make_report", "nn_accuracy", "cluster_order", "classical_mds"]


def make_report(result, out, *, title: str | None = None) -> dict:
    """Deprecated: use :func:`otpipe.report.write_report` (a directory with ``index.html`` + PNGs)."""
    from otpipe.report import write_report

    warnings.warn("otpipe.pipeline.report.make_report is deprecated: use otpipe.report.write_report(result, out_dir)",
                  DeprecationWarning, stacklevel=2)
    out = Path(out)
    if out.suffix.lower() != ".png":
        out = out.with_suffix(out.suffix + ".png") if out.suffix else out.with_suffix(".png")
    files = write_report(result, out.parent, title=title, page=out.with_suffix(".html").name,
                         png_names={"__first__": out.name})
    return {"png": str(files.pngs[0]), "html": str(files.html), "lines": files.lines}
