"""Sample-complexity studies on Dask: one task per cell ``(eps, d, N)`` (all repetitions batched),
assembled into an xarray Dataset stored as Zarr, with the paper's log-log figures.

Dataset (``otpipe complexity --out OUT``):

* raw values ``sinkhorn``, ``transport`` with dims ``(eps, dim, n, rep)`` (whichever were computed),
  and the diagnostics ``n_iter``, ``marginal_error`` ``(eps, dim, n, rep)``;
* for the chosen divergence: ``mean`` = ``R(N)`` and ``std`` = ``S(N)`` ``(eps, dim, n)``, the decay
  rate ``kappa`` with its confidence interval ``kappa_low``, ``kappa_high`` ``(eps, dim)``;
  for every computed divergence also ``kappa_<name>`` (+ ``_low``/``_high``);
* attrs: every parameter, library versions, ``paper_factor`` (the paper's ``Wbar`` is 2x ours), and the
  convergence summary (``marginal_error_median``, ``marginal_error_max``, ``convergence_warning``).

Checkpoints: the store is created first and each finished cell is recorded in its hidden
``_checkpoint`` group (:mod:`otpipe.engine.checkpoint`); Ctrl-C keeps them, ``resume=True``
(``otpipe complexity ... --resume``) computes the missing cells only.

The numerics live in :mod:`otpipe.tools.complexity` (no Dask there).
"""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import numpy as np

from otpipe.engine import checkpoint as _ck
from otpipe.engine import convergence as _conv
from otpipe.engine import estimate as _estimate
from otpipe.engine import run as _run
from otpipe.engine.identity import versions
from otpipe.engine.result import result_type, stored_attrs, tag
from otpipe.report.complexity import kappa_table, plot_study
from otpipe.store.locks import locked
from otpipe.tools import complexity as cx

__all__ = ["run_study", "open_study", "estimate_study", "summarise", "plot_study", "kappa_table"]

log = logging.getLogger("otpipe.complexity")


def _cell_task(eps, dim, n, reps, kw):
    return cx.cell_values(eps, dim, n, reps, **kw)


def _check_grid(eps, dims, ns, reps, p):
    def _sorted_unique(name, v, kind):
        v = [kind(t) for t in v]
        if not v:
            raise ValueError(f"--{name} needs at least one value")
        if len(set(v)) != len(v):
            raise ValueError(f"--{name} has repeated values: {v}")
        return sorted(v)

    eps = _sorted_unique("eps", eps, float)
    dims = _sorted_unique("dims", dims, int)
    ns = _sorted_unique("n", ns, int)
    if any(not (e > 0 and math.isfinite(e)) for e in eps):
        raise ValueError(f"--eps values must be positive and finite, got {eps}")
    if any(d < 1 for d in dims):
        raise ValueError(f"--dims values must be >= 1, got {dims}")
    if any(n < 2 for n in ns):
        raise ValueError(f"--n values must be >= 2, got {ns}")
    if int(reps) < 2:
        raise ValueError(f"--reps must be >= 2 (a standard deviation is estimated), got {reps}")
    if not (p > 0 and math.isfinite(p)):
        raise ValueError(f"--p must be positive, got {p}")
    return eps, dims, ns, int(reps)


