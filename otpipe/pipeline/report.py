"""``otpipe report``: plots of a pairwise result a person can read.

* heatmap of the matrix, rows and columns ordered by an average-linkage hierarchical clustering;
* classical MDS embedding of ``sqrt(max(S, 0))`` (symmetric runs), coloured by label;
* nearest-neighbour label accuracy when labels exist: leave-one-out 1-NN for a symmetric run
  (``label(argmin_{j != i} S_ij) == label(i)``), nearest target for an ``N x M`` run.

Writes a PNG and an HTML page (the PNG embedded, plus the numbers).
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

__all__ = ["make_report", "nn_accuracy", "cluster_order", "classical_mds"]


def nn_accuracy(S: np.ndarray, labels_source, labels_target, symmetric: bool) -> float:
    """Fraction of sources whose nearest (other) measure by ``S`` has the same label."""
    S = np.array(S, dtype=float)
    if symmetric:
        np.fill_diagonal(S, np.inf)
    nn = np.nanargmin(np.where(np.isnan(S), np.inf, S), axis=1)
    ls, lt = np.asarray(labels_source), np.asarray(labels_target)
    return float(np.mean(lt[nn] == ls))


def cluster_order(X: np.ndarray, precomputed: bool) -> np.ndarray:
    """Leaf order of an average-linkage clustering (of a symmetric dissimilarity, or of row vectors)."""
    n = X.shape[0]
    if n < 3:
        return np.arange(n)
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    if precomputed:
        D = np.maximum(0.5 * (X + X.T), 0.0)
        np.fill_diagonal(D, 0.0)
        Z = linkage(squareform(D, checks=False), method="average")
    else:
        Z = linkage(X, method="average")
    return leaves_list(Z)


def classical_mds(D: np.ndarray, k: int = 2) -> np.ndarray:
    """Classical (Torgerson) MDS: top-``k`` eigenvectors of ``-1/2 J D^2 J`` scaled by ``sqrt(lambda)``."""
    n = D.shape[0]
    J = np.eye(n) - 1.0 / n
    B = -0.5 * J @ (D**2) @ J
    w, V = np.linalg.eigh(0.5 * (B + B.T))
    idx = np.argsort(w)[::-1][:k]
    return V[:, idx] * np.sqrt(np.maximum(w[idx], 0.0))


def make_report(result, out, *, title: str | None = None) -> dict:
    """Write ``out`` (PNG) and ``out`` with suffix ``.html``; return paths and summary lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .result import open_result

    ds = open_result(result)
    S = np.asarray(ds["divergence"].values, dtype=float)
    symmetric = bool(ds.attrs.get("symmetric"))
    ls = _strs(ds["source_label"].values) if "source_label" in ds.coords else None
    lt = _strs(ds["target_label"].values) if "target_label" in ds.coords else None
    lines = [
        f"{ds.attrs.get('loss', '?')} {S.shape[0]} x {S.shape[1]} ({'symmetric' if symmetric else 'cross'}), "
        f"min {np.nanmin(S):.4g}, median {np.nanmedian(S):.4g}, max {np.nanmax(S):.4g}"
    ]
    acc = None
    if ls is not None and lt is not None:
        acc = nn_accuracy(S, ls, lt, symmetric)
        lines.append(f"nearest-neighbour label accuracy: {acc:.3f} ({'leave-one-out' if symmetric else 'nearest target'})")

    if symmetric:
        ro = co = cluster_order(S, precomputed=True)
    else:
        ro, co = cluster_order(S, precomputed=False), cluster_order(S.T, precomputed=False)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.8), gridspec_kw={"width_ratios": [1.1, 1]})
    ax = axes[0]
    im = ax.imshow(S[np.ix_(ro, co)], cmap="viridis", interpolation="nearest", aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="divergence")
    ax.set_title("matrix, ordered by hierarchical clustering")
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    _ticks(ax, ds, ro, co, ls, lt)

    ax = axes[1]
    if symmetric and S.shape[0] >= 3:
        Y = classical_mds(np.sqrt(np.maximum(0.5 * (S + S.T), 0.0)))
        groups = sorted(set(ls)) if ls is not None else [None]
        cmap = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
        for k, g in enumerate(groups):
            m = np.ones(len(Y), bool) if g is None else ls == g
            ax.scatter(Y[m, 0], Y[m, 1], s=28, color=cmap(k % cmap.N), label=g, edgecolor="k", linewidth=0.3)
        if ls is not None:
            ax.legend(title="label", fontsize=8, loc="best")
        ax.set_title("MDS embedding of sqrt(divergence)")
        ax.set_xlabel("MDS 1")
        ax.set_ylabel("MDS 2")
    else:
        ax.hist(S[np.isfinite(S)].ravel(), bins=40, color="tab:blue")
        ax.set_title("distribution of the divergences")
        ax.set_xlabel("divergence")
        ax.set_ylabel("pairs")
    sup = title or f"otpipe {ds.attrs.get('loss', '')}: {Path(str(result)).name}"
    if acc is not None:
        sup += f"   (1-NN label accuracy {acc:.1%})"
    fig.suptitle(sup)
    fig.tight_layout()
    out = Path(out)
    if out.suffix.lower() != ".png":
        out = out.with_suffix(out.suffix + ".png") if out.suffix else out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    page = out.with_suffix(".html")
    params = ds.attrs.get("parameters", {})
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in params.items())
    png64 = base64.b64encode(out.read_bytes()).decode()
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>otpipe report</title></head><body>"
        f"<h1>{html.escape(sup)}</h1>"
        + "".join(f"<p>{html.escape(s)}</p>" for s in lines)
        + f"<img src='data:image/png;base64,{png64}' style='max-width:100%'>"
        f"<h2>parameters</h2><table border='1' cellpadding='3'>{rows}"
        f"<tr><td>diameter</td><td>{html.escape(str(ds.attrs.get('diameter')))}</td></tr></table>"
        "</body></html>"
    )
    return {"png": str(out), "html": str(page), "lines": lines, "accuracy": acc}


def _strs(values) -> np.ndarray:
    """Plain Python strings (the stored coordinates may use NumPy's StringDType)."""
    return np.array([str(v) for v in values], dtype=object)


def _ticks(ax, ds, ro, co, ls, lt) -> None:
    n, m = len(ro), len(co)
    if n <= 40:
        names = _strs(ds["source"].values)
        ax.set_yticks(range(n), [f"{names[i]}" + (f" [{ls[i]}]" if ls is not None else "") for i in ro], fontsize=7)
    else:
        ax.set_yticks([])
    if m <= 40:
        names = _strs(ds["target"].values)
        ax.set_xticks(range(m), [names[j] for j in co], fontsize=7, rotation=90)
    else:
        ax.set_xticks([])
