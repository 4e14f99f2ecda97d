"""Report of two-sample tests (``otpipe two-sample``): a table of statistics, p-values and corrected
p-values, ``-log10 p`` with the corrections' rejections marked, the ranked p-values against the Holm and
Benjamini-Hochberg thresholds, or, for a single test, its permutation null.

Reads both variable spellings: scipy's ``pvalue`` / ``null_distribution`` and the older ``p_value`` / ``null``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from otpipe.report._page import Page

__all__ = ["build", "figures", "write_png", "tests_table", "ALPHA"]

#: level at which the report counts and marks rejections
ALPHA = 0.05
_NAMES = {"pvalue": ("pvalue", "p_value"), "null": ("null_distribution", "null"),
          "holm": ("p_holm", "pvalue_holm"), "bh": ("p_bh", "pvalue_bh")}


def _var(ds, what: str):
    for n in _NAMES[what]:
        if n in ds:
            return np.asarray(ds[n].values, dtype=float)
    return None


def _tested(ds) -> np.ndarray:
    """Mask of the distinct tests: finite p-values, the upper triangle for one collection."""
    p = _var(ds, "pvalue")
    mask = np.isfinite(p)
    if "target_collection" not in ds.attrs and p.shape[0] == p.shape[1]:
        mask &= np.triu(np.ones(p.shape, dtype=bool), 1)
    return mask


def tests_table(ds) -> tuple[list[str], list[list]]:
    """One row per distinct test, smallest p first: groups, sizes, statistic, p, Holm and BH p, decisions.

    Parameters
    ----------
    ds : xarray.Dataset
        A two-sample result.

    Returns
    -------
    header : list of str
        The column names.
    rows : list of list
        The rows.
    """
    p, holm, bh = _var(ds, "pvalue"), _var(ds, "holm"), _var(ds, "bh")
    stat = np.asarray(ds["statistic"].values, dtype=float)
    src, tgt = [str(v) for v in ds["source"].values], [str(v) for v in ds["target"].values]
    ns = ds["n_source"].values if "n_source" in ds else None
    nt = ds["n_target"].values if "n_target" in ds else None
    rows = []
    for i, j in zip(*np.nonzero(_tested(ds))):
        r = [src[i], tgt[j]]
        if ns is not None and nt is not None:
            r += [int(ns[i]), int(nt[j])]
        r += [float(stat[i, j]), float(p[i, j])]
        r += [float(holm[i, j]) if holm is not None else "", float(bh[i, j]) if bh is not None else ""]
        dec = [name for name, q in (("Holm", holm), ("BH", bh)) if q is not None and q[i, j] <= ALPHA]
        r.append(", ".join(dec) or "-")
        rows.append(r)
    rows.sort(key=lambda r: (r[-4], -r[-5]))
    head = ["source", "target"] + (["n source", "n target"] if ns is not None and nt is not None else [])
    head += ["statistic", "p", "p Holm", "p BH", f"rejected at {ALPHA:g}"]
    return head, rows


def build(path: str, *, title: str | None = None, max_measures: int = 30) -> Page:
    """The report page of two-sample tests.

    A table of statistics, p-values and corrected p-values, and the figures of :func:`figures`.

    Parameters
    ----------
    path : str
        The result store (``otpipe two-sample``'s output).
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
    pg = Page(title or f"otpipe two-sample tests: {name}", "two-sample")
    n_perm = int(a.get("n_permutations", 0))
    mask = _tested(ds)
    p = _var(ds, "pvalue")
    n_tests = int(mask.sum())
    floor = 1.0 / (n_perm + 1) if n_perm else float("nan")
    pg.summary.append(f"{n_tests} test(s) of equal distributions between {a.get('by', '?')} groups: {a.get('statistic', '?')} "
                      f"statistic, {n_perm} permutations (smallest attainable p = 1/{n_perm + 1} = {floor:.2g}), seed {a.get('seed')}.")
    counts = [f"uncorrected {int(np.sum(p[mask] <= ALPHA))}"]
    for label, key in (("Holm (family-wise error)", "holm"), ("Benjamini-Hochberg (false discovery rate)", "bh")):
        q = _var(ds, key)
        if q is not None:
            counts.append(f"{label} {int(np.sum(q[mask] <= ALPHA))}")
    pg.summary.append(f"rejected at level {ALPHA:g}: " + "; ".join(counts) + f" of {n_tests}.")
    at_floor = int(np.sum(np.isclose(p[mask], floor)))
    if n_tests > 1 and at_floor:
        pg.summary.append(f"{at_floor} test(s) at the permutation floor p = {floor:.2g}: more permutations would resolve them.")
    for fname, fig, caption in figures(ds):
        pg.figure(fname, fig, caption)
    head, rows = tests_table(ds)
    shown = rows[:200]
    pg.heading("Tests" + (f" (the {len(shown)} smallest p-values of {len(rows)}; all are in the result store)"
                          if len(rows) > len(shown) else ""))
    pg.table(head, shown)
    pg.heading("Parameters")
    prm = {k: v for k, v in a.items() if k not in ("versions",)}
    pg.table(["attribute", "value"], [[k, v] for k, v in prm.items()])
    return pg


def write_png(ds, path) -> Path:
    """Write the PNG of a two-sample result next to its store (``otpipe two-sample`` writes ``OUT.png``).

    The permutation null of a single test, else ``-log10 p`` with the Holm / Benjamini-Hochberg rejections
    marked: the first of :func:`figures`.

    Parameters
    ----------
    ds : xarray.Dataset
        A two-sample result.
    path : path
        The PNG to write.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    _, fig, _ = figures(ds)[0]
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figures(ds) -> list[tuple[str, object, str]]:
    """``(name, matplotlib figure, caption)`` of a two-sample result (used by the report and by :func:`write_png`).

    The permutation null of a single test; else ``-log10 p`` with the corrections' rejections marked and, for more
    than one test, the sorted p-values against the Holm and Benjamini-Hochberg thresholds.

    Parameters
    ----------
    ds : xarray.Dataset
        A two-sample result.

    Returns
    -------
    list of tuple
        ``(name, figure, caption)`` per figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    null = _var(ds, "null")
    mask = _tested(ds)
    if null is not None and int(mask.sum()) == 1:
        return [("null", _null_figure(ds, null, mask), "permutation null distribution and the observed statistic")]
    out = [("pvalues", _pvalue_figure(ds, mask),
            f"p of each test on a -log10 colour scale; marked: rejected at {ALPHA:g} after the Holm (rings, or green "
            "outlines) and Benjamini-Hochberg (dots, or blue outlines) corrections")]
    if int(mask.sum()) > 1:
        out.append(("ranked", _ranked_figure(ds, mask), "sorted p-values against the Holm and Benjamini-Hochberg thresholds"))
    return out


def _null_figure(ds, null, mask):
    import matplotlib.pyplot as plt

    i, j = np.argwhere(mask)[0]
    nul = null[i, j][np.isfinite(null[i, j])]
    obs, p = float(ds["statistic"].values[i, j]), float(_var(ds, "pvalue")[i, j])
    fig, ax = plt.subplots(figsize=(6.8, 4.2), layout="constrained")
    ax.hist(nul, bins=min(50, max(10, nul.size // 20)), color="0.65", edgecolor="0.35", label="permutation null")
    ax.axvline(obs, color="crimson", lw=2, label=f"observed = {obs:.4g}")
    ax.set_xlabel(f"{ds.attrs.get('statistic', '')} statistic")
    ax.set_ylabel("permutations")
    ax.set_title(f"{ds['source'].values[i]} vs {ds['target'].values[j]}: p = {p:.4g} ({nul.size} permutations)")
    ax.legend(frameon=False)
    return fig


def _pvalue_figure(ds, mask):
    import matplotlib.pyplot as plt

    p = _var(ds, "pvalue")
    holm, bh = _var(ds, "holm"), _var(ds, "bh")
    S, T = p.shape
    n_perm = int(ds.attrs.get("n_permutations", 0))
    top = -np.log10(1.0 / (n_perm + 1)) if n_perm else max(1.0, float(np.nanmax(-np.log10(p))))
    L = -np.log10(np.clip(p, 1e-300, 1.0))
    fig, ax = plt.subplots(figsize=(min(14, 4.5 + 0.3 * T), min(12, 3.5 + 0.3 * S)), layout="constrained")
    im = ax.imshow(L, cmap="magma_r", vmin=0.0, vmax=top, interpolation="nearest", aspect="auto")
    cb = fig.colorbar(im, ax=ax, shrink=0.85)
    ticks = [t for t in (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 1e-3, 1e-4, 1e-5, 1e-6) if -np.log10(t) <= top + 1e-9]
    cb.set_ticks([-np.log10(t) for t in ticks], labels=[f"{t:g}" for t in ticks])
    cb.set_label(f"p (log scale; top: the floor 1/{n_perm + 1})")
    if -np.log10(ALPHA) < top:
        cb.ax.axhline(-np.log10(ALPHA), color="deepskyblue", lw=1.5)
    both = np.isfinite(p)
    small = S <= 40 and T <= 40
    for q, style, color, name in ((bh, dict(marker="o", s=14, linewidths=0), "deepskyblue", "Benjamini-Hochberg"),
                                  (holm, dict(marker="o", s=70, facecolors="none", linewidths=1.4), "lime", "Holm")):
        if q is None:
            continue
        rej = both & (np.nan_to_num(q, nan=1.0) <= ALPHA)
        if not rej.any():
            continue
        if small:  # one marker per rejected test
            ij = np.argwhere(rej)
            ax.scatter(ij[:, 1], ij[:, 0], label=f"rejected, {name}", **({"color": color} if name != "Holm" else
                                                                          {"edgecolors": color}), **style)
        else:  # many tests: the outline of the rejected region
            ax.contour(rej.astype(float), levels=[0.5], colors=[color], linewidths=1.0 if name == "Holm" else 0.7)
            ax.plot([], [], color=color, label=f"rejected, {name} (outline)")
    if S * T <= 100:
        for i in range(S):
            for j in range(T):
                if np.isfinite(p[i, j]):
                    ax.text(j, i + 0.3, f"p={p[i, j]:.2g}", ha="center", va="center", fontsize=7,
                            color="white" if L[i, j] > 0.6 * top else "black")
    if S <= 40:
        ax.set_yticks(range(S), [str(v) for v in ds["source"].values], fontsize=7)
    if T <= 40:
        ax.set_xticks(range(T), [str(v) for v in ds["target"].values], fontsize=7, rotation=90)
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    ax.set_title(f"{ds.attrs.get('statistic', '')} two-sample tests: p-values, rejections at {ALPHA:g} marked", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside lower center", fontsize=8, ncols=2, frameon=False)
    return fig


def _ranked_figure(ds, mask):
    import matplotlib.pyplot as plt

    p = np.sort(_var(ds, "pvalue")[mask])
    m = len(p)
    k = np.arange(1, m + 1)
    fig, ax = plt.subplots(figsize=(7.0, 4.2), layout="constrained")
    ax.plot(k, p, "o", ms=3, color="0.2", label="p-values, sorted")
    ax.plot(k, ALPHA * k / m, "-", color="tab:blue", label=f"Benjamini-Hochberg: {ALPHA:g} k / m")
    ax.plot(k, ALPHA / (m - k + 1), "-", color="tab:green", label=f"Holm: {ALPHA:g} / (m - k + 1)")
    n_perm = int(ds.attrs.get("n_permutations", 0))
    if n_perm:
        ax.axhline(1.0 / (n_perm + 1), color="0.6", ls=":", label=f"permutation floor 1/{n_perm + 1}")
    ax.set_yscale("log")
    ax.set_xlabel(f"rank k (m = {m} tests)")
    ax.set_ylabel("p")
    ax.legend(fontsize=8, frameon=False)
    return fig
