"""Where the work runs: one context manager that yields a ``distributed.Client``.

* default: an embedded ``LocalCluster`` bound to 127.0.0.1 (dashboard on 127.0.0.1 too), plain TCP;
* ``scheduler="tcp://host:8786"`` / ``"tls://host:8786"`` (with ``tls_ca_file``, ``tls_cert``,
  ``tls_key``) or ``scheduler_file=...``: an existing Dask cluster;
* ``cluster="slurm" | "pbs"``: dask-jobqueue, ``jobs`` jobs of ``cores``/``memory`` each, over TLS
  with temporary certificates (``tls=False``: plain TCP, warned); the scheduler listens on
  ``interface`` (default: every interface; its dashboard on 127.0.0.1 only); the job logs and the
  workers' certificate files (mode 0600, deleted at the end) go to ``job_dir`` (``OUT.jobs`` beside
  the command's output; it must be on a filesystem the compute nodes see);
* ``gpus=True``: dask-cuda's ``LocalCUDACluster`` (one worker per GPU, resource ``GPU=1``), TLS too;
  with ``cluster="slurm"``: each batch job asks for one GPU (``--gres=gpu:1``) and its worker advertises
  ``GPU=1``. The tasks of a run on GPU workers request ``GPU=1`` and compute on the worker's GPU.

A worker lost with its batch job (``scancel``, preemption, node failure) costs nothing but time:
the scheduler gives its tasks to the remaining workers, and a watcher resubmits the lost job so
the cluster keeps ``jobs`` jobs. ``quiet`` silences distributed's logs below ERROR.

Used by every distributed command (distances, barycenter, two-sample, complexity); their shared
Click options live in :mod:`otpipe.cli.options`.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from otpipe.engine import jobs as _jobs
from otpipe.engine import security as _security

__all__ = ["ClusterSpec", "open_client", "describe", "job_script"]

log = logging.getLogger("otpipe.cluster")

_LOOPBACK_DASHBOARD = "127.0.0.1:0"  # None would mean ':8787' on every interface: always loopback, random port


def _silence(spec: ClusterSpec) -> int:
    return logging.ERROR if spec.quiet else logging.WARN


#: loggers of the process that closes an embedded cluster, raised to ERROR while it closes
_CLOSING_LOGGERS = ("distributed.nanny", "distributed.worker", "distributed.core", "distributed.scheduler",
                    "distributed.client", "distributed.deploy")


@contextlib.contextmanager
def _quiet_logs(*names: str):
    """Loggers ``names`` at ERROR within the block (their levels restored after)."""
    old = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, lv in old.items():
            logging.getLogger(n).setLevel(lv)


@dataclass
class ClusterSpec:
    """How to get a Dask client (see the module docstring).

    Parameters
    ----------
    scheduler : str or None, default None
        Address of an existing scheduler (``tcp://host:8786`` or ``tls://host:8786``).
    scheduler_file : str or None, default None
        Scheduler file of an existing cluster (exclusive with ``scheduler``).
    n_workers : int or None, default None
        Workers of the local cluster; ``None``: the CPU count, at most 4.
    threads_per_worker : int or None, default 1
        Threads per worker of a cluster started here.
    memory_limit : str or None, default "auto"
        Memory limit per worker of the local cluster (Dask's syntax; ``None``: ``"auto"``).
    cluster : {None, "local", "slurm", "pbs"}, default None
        Kind of cluster to start (``None``: local).
    gpus : bool, default False
        One worker per GPU (dask-cuda), or one GPU per batch job with ``cluster="slurm"``.
    jobs : int, default 1
        Batch jobs kept running (``slurm``/``pbs``).
    cores : int or None, default None
        Cores per batch job (``None``: 1).
    memory : str or None, default None
        Memory per batch job (``None``: ``"4GB"``).
    queue : str or None, default None
        Batch queue or partition.
    walltime : str or None, default None
        Wall-time limit per batch job.
    account : str or None, default None
        Batch account to charge.
    dashboard : bool, default False
        Print the dashboard's address (and how to reach it).
    tls : bool or None, default None
        ``None``: TLS with temporary certificates for ``slurm``/``pbs``/``gpus``; ``False``: plain TCP (warned).
    tls_ca_file : str or None, default None
        CA certificate of a ``tls://`` scheduler.
    tls_cert : str or None, default None
        Client certificate of a ``tls://`` scheduler.
    tls_key : str or None, default None
        Client key of a ``tls://`` scheduler.
    interface : str or None, default None
        Network interface the scheduler of a ``slurm``/``pbs`` cluster listens on.
    job_dir : str or None, default None
        Folder of the batch jobs' logs and certificate files (``None``: ``./otpipe-jobs``).
    quiet : bool, default False
        Silence distributed's logs below ERROR.
    extra : dict, default {}
        Further keyword arguments of the cluster class (``LocalCluster``, ``LocalCUDACluster``, dask-jobqueue's).
    """

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
    tls: bool | None = None  # None: TLS for slurm/pbs/gpus; False: --no-tls
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    interface: str | None = None
    job_dir: str | None = None
    quiet: bool = False
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Check the combination of settings before anything starts.

        Raises
        ------
        ValueError
            On contradictory or out-of-range settings (both scheduler forms, a scheduler with ``cluster``/``gpus``, an
            unknown cluster, fewer than one worker or thread, TLS files without a scheduler, ``tls=False`` without a
            batch or GPU cluster, a bad interface, a local cluster too large for this machine); the message names the
            option.
        FileNotFoundError
            If ``scheduler_file`` does not exist.
        """
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
        if self.interface and self.cluster not in ("slurm", "pbs"):
            raise ValueError("--interface sets the scheduler's network interface of --cluster slurm/pbs only")
        if (self.tls_ca_file or self.tls_cert or self.tls_key) and not given:
            raise ValueError("--tls-ca-file/--tls-cert/--tls-key are the certificates of a tls:// --scheduler/--scheduler-file")
        if self.tls is False and not (self.cluster in ("slurm", "pbs") or self.gpus):
            raise ValueError("--no-tls applies to --cluster slurm/pbs and --gpus (the local cluster is loopback-only)")
        _security.check_interface(self.interface)
        if not given and self.cluster in (None, "local") and not self.gpus:
            from otpipe.engine.preflight import check_local_size

            check_local_size(self.n_workers, self.threads_per_worker)  # at most 4 threads per core, 256 MiB per worker

    @property
    def wants_tls(self) -> bool:
        """Whether a cluster started here uses TLS (slurm/pbs/gpus unless ``tls=False``)."""
        return self.tls is not False and (self.cluster in ("slurm", "pbs") or self.gpus)


def _local(spec: ClusterSpec):
    from distributed import LocalCluster

    from otpipe.engine.processes import local_processes

    n = spec.n_workers or max(1, min(os.cpu_count() or 1, 4))
    return LocalCluster(
        n_workers=n,
        threads_per_worker=spec.threads_per_worker or 1,
        processes=local_processes(n),
        protocol="tcp://",
        host="127.0.0.1",
        dashboard_address=_LOOPBACK_DASHBOARD,
        memory_limit=spec.memory_limit if spec.memory_limit is not None else "auto",
        silence_logs=_silence(spec),
        **spec.extra,
    )


def _cuda(spec: ClusterSpec):
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError as exc:
        raise ValueError("--gpus needs dask-cuda (pip install 'otpipe[gpu]')") from exc
    kw = dict(protocol="tls", security=_security.temporary("--gpus")) if spec.wants_tls else {}
    if spec.tls is False:
        log.warning(_security.NO_TLS_WARNING)
    return LocalCUDACluster(
        host="127.0.0.1",
        dashboard_address=_LOOPBACK_DASHBOARD,
        resources={"GPU": 1},
        threads_per_worker=spec.threads_per_worker or 1,
        silence_logs=_silence(spec),
        **kw,
        **spec.extra,
    )


def job_dir(spec: ClusterSpec) -> Path:
    """The folder of the batch jobs' logs and certificate files (created, mode 0700, marked as otpipe's)."""
    from otpipe._made import check_replaceable, mark_dir

    d = Path(spec.job_dir) if spec.job_dir else Path.cwd() / "otpipe-jobs"
    if d.exists():
        check_replaceable(d, "the batch jobs' folder")  # write only into a folder otpipe made
    mark_dir(d, "batch jobs")
    os.chmod(d, 0o700)
    return d


def _jobqueue(spec: ClusterSpec, scale: bool = True):
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ValueError(f"--cluster {spec.cluster} needs dask-jobqueue (pip install 'otpipe[cluster]')") from exc
    cls = dask_jobqueue.SLURMCluster if spec.cluster == "slurm" else dask_jobqueue.PBSCluster
    jobs = job_dir(spec)
    scheduler_options = {"dashboard_address": _LOOPBACK_DASHBOARD}
    if spec.interface:
        scheduler_options["interface"] = spec.interface
    kw = dict(cores=spec.cores or 1, memory=spec.memory or "4GB", processes=1, log_directory=str(jobs),
              shared_temp_directory=str(jobs), scheduler_options=scheduler_options, silence_logs=_silence(spec))
    if spec.wants_tls:
        kw["security"] = _security.temporary(f"--cluster {spec.cluster}")
    else:
        log.warning(_security.NO_TLS_WARNING)
    for k in ("queue", "walltime", "account"):
        if getattr(spec, k):
            kw[k] = getattr(spec, k)
    if spec.gpus:
        # one GPU per job, advertised to the scheduler: every task requests GPU=1 (PBS has no portable GPU
        # directive: give it with the site's resource_spec / job_extra_directives in ClusterSpec.extra)
        kw["worker_extra_args"] = ["--resources", "GPU=1"]
        if spec.cluster == "slurm":
            kw["job_extra_directives"] = ["--gres=gpu:1"]
    kw.update(spec.extra)
    cluster = cls(**kw)
    if scale:
        cluster.scale(jobs=spec.jobs)
    return cluster


def job_script(spec: ClusterSpec) -> str:
    """The batch script that ``--cluster slurm|pbs`` would submit (nothing is submitted).

    Parameters
    ----------
    spec : ClusterSpec
        A ``slurm`` or ``pbs`` specification.

    Returns
    -------
    str
        The job script.

    Raises
    ------
    ValueError
        If ``spec`` is invalid or not a batch cluster.
    """
    spec.validate()
    if spec.cluster not in ("slurm", "pbs"):
        raise ValueError("job_script needs --cluster slurm or pbs")
    cluster = _jobqueue(spec, scale=False)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def describe(client) -> str:
    """One line: where the work runs (scheduler address, workers, threads, GPUs).

    Parameters
    ----------
    client : distributed.Client
        A connected client.

    Returns
    -------
    str
        ``"<address>: <n> workers, <t> threads[, <g> GPU workers]"``.
    """
    info = client.scheduler_info()
    workers = info.get("workers", {})
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    gpus = sum(1 for w in workers.values() if w.get("resources", {}).get("GPU"))
    return f"{info.get('address', '?')}: {len(workers)} workers, {threads} threads" + (f", {gpus} GPU workers" if gpus else "")


@contextlib.contextmanager
def open_client(spec: ClusterSpec | None = None, *, client=None) -> Iterator:
    """Yield a ``distributed.Client`` for ``spec``; clusters started here are closed on exit.

    An existing ``client`` is passed through untouched (and not closed).

    Parameters
    ----------
    spec : ClusterSpec or None, default None
        Where to run; ``None``: a local cluster with the defaults.
    client : distributed.Client or None, default None
        An existing client to use instead.

    Yields
    ------
    distributed.Client
        The client.

    Raises
    ------
    ValueError
        If ``spec`` is invalid or names a cluster kind whose package is not installed.
    """
    if client is not None:
        yield client
        return
    spec = spec or ClusterSpec()
    spec.validate()
    from distributed import Client

    cluster = None
    watcher = None
    if spec.scheduler or spec.scheduler_file:
        sec = _security.for_address(spec.scheduler, spec.scheduler_file, spec.tls_ca_file, spec.tls_cert, spec.tls_key)
        from otpipe.engine.preflight import check_scheduler

        check_scheduler(_security.scheduler_address(spec.scheduler, spec.scheduler_file), sec)  # a Dask scheduler there?
        c = Client(spec.scheduler, security=sec) if spec.scheduler else Client(scheduler_file=spec.scheduler_file, security=sec)
    else:
        if spec.cluster in ("slurm", "pbs"):
            cluster = _jobqueue(spec)
        elif spec.gpus:
            cluster = _cuda(spec)
        else:
            cluster = _local(spec)
        c = Client(cluster)
        if spec.cluster in (None, "local"):
            from otpipe.engine.processes import QuietTaskErrors

            c.register_plugin(QuietTaskErrors())  # a failed task: one error line from the client, no worker log
        if getattr(cluster, "processes", False) and spec.cluster in (None, "local") and not spec.gpus:
            from otpipe.engine.processes import IgnoreSigint

            c.register_plugin(IgnoreSigint())  # Ctrl-C: the client saves and closes, workers stay quiet
        if spec.cluster in (None, "local", "slurm", "pbs"):
            from otpipe.engine.processes import ComputeThreads

            c.register_plugin(ComputeThreads())  # compute threads = task slots: no oversubscribed cores
        if spec.cluster in ("slurm", "pbs"):
            c.wait_for_workers(1)
            watcher = _jobs.keep_jobs(cluster, spec.jobs)
    log.info("dask: %s", describe(c))
    if spec.dashboard:
        _print_dashboard(c, remote=spec.cluster in ("slurm", "pbs"), existing=cluster is None)
    try:
        yield c
    finally:
        if watcher is not None:
            watcher.stop()
        # closing a cluster that otpipe started (after Ctrl-C: tasks cancelled, a busy worker killed) is otpipe's
        # business: the nanny's "still alive ... killing" and the like are not the user's
        with _quiet_logs(*((_CLOSING_LOGGERS) if cluster is not None else ())):
            c.close()
            if cluster is not None:
                cluster.close()


def _print_dashboard(c, remote: bool, existing: bool) -> None:
    """Print the dashboard's address on stderr, even with ``--quiet`` (clusters started here: 127.0.0.1 only)."""
    import importlib.util
    import sys

    if existing:
        print(f"otpipe: dask dashboard at {c.dashboard_link}", file=sys.stderr, flush=True)
        return
    port = c.scheduler_info().get("services", {}).get("dashboard")
    if port is None:
        print("otpipe: this scheduler has no dashboard", file=sys.stderr, flush=True)
        return
    note = "" if importlib.util.find_spec("bokeh") else " (its pages need bokeh: pip install bokeh)"
    if remote:
        note += f"; it listens on 127.0.0.1 of this machine only: ssh -L {port}:127.0.0.1:{port} to reach it"
    print(f"otpipe: dask dashboard at http://127.0.0.1:{port}/status{note}", file=sys.stderr, flush=True)