def summarise(ds, divergence: str, *, level: float = 0.95):
    """Add ``mean``, ``std`` ``(eps, dim, n)`` and ``kappa[_low|_high]`` ``(eps, dim)`` for ``divergence``.

    ``mean`` = ``R(N)`` and ``std`` = ``S(N)`` (``ddof=1``) over the repetitions; ``kappa`` is the decay rate of
    ``R(N) ~ N^-kappa`` fitted in log-log (:func:`otpipe.tools.complexity.fit_rate`), with its confidence interval.
    Every divergence in ``ds`` also gets ``kappa_<name>`` (+ ``_low``/``_high``).

    Parameters
    ----------
    ds : xarray.Dataset
        The raw values, ``(eps, dim, n, rep)`` per divergence; modified in place.
    divergence : str
        The divergence of ``mean``, ``std`` and ``kappa`` (one computed in ``ds``).
    level : float, default 0.95
        Confidence level of the interval on ``kappa``.

    Returns
    -------
    xarray.Dataset
        ``ds``, with the new variables and the attrs ``divergence`` and ``confidence_level``.

    Raises
    ------
    ValueError
        If ``divergence`` is not in ``ds``.
    """
    import xarray as xr

    names = [k for k in cx.DIVERGENCES if k in ds]
    if divergence not in names:
        raise ValueError(f"divergence {divergence!r} was not computed (have {', '.join(names)})")
    ns = ds["n"].values
    for name in names:
        mean = ds[name].mean("rep")
        k = np.full((ds.sizes["eps"], ds.sizes["dim"], 3), np.nan)
        for i in range(ds.sizes["eps"]):
            for j in range(ds.sizes["dim"]):
                f = cx.fit_rate(ns, mean.values[i, j], level=level)
                k[i, j] = (f.kappa, f.low, f.high)
        for s, idx in (("", 0), ("_low", 1), ("_high", 2)):
            ds[f"kappa_{name}{s}"] = xr.DataArray(k[..., idx], dims=("eps", "dim"))
    ds["mean"] = ds[divergence].mean("rep")
    ds["std"] = ds[divergence].std("rep", ddof=1)
    for s in ("", "_low", "_high"):
        ds[f"kappa{s}"] = ds[f"kappa_{divergence}{s}"]
    ds["mean"].attrs["long_name"] = f"R(N): mean of {divergence} over repetitions"
    ds["std"].attrs["long_name"] = f"S(N): standard deviation of {divergence} over repetitions"
    ds["kappa"].attrs["long_name"] = f"decay rate of R(N) ~ N^-kappa ({divergence}), least squares in log-log"
    ds.attrs["divergence"] = divergence
    ds.attrs["confidence_level"] = level
    return ds


def _fields(divergences, reps: int) -> dict:
    f = {name: _ck.Field((reps,)) for name in divergences}
    f["n_iter"] = _ck.Field((reps,), "int64", 0)
    f["marginal_error"] = _ck.Field((reps,))
    return f


def estimate_study(eps, dims, ns, reps: int, kw: dict, n_workers: int, n_timed: int = 200) -> dict:
    """Rough cost of a study: one repetition per eps timed here, scaled to every cell.

    The timed repetition has ``N_timed = min(max(ns), n_timed)`` points in the largest dimension; a cell
    ``(eps, d, N)`` costs ``reps (N / N_timed)^2`` times its eps's time (a solve costs ~ N^2 per iteration).

    Parameters
    ----------
    eps, dims, ns : sequence
        The grid of the study.
    reps : int
        Repetitions per cell.
    kw : dict
        The keyword arguments of :func:`otpipe.tools.complexity.cell_values`.
    n_workers : int
        Workers the run would have.
    n_timed : int, default 200
        Most points of the timed repetition.

    Returns
    -------
    dict
        :func:`otpipe.engine.estimate.summary` (without ``seconds_per_unit``) and ``timed``, the timings in words.
    """
    nt = min(max(ns), n_timed)
    d = max(dims)
    per_eps = [_estimate.timed(lambda e=e: cx.cell_values(e, d, nt, 1, **kw)) for e in eps]
    units = sum(t * reps * (n / nt) ** 2 for t in per_eps for _ in dims for n in ns)
    est = _estimate.summary(units, 1.0, n_workers, "unit")
    est.pop("seconds_per_unit", None)
    est["timed"] = f"1 repetition of N = {nt}, d = {d} per eps: " + ", ".join(f"{t:.3g} s" for t in per_eps)
    return est


