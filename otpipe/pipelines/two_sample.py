"""Two-sample tests on Dask: permutation blocks of one test, and many tests over collections.

* :func:`two_sample_test_distributed`: one test whose permutation blocks (one batched solve each,
  :func:`otpipe.tools.two_sample.run_block`) are Dask tasks. Block ``k`` draws its permutations from
  ``SeedSequence(seed, spawn_key=(k,))``, so the result equals :func:`otpipe.two_sample_test`
  with the same seed and ``block_size``, whatever the number of workers.
* :func:`many_two_sample_tests` (``otpipe.pairwise_two_sample``): all pairs of *groups* of a
  collection (or every source group against every target group of a second collection), one Dask
  task per test. A group is

  - ``by="measure"``: one measure; its points are the sample (its stored weights are ignored:
    each point is one draw);
  - ``by="label"``: the pooled points of all measures with one label;
  - ``by="collection"`` (two collections only): all points of each collection (a single test);
  - ``by="auto"`` (default): ``label`` when every collection has labels, else ``measure``.

  Test ``(i, j)`` uses the seed entropy ``(seed, i, j)`` (positions of its groups). The result is an
  xarray Dataset with dims ``("source", "target")`` and variables ``statistic``, ``pvalue``,
  ``p_holm``, ``p_bh`` (Holm / Benjamini-Hochberg over all distinct tests; for one collection
  the ``i < j`` tests, mirrored, NaN on the diagonal), ``n_source``, ``n_target`` (sample sizes),
  ``marginal_error`` (Sinkhorn: the largest of each test's solves), and
  ``null_distribution (source, target, permutation)`` when there is a single test. Stores written by
  otpipe 0.1 (``p_value``, ``null``) are read with the new names by :func:`open_result`.

  With ``out`` the run is checkpointed: the store is created first (attrs with the parameters,
  ``complete=False``), finished tests are written every 2 s (per-test arrays in
  the store's hidden ``_checkpoint`` group, data before the ``done`` marks; :mod:`otpipe.engine.checkpoint`), Ctrl-C writes what
  is done and raises :class:`~otpipe.engine.interrupt.Interrupted`, and ``resume=True`` runs only
  the missing tests. At the end the matrices are written, ``complete`` turns true and the
  ``_checkpoint`` group is removed.

Tasks run torch with one thread each (the workers' task threads already cover the cores; a
thread pool per task oversubscribes them, which slows small batched solves many times over).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from otpipe._made import check_replaceable, made_attrs
from otpipe.engine import checkpoint as _ck
from otpipe.engine import convergence as _conv
from otpipe.engine import estimate as _estimate
from otpipe.engine import result as _result
from otpipe.engine import run as _run
from otpipe.engine.cluster import ClusterSpec, open_client
from otpipe.engine.identity import jsonable, versions
from otpipe.engine.result import result_type, stored_attrs, tag
from otpipe.store.locks import locked
from otpipe.tools import two_sample as _t

__all__ = ["two_sample_test_distributed", "many_two_sample_tests", "open_result", "write_result", "two_sample_keys", "BY"]

log = logging.getLogger("otpipe.two_sample")

BY = ("auto", "measure", "label", "collection")
#: old (otpipe 0.1) variable names -> scipy's names
RENAMED = {"p_value": "pvalue", "null": "null_distribution"}
#: store the per-test null samples when there are at most this many tests
MAX_STORED_NULLS = 1


def two_sample_test_distributed(
    x,
    y,
    *,
    statistic: str = "sinkhorn",
    n_permutations: int = 999,
    seed=0,
    block_size: int = _t.DEFAULT_BLOCK_SIZE,
    client=None,
    spec: ClusterSpec | None = None,
    **loss_params,
) -> _t.TwoSampleResult:
    """:func:`otpipe.two_sample_test` with the permutation blocks as Dask tasks (same result for the same seed).

    The observed statistic is one task and each permutation block another, on one broadcast copy of the
    prepared test.

    Parameters
    ----------
    x, y : array_like
        The two samples, ``(n, D)`` and ``(m, D)``.
    statistic : {"sinkhorn", "mmd", "energy"}, default "sinkhorn"
        The test statistic.
    n_permutations : int, default 999
        Number of random permutations.
    seed : int or sequence of int, default 0
        Entropy of the permutations (block ``k`` draws from ``SeedSequence(seed, spawn_key=(k,))``).
    block_size : int, default DEFAULT_BLOCK_SIZE
        Permutations per block (per Dask task); the null sample is a function of ``(seed, block_size)``.
    client : distributed.Client or None, default None
        An existing client to use.
    spec : ClusterSpec or None, default None
        Where to run without ``client`` (``None``: a local cluster).
    **loss_params
        As in :func:`otpipe.two_sample_test`.

    Returns
    -------
    TwoSampleResult
        ``statistic``, ``pvalue``, ``null_distribution``, ``marginal_error`` (the largest of every solve).
    """
    prep = _t.prepare_test(x, y, statistic=statistic, n_permutations=n_permutations, seed=seed,
                        block_size=block_size, **loss_params)
    with open_client(spec, client=client) as c:
        [pf] = c.scatter([prep], broadcast=True)
        obs = c.submit(_observed_task, pf, pure=False)
        futs = [c.submit(_block_task, pf, k, pure=False) for k in range(prep.n_blocks)]
        blocks = c.gather(futs)
        obs, err = obs.result()
    err = max([err] + [e for _, e in blocks])
    return _t.finish(prep, obs, [b for b, _ in blocks], marginal_error=err)


# --------------------------------------------------------------------------------------------
# many tests
# --------------------------------------------------------------------------------------------


def _groups(coll, by: str) -> list[tuple[str, list[int]]]:
    """``[(group name, measure indices)]`` of a collection for ``by``."""
    if by == "measure":
        return [(str(nm), [i]) for i, nm in enumerate(coll.names)]
    if by == "label":
        labels = coll.labels
        if labels is None:
            raise ValueError(f"--by label: collection {coll.path} has no labels")
        labels = [str(v) for v in labels]
        out: dict[str, list[int]] = {}
        for i, lab in enumerate(labels):
            out.setdefault(lab, []).append(i)
        return sorted(out.items())
    return [(Path(str(coll.path)).name, list(range(len(coll))))]


def resolve_by(by: str, src, tgt=None) -> tuple[str, str]:
    """``(by, why)``: ``"auto"`` becomes ``"label"`` when every collection has labels, else ``"measure"``."""
    if by not in BY:
        raise ValueError(f"unknown --by {by!r}: use one of {', '.join(BY)}")
    if by != "auto":
        return by, "as given"
    colls = [src] + ([tgt] if tgt is not None else [])
    if all(c.labels is not None for c in colls):
        return "label", "default for labelled collections"
    return "measure", "default: no labels"


def _points(coll, idx: list[int]) -> np.ndarray:
    return np.concatenate([np.asarray(coll[i].points, dtype=np.float64) for i in idx], axis=0)


def _worker_threads() -> None:
    """Torch threads of a task = the worker's task threads' share (each task thread gets one)."""
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _block_task(prep, k):
    _worker_threads()
    return _t.run_block(prep, k, errors=True)


def _observed_task(prep):
    _worker_threads()
    return _t.observed(prep, errors=True)


def _pair_task(src, src_idx, tgt, tgt_idx, kw: dict, entropy: list, keep_null: bool):
    import warnings

    _worker_threads()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # convergence is summarised by the run
        res = _t.two_sample_test(_points(src, src_idx), _points(tgt, tgt_idx), seed=entropy, **kw)
    err = np.nan if res.marginal_error is None else float(res.marginal_error)
    return res.statistic, res.pvalue, (res.null_distribution if keep_null else None), res.params, err


def _open(c):
    if isinstance(c, (str, os.PathLike)):
        from otpipe.store import open as open_store

        return open_store(c)
    return c


@dataclass
class TestKeys:
    """The tests of a run: groups, the ``(i, j)`` pairs (flat test order) and their sample sizes."""

    by: str
    by_reason: str
    source_groups: list
    target_groups: list
    pairs: list
    source_sizes: list
    target_sizes: list
    same: bool
    keep_null: bool
    kw: dict
    entropy: list

    @property
    def n_tests(self) -> int:
        return len(self.pairs)

    def describe(self) -> str:
        """``45 tests (by label: default for labelled collections) x 999 permutations``."""
        S, T = len(self.source_groups), len(self.target_groups)
        what = (f"all pairs of {S} {self.by} groups" if self.same else f"{S} x {T} {self.by} groups")
        return (f"{self.n_tests} test(s) ({what}; by {self.by}: {self.by_reason}), {self.kw['statistic']}, "
                f"{self.kw['n_permutations']} permutations each")


def two_sample_keys(src, tgt=None, *, by: str = "auto", statistic: str = "sinkhorn", n_permutations: int = 999,
                    seed: int = 0, block_size: int = _t.DEFAULT_BLOCK_SIZE, **loss_params) -> TestKeys:
    """Validate the input and list the tests (nothing is computed). ``tgt=None``: within ``src``.

    Parameters
    ----------
    src : Collection
        The source collection.
    tgt : Collection or None, default None
        The target collection; ``None``: the tests between the groups of ``src`` (pairs ``i < j``).
    by : {"auto", "measure", "label", "collection"}, default "auto"
        The groups (see the module docstring).
    statistic, n_permutations, seed, block_size, **loss_params
        As in :func:`otpipe.two_sample_test`; validated here once.

    Returns
    -------
    TestKeys
        The groups, the ``(i, j)`` pairs in flat test order, the groups' sample sizes, the test keywords and the
        seed entropy.

    Raises
    ------
    ValueError
        On an unknown ``by``, ``by="label"`` without labels, ``by="collection"`` with one collection, different
        dimensions, a group of fewer than 2 points, fewer than 2 groups in one collection, or invalid test
        parameters.
    """
    same = tgt is None
    by, why = resolve_by(by, src, tgt)
    if by == "collection" and same:
        raise ValueError("--by collection needs two collections")
    tgt_ = src if same else tgt
    if tgt_.dim != src.dim:
        raise ValueError(f"the collections have different dimensions: D={src.dim} and D={tgt_.dim}")
    sg, tg = _groups(src, by), _groups(tgt_, by)
    s_sizes = [int(sum(src.sizes[i] for i in idx)) for _, idx in sg]
    t_sizes = [int(sum(tgt_.sizes[i] for i in idx)) for _, idx in tg]
    for names, sizes in ((sg, s_sizes), (tg, t_sizes)):
        small = [nm for (nm, _), n in zip(names, sizes) if n < 2]
        if small:
            raise ValueError(f"groups with fewer than 2 points cannot be tested: {', '.join(small[:5])}")
    if same and len(sg) < 2:
        raise ValueError(f"need at least 2 groups to test (by={by!r}), the collection has {len(sg)}")
    pairs = [(i, j) for i in range(len(sg)) for j in range(len(tg)) if not same or i < j]
    # validate the parameters once, here, with a clear error (not in a worker)
    _t.prepare_test(np.zeros((2, src.dim)), np.ones((2, src.dim)), statistic=statistic,
                 n_permutations=n_permutations, seed=seed, block_size=block_size, **loss_params)
    kw = dict(statistic=statistic, n_permutations=n_permutations, block_size=block_size, **loss_params)
    return TestKeys(by, why, sg, tg, pairs, s_sizes, t_sizes, same, len(pairs) <= MAX_STORED_NULLS, kw,
                    _t.seed_entropy(seed))


def estimate_cost(tp: TestKeys, src, tgt, n_workers: int) -> dict:
    """Time one block of permutations of a median-sized test here; scale to every test by ``(n + m)^2``."""
    tgt_ = src if tgt is None else tgt
    tot = np.array([tp.source_sizes[i] + tp.target_sizes[j] for i, j in tp.pairs], dtype=np.float64)
    k = int(np.argsort(tot)[len(tot) // 2])
    i, j = tp.pairs[k]
    kw = dict(tp.kw)
    b = min(int(kw["block_size"]), int(kw["n_permutations"]))
    kw.update(n_permutations=b, block_size=b)
    prep = _t.prepare_test(_points(src, tp.source_groups[i][1]), _points(tgt_, tp.target_groups[j][1]),
                        seed=tp.entropy + [i, j], **kw)
    per_perm = _estimate.timed(lambda: (_t.observed(prep), _t.run_block(prep, 0))) / (b + 1)
    units = float(((tot / tot[k]) ** 2).sum()) * (int(tp.kw["n_permutations"]) + 1)
    est = _estimate.summary(units, per_perm, n_workers, "permutation")
    est["timed_test"] = f"{tp.source_groups[i][0]} vs {tp.target_groups[j][0]} ({int(tot[k])} points pooled)"
    return est


def _fingerprint(tp: TestKeys, src, tgt) -> tuple[str, dict]:
    def side(coll, groups):
        names = hashlib.sha256(json.dumps([[g, list(map(int, idx))] for g, idx in groups]).encode()).hexdigest()[:16]
        return {"hash": str(coll.content_hash), "groups": len(groups), "grouping": names}

    return _ck.fingerprint({
        "parameters": dict(tp.kw, by=tp.by, seed=tp.entropy),
        "source": side(src, tp.source_groups),
        "target": None if tgt is None else side(tgt, tp.target_groups),
    })


def _is_result(path: Path) -> bool:
    return result_type(stored_attrs(path)) == "two_sample"


def _fields(tp: TestKeys) -> dict:
    return {"statistic": _ck.Field(), "pvalue": _ck.Field(), "marginal_error": _ck.Field(),
            "null_distribution": _ck.Field((int(tp.kw["n_permutations"]),), rows=int(tp.keep_null))}


@locked("out")  # one writer per result store (not for dry runs)
def many_two_sample_tests(
    collection,
    other=None,
    *,
    by: str = "auto",
    statistic: str = "sinkhorn",
    n_permutations: int = 999,
    seed: int = 0,
    block_size: int = _t.DEFAULT_BLOCK_SIZE,
    client=None,
    spec: ClusterSpec | None = None,
    cluster: ClusterSpec | None = None,
    out=None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    dry_run: bool = False,
    **loss_params,
):
    """All pairwise two-sample tests between groups of ``collection`` (or against ``other``).

    ``p = (1 + #{T_perm >= T_obs}) / (1 + n_permutations)`` per test, corrected over all distinct
    tests (Holm, Benjamini-Hochberg); see the module docstring for the groups (``by``), the seeds and
    the checkpoints.

    Parameters
    ----------
    collection, other : path or :class:`otpipe.store.Collection`
        One collection (tests between its groups) or two (each source group against each target group).
    by : {"auto", "measure", "label", "collection"}
        The groups; ``auto``: ``label`` when every collection has labels, else ``measure``.
    statistic, n_permutations, seed, block_size, **loss_params
        As in :func:`otpipe.two_sample_test`.
    client, cluster, spec
        A ``distributed.Client``, or a :class:`~otpipe.engine.cluster.ClusterSpec` to start one
        (``spec`` is the older name of ``cluster``; ``cluster`` wins when both are given).
    out : path, optional
        Result store (Zarr), written with checkpoints; without it the result is only returned.
    resume, overwrite : bool
        Continue the run stored at ``out`` / replace it.
    progress : bool
        Progress on stderr (:class:`~otpipe.engine.progress.Progress`).
    dry_run : bool
        Return the plan and a cost estimate (a dict: ``n_tests``, ``by``, ``estimated_seconds``, ...)
        without computing the tests.

    Returns
    -------
    xarray.Dataset
        ``statistic``, ``pvalue``, ``p_holm``, ``p_bh``, ``marginal_error``, ``n_source``, ``n_target``
        (and ``null_distribution`` for a single test); ``attrs`` record the parameters, seed, input
        hashes, library versions and the convergence summary (``marginal_error_median``,
        ``marginal_error_max``, ``convergence_warning``).

    Raises
    ------
    otpipe.engine.interrupt.Interrupted
        Ctrl-C: the finished tests are kept in ``out``; ``resume=True`` continues.
    """
    spec = cluster if cluster is not None else spec
    src = _open(collection)
    tgt = _open(other) if other is not None else None
    tp = two_sample_keys(src, tgt, by=by, statistic=statistic, n_permutations=n_permutations, seed=seed,
                    block_size=block_size, **loss_params)
    fp, content = _fingerprint(tp, src, tgt)
    job = _run.Job(Path(out) if out is not None else None, "two_sample", "tests", tp.n_tests, _fields(tp), fp,
                   content, log=log)
    stored = job.existing(label="two-sample", resume=resume, overwrite=overwrite, dry_run=dry_run)
    if dry_run:
        summary = {"n_tests": tp.n_tests, "by": tp.by, "by_reason": tp.by_reason, "statistic": statistic,
                   "n_permutations": int(n_permutations), "source_groups": len(tp.source_groups),
                   "target_groups": len(tp.target_groups), "description": tp.describe()}
        if stored is not None:
            summary["tests_done"] = job.n_done(stored)
        est = estimate_cost(tp, src, tgt, _run.worker_count(spec, client))
        if stored is not None:
            _run.remaining(est, summary["tests_done"], tp.n_tests)
        return summary | est
    if job.already_complete(stored):
        return open_result(out)
    log.info("two-sample: %s", tp.describe())
    attrs = _attrs({}, statistic=statistic, n_permutations=n_permutations, seed=seed, by=tp.by,
                   block_size=block_size, src=src, tgt=tgt, n_tests=tp.n_tests)
    attrs.update(fingerprint=fp, run=content, by_reason=tp.by_reason, loss_params=jsonable(loss_params))
    ck = job.checkpoint(stored, attrs)
    results = _run_tests(tp, src, tgt, ck, client=client, spec=spec, progress=progress)
    ds = _assemble(tp, src, tgt, ck, results, attrs)
    if job.out is not None:
        _ck.finalise(job.out, ds)
        return open_result(job.out)
    return ds


def _run_tests(tp: TestKeys, src, tgt, ck: _ck.Checkpoint, *, client, spec, progress: bool) -> dict:
    """Run the tests not yet done; record each in ``ck`` (written to its store, if any)."""
    tgt_ = src if tgt is None else tgt
    params: dict = {}

    def submit(c, t):
        i, j = tp.pairs[t]
        return c.submit(_pair_task, src, tp.source_groups[i][1], tgt_, tp.target_groups[j][1], tp.kw,
                        tp.entropy + [i, j], tp.keep_null and t < MAX_STORED_NULLS, pure=False)

    def record(t, res):
        stat, p, null, prm, err = res
        ck.record(t, statistic=stat, pvalue=p, marginal_error=err, null_distribution=null)
        if not params:
            params.update(prm)

    _run.run_keys(ck, [t for t in range(tp.n_tests) if not ck.done[t]], submit, record, client=client, cluster=spec,
                  progress=progress, desc="two-sample", unit="test", what="tests")
    return params


def _assemble(tp: TestKeys, src, tgt, ck: _ck.Checkpoint, params: dict, attrs: dict):
    """The result Dataset from the per-test arrays (mirrored for one collection)."""
    import xarray as xr

    S, T = len(tp.source_groups), len(tp.target_groups)
    stat = np.full((S, T), np.nan)
    pval = np.full((S, T), np.nan)
    err = np.full((S, T), np.nan)
    tested = np.zeros((S, T), dtype=bool)
    for t, (i, j) in enumerate(tp.pairs):
        stat[i, j], pval[i, j], err[i, j] = (ck.data[k][t] for k in ("statistic", "pvalue", "marginal_error"))
        tested[i, j] = True
    p_holm = _t.holm(np.where(tested, pval, np.nan))
    p_bh = _t.benjamini_hochberg(np.where(tested, pval, np.nan))
    if tp.same:  # mirror the i < j tests
        for arr in (stat, pval, p_holm, p_bh, err):
            low = np.tril_indices(S, -1)
            arr[low] = arr.T[low]
    tgt_ = src if tgt is None else tgt
    # object dtype: stored as variable-length strings (fixed-width UTF-32 has no Zarr v3 spec)
    coords: dict[str, Any] = {"source": _strings(nm for nm, _ in tp.source_groups),
                              "target": _strings(nm for nm, _ in tp.target_groups)}
    if tp.by == "measure":
        for dim, coll in (("source", src), ("target", tgt_)):
            if coll.labels is not None:
                coords[f"{dim}_label"] = (dim, _strings(coll.labels))
    data = {
        "statistic": (("source", "target"), stat),
        "pvalue": (("source", "target"), pval),
        "p_holm": (("source", "target"), p_holm),
        "p_bh": (("source", "target"), p_bh),
        "n_source": (("source",), np.asarray(tp.source_sizes, dtype=np.int64)),
        "n_target": (("target",), np.asarray(tp.target_sizes, dtype=np.int64)),
    }
    if tp.kw["statistic"] == "sinkhorn":
        data["marginal_error"] = (("source", "target"), err)
    if tp.keep_null and tp.n_tests:
        i, j = tp.pairs[0]
        nul = np.full((S, T, int(tp.kw["n_permutations"])), np.nan)
        nul[i, j] = ck.data["null_distribution"][0]
        data["null_distribution"] = (("source", "target", "permutation"), nul)
    prm = dict(params)
    for k in ("n", "m", "seed", "bandwidths", "diameter"):  # per-test values
        prm.pop(k, None)
    a = dict(attrs)
    a["params"] = jsonable(prm) if prm else a.get("params", {})
    if tp.kw["statistic"] == "sinkhorn":
        remedy = ("use --tol 1e-3 (Python: tol=1e-3) for converged statistics, or a larger --blur"
                  if tp.kw.get("tol") is None else "raise --max-iter or use a larger --blur")
        a.update(_conv.result_attrs(_conv.summarise(ck.data["marginal_error"]),
                                    what="the Sinkhorn solves of the two-sample tests", remedy=remedy,
                                    unit="tests (the largest error of each test's solves)",
                                    note="the p-values stay valid (every permutation is solved the same way) but the "
                                         "statistics are not converged S_eps values"))
        _conv.warn(a["convergence_warning"])
    a["complete"] = True
    return xr.Dataset(data, coords=coords, attrs=a)


def open_result(path):
    """Open a two-sample result store as an ``xarray.Dataset`` (loaded), with scipy's variable names.

    Stores of otpipe 0.1 (``p_value``, ``null``) are renamed on reading.

    Parameters
    ----------
    path : str or os.PathLike
        The result store.

    Returns
    -------
    xarray.Dataset
        The result, loaded in memory.

    Raises
    ------
    FileNotFoundError, ValueError
        Nothing at ``path``; not a two-sample result; an unfinished run (finish it with ``--resume``).
    """
    import warnings

    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no result at {path}")
    if not _is_result(path):
        raise ValueError(f"{path} is not an otpipe two-sample result")
    if not stored_attrs(path).get("complete"):
        raise ValueError(f"{path} is an unfinished run: finish it with `otpipe two-sample ... --resume`")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_zarr(path, consolidated=None).load()
    ds = ds.rename({old: new for old, new in RENAMED.items() if old in ds.variables and new not in ds.variables})
    return _result.plain_string_coords(ds)


def _strings(values) -> np.ndarray:
    # variable-length strings in the store (Zarr v3's specified type); open_result returns them as <U
    return np.array([str(v) for v in values], dtype=object)


def _attrs(params: dict, *, statistic, n_permutations, seed, by, block_size, src, tgt, n_tests) -> dict:
    attrs = {
        **tag("two_sample"),
        "statistic": statistic,
        "n_permutations": int(n_permutations),
        "seed": jsonable(seed),
        "seed_rule": "test (i, j) uses SeedSequence([seed, i, j]); block k of a test spawn_key=(k,)",
        "block_size": int(block_size),
        "by": by,
        "n_tests": int(n_tests),
        "correction": "p_holm: Holm step-down (FWER); p_bh: Benjamini-Hochberg (FDR), over all distinct tests",
        "weights": "ignored: each point is one sample draw",
        "variables": "statistic, pvalue, null_distribution: scipy.stats names (otpipe 0.1: p_value, null)",
        "params": jsonable(params),
        "source_collection": str(src.path),
        "source_hash": str(src.content_hash),
        "versions": versions(("otpipe", "torch", "numpy")),
        "complete": True,
    }
    if tgt is not None:
        attrs["target_collection"] = str(tgt.path)
        attrs["target_hash"] = str(tgt.content_hash)
    return attrs


@locked("out", skip=())
def write_result(ds, out, *, overwrite: bool = False) -> Path:
    """Write ``ds`` to the Zarr store ``out`` atomically (temporary sibling, then rename).

    Parameters
    ----------
    ds : xarray.Dataset
        The result; otpipe's two-sample marker is added to its attrs.
    out : str or os.PathLike
        The store to write (its parent folders are made).
    overwrite : bool, default False
        Replace an existing Zarr store at ``out`` (one otpipe made).

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    FileExistsError
        If ``out`` exists without ``overwrite``, or is not a Zarr store, a symbolic link, or a store otpipe did
        not make.
    """
    import warnings

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"output exists: {out} (use --overwrite)")
    if out.exists() and not (out / "zarr.json").exists():
        raise FileExistsError(f"refusing to overwrite {out}: not a Zarr store")
    check_replaceable(out)
    ds.attrs.update(made_attrs("two_sample"))
    out.parent.mkdir(parents=True, exist_ok=True)
    from otpipe.store.tmp import remove_stale, tmp_sibling

    remove_stale(out)  # temporaries of a killed earlier run of this output
    tmp = tmp_sibling(out)
    try:
        with warnings.catch_warnings():  # "consolidated metadata is not in the Zarr v3 spec": known, harmless
            warnings.simplefilter("ignore")
            ds.to_zarr(tmp, mode="w", consolidated=True)  # xr.open_zarr reads it without a warning
        if out.exists():
            old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
