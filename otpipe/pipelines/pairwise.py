"""``otpipe.pairwise``: the matrix of Sinkhorn divergences (or kernel losses) of one or two
collections, computed tile by tile on Dask and stored as a resumable xarray/Zarr result.

Phases: (1) one diameter for the whole run (bounding box of every point of both collections,
one task per shard of measures) so that every solve uses the same eps-schedule; (2) the self
terms ``OT_eps(a_i, a_i)``, once per measure; (3) the tiles of pairs, one task each, combined as
``S_ij = OT_eps(a_i, b_j) - (OT_eps(a_i, a_i) + OT_eps(b_j, b_j)) / 2``. Workers read their
measures from the Zarr store(s) themselves; the client writes each finished tile into the
result store (region writes of whole chunks) and marks it done, so a killed run resumes with
the unfinished tiles only, and a killed worker's tiles are simply recomputed by Dask.

On the run engine (:mod:`otpipe.engine.run`): the keys are the self-term chunks and the tiles of
the tiling (:mod:`otpipe.engine.tiling`), their tasks :func:`~otpipe.pipelines.tasks.self_task` and
:func:`~otpipe.pipelines.tasks.cross_task`, their regions written by :mod:`otpipe.engine.result`.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from otpipe.engine import convergence as _conv
from otpipe.engine import estimate as _estimate
from otpipe.engine import result as _result
from otpipe.engine import run as _run
from otpipe.engine import tiling as _tiling
from otpipe.engine.identity import check_same, fingerprint, versions
from otpipe.engine.interrupt import interruptible
from otpipe.engine.progress import Progress
from otpipe.pipelines.tasks import (
    KERNEL_LOSSES,
    LOSSES,
    RunParams,
    bbox_task,
    cross_task,
    diameter_from_boxes,
    self_task,
)
from otpipe.store.locks import locked

__all__ = ["pairwise", "resolve_run"]

log = logging.getLogger("otpipe.pairwise")


@dataclass
class _Input:
    """A collection (or a selection of one) as the tasks see it: a path and measure indices."""

    path: str
    indices: np.ndarray
    names: np.ndarray
    labels: np.ndarray | None
    content_hash: str
    dim: int
    dtype: str
    shards: list
    sizes: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.indices)

    def fingerprint(self) -> dict:
        sel = hashlib.sha256(np.ascontiguousarray(self.indices, dtype=np.int64).tobytes()).hexdigest()[:16]
        return {"hash": self.content_hash, "n_measures": self.n, "selection": sel}


def _input(obj) -> _Input:
    from otpipe import store

    if isinstance(obj, (str, os.PathLike)):
        if not Path(obj).exists():
            raise FileNotFoundError(f"no collection store at {obj}")
        obj = store.open(obj)
    base = getattr(obj, "_base", None)
    if base is None or not hasattr(obj, "indices"):
        raise ValueError(f"expected a collection store path or otpipe.store Collection, got {type(obj).__name__}")
    idx = np.asarray(obj.indices, dtype=np.int64)
    # per-shard groups of the selected measures (one bounding-box task each)
    shard_of = np.searchsorted(base.shard_offsets, idx, side="right") - 1
    shards = [idx[shard_of == k] for k in np.unique(shard_of)]
    return _Input(
        path=str(Path(base.path).resolve()),
        indices=idx,
        names=np.asarray(obj.names, dtype=object),
        labels=None if obj.labels is None else np.asarray(obj.labels, dtype=object),
        content_hash=base.content_hash,
        dim=base.dim,
        dtype=str(base.dtype),
        shards=shards,
        sizes=np.asarray(base.sizes)[idx],
    )


def resolve_run(collection, other=None, **params):
    """Validate inputs and parameters; return ``(source, target_or_None, RunParams)``.

    Parameters
    ----------
    collection : str or os.PathLike or Collection
        The source collection (a store path, a :class:`otpipe.store.Collection` or a ``select`` view).
    other : str or os.PathLike or Collection, optional
        The target collection (``N x M`` run); it must have the source's dimension.
    **params
        The loss and solver parameters of :func:`pairwise` (``loss``, ``p``, ``blur``, ``reach``, ``diameter``,
        ``scaling``, ``tol``, ``max_iter``, ``backend``, ``cost``, ``dtype``, ``device``); absent ones take
        :func:`pairwise`'s defaults, ``dtype`` ``None``: float64 if a collection is stored in float64, else
        float32. Kernel losses refuse ``reach``, ``tol``, ``max_iter`` and ``diameter``.

    Returns
    -------
    tuple
        ``(source, target, params)``: the inputs as the tasks see them (path, measure indices, names, labels,
        content hash; ``target`` is ``None`` without ``other``) and the :class:`~otpipe.pipelines.tasks.RunParams`.

    Raises
    ------
    FileNotFoundError
        If a store path does not exist.
    ValueError
        With a one-line message on any other bad input or parameter.
    """
    from otpipe.solvers.sinkhorn import SinkhornParams

    loss = params.get("loss", "sinkhorn")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}: use one of {', '.join(LOSSES)}")
    src = _input(collection)
    tgt = None if other is None else _input(other)
    if tgt is not None and tgt.dim != src.dim:
        raise ValueError(f"dimension mismatch: {src.path} has D = {src.dim}, {tgt.path} has D = {tgt.dim}")
    if loss in KERNEL_LOSSES:
        for k in ("reach", "tol", "max_iter", "diameter"):
            if params.get(k) is not None:
                raise ValueError(f"--{k.replace('_', '-')} applies to loss 'sinkhorn' only, not {loss!r}")
    prm = SinkhornParams.make(
        params.get("p", 2.0),
        params.get("blur", 0.05),
        params.get("reach"),
        params.get("diameter"),
        params.get("scaling", 0.5),
        params.get("tol"),
        params.get("max_iter"),
        params.get("backend", "auto"),
        params.get("cost"),
    )
    if loss == "sinkhorn":
        from otpipe.solvers.loop import check_mode

        check_mode(prm)  # p > 2 needs tol: refused before any output is made
    from otpipe.geometry.backends import check_name

    check_name(prm.backend)  # the device is the workers': checked once they are known
    dtype = params.get("dtype")
    if dtype is None:
        dtype = "float64" if "float64" in (src.dtype, tgt.dtype if tgt else src.dtype) else "float32"
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    device = params.get("device") or "auto"
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    rp = RunParams(
        loss=loss,
        p=prm.p,
        blur=prm.blur,
        reach=prm.reach,
        scaling=prm.scaling,
        tol=prm.tol,
        max_iter=prm.max_iter,
        backend=prm.backend,
        cost=params.get("cost"),
        diameter=prm.diameter,
        dtype=dtype,
        device=device,
    )
    return src, tgt, rp


def _spread(n: int, k: int, offset: int = 0) -> np.ndarray:
    """``k`` positions spread evenly over ``0..n-1`` (shifted by ``offset``, modulo ``n``)."""
    return (np.linspace(0, n - 1, min(k, n)).astype(int) + offset) % n


def _seconds_per_solve(src: _Input, tgt: _Input | None, rp: RunParams, k: int = 3) -> float:
    """Seconds per solve of the run, timed here on one tile of up to ``k x k`` sampled pairs and
    scaled from the sampled sizes to the mean size (a solve costs ~ ``n_i m_j``)."""
    from dataclasses import replace

    tgt_ = src if tgt is None else tgt
    r = _spread(src.n, k)
    c = _spread(tgt_.n, k, offset=1 if tgt is None and src.n > 1 else 0)
    rows, cols = src.indices[r], tgt_.indices[c]
    if rp.self_terms and rp.diameter is None:
        boxes = [bbox_task(src.path, rows), bbox_task(tgt_.path, cols)]
        rp = replace(rp, diameter=diameter_from_boxes(boxes, rp.blur))
    kw = dict(self_rows=np.zeros(len(rows)), self_cols=np.zeros(len(cols))) if rp.self_terms else {}
    seconds = _estimate.timed(lambda: cross_task(src.path, rows, tgt_.path, cols, rp, **kw)) / (len(rows) * len(cols))
    if src.sizes is not None and tgt_.sizes is not None:
        sampled = float(np.mean(np.outer(src.sizes[r], tgt_.sizes[c])))
        seconds *= float(np.mean(src.sizes)) * float(np.mean(tgt_.sizes)) / max(sampled, 1.0)
    return seconds


def _fingerprint(src: _Input, tgt: _Input | None, rp: RunParams) -> tuple[str, dict]:
    d = rp.as_dict()
    d.pop("gpu")  # where it ran changes nothing but rounding: a CPU run resumes on GPUs and back
    d.pop("device")
    content = {
        "parameters": d,
        "source": src.fingerprint(),
        "target": None if tgt is None else tgt.fingerprint(),
    }
    if rp.reach is not None and rp.self_terms:
        # the unbalanced S carries the mass term: stores of runs without it are not resumed with it
        content["mass_term"] = "eps/2 (m(a_i) - m(b_j))^2"
    return fingerprint(content, canonical=False)


def _check_resume(out: Path, fp: str, content: dict, tile: int | None) -> dict:
    attrs = _result.pairwise_attrs(out)
    check_same(out, attrs, fp, content)
    if tile is not None and int(tile) != int(attrs["tile"]):
        raise ValueError(f"cannot resume {out}: it uses tile {attrs['tile']}, not {tile}")
    return attrs


def _check_range(rp: RunParams) -> None:
    """Costs up to ``diameter^p`` and the temperatures must fit the compute dtype (else ``ValueError``)."""
    import torch

    from otpipe.geometry.costs import check_range, make_cost

    check_range(
        getattr(torch, rp.dtype), make_cost(rp.p, rp.cost), extent=rp.diameter, diameter=rp.diameter,
        blur=rp.blur, reach=rp.reach,
    )


def _check_backend(rp: RunParams) -> None:
    """An explicit backend must serve the tasks' device and dtype (``--backend cpu --gpus``: ``ValueError``)."""
    import torch

    from otpipe.geometry.backends import choose_backend

    if rp.backend != "auto":
        choose_backend(rp.backend, 1, 1, 1, device=torch.device(rp.device).type, dtype=getattr(torch, rp.dtype))


