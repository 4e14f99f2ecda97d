"""The collection-level API: one function per ``otpipe`` command, and the registry of workflow steps.

Each function is named as its command (``two-sample`` -> :func:`two_sample`); its keyword parameters are the
command's long options (``--n-measures`` -> ``n_measures``), with the same defaults, and its positional
parameters the command's arguments. A function does what its command does (it writes the same stores,
PNG figures and reports) except printing, and returns the result: a collection, an xarray Dataset, or a
summary dict (with ``dry_run=True``: the plan as a dict). The command line is ``parse options -> call the
function -> echo``; a workflow step calls the function of :data:`STEPS` directly.

Parameters that only the API has: ``cluster`` (a :class:`~otpipe.engine.cluster.ClusterSpec`, which the
command fills from its cluster options ``--scheduler``, ``--n-workers``, ``--cluster``, ...), ``client`` (an
existing ``distributed.Client``), ``progress`` (the command's ``--no-progress``/``--quiet`` turn it off) and
``notes`` (:func:`ingest`). Options that only the command line has: ``--json``, ``--quiet``, ``--no-progress``.

The annotations are the parameter schema (:mod:`otpipe.params`): the workflow runner checks a step's params
against them before any work, and ``tests/test_api.py`` checks that every command's options equal its
function's parameters (names and defaults), so the command line and the API cannot drift apart.

A new step: one function here and one line in :data:`STEPS`; its pipeline goes to ``otpipe/pipelines/``, its
command to ``otpipe/cli/``.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from otpipe.params import Listed, Range
from otpipe.store.locks import locked

__all__ = ["synth", "ingest", "distances", "two_sample", "barycenter", "complexity", "report", "STEPS", "COMMANDS",
           "Entry"]

#: a path, or an opened collection (``otpipe.store.open``) where a collection is read
Source = Any
#: a path (a workflow gives it as a string)
PathLike = str | os.PathLike

_DTYPES = Literal["float32", "float64"]


def synth(
    *,
    out: PathLike,
    kind: Annotated[Sequence[str], Listed.REPEATED] = ("mixed",),
    n_measures: Annotated[int, Range(1)] = 10,
    n_points: Annotated[int, Range(1)] = 100,
    min_points: Annotated[int | None, Range(1)] = None,
    dim: Annotated[int, Range(1)] = 2,
    seed: Annotated[int, Range(0)] = 0,
    weights: Literal["uniform", "random"] = "uniform",
    noise: Annotated[float, Range(0)] = 0.05,
    spread: Annotated[float, Range(0)] = 2.0,
    dtype: _DTYPES = "float32",
    shard_points: Annotated[int | None, Range(1)] = None,
    overwrite: bool = False,
    dry_run: bool = False,
):
    """Write a reproducible synthetic collection of measures (labels = families): ``otpipe synth``.

    Parameters
    ----------
    out : path
        The collection store to write.
    kind : sequence of str
        Families (``uniform``, ``gaussian``, ``mixture``, ``circle``, ``sphere``, ``torus``, or ``mixed``: all
        valid for ``dim``), cycled over the measures; comma-separated names are split.
    n_measures, n_points, min_points, dim, seed, weights, noise, spread
        As in :func:`otpipe.store.synth.synth_measures` (measure ``i`` uses ``rng([seed, i])``; sizes drawn in
        ``[min_points, n_points]`` when ``min_points`` is given).
    dtype : {"float32", "float64"}
        Storage dtype.
    shard_points : int, optional
        Target points per shard (default: as many as fit in 16 MiB).
    overwrite : bool
        Replace an existing collection at ``out``.
    dry_run : bool
        Return the plan (measures, points, families, bytes at most) and write nothing.

    Returns
    -------
    otpipe.store.Collection or dict
        The written collection; with ``dry_run`` the plan.
    """
    from otpipe.store.collection import DEFAULT_SHARD_POINTS, create
    from otpipe.store.synth import resolve_kinds, synth_measures

    fams = resolve_kinds([kind] if isinstance(kind, str) else list(kind), dim)  # fail before creating anything
    if dry_run:
        total = n_measures * n_points
        return {"out": str(out), "n_measures": n_measures, "points_per_measure": [min_points or n_points, n_points],
                "max_points": total, "dim": dim, "dtype": dtype, "kinds": fams, "seed": seed,
                "bytes_at_most": total * (dim + 1) * (4 if dtype == "float32" else 8)}
    ms = synth_measures(fams, n_measures, n_points, dim, seed, min_points=min_points, weights=weights, noise=noise,
                        spread=spread)
    return create(out, ms, overwrite=overwrite, shard_points=shard_points or DEFAULT_SHARD_POINTS, dtype=dtype)


def ingest(
    sources: Sequence[PathLike],
    *,
    out: PathLike,
    format: Literal["auto", "npy", "npz", "csv", "txt", "xyz", "ply", "png", "jpg", "image"] = "auto",
    append: bool = False,
    overwrite: bool = False,
    labels: Literal["none", "parent"] = "none",
    manifest: PathLike | None = None,
    names: Literal["stem", "relpath"] = "stem",
    weight_column: str | None = None,
    columns: Annotated[Sequence[str] | None, Listed.COMMAS] = None,
    invert: bool = False,
    threshold: float | None = None,
    downsample: Annotated[int, Range(1)] = 1,
    dtype: _DTYPES | None = None,
    shard_points: Annotated[int | None, Range(1)] = None,
    follow_symlinks: bool = False,
    dry_run: bool = False,
    notes: list | None = None,
):
    """Ingest files, directories or globs of point clouds / images into a collection: ``otpipe ingest``.

    Parameters
    ----------
    sources : sequence of paths or globs
        One file is one measure (``.npy``/``.npz``, ``.csv``/``.txt``/``.xyz``, ``.ply``, images).
    out : path
        The collection store to write.
    format, append, overwrite, labels, manifest, names, follow_symlinks
        As in :func:`otpipe.store.ingest.ingest` (``format`` is its ``fmt``).
    weight_column, columns, invert, threshold, downsample
        The readers' options (:class:`otpipe.store.readers.ReaderOptions`); ``columns`` a list or a
        comma-separated string.
    dtype : {"float32", "float64"}, optional
        Storage dtype (default float32; with ``append``, the store's).
    shard_points : int, optional
        Target points per shard.
    dry_run : bool
        Return the files that would be read (``{"out", "n_measures", "files"}``) and read no data.
    notes : list, optional
        Filled with one line per file worth a note (e.g. a table read with a header row).

    Returns
    -------
    otpipe.store.Collection or dict
        The written collection; with ``dry_run`` the plan.
    """
    from otpipe.store.collection import DEFAULT_SHARD_POINTS
    from otpipe.store.ingest import ingest as ingest_files
    from otpipe.store.ingest import list_sources
    from otpipe.store.readers import ReaderOptions

    sources = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if dry_run:
        found = list_sources(sources, fmt=format, labels=labels, manifest=manifest, names=names,
                             follow_symlinks=follow_symlinks)
        rows = [{"file": str(s.path), "name": s.name, "label": s.label, "format": s.fmt} for s in found]
        return {"out": str(out), "n_measures": len(rows), "files": rows}
    opts = ReaderOptions(weight_column=weight_column, columns=_strings(columns), invert=invert, threshold=threshold,
                         downsample=downsample)
    return ingest_files(sources, out, fmt=format, append=append, overwrite=overwrite, labels=labels,
                        manifest=manifest, names=names, options=opts, dtype=dtype,
                        shard_points=shard_points or DEFAULT_SHARD_POINTS, follow_symlinks=follow_symlinks,
                        notes=notes)


def distances(
    collection: Source,
    other: Source | None = None,
    *,
    out: PathLike | None = None,
    loss: Literal["sinkhorn", "energy", "gaussian", "laplacian", "hausdorff"] = "sinkhorn",
    p: float = 2.0,
    blur: float = 0.05,
    reach: float | None = None,
    scaling: float = 0.5,
    tol: float | None = None,
    max_iter: int | None = None,
    diameter: float | None = None,
    cost: Literal["|x-y|^p/p", "|x-y|^p"] | None = None,
    backend: str = "auto",
    dtype: _DTYPES | None = None,
    tile: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    verify: bool = False,
    dry_run: bool = False,
    cluster=None,
    client=None,
    progress: bool = True,
):
    """Pairwise divergences of ``collection`` (``N x N``) or ``collection x other`` (``N x M``): ``otpipe distances``.

    ``S[i, j] = S_eps(a_i, b_j)`` (or a kernel loss), on Dask, tile by tile; see
    :func:`otpipe.pipelines.pairwise.pairwise` for every parameter.

    Parameters
    ----------
    collection, other : path or otpipe.store.Collection or list of measures
        The source collection and the optional target collection: stores, or measures held in memory (a list of
        ``(N, D)`` arrays, ``(points, weights)`` pairs or :class:`otpipe.store.Measure`), which are solved in this
        process (batched small-problem solves, no store, no cluster; :func:`otpipe.tools.matrix.distance_matrix`).
    out : path, optional
        Result store (Zarr), checkpointed per tile; without it the result is computed in a temporary store.
    loss, p, blur, reach, scaling, tol, max_iter, diameter, cost, backend, dtype, tile
        The loss and the solver's parameters, as in :func:`otpipe.solve`; ``tile``: pairs per task = tile^2.
    resume, overwrite, verify, dry_run
        Continue the run stored at ``out`` / replace it / re-hash the inputs first / return the plan only.
    cluster, client, progress
        A :class:`~otpipe.engine.cluster.ClusterSpec` or an existing client (default: a local cluster);
        progress on stderr.

    Returns
    -------
    xarray.Dataset or dict
        The matrix ``divergence (source, target)``, ``n_iter``, ``marginal_error`` and the self terms; with
        ``dry_run`` the plan.
    """
    if _in_memory(collection) or (other is not None and _in_memory(other)):
        given = [k for k, v in dict(out=out, tile=tile, resume=resume, overwrite=overwrite, verify=verify,
                                    dry_run=dry_run, cluster=cluster, client=client).items() if v not in (None, False)]
        if given:
            raise ValueError(f"measures given in memory are solved in this process: {', '.join(given)} "
                             f"{'applies' if len(given) == 1 else 'apply'} to collection stores only "
                             "(otpipe.store.create makes one)")
        return _matrix_dataset(collection, other, loss=loss, p=p, blur=blur, reach=reach, scaling=scaling, tol=tol,
                               max_iter=max_iter, diameter=diameter, cost=cost, backend=backend,
                               dtype=dtype or "float64")
    from otpipe.pipelines.pairwise import pairwise

    return pairwise(collection, other, out=out, loss=loss, p=p, blur=blur, reach=reach, scaling=scaling, tol=tol,
                    max_iter=max_iter, diameter=diameter, cost=cost, backend=backend, dtype=dtype, tile=tile,
                    resume=resume, overwrite=overwrite, verify=verify, dry_run=dry_run, cluster=cluster,
                    client=client, progress=progress)


def _in_memory(obj) -> bool:
    """Measures given as a list or tuple (not a store path or a Collection)."""
    return isinstance(obj, (list, tuple))


def _matrix_dataset(collection, other, **kw):
    """:func:`otpipe.tools.matrix.distance_matrix` as an xarray Dataset (the result store's variable names)."""
    import numpy as np
    import xarray as xr

    from otpipe.tools.matrix import distance_matrix

    r = distance_matrix(collection, other, **kw)
    n, m = r["divergence"].shape
    st = ("source", "target")
    data = {k: (st, r[k]) for k in ("divergence", "ot", "n_iter", "marginal_error")}
    if r["self_source"] is not None:
        data["self_source"] = (("source",), r["self_source"])
        data["self_target"] = (("target",), r["self_target"])
    params = {k: v for k, v in kw.items() if v is not None}
    attrs = {"loss": kw["loss"], "symmetric": r["symmetric"], "parameters": params, "in_memory": True}
    if r["diameter"] is not None:
        attrs["diameter"] = r["diameter"]
    if kw["loss"] == "sinkhorn":  # convergence honesty, as the runs on stores: summary in the attrs, one warning
        from otpipe.engine import convergence as conv

        err = r["marginal_error"][np.triu_indices(n, 1)] if r["symmetric"] else r["marginal_error"]
        remedy = ("use tol=1e-3 for converged solves, or a larger blur" if kw["tol"] is None
                  else "raise max_iter or use a larger blur")
        attrs.update(conv.result_attrs(conv.summarise(err, kw["tol"]), what="the Sinkhorn solves of this matrix",
                                       remedy=remedy))
        conv.warn(attrs["convergence_warning"])
    return xr.Dataset(data, coords={"source": np.arange(n), "target": np.arange(m)}, attrs=attrs)


@locked("out")  # one writer per result store, the PNG included
def two_sample(
    collection: Source,
    other: Source | None = None,
    *,
    out: PathLike | None = None,
    statistic: Literal["sinkhorn", "mmd", "energy"] = "sinkhorn",
    by: Literal["auto", "measure", "label", "collection"] = "auto",
    n_permutations: Annotated[int, Range(1)] = 999,
    seed: Annotated[int, Range(0)] = 0,
    block_size: Annotated[int, Range(1)] = 100,
    p: float = 2.0,
    blur: float = 0.05,
    scaling: float = 0.5,
    tol: float | None = None,
    backend: str = "auto",
    sigma: Annotated[Sequence[str], Listed.REPEATED] = (),
    resume: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    no_plot: bool = False,
    cluster=None,
    client=None,
    progress: bool = True,
):
    """Permutation two-sample tests between the groups of ``collection``, or against ``other``: ``otpipe two-sample``.

    See :func:`otpipe.pipelines.two_sample.many_two_sample_tests` (groups, seeds, corrections, checkpoints).
    With ``out``, the report PNG goes next to it (``OUT.png``) unless ``no_plot``.

    Parameters
    ----------
    collection, other : path or otpipe.store.Collection
        One collection (tests between its groups) or two.
    out : path, optional
        Result store (Zarr), checkpointed per test; without it the result stays in memory (and no PNG).
    statistic, by, n_permutations, seed, block_size
        As in :func:`otpipe.two_sample_test`; ``by``: the groups (``auto``: labels when there are labels).
    p, blur, scaling, tol, backend
        Sinkhorn's parameters (``statistic="sinkhorn"``).
    sigma : sequence of str or float
        MMD Gaussian bandwidth(s) or ``"median"`` (the default).
    resume, overwrite, dry_run, no_plot
        Continue / replace the result at ``out``; return the plan only; write no PNG.
    cluster, client, progress
        As in :func:`distances`.

    Returns
    -------
    xarray.Dataset or dict
        ``statistic``, ``pvalue``, ``p_holm``, ``p_bh`` per pair of groups; with ``dry_run`` the plan.
    """
    from otpipe.pipelines.two_sample import many_two_sample_tests

    if statistic == "sinkhorn":
        params: dict = dict(p=p, blur=blur, scaling=scaling, tol=tol, backend=backend)
    elif statistic == "mmd":
        sig = [s if s == "median" else _positive(s) for s in ([sigma] if isinstance(sigma, (str, float, int))
                                                             else sigma)] or ["median"]
        params = dict(sigma=sig[0] if len(sig) == 1 else sig)
    else:
        params = {}
    ds = many_two_sample_tests(collection, other, by=by, statistic=statistic, n_permutations=n_permutations, seed=seed,
                               block_size=block_size, cluster=cluster, client=client,
                               out=Path(out) if out is not None else None, resume=resume, overwrite=overwrite,
                               progress=progress, dry_run=dry_run, **params)
    if not dry_run and out is not None and not no_plot:
        from otpipe.report.two_sample import write_png

        write_png(ds, Path(out).with_suffix(".png"))
    return ds


def barycenter(
    collection: Source,
    *,
    out: PathLike | None = None,
    group_by: Literal["label", "none"] = "label",
    groups: Annotated[Sequence[str] | None, Listed.COMMAS] = None,
    weights: Annotated[Sequence[float] | None, Listed.COMMAS] = None,
    method: Literal["auto", "free", "fixed"] = "auto",
    n_points: int | None = None,
    init: Literal["sample", "mean"] = "sample",
    blur: float | None = None,
    p: float = 2.0,
    tol: float | None = None,
    max_iter: int | None = None,
    seed: int = 0,
    grid: float | None = None,
    biased: bool = False,
    learn_weights: bool = False,
    plot: PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    cluster=None,
    client=None,
    progress: bool = True,
):
    """One Wasserstein barycenter per group of ``collection``: ``otpipe barycenter``.

    With ``out``: written as a collection store (one measure per group, checkpointed group by group) and a PNG
    (``plot``, default ``OUT.png``), as :func:`otpipe.pipelines.barycenters.run_barycenter`. Without ``out``:
    computed in memory, nothing written (:func:`otpipe.pipelines.barycenters.group_barycenters`).

    Parameters
    ----------
    collection : path or otpipe.store.Collection
        The measures.
    out : path, optional
        The collection store to write.
    group_by, groups, weights, method, n_points, init, blur, p, tol, max_iter, seed, grid, learn_weights
        As in :func:`otpipe.pipelines.barycenters.run_barycenter`; ``groups`` (labels) and ``weights`` (one
        barycentric weight per measure, single group) as lists or comma-separated strings.
    biased : bool
        Fixed support without debiasing (plain IBP).
    plot : path, optional
        The PNG to write (default: ``out`` with ``.png``).
    resume, overwrite, dry_run
        Continue / replace the store at ``out``; return the plan (groups, sizes, methods) only.
    cluster, client, progress
        As in :func:`distances`.

    Returns
    -------
    dict
        With ``out``: the summary (``out``, ``plot``, per group method, sizes, iterations, convergence);
        without: ``{group: BarycenterResult}``; with ``dry_run``: the plan.
    """
    from otpipe.pipelines.barycenters import describe_barycenters, group_barycenters, run_barycenter

    common = dict(group_by=group_by, groups=_strings(groups), weights=_numbers(weights, float, "weights"),
                  method=method, n_points=n_points, p=p, grid=grid)
    if dry_run:
        return describe_barycenters(collection, **common)
    solver = dict(init=init, blur=blur, tol=tol, max_iter=max_iter, seed=seed, debiased=not biased,
                  learn_weights=learn_weights, client=client, progress=progress)
    if out is None:
        return group_barycenters(collection, **common, **solver, cluster=cluster)
    return run_barycenter(collection, out, **common, **solver, overwrite=overwrite, resume=resume, plot=plot,
                          spec=cluster)


def complexity(
    *,
    out: PathLike | None = None,
    eps: Annotated[Sequence[float], Listed.COMMAS] = (0.01, 0.1, 1.0, 10.0),
    dims: Annotated[Sequence[int], Listed.COMMAS] = (2, 3, 5),
    n: Annotated[Sequence[int], Listed.COMMAS] = (10, 30, 100, 300, 1000),
    reps: int = 100,
    p: float = 1.5,
    divergence: Literal["sinkhorn", "transport"] = "sinkhorn",
    only: bool = False,
    distribution: Literal["uniform", "gaussian", "mixture"] = "uniform",
    seed: Annotated[int, Range(0)] = 0,
    tol: float = 1e-4,
    scaling: float = 0.7,
    max_iter: int | None = None,
    dtype: Literal["float64", "float32"] = "float64",
    figures: PathLike | None = None,
    no_figures: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    cluster=None,
    client=None,
    progress: bool = True,
):
    """Sample complexity ``E D_eps(mu_N, nu_N) ~ N^-kappa`` over a grid of eps, d and N: ``otpipe complexity``.

    See :func:`otpipe.pipelines.complexity.run_study` (one task per cell, checkpointed cell by cell).

    Parameters
    ----------
    out : path, optional
        Result store (Zarr); without it the study is computed in a temporary store.
    eps, dims, n : sequences (or comma-separated strings)
        Temperatures, dimensions, sample sizes.
    reps, p, distribution, seed, tol, scaling, max_iter, dtype
        Repetitions per cell, cost ``|x - y|^p``, the sampled law, the seed, the solver's parameters.
    divergence : {"sinkhorn", "transport"}
        The divergence summarised (both are computed unless ``only``).
    only : bool
        Compute only ``divergence``.
    figures : path, optional
        Folder for the figures and the kappa table (default: ``<out stem>_figures``).
    no_figures : bool
        Draw no figures.
    resume, overwrite, dry_run
        Continue / replace the study at ``out``; return the plan and its cost estimate only.
    cluster, client, progress
        As in :func:`distances`.

    Returns
    -------
    xarray.Dataset or dict
        The study (raw values, mean, std, kappa with its interval); with ``dry_run`` the plan.
    """
    from otpipe.pipelines.complexity import run_study

    return run_study(
        out, eps=_numbers(eps, float, "eps"), dims=_numbers(dims, int, "dims"), ns=_numbers(n, int, "n"), reps=reps,
        p=p, divergence=divergence, divergences=(divergence,) if only else ("sinkhorn", "transport"),
        distribution=distribution, seed=seed, tol=tol, scaling=scaling, max_iter=max_iter, dtype=dtype,
        overwrite=overwrite, resume=resume, figures=None if no_figures else (figures or "auto"), cluster=cluster,
        client=client, progress=progress, dry_run=dry_run,
    )


def report(result: PathLike, *, out: PathLike, title: str | None = None,
           max_measures: Annotated[int, Range(1)] = 30):
    """An HTML report (``out/index.html`` + PNGs) of any otpipe result, by its type: ``otpipe report``.

    Parameters
    ----------
    result : path
        A collection, barycenters, a distance matrix, two-sample tests or a complexity study.
    out : path
        The folder to write (created if needed).
    title : str, optional
        Page title.
    max_measures : int
        Collections: measures drawn (the same number of each label).

    Returns
    -------
    otpipe.report.ReportFiles
        The page, its PNGs, the summary lines and the notes.
    """
    from otpipe.report import write_report

    _check_report_out(Path(result), Path(out))
    return write_report(result, Path(out), title=title, max_measures=max_measures)


def _check_report_out(result: Path, out: Path) -> None:
    """A report never writes into a store: not into the input, not inside it, not into any other Zarr store."""
    res, dst = result.resolve(), out.resolve()
    if dst == res or res in dst.parents:
        raise ValueError(f"--out {out} is {'the input' if dst == res else 'inside the input'} {result}: the report "
                         f"would write its page and PNGs into the store; choose another folder (e.g. "
                         f"{result.with_suffix('.report')})")
    for folder in (dst, *dst.parents):
        if (folder / "zarr.json").is_file() or (folder / ".zgroup").is_file():
            raise ValueError(f"--out {out} is {'' if folder == dst else 'inside '}a Zarr store ({folder}): the report "
                             "writes a plain folder; choose another one")


# ------------------------------------------------------------------------------------------------
# the registry
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A registered command, as a workflow step.

    Parameters
    ----------
    function : callable
        The API function (its annotated keyword parameters are the step's params).
    inputs : tuple of str
        The parameters that take the collections of earlier workflow steps (positional on the command line,
        in order).
    collection : bool
        Whether its output is a collection (valid as such an input).
    resumable : bool
        Whether it continues its own unfinished output (``resume=True``).
    """

    function: Callable
    inputs: tuple[str, ...] = ()
    collection: bool = False
    resumable: bool = False


#: workflow step name (= command name) -> its function; a workflow's built-in ``report`` step is not here
STEPS: dict[str, Entry] = {
    "synth": Entry(synth, collection=True),
    "ingest": Entry(ingest, collection=True),
    "distances": Entry(distances, inputs=("collection",), resumable=True),
    "two-sample": Entry(two_sample, inputs=("collection", "other"), resumable=True),
    "barycenter": Entry(barycenter, inputs=("collection",), collection=True, resumable=True),
    "complexity": Entry(complexity, resumable=True),
}

#: command name -> its function (every command with an API function: the steps and ``report``)
COMMANDS: dict[str, Callable] = {**{k: e.function for k, e in STEPS.items()}, "report": report}


# ------------------------------------------------------------------------------------------------
# values given as lists or as the command line's comma-separated strings
# ------------------------------------------------------------------------------------------------


def _strings(value) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def _numbers(value, kind: type, name: str) -> list | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        return [kind(v.strip() if isinstance(v, str) else v) for v in items if not (isinstance(v, str) and not v.strip())]
    except (TypeError, ValueError):
        what = "integers" if kind is int else "numbers"
        raise ValueError(f"{name} must be comma-separated {what}, got {value!r}") from None


def _positive(s) -> float:
    try:
        v = float(s)
    except ValueError:
        raise ValueError(f"--sigma must be 'median' or a positive number, got {s!r}") from None
    if not v > 0:
        raise ValueError(f"--sigma must be positive, got {s}")
    return v
