"""Report of a distance matrix (``otpipe distances``).

* heatmap ordered by an average-linkage hierarchical clustering, with a label colour strip along
  the rows and the columns, the loss and its parameters on the colour bar;
* classical MDS embedding of ``sqrt(max(S, 0))`` (symmetric runs) coloured by label, or the
  histogram of the divergences (``N x M`` runs);
* nearest-neighbour label accuracy: leave-one-out 1-NN for a symmetric run
  (``label(argmin_{j != i} S_ij) == label(i)``), nearest target for an ``N x M`` run;
* convergence: median / max of the solves' relative marginal errors, share above 1e-2, iterations,
  and a note with the remedy when they are high.
"""
from __future__ import annotations

import os

import numpy as np

from otpipe.report._page import Page

__all__ = ["build", "nn_accuracy", "cluster_order", "classical_mds", "convergence_summary", "colorbar_label",
           "HIGH_MARGINAL_ERROR"]

#: relative marginal error above which a solve is counted as not converged in the summary
HIGH_MARGINAL_ERROR = 1e-2


def nn_accuracy(S: np.ndarray, labels_source, labels_target, symmetric: bool) -> float:
    """Fraction of sources whose nearest (other) measure by ``S`` has the same label.

    Parameters
    ----------
    S : numpy.ndarray
        ``(n_source, n_target)`` dissimilarities (NaN entries are never nearest).
    labels_source : array_like
        Labels of the sources.
    labels_target : array_like
        Labels of the targets.
    symmetric : bool
        One collection against itself: a measure is not its own neighbour.

    Returns
    -------
    float
        The accuracy in ``[0, 1]``.
    """
    S = np.array(S, dtype=float)
    if symmetric:
        np.fill_diagonal(S, np.inf)
    nn = np.nanargmin(np.where(np.isnan(S), np.inf, S), axis=1)
    ls, lt = np.asarray(labels_source), np.asarray(labels_target)
    return float(np.mean(lt[nn] == ls))


def cluster_order(X: np.ndarray, precomputed: bool) -> np.ndarray:
    """Leaf order of an average-linkage clustering (of a symmetric dissimilarity, or of row vectors).

    Parameters
    ----------
    X : numpy.ndarray
        A square dissimilarity matrix (``precomputed``) or row vectors ``(n, k)``; NaN entries count as the largest.
    precomputed : bool
        Whether ``X`` is a dissimilarity matrix (symmetrised, clipped at 0).

    Returns
    -------
    numpy.ndarray
        The permutation of the rows (the identity for fewer than 3).
    """
    n = X.shape[0]
    if n < 3:
        return np.arange(n)
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    X = np.nan_to_num(np.asarray(X, dtype=float), nan=np.nanmax(X) if np.isfinite(X).any() else 0.0)
    if precomputed:
        D = np.maximum(0.5 * (X + X.T), 0.0)
        np.fill_diagonal(D, 0.0)
        Z = linkage(squareform(D, checks=False), method="average")
    else:
        Z = linkage(X, method="average")
    return leaves_list(Z)


def classical_mds(D: np.ndarray, k: int = 2) -> np.ndarray:
    """Classical (Torgerson) MDS: top-``k`` eigenvectors of ``-1/2 J D^2 J`` scaled by ``sqrt(lambda)``.

    Parameters
    ----------
    D : numpy.ndarray
        ``(n, n)`` symmetric distances.
    k : int, default 2
        Dimension of the embedding.

    Returns
    -------
    numpy.ndarray
        ``(n, k)`` coordinates (negative eigenvalues give 0; signs fixed so each axis's largest entry is positive).
    """
    n = D.shape[0]
    J = np.eye(n) - 1.0 / n
    B = -0.5 * J @ (D**2) @ J
    w, V = np.linalg.eigh(0.5 * (B + B.T))
    idx = np.argsort(w)[::-1][:k]
    Y = V[:, idx] * np.sqrt(np.maximum(w[idx], 0.0))
    return Y * np.where(Y[np.argmax(np.abs(Y), axis=0), range(Y.shape[1])] < 0, -1.0, 1.0)  # deterministic signs