def _verify_inputs(src: _Input, tgt: _Input | None) -> None:
    """Re-hash the input collections (``--verify``): ``ValueError`` naming the first measure that changed."""
    from otpipe import store

    for inp in (src, tgt):
        if inp is None:
            continue
        c = store.open(inp.path)
        if c.content_hash != inp.content_hash:
            raise ValueError(f"{inp.path}: changed while the run was being prepared (content hash {c.content_hash}, was {inp.content_hash})")
        t0 = time.perf_counter()
        c.verify(raise_on_error=True)
        log.info("verified %s: %d measures match %s (%.1f s)", inp.path, len(c), c.content_hash, time.perf_counter() - t0)


def _with_worker(fn, *args, **kw):
    """Run a task and tell which worker ran it (for the log of what ran where)."""
    try:
        from distributed import get_worker

        where = get_worker().address
    except (ImportError, ValueError):
        where = "local"
    return where, fn(*args, **kw)


@locked("out")  # one writer per result store; --resume/--overwrite included
def pairwise(
    collection,
    other=None,
    *,
    loss: str = "sinkhorn",
    p: float = 2.0,
    blur: float = 0.05,
    reach: float | None = None,
    scaling: float = 0.5,
    tol: float | None = None,
    max_iter: int | None = None,
    backend: str = "auto",
    cost: str | None = None,
    diameter: float | None = None,
    dtype: str | None = None,
    device: str = "auto",
    client=None,
    cluster=None,
    out=None,
    tile: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    dry_run: bool = False,
    verify: bool = False,
    estimate: bool = True,
):
    """Pairwise matrix ``S[i, j] = loss(a_i, b_j)`` of a collection (``N x N``) or two (``N x M``).

    Sinkhorn: ``S_eps(a, b) = OT_eps(a, b) - OT_eps(a, a)/2 - OT_eps(b, b)/2`` (``+ eps/2 (m(a) - m(b))^2``
    with ``reach``: the unbalanced mass term) with each self term
    solved once per measure; every solve uses one eps-schedule, from ``diameter`` (default: the
    bounding-box diagonal of all points of both collections, recorded in ``attrs["diameter"]``),
    so ``S[i, j]`` equals ``otpipe.sinkhorn_divergence(x_i, x_j, a_i, a_j, diameter=D, ...)``.
    Balanced runs (``reach=None``) normalise each measure's weights to total mass 1.

    Parameters
    ----------
    collection, other : str, path or :class:`otpipe.store.Collection` (or a ``select`` view)
        Source collection; ``other`` (optional) the target collection (``N x M`` run).
    loss : {"sinkhorn", "energy", "gaussian", "laplacian", "hausdorff"}
        Kernel losses use ``blur`` as the bandwidth (gaussian/laplacian) or temperature (hausdorff).
    p, blur, reach, scaling, tol, max_iter, backend, cost, diameter
        As in :func:`otpipe.solve`. In converged mode (``tol``) the values of a padded batch
        depend on its other members up to ``tol``.
    dtype : {"float32", "float64"}, optional
        Compute dtype (default: float64 if a collection is stored in float64, else float32).
    device : {"auto", "cpu", "cuda"}
        Where the tasks compute: ``auto`` is ``cuda`` when the cluster has workers with the ``GPU`` resource
        (``--gpus``, ``--cluster slurm --gpus``: every task then requests ``GPU=1``, runs on such a worker
        and solves large padded batches on its GPU with the Triton kernels), else ``cpu``.
    client : distributed.Client, optional
        Use this client; otherwise one is opened from ``cluster``.
    cluster : otpipe.engine.cluster.ClusterSpec, optional
        Where to run without ``client`` (default: an embedded ``LocalCluster``).
    out : path, optional
        Result store (Zarr). Without it the result is computed in a temporary store and returned in memory.
    tile : int, optional
        Tile side (pairs per task = tile^2); default from the matrix size and worker count.
    resume : bool
        Continue the run stored at ``out`` (same parameters and inputs): finished tiles are kept.
    overwrite : bool
        Replace an existing result at ``out``.
    progress : bool
        Progress on stderr (pairs, tiles, rate, ETA): a bar on a terminal, a line every 5% or
        30 s otherwise (:class:`~otpipe.engine.progress.Progress`).
    dry_run : bool
        Return the plan summary (pairs, tiles, solves) without computing anything.
    verify : bool
        Re-hash every measure of the input collection(s) against their recorded digests and
        content hash before computing (reads all the data once). The structural checks of
        :func:`otpipe.store.open` always run; ``resume`` always compares the content hashes
        recorded in the result with the collections' (a changed input is refused).
    estimate : bool
        With ``dry_run``: also time a few pair solves here and add the cost estimate
        (``estimated_seconds``, ``large``; :mod:`otpipe.engine.estimate`).

    Returns
    -------
    xarray.Dataset
        The result (see :mod:`otpipe.engine.result`) without its checkpoint bookkeeping;
        ``attrs["tiles_computed"]`` counts the tiles computed by this call;
        ``attrs["marginal_error_median"|"marginal_error_max"|"convergence_warning"]`` summarise the
        convergence of the cross solves (a :class:`~otpipe.engine.convergence.ConvergenceWarning`
        is issued above the thresholds of :mod:`otpipe.engine.convergence`). With ``dry_run``: a dict.

    Raises
    ------
    otpipe.engine.interrupt.Interrupted
        Ctrl-C (SIGINT): the finished tiles are kept in ``out``; ``resume=True`` continues.
    """
    from otpipe.engine.cluster import ClusterSpec, open_client

    src, tgt, rp = resolve_run(
        collection, other, loss=loss, p=p, blur=blur, reach=reach, scaling=scaling, tol=tol,
        max_iter=max_iter, backend=backend, cost=cost, diameter=diameter, dtype=dtype, device=device,
    )
    fp, content = _fingerprint(src, tgt, rp)
    if verify:
        _verify_inputs(src, tgt)
    spec = cluster if cluster is not None else ClusterSpec()
    stored = None
    if out is not None:
        out = Path(out)
        if out.exists() and (resume or not dry_run):
            if resume:
                stored = _check_resume(out, fp, content, tile)
            elif not overwrite:
                raise FileExistsError(f"{out} exists: pass --overwrite to replace it or --resume to continue it")
            elif not _result.is_result(out) and (not out.is_dir() or any(out.iterdir())):
                raise FileExistsError(f"{out} exists and is not an otpipe result: refusing to overwrite it")
    if resume and overwrite:
        raise ValueError("give either --resume or --overwrite, not both")
    if dry_run:
        t = int(stored["tile"]) if stored else tile
        n_workers = _run.worker_count(spec, client)
        pl = _tiling.make_tiling(src.n, None if tgt is None else tgt.n, tile=t, n_workers=n_workers, gpu=bool(spec.gpus),
                                 pair_cost=_pair_cost(src, tgt, rp, bool(spec.gpus)))
        summary = pl.summary(rp.self_terms)
        if stored is not None:
            done = _result.load_state(out)["tile_done"][: len(pl.tiles)]
            summary["tiles_done"] = int(done.sum())
        if estimate:
            units = summary["pairs"] + summary["self_terms"]
            if stored is not None:
                units = units * (1.0 - summary["tiles_done"] / max(1, summary["tiles"]))
            summary.update(_estimate.summary(units, _seconds_per_solve(src, tgt, rp), n_workers, "solve"))
        return summary

    if _run.already_complete(out, stored, log):
        ds = _result.open_result(out)
        ds.attrs.update(tiles_computed=0, tiles_resumed=int(stored["n_tiles"]), self_tasks_computed=0, pairs_computed=0, seconds=0.0)
        return ds
    with _run.temporary_store(out, prefix="otpipe-pairwise-", name="result.zarr") as path:
        with open_client(spec, client=client) as c:
            ds = _guarded(c, src, tgt, rp, fp, content, path, tile, stored, overwrite, progress)
            return ds.load() if out is None else ds


