"""Where the work runs: one context manager that yields a ``distributed.Client``.

* default: an embedded ``LocalCluster`` bound to 127.0.0.1 (dashboard on 127.0.0.1 too, or off);
* ``scheduler="tcp://host:8786"`` or ``scheduler_file=...``: an existing Dask cluster;
* ``cluster="slurm" | "pbs"``: dask-jobqueue, ``jobs`` jobs of ``cores``/``memory`` each;
* ``gpus=True``: dask-cuda's ``LocalCUDACluster`` (one worker per GPU, resource ``GPU=1``).

Used by every distributed command (distances, barycenter, two-sample, complexity); their shared
Click options live in :mod:`otpipe.cli._common`.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Iterator

__all__ = ["ClusterSpec", "open_client", "describe", "job_script"]

log = logging.getLogger("otpipe.cluster")


@dataclass
class ClusterSpec:
    """How to get a Dask client (see the module docstring)."""

    scheduler: str | None = None
    scheduler_file: str | None = None
    n_workers: int | None = None
    threads_per_worker: int | None = 1
    memory_limit: str | None = "auto"
    cluster: str | None = None  # None/"local", "slurm", "pbs"
    gpus: bool = False
    jobs: int = 1
    cores: int | None = None
    memory: str | None = None
    queue: str | None = None
    walltime: str | None = None
    account: str | None = None
    dashboard: bool = False
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        given = [k for k in ("scheduler", "scheduler_file") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError("give either --scheduler or --scheduler-file, not both")
        if given and (self.cluster not in (None, "local") or self.gpus):
            raise ValueError("--scheduler/--scheduler-file connect to an existing cluster: drop --cluster/--gpus")
        if self.cluster not in (None, "local", "slurm", "pbs"):
            raise ValueError(f"unknown --cluster {self.cluster!r}: use local, slurm or pbs")
        if self.n_workers is not None and self.n_workers < 1:
            raise ValueError(f"--n-workers must be >= 1, got {self.n_workers}")
        if self.threads_per_worker is not None and self.threads_per_worker < 1:
            raise ValueError(f"--threads-per-worker must be >= 1, got {self.threads_per_worker}")
        if self.scheduler_file and not os.path.exists(self.scheduler_file):
            raise FileNotFoundError(f"scheduler file not found: {self.scheduler_file}")


def _local(spec: ClusterSpec):
    from distributed import LocalCluster

    n = spec.n_workers or max(1, min(os.cpu_count() or 1, 4))
    return LocalCluster(
        n_workers=n,
        threads_per_worker=spec.threads_per_worker or 1,
        processes=True,
        host="127.0.0.1",
        # None would mean the default ':8787' on every interface: always loopback, random port
        dashboard_address="127.0.0.1:0",
        memory_limit=spec.memory_limit if spec.memory_limit is not None else "auto",
        **spec.extra,
    )


def _cuda(spec: ClusterSpec):
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError as exc:
        raise ValueError("--gpus needs dask-cuda (pip install 'otpipe[gpu]')") from exc
    return LocalCUDACluster(
        ip="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        resources={"GPU": 1},
        threads_per_worker=spec.threads_per_worker or 1,
        **spec.extra,
    )


def _jobqueue(spec: ClusterSpec, scale: bool = True):
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ValueError(f"--cluster {spec.cluster} needs dask-jobqueue (pip install 'otpipe[cluster]')") from exc
    cls = dask_jobqueue.SLURMCluster if spec.cluster == "slurm" else dask_jobqueue.PBSCluster
    kw = dict(cores=spec.cores or 1, memory=spec.memory or "4GB", processes=1)
    for k in ("queue", "walltime", "account"):
        if getattr(spec, k):
            kw[k] = getattr(spec, k)
    if spec.gpus:
        kw["worker_extra_args"] = ["--resources", "GPU=1"]
    kw.update(spec.extra)
    cluster = cls(**kw)
    if scale:
        cluster.scale(jobs=spec.jobs)
    return cluster


def job_script(spec: ClusterSpec) -> str:
    """The batch script that ``--cluster slurm|pbs`` would submit (nothing is submitted)."""
    spec.validate()
    if spec.cluster not in ("slurm", "pbs"):
        raise ValueError("job_script needs --cluster slurm or pbs")
    cluster = _jobqueue(spec, scale=False)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def describe(client) -> str:
    """One line: where the work runs (scheduler address, workers, threads, GPUs)."""
    info = client.scheduler_info()
    workers = info.get("workers", {})
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    gpus = sum(1 for w in workers.values() if w.get("resources", {}).get("GPU"))
    return f"{info.get('address', '?')}: {len(workers)} workers, {threads} threads" + (f", {gpus} GPU workers" if gpus else "")


@contextlib.contextmanager
def open_client(spec: ClusterSpec | None = None, *, client=None) -> Iterator:
    """Yield a ``distributed.Client`` for ``spec``; clusters started here are closed on exit.

    An existing ``client`` is passed through untouched (and not closed).
    """
    if client is not None:
        yield client
        return
    spec = spec or ClusterSpec()
    spec.validate()
    from distributed import Client

    cluster = None
    if spec.scheduler:
        c = Client(spec.scheduler)
    elif spec.scheduler_file:
        c = Client(scheduler_file=spec.scheduler_file)
    else:
        if spec.cluster in ("slurm", "pbs"):
            cluster = _jobqueue(spec)
        elif spec.gpus:
            cluster = _cuda(spec)
        else:
            cluster = _local(spec)
        c = Client(cluster)
        if spec.cluster in ("slurm", "pbs"):
            c.wait_for_workers(1)
    log.info("dask: %s", describe(c))
    try:
        yield c
    finally:
        c.close()
        if cluster is not None:
            cluster.close()