def convergence_summary(marginal_error, n_iter, *, symmetric: bool, threshold: float = HIGH_MARGINAL_ERROR) -> dict | None:
    """Convergence figures of the pair solves of a run.

    Median and maximum relative marginal error of the pair solves, the share above ``threshold`` and the
    iteration counts (off-diagonal pairs of a symmetric run).

    Parameters
    ----------
    marginal_error : array_like
        The matrix of marginal errors.
    n_iter : array_like
        The matrix of iteration counts.
    symmetric : bool
        One collection against itself: the diagonal is left out.
    threshold : float, default HIGH_MARGINAL_ERROR
        Error above which a solve counts as not converged.

    Returns
    -------
    dict or None
        ``pairs``, ``median``, ``max``, ``share_above``, ``threshold``, ``n_iter_median``, ``n_iter_max``; ``None``
        when no solve reports one.
    """
    me = np.array(marginal_error, dtype=float)
    it = np.array(n_iter, dtype=float)
    mask = np.isfinite(me)
    if symmetric and me.shape[0] == me.shape[1]:
        np.fill_diagonal(mask, False)
    if not mask.any() or not np.any(it[mask] > 0):
        return None
    v = me[mask]
    return {"pairs": int(v.size), "median": float(np.median(v)), "max": float(v.max()),
            "share_above": float(np.mean(v > threshold)), "threshold": threshold,
            "n_iter_median": float(np.median(it[mask])), "n_iter_max": int(it[mask].max())}


def colorbar_label(attrs: dict) -> str:
    """What the matrix holds, with its parameters (e.g. ``S_eps: sinkhorn, p = 2, blur = 0.05``).

    Parameters
    ----------
    attrs : dict
        The result's attributes (``loss`` and ``parameters``).

    Returns
    -------
    str
        The label.
    """
    prm = attrs.get("parameters") or {}
    loss = attrs.get("loss") or prm.get("loss") or "divergence"
    p, blur, reach = prm.get("p"), prm.get("blur"), prm.get("reach")
    if loss in ("sinkhorn", "hausdorff"):
        s = f"{'S_eps' if loss == 'sinkhorn' else 'Hausdorff'}: {loss}, p = {_g(p)}, blur = {_g(blur)}"
        if isinstance(p, (int, float)) and isinstance(blur, (int, float)):
            s += f" (eps = {blur ** p:.3g})"
        if reach is not None:
            s += f", reach = {_g(reach)}"
        return s
    if loss == "energy":
        return "energy distance (1/2 MMD^2, kernel -|x-y|)"
    return f"{loss} 1/2 MMD^2, sigma = {_g(blur)}"


def _g(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)


def label_colors(labels) -> tuple[dict, list]:
    """One colour per distinct label (tab10 / tab20, a continuous map beyond 20) and the label order."""
    import matplotlib

    order = list(dict.fromkeys(sorted(set(labels), key=lambda s: (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s))))
    n = len(order)
    if n <= 10:
        cmap = matplotlib.colormaps["tab10"]
        cols = [cmap(k) for k in range(n)]
    elif n <= 20:
        cmap = matplotlib.colormaps["tab20"]
        cols = [cmap(k) for k in range(n)]
    else:
        cmap = matplotlib.colormaps["turbo"]
        cols = [cmap(k / max(1, n - 1)) for k in range(n)]
    return dict(zip(order, cols)), order