@locked("out", skip=("dry_run",))  # one writer per result store
def run_study(
    out=None,
    *,
    eps=(0.01, 0.1, 1.0, 10.0),
    dims=(2, 3, 5),
    ns=(10, 30, 100, 300, 1000),
    reps: int = 100,
    p: float = 1.5,
    divergence: str = "sinkhorn",
    divergences=("sinkhorn", "transport"),
    distribution: str = "uniform",
    seed: int = 0,
    tol: float = 1e-4,
    scaling: float = 0.7,
    max_iter: int | None = None,
    dtype: str = "float64",
    level: float = 0.95,
    overwrite: bool = False,
    resume: bool = False,
    figures: str | os.PathLike | None = "auto",
    cluster=None,
    client=None,
    progress: bool = False,
    dry_run: bool = False,
):
    """Run the grid ``eps x dims x ns`` with ``reps`` repetitions on Dask and write the Dataset to ``out``.

    ``R_{eps,d}(N) = mean_r D_eps(mu_N^r, nu_N^r)``; one Dask task per cell. ``figures``: a directory
    for the PNGs (``"auto"``: ``<out stem>_figures`` next to ``out``; ``None``: no figures).
    ``out=None``: computed in a temporary store and returned in memory.

    The run is checkpointed cell by cell (:mod:`otpipe.engine.checkpoint`): Ctrl-C keeps the finished
    cells and raises :class:`~otpipe.engine.interrupt.Interrupted`; ``resume=True`` computes only
    the missing ones (same parameters required). ``progress``: cells done on stderr. ``dry_run``:
    return the plan and a cost estimate (a dict) without computing. A run whose solves end with
    large marginal errors warns (:mod:`otpipe.engine.convergence`) and records
    ``marginal_error_median``/``marginal_error_max``/``convergence_warning`` in the attrs.

    Parameters
    ----------
    out : str or os.PathLike or None, default None
        The Zarr store to write; ``None``: a temporary store, the result returned in memory.
    eps : sequence of float, default (0.01, 0.1, 1.0, 10.0)
        Temperatures (positive, distinct).
    dims : sequence of int, default (2, 3, 5)
        Dimensions ``d`` (at least 1, distinct).
    ns : sequence of int, default (10, 30, 100, 300, 1000)
        Points per sample ``N`` (at least 2, distinct).
    reps : int, default 100
        Repetitions per cell (at least 2).
    p : float, default 1.5
        Exponent of the cost ``|x - y|^p``.
    divergence : str, default "sinkhorn"
        The divergence of ``mean``, ``std`` and ``kappa`` (:func:`summarise`); always computed.
    divergences : sequence of str, default ("sinkhorn", "transport")
        The divergences computed (keys of :data:`otpipe.tools.complexity.DIVERGENCES`).
    distribution : str, default "uniform"
        The distribution sampled (:data:`otpipe.tools.complexity.DISTRIBUTIONS`).
    seed : int, default 0
        Seed of the study.
    tol : float, default 1e-4
        Marginal-error tolerance of the solves.
    scaling : float, default 0.7
        Ratio of successive blurs in the eps-scaling.
    max_iter : int or None, default None
        Cap on the updates per solve (``None``: the solver's default).
    dtype : str, default "float64"
        Dtype of the computation.
    level : float, default 0.95
        Confidence level of the interval on ``kappa``.
    overwrite : bool, default False
        Replace an existing complexity result at ``out``.
    resume : bool, default False
        Continue the unfinished study at ``out``.
    figures : str or os.PathLike or None, default "auto"
        Directory of the PNG figures (see above).
    cluster : ClusterSpec or None, default None
        Where to run (``None``: a local cluster).
    client : distributed.Client or None, default None
        An existing client to use instead.
    progress : bool, default False
        Show the cells done on stderr.
    dry_run : bool, default False
        Return the plan and a cost estimate without computing.

    Returns
    -------
    xarray.Dataset or dict
        The study (loaded); with ``dry_run``, the plan (``cells``, ``reps``, ``solves``, the grid, ``cells_done``
        when resuming) merged with the estimate of what is left (:func:`estimate_study`).

    Raises
    ------
    ValueError
        On an invalid grid, an unknown divergence or distribution.
    """
    eps, dims, ns, reps = _check_grid(eps, dims, ns, reps, p)
    divergences = tuple(dict.fromkeys(list(divergences) + [divergence]))
    for d in divergences:
        if d not in cx.DIVERGENCES:
            raise ValueError(f"unknown divergence {d!r}: use {' or '.join(cx.DIVERGENCES)}")
    if distribution not in cx.DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}: use one of {', '.join(cx.DISTRIBUTIONS)}")
    kw = dict(p=p, seed=seed, distribution=distribution, divergences=divergences, tol=tol, scaling=scaling,
              max_iter=max_iter, dtype=dtype)
    cells = [(i, j, k) for i in range(len(eps)) for j in range(len(dims)) for k in range(len(ns))]
    fp, content = _ck.fingerprint({"parameters": dict(kw, divergence=divergence, reps=reps, level=level),
                                   "grid": {"eps": eps, "dims": dims, "n": ns}})
    fields = _fields(divergences, reps)
    if dry_run:
        job = _run.Job(None if out is None else Path(out), "complexity", "cells", len(cells), fields, fp, content,
                       log=log)
        stored = job.existing(resume=resume, overwrite=overwrite, dry_run=True)
        plan = {"cells": len(cells), "reps": reps, "solves": len(cells) * reps * len(divergences) * 3,
                "divergences": list(divergences), "eps": eps, "dims": dims, "n": ns}
        done = job.n_done(stored)
        if stored is not None:
            plan["cells_done"] = done
        est = estimate_study(eps, dims, ns, reps, kw, _run.worker_count(cluster, client))
        return plan | _run.remaining(est, done, len(cells))
    if out is None:
        figures = None if figures == "auto" else figures
    with _run.temporary_store(out, prefix="otpipe-complexity-", name="study.zarr") as path:
        job = _run.Job(path, "complexity", "cells", len(cells), fields, fp, content, log=log)
        stored = job.existing(resume=resume, overwrite=overwrite)
        if job.already_complete(stored):
            return open_study(job.out)
        ck = job.checkpoint(stored, {**tag("complexity"), "fingerprint": fp, "run": content})
        log.info("complexity: %d cells (%d eps x %d dims x %d N) x %d repetitions, %s", len(cells), len(eps),
                 len(dims), len(ns), reps, " and ".join(divergences))
        t0 = time.perf_counter()
        _run_cells(ck, cells, eps, dims, ns, reps, kw, cluster=cluster, client=client, progress=progress)
        seconds = time.perf_counter() - t0
        ds = _assemble(ck, eps, dims, ns, reps, kw, divergence, level, fp, content)
        ds.attrs.update(_conv.result_attrs(_conv.summarise(ds["marginal_error"].values),
                                           what=f"the Sinkhorn solves of the complexity study {job.out.name}",
                                           remedy="raise --max-iter, or drop the smallest --eps"))
        log.info("complexity: %d cells, %d solves per divergence in %.1f s", len(cells), len(cells) * reps, seconds)
        _ck.finalise(job.out, ds)
        _conv.warn(ds.attrs["convergence_warning"])
        if figures is not None:
            fig_dir = (Path(figures) if figures != "auto"
                       else job.out.parent / (job.out.name.removesuffix(".zarr") + "_figures"))
            plot_study(ds, fig_dir)
        return ds