def _guarded(c, src, tgt, rp, fp, content, out: Path, tile, stored, overwrite, progress):
    """The run proper; Ctrl-C keeps the finished tiles and raises :class:`~otpipe.engine.interrupt.Interrupted`."""
    state = {"created": stored is not None, "done": 0, "total": None}

    def saved():
        return (state["done"], state["total"]) if state["created"] else None

    with interruptible(out, what="tiles", first="tile", saved=saved) as g:
        return _run_tiles(c, src, tgt, rp, fp, content, out, tile, stored, overwrite, progress, g, state)


def _convergence(out: Path, symmetric: bool, tol: float | None = None) -> dict:
    """Summary of the cross solves' marginal errors (``i < j`` for a symmetric run), read from the store."""
    import zarr

    g = zarr.open_group(str(out), mode="r", use_consolidated=False)
    arr = g["marginal_error"]
    n, m = arr.shape
    parts = []
    step = max(1, 2**22 // max(1, m))  # rows per read: ~32 MiB
    for r0 in range(0, n, step):
        block = np.asarray(arr[r0 : r0 + step], dtype=np.float64)
        if symmetric:
            rows = np.arange(r0, r0 + block.shape[0])[:, None]
            block = np.where(np.arange(m)[None, :] > rows, block, np.nan)
        parts.append(block[np.isfinite(block)])
    return _conv.summarise(np.concatenate(parts) if parts else np.array([]), tol)


@dataclass
class _Tiles:
    """What the phases of one pairwise run share: the client, the Ctrl-C guard, the inputs, the tiling of its keys."""

    c: object
    g: object
    src: _Input
    tgt: _Input | None
    rp: RunParams
    out: Path
    pl: object
    gpu: bool
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    where: dict = field(default_factory=dict)

    @property
    def symmetric(self) -> bool:
        return self.tgt is None

    @property
    def tgt_(self) -> _Input:
        return self.src if self.tgt is None else self.tgt

    @property
    def resources(self) -> dict | None:
        return {"GPU": 1} if self.gpu else None

    def submit(self, kind: str, key, fn, *args, **kw):
        """The task of one key on the workers (requesting a GPU on GPU clusters), telling where it ran."""
        return self.c.submit(_with_worker, fn, *args, key=f"otpipe-{kind}-{key}-{self.token}",
                             resources=self.resources, **kw)

    def ran(self, where: str) -> None:
        self.where[where] = self.where.get(where, 0) + 1


#: temperatures assumed by the tile cost model before the run's diameter is known
_GUESS_TEMPERATURES = 12


def _pair_cost(src: _Input, tgt: _Input | None, rp: RunParams, gpu: bool) -> float:
    """Estimated seconds of one pair's solve (:func:`otpipe.engine.tiling.pair_seconds`), for the tile size."""
    from otpipe.solvers.loop import n_temperatures

    other = src if tgt is None else tgt
    n = float(np.mean(src.sizes)) if src.sizes is not None and len(src.sizes) else 1.0
    m = float(np.mean(other.sizes)) if other.sizes is not None and len(other.sizes) else 1.0
    if not rp.self_terms:
        k = 0  # a kernel loss: a few passes, no eps-scaling
    elif rp.diameter is not None:
        k = n_temperatures(rp.diameter, rp.blur, rp.scaling)
    else:
        k = _GUESS_TEMPERATURES
    return _tiling.pair_seconds(n, m, src.dim, k, converging=rp.tol is not None, gpu=gpu)


def _layout(c, src, tgt, rp, tile, stored):
    """``(run parameters for the workers' device, GPU workers?, the tiling: tiles and self-term chunks)``."""
    from dataclasses import replace

    workers = c.scheduler_info().get("workers", {})
    gpu = any(w.get("resources", {}).get("GPU") for w in workers.values())
    device = rp.device if rp.device != "auto" else "cuda" if gpu else "cpu"
    rp = replace(rp, gpu=gpu, device=device)
    _check_backend(rp)
    symmetric = tgt is None
    if stored is not None:
        tile = int(stored["tile"])
    pl = _tiling.make_tiling(src.n, None if symmetric else tgt.n, tile=tile, n_workers=max(1, len(workers)), gpu=gpu,
                             pair_cost=_pair_cost(src, tgt, rp, gpu))
    log.info(
        "tiling: %d x %d %s, tile %d: %d tiles, %d pairs, %d self terms",
        pl.n_source, pl.n_target, "symmetric" if symmetric else "cross", pl.tile, len(pl.tiles), pl.n_pairs,
        pl.n_self if rp.self_terms else 0,
    )
    return rp, gpu, pl


def _diameter(r: _Tiles) -> float:
    """The run's diameter: the bounding box of every point of both collections, one task per shard."""
    groups = [(r.src.path, s) for s in r.src.shards] + ([] if r.symmetric else [(r.tgt.path, s) for s in r.tgt.shards])
    futs = [r.c.submit(bbox_task, path, idx, key=f"otpipe-bbox-{k}-{r.token}", resources=r.resources)
            for k, (path, idx) in enumerate(groups)]
    return diameter_from_boxes(r.c.gather(futs), r.rp.blur)


def _create(r: _Tiles, fp: str, content: dict, overwrite: bool) -> None:
    """The empty result store (:func:`otpipe.engine.result.create`) with the run's attributes."""
    src, tgt, rp = r.src, r.tgt, r.rp
    attrs = {
        "fingerprint": fp,
        "run": content,
        "parameters": rp.as_dict(),
        "diameter": rp.diameter,
        "symmetric": r.symmetric,
        "loss": rp.loss,
        "versions": versions(),
        "inputs": {
            "source": {"path": src.path, **src.fingerprint()},
            "target": None if r.symmetric else {"path": tgt.path, **tgt.fingerprint()},
        },
        "divergence_formula": (
            ("OT_eps(a_i,b_j) - (OT_eps(a_i,a_i) + OT_eps(b_j,b_j))/2"
             + (" + eps/2 (m(a_i) - m(b_j))^2" if rp.reach is not None else ""))
            if rp.self_terms else f"{rp.loss} loss 1/2<a-b,K(a-b)>"
        ),
    }
    _result.create(
        r.out,
        names_source=src.names,
        names_target=r.tgt_.names,
        labels_source=src.labels,
        labels_target=r.tgt_.labels,
        tile=r.pl.tile,
        n_tiles=len(r.pl.tiles),
        n_self_source=len(r.pl.self_chunks_source),
        n_self_target=len(r.pl.self_chunks_target),
        attrs=attrs,
        overwrite=overwrite,
    )


def _self_futures(r: _Tiles, state: dict) -> dict:
    """Phase 2: the self terms not stored yet, one key per chunk of measures: ``{future: (which, k, r0, r1)}``."""
    keys = [(which, k, r0, r1)
            for which, chunks in [("source", r.pl.self_chunks_source)]
            + ([] if r.symmetric else [("target", r.pl.self_chunks_target)])
            for k, (r0, r1) in enumerate(chunks) if not state[f"self_done_{which}"][k]]
    inputs = {"source": r.src, "target": r.tgt}
    return {r.submit(f"self-{which}", k, self_task, inputs[which].path, inputs[which].indices[r0:r1], r.rp):
            (which, k, r0, r1) for which, k, r0, r1 in keys}


def _tile_task(src_path, rows, tgt_path, cols, rp, *, diagonal, self_rows=None, self_cols=None):
    """:func:`cross_task` with self terms given as arrays or as the results of their self tasks (futures that
    Dask resolves on the worker: a tile starts as soon as its two chunks of self terms exist, no round trip
    through the client between the phases)."""
    def values(v):
        return v[1]["value"] if isinstance(v, tuple) else v

    return cross_task(src_path, rows, tgt_path, cols, rp, diagonal=diagonal, self_rows=values(self_rows),
                      self_cols=values(self_cols))


def _compute(r: _Tiles, state: dict, run: dict, progress: bool) -> tuple[int, int, int, int]:
    """Phases 2 and 3 in one submission: the missing self terms, then the tiles not stored yet (each depends on
    the self-term chunks of its rows and columns); every result is written as it finishes. Returns ``(self tasks
    computed, tiles computed now, tiles done before, pairs done before)``."""
    pl, rp = r.pl, r.rp
    self_futs = _self_futures(r, state) if rp.self_terms else {}
    by_chunk = {(which, k): f for f, (which, k, _, _) in self_futs.items()}
    if self_futs:
        log.info("self terms: %d tasks", len(self_futs))
    tile_done = state["tile_done"]
    pending = [t for t in pl.tiles if not tile_done[t.index]]
    n_done_before = len(pl.tiles) - len(pending)
    pairs_before = sum(t.n_pairs for t in pl.tiles if tile_done[t.index])
    log.info("tiles: %d to compute, %d already done", len(pending), n_done_before)
    run["done"], run["total"] = n_done_before, len(pl.tiles)
    bar = Progress(pl.n_pairs, initial=pairs_before, unit="pair", desc="distances", enabled=progress)
    bar.set_postfix(f"tiles {n_done_before}/{len(pl.tiles)}")
    ss, st = state["self_source"], state["self_target"]
    side = "source" if r.symmetric else "target"

    def selfs(which, k, lo, hi, stored):
        return by_chunk.get((which, k), stored[lo:hi])

    futures = dict(self_futs)
    for t in pending:
        kw = dict(diagonal=t.diagonal)
        if rp.self_terms:
            kw.update(self_rows=selfs("source", t.r0 // pl.tile, t.r0, t.r1, ss),
                      self_cols=selfs(side, t.c0 // pl.tile, t.c0, t.c1, ss if r.symmetric else st))
        futures[r.submit("tile", t.index, _tile_task, r.src.path, r.src.indices[t.r0 : t.r1], r.tgt_.path,
                         r.tgt_.indices[t.c0 : t.c1], rp, **kw)] = t
    computed = 0

    def write(key, done):
        nonlocal computed
        where, res = done
        r.ran(where)
        if isinstance(key, tuple):  # a chunk of self terms
            which, k, r0, r1 = key
            _result.write_self(r.out, which, k, r0, r1, res["value"], mirror=r.symmetric)
            return
        t = key
        _result.write_tile(r.out, t, res, r.symmetric)
        computed += 1
        run["done"] = n_done_before + computed
        log.debug("tile %d (%d:%d x %d:%d, %d pairs) from %s", t.index, t.r0, t.r1, t.c0, t.c1, t.n_pairs, where)
        bar.set_postfix(f"tiles {n_done_before + computed}/{len(pl.tiles)}")
        bar.update(t.n_pairs)

    try:
        if futures:
            _run.execute(r.g, futures, write)
    finally:
        bar.close()
    return len(self_futs), computed, n_done_before, pairs_before


def _run_tiles(c, src, tgt, rp, fp, content, out: Path, tile, stored, overwrite, progress, g, run):
    """Tile the matrix, make (or resume) the store, compute the self terms then the tiles, then mark the result complete."""
    from dataclasses import replace

    t0 = time.perf_counter()
    rp, gpu, pl = _layout(c, src, tgt, rp, tile, stored)
    r = _Tiles(c, g, src, tgt, rp, out, pl, gpu)
    if stored is not None:
        if rp.self_terms and rp.diameter is None:
            r.rp = replace(rp, diameter=float(stored["diameter"]))
        log.info("resuming %s", out)
    else:
        if rp.self_terms and rp.diameter is None:
            r.rp = replace(rp, diameter=_diameter(r))
            log.info("diameter of the run (bounding box of all points): %.6g", r.rp.diameter)
            _check_range(r.rp)  # before the result store exists: a one-line error, nothing written
        _create(r, fp, content, overwrite)
        run["created"] = True
    rp = r.rp
    state = _result.load_state(out)
    self_computed, computed, n_done_before, pairs_before = _compute(r, state, run, progress)
    _complete(r, t0, self_computed, computed, n_done_before, pairs_before)
    return _result.open_result(out)


def _complete(r: _Tiles, t0: float, self_computed: int, computed: int, n_done_before: int, pairs_before: int) -> None:
    """The assembly: the convergence summary and the run's counts in the attrs, then ``complete = True``."""
    out, rp, pl = r.out, r.rp, r.pl
    elapsed = time.perf_counter() - t0
    pairs_now = pl.n_pairs - pairs_before
    log.info("tasks per worker: %s", ", ".join(f"{w}: {n}" for w, n in sorted(r.where.items())) or "none")
    conv = {}
    if rp.self_terms:
        summ = _convergence(out, r.symmetric, rp.tol)
        remedy = ("use --tol 1e-3 (Python: tol=1e-3) for converged solves, or a larger --blur"
                  if rp.tol is None else "raise --max-iter or use a larger --blur"
                  + (", or --dtype float64 (float32 potentials stall at their rounding floor at small blur)"
                     if rp.dtype == "float32" else ""))
        name = "this run" if _run.is_temporary(out) else str(out)
        conv = _conv.result_attrs(summ, what=f"the Sinkhorn solves of {name}", remedy=remedy)
    with r.g.critical():
        _result.mark_complete(
            out,
            tiles_computed=computed,
            tiles_resumed=n_done_before,
            self_tasks_computed=self_computed,
            pairs_computed=pairs_now,
            seconds=round(elapsed, 3),
            workers={w: n for w, n in r.where.items()},
            gpu=r.gpu,
            **conv,
        )
    if conv:
        _conv.warn(conv["convergence_warning"])
    log.info(
        "done: %d tiles computed now, %d from a previous run; %d pairs in %.1f s (%.1f pairs/s) -> %s",
        computed, n_done_before, pairs_now, elapsed, pairs_now / elapsed if elapsed > 0 else float("nan"), out,
    )