def build(path: str, *, title: str | None = None, max_measures: int = 30) -> Page:
    """The report page of a distance matrix.

    The clustered heatmap with a label strip, an MDS embedding, the nearest-neighbour label accuracy and a
    convergence summary.

    Parameters
    ----------
    path : str
        The result store (``otpipe distances``'s output).
    title : str or None, default None
        Title of the page; ``None``: ``"otpipe ...: <store name>"``.
    max_measures : int, default 30
        Not used (the signature is shared by every page builder).

    Returns
    -------
    Page
        The page, not written yet (:meth:`~otpipe.report._page.Page.write`).
    """
    from otpipe.engine.result import open_result

    ds = open_result(path)
    S = np.asarray(ds["divergence"].values, dtype=float)
    symmetric = bool(ds.attrs.get("symmetric"))
    ls = _strs(ds["source_label"].values) if "source_label" in ds.coords else None
    lt = _strs(ds["target_label"].values) if "target_label" in ds.coords else None
    loss = ds.attrs.get("loss", "?")
    name = os.path.basename(os.path.normpath(path))
    pg = Page(title or f"otpipe distances: {name}", "distances")
    what = colorbar_label(ds.attrs)
    pg.summary.append(f"{what}; {S.shape[0]} x {S.shape[1]} ({'symmetric' if symmetric else 'cross'}): "
                      f"min {np.nanmin(S):.4g}, median {np.nanmedian(S):.4g}, max {np.nanmax(S):.4g}.")
    acc = None
    if ls is not None and lt is not None:
        acc = nn_accuracy(S, ls, lt, symmetric)
        chance = max(np.mean(lt == v) for v in set(lt))
        pg.summary.append(f"nearest-neighbour label accuracy: {acc:.3f} "
                          f"({'leave-one-out' if symmetric else 'nearest target'}; the largest label is {chance:.3f} of the targets).")
    conv = None
    if "marginal_error" in ds and "n_iter" in ds:
        conv = convergence_summary(ds["marginal_error"].values, ds["n_iter"].values, symmetric=symmetric)
    if conv is not None:
        pg.summary.append(f"convergence: relative marginal error median {conv['median']:.2g}, max {conv['max']:.2g}; "
                          f"{conv['share_above']:.0%} of the {conv['pairs']} pairs above {conv['threshold']:g}; "
                          f"iterations median {conv['n_iter_median']:g}, max {conv['n_iter_max']}.")
        if conv["share_above"] > 0:
            pg.note(_remedy(ds.attrs, conv))
    elif loss in ("energy", "gaussian", "laplacian"):
        pg.summary.append("convergence: not iterative (a closed-form kernel loss).")

    if symmetric:
        ro = co = cluster_order(S, precomputed=True)
    else:
        ro, co = cluster_order(S, precomputed=False), cluster_order(S.T, precomputed=False)
    labels_all = [*(ls if ls is not None else []), *(lt if lt is not None else [])]
    colors, order = label_colors(labels_all) if labels_all else ({}, [])
    pg.figure("matrix", _heatmap(S, ro, co, ds, ls, lt, colors, order, what),
              "ordered by average-linkage hierarchical clustering; the strips give each measure's label")
    pg.figure("embedding", _embedding(S, symmetric, ls, colors, order, what),
              "classical MDS of sqrt(S): nearby points are measures with small divergences" if symmetric
              else "distribution of the divergences")
    if conv is not None:
        pg.figure("convergence", _convergence_figure(ds, symmetric, conv),
                  "relative marginal error of each pair's last Sinkhorn iteration, and the iteration counts")
    pg.heading("Parameters")
    prm = dict(ds.attrs.get("parameters", {}))
    rows = [[k, v] for k, v in prm.items()] + [["diameter", ds.attrs.get("diameter")]]
    rows += [[k, ds.attrs[k]] for k in ("marginal_error_median", "marginal_error_max", "convergence_warning")
             if ds.attrs.get(k) not in (None, "")]  # recorded by the run, when it does
    pg.table(["parameter", "value"], rows)
    return pg


def _remedy(attrs: dict, conv: dict) -> str:
    prm = attrs.get("parameters") or {}
    head = (f"{conv['share_above']:.0%} of the pair solves end with a relative marginal error above "
            f"{conv['threshold']:g} (median {conv['median']:.2g}, max {conv['max']:.2g}): these divergences are "
            "approximate. ")
    if prm.get("tol") is None:
        return head + ("The default fixed eps-scaling schedule (one update per temperature, as GeomLoss) stops "
                       "before Sinkhorn converges. Rerun with a tolerance, e.g. `otpipe distances ... --tol 1e-3` "
                       "(converged mode: iterates at each temperature until the marginal error is below it).")
    return head + (f"The solves stopped at their iteration cap before reaching --tol {prm.get('tol'):g}: rerun with a "
                   "larger --max-iter, or a larger --blur (faster convergence).")


def _strs(values) -> np.ndarray:
    """Plain Python strings (the stored coordinates may use NumPy's StringDType)."""
    return np.array([str(v) for v in values], dtype=object)


