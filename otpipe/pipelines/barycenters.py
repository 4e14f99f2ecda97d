"""Barycenters of the groups of a collection on Dask: one barycenter per label (or of all).

Free support: the client holds the barycenter's positions; each iteration maps
:func:`otpipe.tools.barycenters.cross_terms` over chunks of the group's measures (workers read them
from the store by path) and sums the partial values and gradients in chunk order.
Fixed support (images): one task per group. Output: a collection store with one measure per
group, named by the group's label, and a PNG picture (:mod:`otpipe.report.barycenter_run`).
The groups are computed one after the other and each is stored as soon as it is done
(:mod:`otpipe.engine.checkpoint`), so Ctrl-C keeps them and ``resume=True`` continues.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from pathlib import Path

import numpy as np

from otpipe.engine import checkpoint as _ck
from otpipe.engine import convergence as _conv
from otpipe.engine import run as _run
from otpipe.engine.result import tag
from otpipe.store.locks import locked
from otpipe.tools import barycenters as _bary

__all__ = ["run_barycenter", "group_barycenters", "describe_barycenters", "DaskTerms"]

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
    ms = [_bary.as_measure(m, k) for k, m in zip(indices, _read(collection, indices))]
    warm = list(warm)
    out = _bary.cross_terms(X, a, [m[0] for m in ms], [m[1] for m in ms], lambdas, opts, grad_weights, warm)
    return out + (warm,)


def _chunk_self(collection, indices, lambdas, opts):
    ms = [_bary.as_measure(m, k) for k, m in zip(indices, _read(collection, indices))]
    return _bary.self_terms([m[0] for m in ms], [m[1] for m in ms], lambdas, opts)


def _group_fixed(collection, indices, lambdas, grid, kw):
    """One task: a fixed-support barycenter, with the warnings it raised (shown once by the client)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = _bary.barycenter(_read(collection, indices), lambdas, method="fixed", grid=grid, **kw)
    return res, [str(w.message) for w in caught]


class DaskTerms:
    """:class:`otpipe.tools.barycenters.Terms` computed on Dask workers, chunks of measures per task.

    The measures are cut into at most ``n_chunks`` consecutive chunks, one task each per call; workers keep no
    state (each chunk's Sinkhorn potentials come back with its result and warm-start its next task).

    Parameters
    ----------
    client : distributed.Client
        The client the tasks are submitted to.
    collection : Collection
        The collection holding the measures (opened on the workers).
    indices : sequence of int
        The measures ``beta_k`` of the group.
    lambdas : array_like
        Their barycentric weights ``lambda_k``.
    opts : dict
        The solver options of the barycenter (:mod:`otpipe.tools.barycenters`).
    n_chunks : int
        Tasks per call (at least 1, at most one per measure).
    guard : Guard or None, default None
        Wait for the tasks through it (:meth:`otpipe.engine.interrupt.Guard.completed`: Ctrl-C is taken safely).
    """

    def __init__(self, client, collection, indices, lambdas, opts: dict, n_chunks: int, guard=None):
        n_chunks = max(1, min(len(indices), n_chunks))
        self.client, self.collection, self.opts, self.guard = client, collection, opts, guard
        bounds = np.linspace(0, len(indices), n_chunks + 1).astype(int)
        self.chunks = [(list(map(int, indices[s:e])), np.asarray(lambdas[s:e])) for s, e in zip(bounds[:-1], bounds[1:]) if e > s]
        self.warm = [[None] * len(idx) for idx, _ in self.chunks]

    def cross(self, X, a, grad_weights, tol=None):
        """``sum_k lambda_k OT_eps(alpha, beta_k)`` and its gradients, summed over the chunks' tasks.

        Parameters
        ----------
        X : numpy.ndarray
            The barycenter's points ``(n, D)``.
        a : numpy.ndarray
            Its weights ``(n,)``.
        grad_weights : bool
            Also return the gradient with respect to ``a``.
        tol : float or None, default None
            Tolerance of the Sinkhorn solves; ``None``: the options'.

        Returns
        -------
        tuple
            ``(value, grad_X, grad_a, info)``: ``grad_a`` is ``None`` unless ``grad_weights``; ``info`` the
            :class:`~otpipe.tools.barycenters.InnerInfo` of every solve.
        """
        opts = self.opts if tol is None else dict(self.opts, tol=tol)
        futs = [self.client.submit(_chunk_cross, self.collection, idx, lam, X, a, opts, grad_weights, w, pure=False)
                for (idx, lam), w in zip(self.chunks, self.warm)]
        parts = self._gather(futs)
        value = sum(p[0] for p in parts)
        gX = sum(p[1] for p in parts)
        ga = sum(p[2] for p in parts) if grad_weights else None
        info = _bary.InnerInfo()
        for p in parts:
            info = info.add(p[3])
        self.warm = [p[4] for p in parts]
        return value, gX, ga, info

    def self_constant(self):
        """``sum_k lambda_k OT_eps(beta_k, beta_k) / 2`` (constant part of the objective), one task per chunk.

        Returns
        -------
        float
            The constant.
        """
        futs = [self.client.submit(_chunk_self, self.collection, idx, lam, self.opts, pure=False) for idx, lam in self.chunks]
        return float(sum(self._gather(futs)))

    def _gather(self, futs):
        if self.guard is not None:  # wait where a Ctrl-C is taken safely (otpipe.engine.interrupt)
            for _ in self.guard.completed(futs):
                pass
        return self.client.gather(futs)


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


