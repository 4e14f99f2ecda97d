"""Report of a sample-complexity study (``otpipe complexity``): the decay curves ``R(N) = E D(mu_N, nu_N)``
with the fitted power laws ``c N^-kappa``, the rates ``kappa`` with their intervals against the paper's
reference rates (``p/d`` for OT, 1 for MMD), and the table of rates; and the figures ``otpipe complexity``
writes next to its result (:func:`plot_study`: the paper's Fig. 5 and 6, and :func:`kappa_table`)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from otpipe.report._page import Page

__all__ = ["build", "plot_study", "kappa_table"]


def build(path: str, *, title: str | None = None, max_measures: int = 30) -> Page:
    """The report page of a sample-complexity study.

    The decay curves and the fitted rates with their intervals.

    Parameters
    ----------
    path : str
        The study's result store (``otpipe complexity``'s output).
    title : str or None, default None
        Title of the page; ``None``: ``"otpipe ...: <store name>"``.
    max_measures : int, default 30
        Not used (the signature is shared by every page builder).

    Returns
    -------
    Page
        The page, not written yet (:meth:`~otpipe.report._page.Page.write`).
    """
    import xarray as xr

    ds = xr.open_zarr(path, consolidated=False).load()
    a = ds.attrs
    name = os.path.basename(os.path.normpath(path))
    pg = Page(title or f"otpipe sample complexity: {name}", "complexity")
    eps, dims, ns = ds["eps"].values, [int(d) for d in ds["dim"].values], ds["n"].values
    p, div = float(a.get("p", 1.5)), a.get("divergence", "sinkhorn")
    level = float(a.get("confidence_level", 0.95))
    pg.summary.append(f"R(N) = E {div}(mu_N, nu_N) for {a.get('distribution', '?')} samples, cost {a.get('cost', '?')} "
                      f"with p = {p:g}: eps in {{{', '.join(f'{e:g}' for e in eps)}}}, d in {{{', '.join(map(str, dims))}}}, "
                      f"N = {', '.join(str(int(n)) for n in ns)}, {ds.sizes['rep']} repetitions per cell, seed {a.get('seed')}.")
    pg.summary.append(f"kappa: least-squares slope of log R(N) on log N, with its {level:.0%} Student-t interval; "
                      f"the paper's rates are p/d for eps -> 0 (OT) and 1 for eps -> inf (MMD).")
    if "marginal_error" in ds:
        me = np.asarray(ds["marginal_error"].values, dtype=float)
        me = me[np.isfinite(me)]
        if me.size:
            tol = a.get("tol")
            pg.summary.append(f"convergence: relative marginal error median {np.median(me):.2g}, max {me.max():.2g}"
                              + (f" (tolerance {tol:g})" if isinstance(tol, (int, float)) else "") + ".")
            if isinstance(tol, (int, float)) and me.max() > 10 * tol:
                pg.note(f"{np.mean(me > tol):.0%} of the solves stopped above the tolerance {tol:g} "
                        f"(max {me.max():.2g}): rerun with a larger --max-iter.")
    pg.figure("decay", _decay_figure(ds, eps, dims, ns, p, div),
              "R(N) (dots, bars: +- S(N) / sqrt(reps)) and the fitted c N^-kappa (dashed), one panel per dimension")
    pg.figure("rates", _rates_figure(ds, eps, dims, p, level),
              f"fitted kappa with its {level:.0%} interval against eps; dotted: p/d (OT rate), grey: 1 (MMD rate)")
    pg.heading("Fitted rates kappa [interval]")
    head = ["eps"] + [f"d = {d}" for d in dims]
    rows = [[f"{e:g}"] + [_kappa(ds, i, j) for j in range(len(dims))] for i, e in enumerate(eps)]
    rows.append(["paper, eps -> 0: p/d"] + [f"{p / d:.3f}" for d in dims])
    rows.append(["paper, eps -> inf"] + ["1" for _ in dims])
    pg.table(head, rows)
    pg.heading("Parameters")
    pg.table(["attribute", "value"], [[k, v] for k, v in a.items() if k != "versions"])
    return pg


def _kappa(ds, i, j) -> str:
    k, lo, hi = (float(ds[v].values[i, j]) for v in ("kappa", "kappa_low", "kappa_high"))
    return f"{k:.3f} [{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) else f"{k:.3f}"


def _decay_figure(ds, eps, dims, ns, p, div):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from otpipe.tools.complexity import fit_rate

    mean, std = np.asarray(ds["mean"].values, float), np.asarray(ds["std"].values, float)
    reps = ds.sizes["rep"]
    cmap = matplotlib.colormaps["viridis"]
    fig, axes = plt.subplots(1, len(dims), figsize=(4.8 * len(dims), 4.4), squeeze=False, layout="constrained")
    nn = np.geomspace(ns.min(), ns.max(), 50)
    for j, d in enumerate(dims):
        ax = axes[0, j]
        for i, e in enumerate(eps):
            col = cmap(i / max(1, len(eps) - 1) * 0.9)
            m, s = mean[i, j], std[i, j]
            ok = m > 0
            ax.errorbar(ns[ok], m[ok], yerr=(s / math.sqrt(reps))[ok], fmt="o", ms=4, color=col, capsize=2)
            f = fit_rate(ns, m)
            k, lo, hi = (float(ds[v].values[i, j]) for v in ("kappa", "kappa_low", "kappa_high"))
            if math.isfinite(f.log_c):
                ci = f" [{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) else ""
                ax.plot(nn, np.exp(f.log_c) * nn ** (-k), "--", color=col, label=f"eps={e:g}: kappa {k:.2f}{ci}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"d = {d}  (OT rate p/d = {p / d:.2f})")
        ax.set_xlabel("N (points per measure)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel(f"R(N) = E {div}")
    fig.suptitle("Sample complexity: decay of R(N) and the fitted rates")
    return fig


def _rates_figure(ds, eps, dims, p, level):
    import matplotlib
    import matplotlib.pyplot as plt

    cmap = matplotlib.colormaps["plasma"]
    fig, ax = plt.subplots(figsize=(7.2, 4.4), layout="constrained")
    for j, d in enumerate(dims):
        col = cmap(j / max(1, len(dims) - 1) * 0.85)
        k = np.asarray(ds["kappa"].values[:, j], float)
        lo, hi = np.asarray(ds["kappa_low"].values[:, j], float), np.asarray(ds["kappa_high"].values[:, j], float)
        err = np.vstack([k - lo, hi - k])
        err = np.where(np.isfinite(err), err, 0.0)
        x = eps * (1.0 + 0.04 * (j - (len(dims) - 1) / 2))  # small offsets: the intervals do not overlap
        ax.errorbar(x, k, yerr=err, fmt="o-", ms=5, capsize=3, color=col, label=f"d = {d}")
        ax.axhline(p / d, color=col, ls=":", lw=1.2)
    ax.axhline(1.0, color="0.5", lw=1.0)
    ax.set_xscale("log")
    ax.set_xlabel("eps")
    ax.set_ylabel(f"kappa ({level:.0%} interval)")
    ax.set_title("fitted decay rates: p/d (dotted) for small eps, 1 (grey) for large eps")
    ax.legend(fontsize=8)
    return fig


def kappa_table(ds, fmt: str = "markdown") -> str:
    """The fitted ``kappa`` per ``(eps, d)`` with its interval and the paper's reference rates ``p/d`` and 1.

    Parameters
    ----------
    ds : xarray.Dataset
        A complexity study (with ``kappa``, ``kappa_low``, ``kappa_high`` over ``(eps, dim)``).
    fmt : str, default "markdown"
        Table format; only ``"markdown"`` is written.

    Returns
    -------
    str
        A Markdown table, one row per eps and two reference rows.
    """
    p = float(ds.attrs.get("p", 1.5))
    dims = [int(d) for d in ds["dim"].values]
    head = "| eps | " + " | ".join(f"kappa (d={d})" for d in dims) + " |"
    sep = "|---|" + "---|" * len(dims)
    rows = [head, sep]
    for i, e in enumerate(ds["eps"].values):
        cells = []
        for j in range(len(dims)):
            k, lo, hi = (float(ds[v].values[i, j]) for v in ("kappa", "kappa_low", "kappa_high"))
            cells.append(f"{k:.3f} [{lo:.2f}, {hi:.2f}]")
        rows.append(f"| {e:g} | " + " | ".join(cells) + " |")
    rows.append("| paper, eps -> 0: p/d | " + " | ".join(f"{p / d:.3f}" for d in dims) + " |")
    rows.append("| paper, eps -> inf | " + " | ".join("1" for _ in dims) + " |")
    return "\n".join(rows)


def plot_study(ds, out_dir) -> list[Path]:
    """The paper's figures of a study, written as PNGs.

    Log-log ``R(N)`` per eps, one panel per d (Fig. 5, ``by_dim.png``), and per d, one panel per eps with the
    ``+- S(N)`` band (Fig. 6, ``by_eps.png``).

    Parameters
    ----------
    ds : xarray.Dataset
        A complexity study.
    out_dir : str or os.PathLike
        Folder of the PNGs (created if needed).

    Returns
    -------
    list of pathlib.Path
        The PNGs written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = ds["n"].values
    eps, dims = ds["eps"].values, ds["dim"].values
    name = ds.attrs.get("divergence", "sinkhorn")
    p = float(ds.attrs.get("p", 1.5))
    mean, std = ds["mean"].values, ds["std"].values
    paths = []

    def _panel(ax, series, title):
        for lab, (m, s), col in series:
            ok = m > 0
            ax.loglog(n[ok], m[ok], "o-", color=col, label=lab, ms=4)
            lo = np.where(m - s > 0, m - s, np.nan)
            ax.fill_between(n[ok], lo[ok], (m + s)[ok], color=col, alpha=0.15, linewidth=0)
        ax.set_title(title)
        ax.set_xlabel("N (points per measure)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)

    def _figure(file, panels_over_dim, cmap, shade, width, line_label, title, suptitle):
        # one panel per d (panels_over_dim) or per eps, one line per value of the other axis in each panel;
        # line_label(value) names a line, title(value) a panel, the line's colour is cmap(position * shade)
        panels, lines = (dims, eps) if panels_over_dim else (eps, dims)
        cmap = plt.get_cmap(cmap)
        fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 4.2), squeeze=False)
        for a, pv in enumerate(panels):
            series = []
            for b, lv in enumerate(lines):
                i, j = (b, a) if panels_over_dim else (a, b)
                series.append((f"{line_label(lv)}, kappa={float(ds['kappa'].values[i, j]):.2f}",
                               (mean[i, j], std[i, j]), cmap(b / max(1, len(lines) - 1) * shade)))
            _panel(axes[0, a], series, title(pv))
        axes[0, 0].set_ylabel(f"R(N) = E {name}  (band: +- S(N))")
        fig.suptitle(suptitle)
        fig.tight_layout()
        paths.append(out_dir / file)
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    _figure("by_dim.png", True, "viridis", 0.9, 4.6, lambda e: f"eps={e:g}", lambda d: f"d = {d}  (p/d = {p / d:.2f})",
            f"Sample complexity, influence of eps ({ds.attrs.get('distribution', '')}, p = {p:g}, "
            f"{ds.sizes['rep']} reps)")
    _figure("by_eps.png", False, "plasma", 0.85, 4.2, lambda d: f"d={d}", lambda e: f"eps = {e:g}",
            "Sample complexity, influence of the dimension")
    (out_dir / "kappa.md").write_text(kappa_table(ds) + "\n")
    paths.append(out_dir / "kappa.md")
    return paths