def _run_cells(ck, cells, eps, dims, ns, reps, kw, *, cluster, client, progress: bool) -> None:
    """Compute the cells not done yet, one Dask task each (biggest first), recording them in ``ck``."""
    pending = [t for t in range(len(cells)) if not ck.done[t]]
    # biggest cells first (cost ~ reps * n^2), small ones fill the gaps
    pending.sort(key=lambda t: -(ns[cells[t][2]] ** 2) * dims[cells[t][1]])

    def submit(c, t):
        i, j, k = cells[t]
        return c.submit(_cell_task, eps[i], dims[j], ns[k], reps, kw, pure=False,
                        key=f"complexity-cell-{eps[i]:g}-{dims[j]}-{ns[k]}-{os.getpid()}-{time.time_ns()}")

    _run.run_keys(ck, pending, submit, lambda t, v: ck.record(t, **v), client=client, cluster=cluster,
                  progress=progress, desc="complexity", unit="cell", what="cells")


def _assemble(ck, eps, dims, ns, reps, kw, divergence, level, fp, content):
    """The study's Dataset from the per-cell rows: raw values, ``R(N)``, ``S(N)``, the fitted rates, the attrs."""
    import xarray as xr

    shape = (len(eps), len(dims), len(ns), reps)
    ds = xr.Dataset(
        {name: (("eps", "dim", "n", "rep"), ck.data[name].reshape(shape)) for name in ck.fields},
        coords={"eps": np.asarray(eps), "dim": np.asarray(dims), "n": np.asarray(ns), "rep": np.arange(reps)},
    )
    for name in kw["divergences"]:
        ds[name].attrs["long_name"] = {
            "sinkhorn": "debiased Sinkhorn divergence OT(a,b) - OT(a,a)/2 - OT(b,b)/2",
            "transport": "debiased transport cost W(a,b) - W(a,a)/2 - W(b,b)/2, W = <pi_eps, C> (paper: 2x)",
        }[name]
    summarise(ds, divergence, level=level)
    ds.attrs.update(_attrs(kw, kw["p"], kw["distribution"], kw["seed"], reps, divergence))
    ds.attrs.update(fingerprint=fp, run=content)
    return ds