def describe_barycenters(collection, *, group_by: str = "label", groups=None, weights=None, method: str = "auto",
                         n_points: int | None = None, p: float = 2, grid: float | None = None) -> dict:
    """What a run would do (``--dry-run``): the groups, their sizes and the method of each; computes nothing.

    Parameters
    ----------
    collection : Collection or str or os.PathLike
        The collection, or its store.
    group_by : {"label", "none"}, default "label"
        One group per label, or one group of every measure.
    groups : list of str or None, default None
        Only these groups.
    weights : array_like or None, default None
        Barycentric weights (a single group only), validated.
    method : {"auto", "free", "fixed"}, default "auto"
        The method asked for (``"auto"``: fixed support for inputs on a common grid when ``p == 2``).
    n_points : int or None, default None
        Support size of a free-support barycenter (default: the largest input).
    p : float, default 2
        Exponent of the cost.
    grid : float or None, default None
        Grid spacing of the fixed support (``None``: detected).

    Returns
    -------
    dict
        ``{"groups": {group: {"measures", "points", "method", "support"}}, "n_groups"}`` (``support``: the
        free support's size, or ``"grid"``).

    Raises
    ------
    ValueError
        On an unknown group, ``group_by`` or method, weights with several groups, or invalid inputs.
    """
    from otpipe import store

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
    :class:`~otpipe.engine.convergence.ConvergenceWarning`.

    Parameters
    ----------
    collection : Collection or str or os.PathLike
        The collection, or its store.
    group_by : {"label", "none"}, default "label"
        One group per label (in natural order), or one group ``"all"`` of every measure.
    groups : list of str or None, default None
        Only these groups.
    weights : array_like or None, default None
        One barycentric weight per measure, summing to one (a single group only); default uniform.
    method : {"auto", "free", "fixed"}, default "auto"
        Free support, fixed support (images on a common pixel grid), or ``"auto"``: fixed when the inputs lie on
        a common grid and ``p == 2``, free otherwise.
    n_points : int or None, default None
        Support size of a free-support barycenter (default: the largest input).
    init : {"sample", "mean"}, default "sample"
        Starting positions of a free-support barycenter.
    p : float, default 2
        Exponent of the cost.
    blur, tol, max_iter : float, float, int, optional
        The method's temperature, stopping tolerance and iteration cap (``None``: the method's defaults).
    seed : int, default 0
        Seed of the random starting positions.
    grid : float or None, default None
        Grid spacing of the fixed support (``None``: detected).
    debiased : bool, default True
        Fixed support: the debiased barycenter.
    learn_weights : bool, default False
        Free support: also optimise the barycenter's weights.
    cluster : ClusterSpec or None, default None
        Where to run (``None``: a local cluster).
    client : distributed.Client or None, default None
        An existing client to use instead.
    progress : bool, default False
        Show the groups done on stderr.
    chunks_per_worker : int, default 2
        Free support: tasks per worker of each iteration's terms (:class:`DaskTerms`).

    Returns
    -------
    dict
        ``{group: BarycenterResult}`` in group order.

    Raises
    ------
    ValueError
        On an unknown group, ``group_by`` or method, weights with several groups, or invalid inputs.
    """
    from otpipe import store

    coll = collection if hasattr(collection, "names") else store.open(collection)
    grps, inputs, lams = _prepare(coll, group_by, groups, weights, method)
    names = list(grps)
    results, caught = {}, {}

    def keep(t, res, msgs):
        results[names[t]], caught[names[t]] = res, msgs

    ck = _ck.Checkpoint(None, len(names), {})  # in memory: nothing written
    _compute(ck, coll, grps, inputs, lams, keep, method=method, n_points=n_points, init=init, p=p, blur=blur,
             tol=tol, max_iter=max_iter, seed=seed, grid=grid, debiased=debiased, learn_weights=learn_weights,
             cluster=cluster, client=client, progress=progress, chunks_per_worker=chunks_per_worker)
    results = {g: results[g] for g in names}
    _conv.warn(convergence_message(results, caught))
    return results


def _solve(c, g, coll, idx, ms, lam, m, n_workers, *, n_points, init, p, blur, tol, max_iter, seed, grid, debiased,
           learn_weights, chunks_per_worker):
    """The barycenter of one group and the distinct warnings it raised; waits through the guard ``g``
    (a Ctrl-C is taken between Dask calls, never inside them)."""
    kw = {k: v for k, v in dict(blur=blur, tol=tol, max_iter=max_iter).items() if v is not None}
    if m == "fixed":
        fut = c.submit(_group_fixed, coll, list(map(int, idx)), lam, grid if grid else True,
                       dict(kw, debiased=debiased, p=p), pure=False)
        for _ in g.completed([fut]):
            pass
        res, msgs = fut.result()
    else:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            res = _free_on_dask(c, coll, idx, ms, lam, n_workers * chunks_per_worker,
                                dict(kw, n_points=n_points, init=init, p=p, seed=seed, learn_weights=learn_weights),
                                guard=g)
        msgs = [str(w.message) for w in rec if issubclass(w.category, RuntimeWarning)]
    return res, list(dict.fromkeys(msgs))


def _compute(ck, coll, grps, inputs, lams, done, *, method, n_points, init, p, blur, tol, max_iter, seed, grid,
             debiased, learn_weights, cluster, client, progress, chunks_per_worker):
    """The barycenters of the groups not yet done in ``ck``, one after the other; ``done(t, res, msgs)``
    records group ``t`` (in ``ck``, whose rows are then written at once: one group, one region).

    Ctrl-C: what is done stays in ``ck`` (:func:`otpipe.engine.run.session`)."""
    names = list(grps)
    pending = [t for t in range(len(names)) if not ck.done[t]]
    if not pending:
        return
    with _run.session(ck, client=client, cluster=cluster, progress=progress, desc="barycenter", unit="group",
                     what="groups") as (c, g, bar):
        n_workers = max(1, len(c.scheduler_info().get("workers", {})))
        for t in pending:
            name = names[t]
            ms, lam = inputs[name], lams[name]
            res, msgs = _solve(c, g, coll, grps[name], ms, lam, _method(method, ms, grid, p), n_workers,
                               n_points=n_points, init=init, p=p, blur=blur, tol=tol, max_iter=max_iter, seed=seed,
                               grid=grid, debiased=debiased, learn_weights=learn_weights,
                               chunks_per_worker=chunks_per_worker)
            log.info("group %s: %s, %d iterations, converged=%s", name, res.method, res.n_iter, res.converged)
            with g.critical():
                done(t, res, msgs)
                ck.flush()
            bar.set_postfix(f"last: {name} ({res.n_iter} iterations{'' if res.converged else ', NOT converged'})")
            bar.update(1)
            g.task_done()


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
    resume: bool = False,
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

    Checkpointed group by group (:mod:`otpipe.engine.checkpoint`): until the run ends, ``out``
    holds ``otpipe_result = "barycenter"``, ``complete = False`` and each finished group's
    barycenter (written as soon as it is done); the end replaces it with the collection. Ctrl-C
    keeps the finished groups and raises :class:`~otpipe.engine.interrupt.Interrupted`;
    ``resume=True`` computes only the missing groups (same parameters and input required; a
    finished store resumes without computing).

    Parameters
    ----------
    collection : Collection or str or os.PathLike
        The collection, or its store.
    out : str or os.PathLike
        The store of the barycenters (a collection, one measure per group, named and labelled by the group).
    group_by, groups, weights, method, n_points, init, p, blur, tol, max_iter, seed, grid, debiased, learn_weights
        As for :func:`group_barycenters`.
    overwrite : bool, default False
        Replace an existing barycenter result at ``out``.
    resume : bool, default False
        Continue the unfinished run at ``out``.
    plot : str or os.PathLike or None, default None
        The PNG of the barycenters and their inputs (default: ``out`` with ``.png`` for ``.zarr``).
    spec : ClusterSpec or None, default None
        Where to run (``None``: a local cluster).
    client : distributed.Client or None, default None
        An existing client to use instead.
    chunks_per_worker : int, default 2
        Free support: tasks per worker of each iteration's terms (:class:`DaskTerms`).
    progress : bool, default False
        Show the groups done on stderr.

    Returns
    -------
    dict
        ``{"out", "plot", "groups", "convergence_warning"}``: the paths written, ``{group: {"method", "n_iter",
        "converged", "n_measures", "n_points"}}`` and the warning (empty when every group converged).

    Raises
    ------
    ValueError
        On an unknown group, ``group_by`` or method, weights with several groups, or invalid inputs.
    """
    from otpipe import store

    coll = collection if hasattr(collection, "names") else store.open(collection)
    grps, inputs, lams = _prepare(coll, group_by, groups, weights, method)  # bad input fails fast, writes nothing
    names = list(grps)
    methods = {g: _method(method, inputs[g], grid, p) for g in names}
    sizes = {g: _support_size(methods[g], inputs[g], n_points, grid) for g in names}
    params = dict(group_by=group_by, method=method, p=p, blur=blur, tol=tol, max_iter=max_iter, seed=seed, grid=grid,
                  debiased=debiased, learn_weights=learn_weights, n_points=n_points, init=init, weights=weights)
    fp, content = _fingerprint(coll, grps, params)
    out_p = Path(out)
    fields = _fields(max(sizes.values()), int(coll.dim))
    job = _run.Job(out_p, "barycenter", "groups", len(names), fields, fp, content, chunk=1, log=log)
    stored = job.existing(resume=resume, overwrite=overwrite)
    png = str(plot) if plot else str(out).rstrip("/").removesuffix(".zarr") + ".png"
    if job.already_complete(stored):
        done = store.open(out_p)
        results = {g: _result(methods[g], stored["barycenter"][g], done[g].points, done[g].weights, inputs[g], grid)
                   for g in names}
        return _finish(out_p, results, inputs, png, {}, write=False, msg=str(stored.get("convergence_warning") or ""))
    ck = job.checkpoint(stored, {**tag("barycenter"), "fingerprint": fp, "run": content, "groups": names})

    def record(t, res, msgs):
        n = len(res.points)
        pts = np.full(fields["points"].shape, np.nan)
        pts[:n] = np.asarray(res.points, dtype=np.float64)
        w = np.full(fields["weights"].shape, np.nan)
        w[:n] = np.asarray(res.weights, dtype=np.float64)
        ck.record(t, note={"method": res.method, "warnings": msgs}, points=pts, weights=w, n_points=n,
                  n_iter=int(res.n_iter), converged=bool(res.converged))

    _compute(ck, coll, grps, inputs, lams, record, method=method, n_points=n_points, init=init, p=p, blur=blur,
             tol=tol, max_iter=max_iter, seed=seed, grid=grid, debiased=debiased, learn_weights=learn_weights,
             cluster=spec, client=client, progress=progress, chunks_per_worker=chunks_per_worker)
    # every group from the stored rows: a resumed run assembles exactly what an uninterrupted one does
    results, caught = {}, {}
    for t, g in enumerate(names):
        k = int(ck.data["n_points"][t])
        note = ck.notes.get(t) or {}
        info = {"method": note.get("method", methods[g]), "n_iter": int(ck.data["n_iter"][t]),
                "converged": bool(ck.data["converged"][t])}
        results[g] = _result(methods[g], info, ck.data["points"][t, :k], ck.data["weights"][t, :k], inputs[g], grid)
        caught[g] = list(note.get("warnings") or [])
    extra = {**tag("barycenter"), "fingerprint": fp, "run": content}
    _record_run(extra, coll, params)
    return _finish(out_p, results, inputs, png, caught, write=True, extra=extra)


