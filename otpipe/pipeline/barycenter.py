"""Barycenters of the groups of a collection on Dask: one barycenter per label (or of all).

Free support: the client holds the barycenter's positions; each iteration maps
:func:`otpipe.barycenter.cross_terms` over chunks of the group's measures (workers read them
from the store by path) and sums the partial values and gradients in chunk order.
Fixed support (images): one task per group. Output: a collection store with one measure per
group, named by the group's label, and a PNG picture (:mod:`otpipe.pipeline.barycenter_report`).
"""
from __future__ import annotations

import logging
import os
import warnings

import numpy as np

import importlib

from .._locks import locked
from .._made import check_replaceable
from . import convergence as _conv
from .progress import Progress

_bary = importlib.import_module("otpipe.barycenter")

__all__ = ["run_barycenter", "group_barycenters", "plan_barycenters", "DaskTerms"]

log = logging.getLogger("otpipe.barycenter")


def _read(collection, indices):
    out = []
    for i in indices:
        m = collection[int(i)]
        out.append((np.asarray(m.points, dtype=np.float64), np.asarray(m.weights, dtype=np.float64)))
    return out


def _chunk_cross(collection, indices, lambdas, X, a, opts, grad_weights, warm):
    """One task: ``sum_{k in chunk} lambda_k OT_eps(alpha, beta_k)``, gradients, inner diagnostics, and the
    chunk's potentials (the warm starts of its next task: workers keep no state)."""
    ms = [_bary._as_measure(m, k) for k, m in zip(indices, _read(collection, indices))]
    warm = list(warm)
    out = _bary.cross_terms(X, a, [m[0] for m in ms], [m[1] for m in ms], lambdas, opts, grad_weights, warm)
    return out + (warm,)


def _chunk_self(collection, indices, lambdas, opts):
    ms = [_bary._as_measure(m, k) for k, m in zip(indices, _read(collection, indices))]
    return _bary.self_terms([m[0] for m in ms], [m[1] for m in ms], lambdas, opts)