def open_study(path):
    """Open a finished complexity result.

    Parameters
    ----------
    path : str or os.PathLike
        The result store.

    Returns
    -------
    xarray.Dataset
        The study, loaded in memory.

    Raises
    ------
    FileNotFoundError
        If there is no store at ``path``.
    ValueError
        If it is not a complexity result, or an unfinished one.
    """
    import warnings

    import xarray as xr

    path = Path(path)
    attrs = stored_attrs(path)
    if attrs is None:
        raise FileNotFoundError(f"no complexity result at {path}")
    if result_type(attrs) != "complexity":
        raise ValueError(f"{path} is not an otpipe complexity result")
    if not attrs.get("complete"):
        raise ValueError(f"{path} is an unfinished study: finish it with `otpipe complexity ... --resume`")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xr.open_zarr(path, consolidated=False).load()


def _attrs(kw, p, distribution, seed, reps, divergence) -> dict:
    return {
        **tag("complexity"),
        "format_version": 1,
        "p": float(p),
        "cost": "|x-y|^p",
        "blur": "eps^(1/p)",
        "distribution": distribution,
        "seed": int(seed),
        "reps": int(reps),
        "divergence": divergence,
        "divergences": list(kw["divergences"]),
        "tol": kw["tol"],
        "scaling": kw["scaling"],
        "max_iter": -1 if kw["max_iter"] is None else int(kw["max_iter"]),
        "dtype": kw["dtype"],
        "diameter": "sqrt(d)" if distribution == "uniform" else "see otpipe.tools.complexity.diameter_of",
        "seeding": "numpy SeedSequence([seed, dim, n, rep]); same draws for every eps",
        "paper_factor": cx.PAPER_FACTOR,
        "paper_factor_note": "the paper's Wbar = 2W(a,b) - W(a,a) - W(b,b) is 2x 'transport'; kappa is unchanged",
        "kappa_fit": "least squares log R(N) = log c - kappa log N, Student-t interval on the slope",
        "versions": versions(("otpipe", "numpy", "torch")),
        "complete": True,
    }