def _finish(out: Path, results: dict, inputs: dict, png: str, caught: dict, *, write: bool, extra=None,
            msg: str | None = None) -> dict:
    """Write the collection of barycenters over the checkpoint store (one atomic replacement, with every
    attribute), warn about convergence once, draw the PNG; the summary."""
    from otpipe import store
    from otpipe.report.barycenter_run import plot_barycenters

    msg = convergence_message(results, caught) if msg is None else msg
    summary = {g: dict(method=r.method, n_iter=int(r.n_iter), converged=bool(r.converged), n_measures=len(inputs[g]),
                       n_points=int(len(r.points))) for g, r in results.items()}
    if write:
        bary = [store.Measure(r.points.astype(np.float64), r.weights.astype(np.float64), name=g, label=g)
                for g, r in results.items()]
        attrs = dict(extra or {}, **_record(summary, msg))
        store.create(out, bary, overwrite=True, dtype="float64", attrs=attrs)
    _conv.warn(msg)
    plot_barycenters(results, inputs, png)
    return {"out": str(out), "plot": png, "groups": summary, "convergence_warning": msg}


def _support_size(m: str, ms, n_points, grid) -> int:
    """Points of a group's barycenter: ``n_points`` (or the largest input) for free support, the
    cells of the inputs' common grid for fixed support."""
    if m == "free":
        return int(n_points or max(len(x) for x, _ in ms))
    found = _bary.detect_grid(ms, None if grid in (None, True) else float(grid))
    if found is None:
        raise ValueError("method 'fixed' needs inputs on a common regular 2-D/3-D grid (images); use method 'free'")
    return int(math.prod(found[2]))