def _group_fixed(collection, indices, lambdas, grid, kw):
    """One task: a fixed-support barycenter, with the warnings it raised (shown once by the client)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = _bary.barycenter(_read(collection, indices), lambdas, method="fixed", grid=grid, **kw)
    return res, [str(w.message) for w in caught]


class DaskTerms:
    """:class:`otpipe.barycenter.Terms` computed on Dask workers, chunks of measures per task."""

    def __init__(self, client, collection, indices, lambdas, opts: dict, n_chunks: int):
        n_chunks = max(1, min(len(indices), n_chunks))
        self.client, self.collection, self.opts = client, collection, opts
        bounds = np.linspace(0, len(indices), n_chunks + 1).astype(int)
        self.chunks = [(list(map(int, indices[s:e])), np.asarray(lambdas[s:e])) for s, e in zip(bounds[:-1], bounds[1:]) if e > s]
        self.warm = [[None] * len(idx) for idx, _ in self.chunks]

    def cross(self, X, a, grad_weights, tol=None):
        opts = self.opts if tol is None else dict(self.opts, tol=tol)
        futs = [self.client.submit(_chunk_cross, self.collection, idx, lam, X, a, opts, grad_weights, w, pure=False)
                for (idx, lam), w in zip(self.chunks, self.warm)]
        parts = self.client.gather(futs)
        value = sum(p[0] for p in parts)
        gX = sum(p[1] for p in parts)
        ga = sum(p[2] for p in parts) if grad_weights else None
        info = _bary.InnerInfo()
        for p in parts:
            info = info.add(p[3])
        self.warm = [p[4] for p in parts]
        return value, gX, ga, info

    def self_constant(self):
        futs = [self.client.submit(_chunk_self, self.collection, idx, lam, self.opts, pure=False) for idx, lam in self.chunks]
        return float(sum(self.client.gather(futs)))


def _groups(coll, group_by: str, only=None) -> dict[str, np.ndarray]:
    if group_by == "none":
        groups = {"all": np.arange(len(coll))}
    elif group_by == "label":
        if coll.labels is None:
            raise ValueError("the collection has no labels: use --group-by none")
        labels = np.asarray(coll.labels).astype(str)
        groups = {lab: np.flatnonzero(labels == lab) for lab in sorted(set(labels.tolist()), key=_natural)}
    else:
        raise ValueError(f"unknown --group-by {group_by!r}: use label or none")
    if only:
        missing = [g for g in only if g not in groups]
        if missing:
            raise ValueError(f"no measures in group {missing[0]!r} (groups: {', '.join(groups)})")
        groups = {g: groups[g] for g in only}
    for g, idx in groups.items():
        if len(idx) == 0:
            raise ValueError(f"no measures in group {g!r}")
    return groups


def _natural(s: str):
    return (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s)


def _prepare(coll, group_by, groups, weights, method):
    """Groups, their inputs and barycentric weights, validated before any cluster starts."""
    grps = _groups(coll, group_by, groups)
    if weights is not None and len(grps) != 1:
        raise ValueError("--weights needs a single group (use --group-by none)")
    if method not in ("auto", "free", "fixed"):
        raise ValueError(f"unknown method {method!r}: use free, fixed or auto")
    inputs, lams = {}, {}
    for g, idx in grps.items():
        inputs[g] = _read(coll, idx)  # client copy: validation, initialisation, the picture
        lams[g] = _bary.check_lambdas(weights, len(idx))
        try:
            _bary.validate_inputs(inputs[g], lams[g])
        except ValueError as e:
            raise ValueError(f"group {g!r}: {e}") from None
    return grps, inputs, lams


def _method(method, ms, grid, p):
    grid_found = _bary.detect_grid(ms, grid) if method in ("auto", "fixed") else None
    if method == "auto":
        return "fixed" if grid_found is not None and p == 2 else "free"
    return method


def plan_barycenters(collection, *, group_by: str = "label", groups=None, weights=None, method: str = "auto",
                     n_points: int | None = None, p: float = 2, grid: float | None = None) -> dict:
    """What a run would do (``--dry-run``): the groups, their sizes and the method of each; computes nothing."""
    from .. import store

    coll = collection if hasattr(collection, "names") else store.open(collection)
    grps, inputs, _ = _prepare(coll, group_by, groups, weights, method)
    out = {}
    for g, ms in inputs.items():
        m = _method(method, ms, grid, p)
        sizes = [len(x) for x, _ in ms]
        out[g] = {"measures": len(ms), "points": int(sum(sizes)), "method": m,
                  "support": int(n_points or max(sizes)) if m == "free" else "grid"}
    return {"groups": out, "n_groups": len(out)}


def group_barycenters(
    collection,
    *,
    group_by: str = "label",
    groups: list[str] | None = None,
    weights=None,
    method: str = "auto",
    n_points: int | None = None,
    init: str = "sample",
    p: float = 2,
    blur: float | None = None,
    tol: float | None = None,
    max_iter: int | None = None,
    seed: int = 0,
    grid: float | None = None,
    debiased: bool = True,
    learn_weights: bool = False,
    cluster=None,
    client=None,
    progress: bool = False,
    chunks_per_worker: int = 2,
) -> dict:
    """One Wasserstein barycenter per group of ``collection`` (``otpipe.group_barycenters``).

    ``min_alpha sum_k lambda_k S_eps(alpha, beta_k)`` over the measures ``beta_k`` of each group
    (free support; fixed support for images on a common grid: see :func:`otpipe.barycenter`), on
    Dask. Groups that stop at ``max_iter`` without converging are named in one
    :class:`~otpipe.pipeline.convergence.ConvergenceWarning`.

    Returns
    -------
    dict
        ``{group: BarycenterResult}`` in group order.
    """
    from .. import store
    from .cluster import open_client

    coll = collection if hasattr(collection, "names") else store.open(collection)
    grps, inputs, lams = _prepare(coll, group_by, groups, weights, method)
    results, caught = _compute(coll, grps, inputs, lams, method=method, n_points=n_points, init=init, p=p, blur=blur,
                               tol=tol, max_iter=max_iter, seed=seed, grid=grid, debiased=debiased,
                               learn_weights=learn_weights, cluster=cluster, client=client, progress=progress,
                               chunks_per_worker=chunks_per_worker, open_client=open_client)
    _conv.warn(convergence_message(results, caught))
    return results


def _compute(coll, grps, inputs, lams, *, method, n_points, init, p, blur, tol, max_iter, seed, grid, debiased,
             learn_weights, cluster, client, progress, chunks_per_worker, open_client):
    """The barycenters of every group (and the warnings each raised)."""
    results, caught = {}, {}
    with open_client(cluster, client=client) as c:
        n_workers = max(1, len(c.scheduler_info().get("workers", {})))
        bar = Progress(len(grps), desc="barycenter", unit="group", enabled=progress)
        try:
            for g, idx in grps.items():
                ms, lam = inputs[g], lams[g]
                m = _method(method, ms, grid, p)
                kw = {k: v for k, v in dict(blur=blur, tol=tol, max_iter=max_iter).items() if v is not None}
                if m == "fixed":
                    res, msgs = c.submit(_group_fixed, coll, list(map(int, idx)), lam, grid if grid else True,
                                         dict(kw, debiased=debiased, p=p), pure=False).result()
                else:
                    with warnings.catch_warnings(record=True) as rec:
                        warnings.simplefilter("always")
                        res = _free_on_dask(c, coll, idx, ms, lam, n_workers * chunks_per_worker,
                                            dict(kw, n_points=n_points, init=init, p=p, seed=seed,
                                                 learn_weights=learn_weights))
                    msgs = [str(w.message) for w in rec if issubclass(w.category, RuntimeWarning)]
                log.info("group %s: %s, %d iterations, converged=%s", g, res.method, res.n_iter, res.converged)
                results[g], caught[g] = res, list(dict.fromkeys(msgs))
                bar.set_postfix(f"last: {g} ({res.n_iter} iterations{'' if res.converged else ', NOT converged'})")
                bar.update(1)
        finally:
            bar.close()
    return results, caught


def convergence_message(results: dict, caught: dict | None = None) -> str:
    """One line naming the groups whose barycenter stopped without converging (empty if none),
    with the distinct warnings their solves raised."""
    bad = [g for g, r in results.items() if not r.converged]
    if not bad:
        return ""
    iters = sorted({int(results[g].n_iter) for g in bad})
    it = f"{iters[0]}" if len(iters) == 1 else f"{iters[0]}-{iters[-1]}"
    msg = (f"barycenter of group(s) {', '.join(map(str, bad))} stopped at max_iter ({it} iterations) without "
           f"converging: raise --max-iter, loosen --tol, or use a larger --blur")
    extra = list(dict.fromkeys(m for g in bad for m in (caught or {}).get(g, [])))
    if extra:
        msg += " (" + "; ".join(extra[:3]) + (f"; +{len(extra) - 3} more" if len(extra) > 3 else "") + ")"
    return msg


@locked("out", skip=())  # one writer per output store
def run_barycenter(
    collection,
    out,
    *,
    group_by: str = "label",
    groups: list[str] | None = None,
    weights=None,
    method: str = "auto",
    n_points: int | None = None,
    init: str = "sample",
    p: float = 2,
    blur: float | None = None,
    tol: float | None = None,
    max_iter: int | None = None,
    seed: int = 0,
    grid: float | None = None,
    debiased: bool = True,
    learn_weights: bool = False,
    overwrite: bool = False,
    plot: str | os.PathLike | None = None,
    spec=None,
    client=None,
    chunks_per_worker: int = 2,
    progress: bool = False,
) -> dict:
    """Barycenter of each group of ``collection``, written to the store ``out`` and a PNG.

    ``weights``: one barycentric weight per measure (only with a single group), summing to one.
    ``method``: ``free``, ``fixed`` (images on a common pixel grid) or ``auto`` (fixed when
    the inputs lie on a common 2-D/3-D grid, free otherwise). Returns a summary per group; the
    store's attrs get ``barycenter`` (method, iterations, convergence per group) and
    ``convergence_warning`` (empty when every group converged; otherwise also warned once).
    """
    from .. import store
    from .cluster import open_client

    coll = collection if hasattr(collection, "names") else store.open(collection)
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} exists (use --overwrite)")
    check_replaceable(out)  # before any work: only what otpipe made is replaced
    grps, inputs, lams = _prepare(coll, group_by, groups, weights, method)  # bad input fails fast, writes nothing
    results, caught = _compute(coll, grps, inputs, lams, method=method, n_points=n_points, init=init, p=p, blur=blur,
                               tol=tol, max_iter=max_iter, seed=seed, grid=grid, debiased=debiased,
                               learn_weights=learn_weights, cluster=spec, client=client, progress=progress,
                               chunks_per_worker=chunks_per_worker, open_client=open_client)
    msg = convergence_message(results, caught)
    bary = [store.Measure(r.points.astype(np.float64), r.weights.astype(np.float64), name=g, label=g) for g, r in results.items()]
    summary = {g: dict(method=r.method, n_iter=int(r.n_iter), converged=bool(r.converged), n_measures=len(inputs[g]),
                       n_points=int(len(r.points))) for g, r in results.items()}
    store.create(out, bary, overwrite=overwrite, dtype="float64")
    _record(out, summary, msg)
    _record_run(out, coll, dict(group_by=group_by, method=method, p=p, blur=blur, tol=tol, max_iter=max_iter,
                                seed=seed, grid=grid, debiased=debiased, learn_weights=learn_weights,
                                n_points=n_points, init=init, weights=weights))
    _conv.warn(msg)
    from .barycenter_report import plot_barycenters

    png = str(plot) if plot else str(out).rstrip("/").removesuffix(".zarr") + ".png"
    plot_barycenters(results, inputs, png)
    return {"out": str(out), "plot": png, "groups": summary, "convergence_warning": msg}


def _record(out, summary: dict, msg: str) -> None:
    """Barycenter diagnostics in the attrs of the collection store written at ``out``."""
    import zarr

    zarr.open_group(str(out), mode="r+").attrs.update(
        {"barycenter": summary, "convergence_warning": msg,
         "not_converged": [g for g, d in summary.items() if not d["converged"]]})


def _record_run(out, coll, params: dict) -> None:
    """The run's parameters and input collection (path, content hash) in the store's attrs, for
    ``otpipe report`` (``barycenter_parameters``, ``barycenter_source``)."""
    import zarr

    zarr.open_group(str(out), mode="r+").attrs.update({
        "barycenter_parameters": {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in params.items()},
        "barycenter_source": {"collection": str(getattr(coll, "path", "")), "hash": str(getattr(coll, "content_hash", ""))},
    })


def _free_on_dask(c, coll, idx, ms, lam, n_chunks, kw):
    """The free-support iterations with the per-measure terms on the workers."""
    ys, bs, lam = _bary.validate_inputs(ms, lam)
    n_points = kw.pop("n_points") or max(len(y) for y in ys)
    X0 = _bary.init_support(ys, bs, lam, n_points, kw.pop("init"), kw["seed"])
    p = kw["p"]
    diameter = _bary._bbox_diameter(list(ys) + [X0])
    blur = kw.pop("blur", None) or 0.02 * diameter
    tol = kw.get("tol", 1e-4)
    stol = _bary.LEARN_WEIGHTS_SINKHORN_TOL if kw.get("learn_weights") else _bary.SINKHORN_TOL_FACTOR * tol
    opts = dict(p=float(p), blur=float(blur), diameter=float(diameter), scaling=0.5, tol=stol, max_iter=None, backend="auto")
    terms = DaskTerms(c, coll, idx, lam, opts, n_chunks)
    return _bary.free_support_barycenter(ms, lam, init=X0, blur=blur, diameter=diameter, terms=terms, **kw)