def _heatmap(S, ro, co, ds, ls, lt, colors, order, what):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n, m = len(ro), len(co)
    fig = plt.figure(figsize=(9.5, 8.0), layout="constrained")
    strip = ls is not None or lt is not None
    gs = fig.add_gridspec(2, 3, width_ratios=[0.035 if strip else 0.001, 1, 0.04],
                          height_ratios=[0.035 if strip else 0.001, 1], wspace=0.01, hspace=0.01)
    ax = fig.add_subplot(gs[1, 1])
    im = ax.imshow(S[np.ix_(ro, co)], cmap="viridis", interpolation="nearest", aspect="auto")
    cax = fig.add_subplot(gs[1, 2])
    fig.colorbar(im, cax=cax, label=what)
    yax = ax  # the axis that carries the row names: the row strip when there is one
    if strip:
        for lab, pos, order_idx, vertical in ((ls, gs[1, 0], ro, True), (lt, gs[0, 1], co, False)):
            sax = fig.add_subplot(pos, sharey=ax if vertical else None, sharex=None if vertical else ax)
            if vertical:
                yax = sax
            if lab is not None:
                rgb = np.array([colors[lab[i]] for i in order_idx])[:, :3]
                sax.imshow(rgb[:, None] if vertical else rgb[None], aspect="auto", interpolation="nearest")
            sax.tick_params(bottom=False, labelbottom=False, left=False, labelleft=False)
        ax.tick_params(left=False, labelleft=False)
        if len(order) <= 20:
            fig.legend(handles=[Patch(color=colors[k], label=k) for k in order], title="label", loc="outside right upper",
                       fontsize=8, ncols=1 if len(order) <= 10 else 2)
    names_s, names_t = _strs(ds["source"].values), _strs(ds["target"].values)
    if n <= 40:
        yax.set_yticks(range(n), [f"{names_s[i]}" + (f" [{ls[i]}]" if ls is not None else "") for i in ro], fontsize=7)
        yax.tick_params(left=True, labelleft=True)
    else:
        yax.set_yticks([])
    if m <= 40:
        ax.set_xticks(range(m), [names_t[j] for j in co], fontsize=7, rotation=90)
    else:
        ax.set_xticks([])
    ax.set_xlabel(f"target ({m} measures)")
    yax.set_ylabel(f"source ({n} measures)")
    fig.suptitle("divergence matrix, ordered by hierarchical clustering")
    return fig


def _embedding(S, symmetric, ls, colors, order, what):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 6.0), layout="constrained")
    if symmetric and S.shape[0] >= 3:
        Y = classical_mds(np.sqrt(np.maximum(np.nan_to_num(0.5 * (S + S.T)), 0.0)))
        if ls is None:
            ax.scatter(Y[:, 0], Y[:, 1], s=28, color="0.3", edgecolor="k", linewidth=0.3)
        else:
            for g in order:
                mk = ls == g
                if mk.any():
                    ax.scatter(Y[mk, 0], Y[mk, 1], s=28, color=colors[g], label=g, edgecolor="k", linewidth=0.3)
            if len(order) <= 20:
                ax.legend(title="label", fontsize=8, loc="best")
        ax.set_title("classical MDS embedding of sqrt(divergence)")
        ax.set_xlabel("MDS 1")
        ax.set_ylabel("MDS 2")
    else:
        ax.hist(S[np.isfinite(S)].ravel(), bins=40, color="tab:blue")
        ax.set_title("distribution of the divergences")
        ax.set_xlabel(what)
        ax.set_ylabel("pairs")
    return fig


def _convergence_figure(ds, symmetric, conv):
    import matplotlib.pyplot as plt

    me = np.array(ds["marginal_error"].values, dtype=float)
    it = np.array(ds["n_iter"].values, dtype=float)
    mask = np.isfinite(me)
    if symmetric and me.shape[0] == me.shape[1]:
        np.fill_diagonal(mask, False)
    v = np.maximum(me[mask], 1e-16)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    lo, hi = np.log10(v.min()), np.log10(max(v.max(), 1.1 * v.min()))
    axes[0].hist(v, bins=np.logspace(lo - 0.1, hi + 0.1, 40), color="0.4")
    axes[0].set_xscale("log")
    axes[0].axvline(conv["threshold"], color="crimson", lw=1.5, label=f"{conv['threshold']:g}")
    axes[0].set_xlabel("relative marginal error (last iteration)")
    axes[0].set_ylabel("pairs")
    axes[0].legend(frameon=False)
    axes[1].hist(it[mask], bins=min(40, max(5, len(np.unique(it[mask])))), color="0.4")
    axes[1].set_xlabel("Sinkhorn iterations")
    axes[1].set_ylabel("pairs")
    fig.suptitle(f"convergence: median {conv['median']:.2g}, max {conv['max']:.2g}, "
                 f"{conv['share_above']:.0%} above {conv['threshold']:g}")
    return fig