def _fields(size: int, dim: int) -> dict:
    """Checkpoint rows of one group: its barycenter padded to the largest support (NaN), its size, diagnostics."""
    return {"points": _ck.Field((size, dim)), "weights": _ck.Field((size,)),
            "n_points": _ck.Field((), "int64", 0), "n_iter": _ck.Field((), "int64", 0),
            "converged": _ck.Field((), "bool", False)}


def _fingerprint(coll, grps: dict, params: dict) -> tuple[str, dict]:
    """The run's parameters and input (content hash, and which measures form each group)."""
    members = hashlib.sha256(json.dumps([[g, list(map(int, idx))] for g, idx in grps.items()]).encode()).hexdigest()
    return _ck.fingerprint({"parameters": params,
                            "input": {"hash": str(getattr(coll, "content_hash", "")), "groups": list(grps),
                                      "members": members[:16]}})


def _result(m: str, info: dict, points, weights, ms, grid) -> _bary.BarycenterResult:
    """A :class:`~otpipe.tools.barycenters.BarycenterResult` from stored points, weights and diagnostics (fixed
    support: the image on the inputs' grid, for the picture)."""
    pts, w = np.array(points, dtype=np.float64), np.array(weights, dtype=np.float64)
    res = _bary.BarycenterResult(points=pts, weights=w, n_iter=int(info["n_iter"]), converged=bool(info["converged"]),
                                 method=str(info.get("method", m)))
    if m == "fixed":
        origin, spacing, shape = _bary.detect_grid(ms, None if grid in (None, True) else float(grid))
        res.image = w.reshape(shape)
        res.params.update(grid_origin=np.asarray(origin).tolist(), grid_spacing=spacing, grid_shape=list(shape))
    return res


