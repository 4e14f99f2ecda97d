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

import numpy as np

import importlib

from .._locks import locked
from .._made import check_replaceable

_bary = importlib.import_module("otpipe.barycenter")

__all__ = ["run_barycenter", "DaskTerms"]

log = logging.getLogger("otpipe.barycenter")


def _read(collection, indices):
    out = []
    for i in indices:
        m = collection[int(i)]
        out.append((np.asarray(m.points, dtype=np.float64), np.asarray(m.weights, dtype=np.float64)))
    return out


def _chunk_cross(collection, indices, lambdas, X, a, opts, grad_weights):
    """One task: ``sum_{k in chunk} lambda_k OT_eps(alpha, beta_k)`` and gradients."""
    ms = [_bary._as_measure(m, k) for k, m in zip(indices, _read(collection, indices))]
    return _bary.cross_terms(X, a, [m[0] for m in ms], [m[1] for m in ms], lambdas, opts, grad_weights)


def _chunk_self(collection, indices, lambdas, opts):
    ms = [_bary._as_measure(m, k) for k, m in zip(indices, _read(collection, indices))]
    return _bary.self_terms([m[0] for m in ms], [m[1] for m in ms], lambdas, opts)


def _group_fixed(collection, indices, lambdas, grid, kw):
    return _bary.barycenter(_read(collection, indices), lambdas, method="fixed", grid=grid, **kw)


class DaskTerms:
    """:class:`otpipe.barycenter.Terms` computed on Dask workers, chunks of measures per task."""

    def __init__(self, client, collection, indices, lambdas, opts: dict, n_chunks: int):
        n_chunks = max(1, min(len(indices), n_chunks))
        self.client, self.collection, self.opts = client, collection, opts
        bounds = np.linspace(0, len(indices), n_chunks + 1).astype(int)
        self.chunks = [(list(map(int, indices[s:e])), np.asarray(lambdas[s:e])) for s, e in zip(bounds[:-1], bounds[1:]) if e > s]

    def cross(self, X, a, grad_weights):
        futs = [self.client.submit(_chunk_cross, self.collection, idx, lam, X, a, self.opts, grad_weights, pure=False)
                for idx, lam in self.chunks]
        parts = self.client.gather(futs)
        value = sum(p[0] for p in parts)
        gX = sum(p[1] for p in parts)
        ga = sum(p[2] for p in parts) if grad_weights else None
        return value, gX, ga

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
) -> dict:
    """Barycenter of each group of ``collection``, written to the store ``out`` and a PNG.

    ``weights``: one barycentric weight per measure (only with a single group), summing to one.
    ``method``: ``free``, ``fixed`` (images on a common pixel grid) or ``auto`` (fixed when
    the inputs lie on a common 2-D/3-D grid, free otherwise). Returns a summary per group.
    """
    from .. import store
    from .cluster import open_client

    coll = collection if hasattr(collection, "names") else store.open(collection)
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} exists (use --overwrite)")
    check_replaceable(out)  # before any work: only what otpipe made is replaced
    grps = _groups(coll, group_by, groups)
    if weights is not None and len(grps) != 1:
        raise ValueError("--weights needs a single group (use --group-by none)")
    if method not in ("auto", "free", "fixed"):
        raise ValueError(f"unknown method {method!r}: use free, fixed or auto")
    # validate every group before a cluster starts: bad input fails fast and writes nothing
    inputs, lams = {}, {}
    for g, idx in grps.items():
        inputs[g] = _read(coll, idx)  # client copy: validation, initialisation, the picture
        lams[g] = _bary.check_lambdas(weights, len(idx))
        try:
            _bary.validate_inputs(inputs[g], lams[g])
        except ValueError as e:
            raise ValueError(f"group {g!r}: {e}") from None
    results = {}
    with open_client(spec, client=client) as c:
        n_workers = max(1, len(c.scheduler_info().get("workers", {})))
        for g, idx in grps.items():
            ms, lam = inputs[g], lams[g]
            m = method
            grid_found = _bary.detect_grid(ms, grid) if m in ("auto", "fixed") else None
            if m == "auto":
                m = "fixed" if grid_found is not None and p == 2 else "free"
            if m == "fixed":
                kw = {k: v for k, v in dict(blur=blur, tol=tol, max_iter=max_iter).items() if v is not None}
                res = c.submit(_group_fixed, coll, list(map(int, idx)), lam, grid if grid else True,
                               dict(kw, debiased=debiased, p=p), pure=False).result()
            elif m == "free":
                kw = {k: v for k, v in dict(blur=blur, tol=tol, max_iter=max_iter).items() if v is not None}
                res = _free_on_dask(c, coll, idx, ms, lam, n_workers * chunks_per_worker,
                                    dict(kw, n_points=n_points, init=init, p=p, seed=seed, learn_weights=learn_weights))
            else:
                raise ValueError(f"unknown method {method!r}: use free, fixed or auto")
            log.info("group %s: %s, %d iterations, converged=%s", g, res.method, res.n_iter, res.converged)
            results[g] = res
    bary = [store.Measure(r.points.astype(np.float64), r.weights.astype(np.float64), name=g, label=g) for g, r in results.items()]
    store.create(out, bary, overwrite=overwrite, dtype="float64")
    from .barycenter_report import plot_barycenters

    png = str(plot) if plot else str(out).rstrip("/").removesuffix(".zarr") + ".png"
    plot_barycenters(results, inputs, png)
    return {"out": str(out), "plot": png,
            "groups": {g: dict(method=r.method, n_iter=r.n_iter, converged=bool(r.converged), n_measures=len(inputs[g]),
                               n_points=int(len(r.points))) for g, r in results.items()}}


def _free_on_dask(c, coll, idx, ms, lam, n_chunks, kw):
    """The free-support iterations with the per-measure terms on the workers."""
    ys, bs, lam = _bary.validate_inputs(ms, lam)
    n_points = kw.pop("n_points") or max(len(y) for y in ys)
    X0 = _bary.init_support(ys, bs, lam, n_points, kw.pop("init"), kw["seed"])
    p = kw["p"]
    diameter = _bary._bbox_diameter(list(ys) + [X0])
    blur = kw.pop("blur", None) or 0.02 * diameter
    stol = _bary.LEARN_WEIGHTS_SINKHORN_TOL if kw.get("learn_weights") else None
    opts = dict(p=float(p), blur=float(blur), diameter=float(diameter), scaling=0.5, tol=stol, max_iter=None, backend="auto")
    terms = DaskTerms(c, coll, idx, lam, opts, n_chunks)
    return _bary.free_support_barycenter(ms, lam, init=X0, blur=blur, diameter=diameter, terms=terms, **kw)