def _record(summary: dict, msg: str) -> dict:
    """Barycenter diagnostics for the attrs of the output collection."""
    return {"barycenter": summary, "convergence_warning": msg,
            "not_converged": [g for g, d in summary.items() if not d["converged"]]}


def _record_run(attrs: dict, coll, params: dict) -> None:
    """The run's parameters and input collection (path, content hash) into ``attrs``, for
    ``otpipe report`` (``barycenter_parameters``, ``barycenter_source``)."""
    attrs.update({
        "barycenter_parameters": {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in params.items()},
        "barycenter_source": {"collection": str(getattr(coll, "path", "")), "hash": str(getattr(coll, "content_hash", ""))},
    })


def _free_on_dask(c, coll, idx, ms, lam, n_chunks, kw, guard=None):
    """The free-support iterations with the per-measure terms on the workers."""
    ys, bs, lam = _bary.validate_inputs(ms, lam)
    n_points = kw.pop("n_points") or max(len(y) for y in ys)
    X0 = _bary.init_support(ys, bs, lam, n_points, kw.pop("init"), kw["seed"])
    p = kw["p"]
    diameter = _bary.bbox_diameter(list(ys) + [X0])
    blur = kw.pop("blur", None) or 0.02 * diameter
    tol = kw.get("tol", 1e-4)
    stol = _bary.LEARN_WEIGHTS_SINKHORN_TOL if kw.get("learn_weights") else _bary.SINKHORN_TOL_FACTOR * tol
    opts = dict(p=float(p), blur=float(blur), diameter=float(diameter), scaling=0.5, tol=stol, max_iter=None, backend="auto")
    terms = DaskTerms(c, coll, idx, lam, opts, n_chunks, guard=guard)
    return _bary.free_support_barycenter(ms, lam, init=X0, blur=blur, diameter=diameter, terms=terms, **kw)
