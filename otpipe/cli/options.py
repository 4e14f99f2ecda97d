"""Options and helpers shared by the ``otpipe`` commands (Click)."""
from __future__ import annotations

import logging
import sys

from otpipe.engine.cluster import ClusterSpec

__all__ = [
    "cluster_options",
    "client_from_options",
    "setup_logging",
    "out_option",
    "json_option",
    "quiet_option",
    "dry_run_option",
    "progress_option",
    "resume_option",
    "overwrite_option",
    "echo_json",
]


class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (not the one of the first command run in this process)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(quiet: bool) -> None:
    """otpipe's log lines on stderr (INFO, or WARNING with ``quiet``); ``quiet`` also silences
    distributed's loggers below ERROR (here and in the workers this command starts)."""
    if quiet:
        _silence_distributed()
    logger = logging.getLogger("otpipe")
    if not any(getattr(h, "_otpipe", False) for h in logger.handlers):
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("otpipe: %(message)s"))
        h._otpipe = True
        logger.addHandler(h)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def _silence_distributed() -> None:
    import dask

    dask.config.set({"logging.distributed": "error"})  # read when distributed is (first) imported
    for name in [n for n in logging.root.manager.loggerDict if n == "distributed" or n.startswith("distributed.")]:
        logging.getLogger(name).setLevel(logging.ERROR)


def cluster_options(f):
    """Click options shared by every distributed command (they fill a :class:`ClusterSpec`)."""
    import click

    opts = [
        click.option("--scheduler", default=None, help="Address of an existing Dask scheduler (tcp://host:8786)."),
        click.option("--scheduler-file", default=None, type=click.Path(), help="Scheduler file of an existing Dask cluster."),
        click.option("--n-workers", type=int, default=None, help="Workers of the embedded LocalCluster (default: cores, at most 4)."),
        click.option("--threads-per-worker", type=int, default=1, show_default=True),
        click.option("--memory-limit", default="auto", show_default=True, help="Per-worker memory limit of the LocalCluster."),
        click.option("--cluster", "cluster_kind", type=click.Choice(["local", "slurm", "pbs"]), default="local", show_default=True),
        click.option("--jobs", type=int, default=1, show_default=True, help="Batch jobs to submit (slurm/pbs)."),
        click.option("--cores", type=int, default=None, help="Cores per batch job (slurm/pbs)."),
        click.option("--memory", default=None, help="Memory per batch job, e.g. 16GB (slurm/pbs)."),
        click.option("--queue", default=None, help="Batch queue/partition (slurm/pbs)."),
        click.option("--walltime", default=None, help="Batch job wall time (slurm/pbs)."),
        click.option("--gpus", is_flag=True, help="One worker per GPU (dask-cuda); GPU tasks request the GPU resource."),
        click.option("--dashboard", is_flag=True, help="Print the address of the Dask dashboard (always on 127.0.0.1)."),
        click.option("--no-tls", is_flag=True,
                     help="slurm/pbs/--gpus: plain TCP instead of TLS with temporary certificates (trusted networks only)."),
        click.option("--tls-ca-file", type=click.Path(dir_okay=False), default=None, help="CA certificate of a tls:// --scheduler."),
        click.option("--tls-cert", type=click.Path(dir_okay=False), default=None, help="Client certificate for a tls:// --scheduler."),
        click.option("--tls-key", type=click.Path(dir_okay=False), default=None,
                     help="Client private key for a tls:// --scheduler (if not inside --tls-cert)."),
        click.option("--interface", default=None,
                     help="slurm/pbs: network interface the scheduler listens on (e.g. ib0; default: all)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def client_from_options(kw: dict) -> ClusterSpec:
    """Pop the :func:`cluster_options` values out of a Click ``kwargs`` dict into a :class:`ClusterSpec`.

    From the running command's other parameters (Click context): the batch jobs' folder is
    ``OUT.jobs`` beside ``--out``, and ``--quiet`` silences distributed's logs below ERROR. The spec
    is validated here (:meth:`ClusterSpec.validate`), so that ``--dry-run`` refuses what the run would.
    """
    import click

    ctx = click.get_current_context(silent=True)
    params = ctx.params if ctx is not None else {}
    out = params.get("out")
    spec = ClusterSpec(
        scheduler=kw.pop("scheduler", None),
        scheduler_file=kw.pop("scheduler_file", None),
        n_workers=kw.pop("n_workers", None),
        threads_per_worker=kw.pop("threads_per_worker", 1),
        memory_limit=kw.pop("memory_limit", "auto"),
        cluster=kw.pop("cluster_kind", "local"),
        jobs=kw.pop("jobs", 1),
        cores=kw.pop("cores", None),
        memory=kw.pop("memory", None),
        queue=kw.pop("queue", None),
        walltime=kw.pop("walltime", None),
        gpus=kw.pop("gpus", False),
        dashboard=kw.pop("dashboard", False),
        tls=False if kw.pop("no_tls", False) else None,
        tls_ca_file=kw.pop("tls_ca_file", None),
        tls_cert=kw.pop("tls_cert", None),
        tls_key=kw.pop("tls_key", None),
        interface=kw.pop("interface", None),
        job_dir=f"{str(out).rstrip('/')}.jobs" if out else None,
        quiet=bool(params.get("quiet", False)),
    )
    spec.validate()  # bad cluster options (e.g. more workers than this machine runs) fail --dry-run too
    return spec


# --------------------------------------------------------------------------------------------
# the options every command spells the same way: -o/--out, --json, -q/--quiet, --dry-run, ...
# --------------------------------------------------------------------------------------------


def out_option(help: str, *, required: bool = True, file_okay: bool = True, dir_okay: bool = True):
    """``-o/--out PATH``: where the command writes its result."""
    import click

    return click.option("--out", "-o", "out", required=required, default=None,
                        type=click.Path(file_okay=file_okay, dir_okay=dir_okay), help=help)


def json_option(help: str = "Print a JSON summary on stdout (instead of text)."):
    """``--json``: a machine-readable summary on stdout (``as_json``)."""
    import click

    return click.option("--json", "as_json", is_flag=True, help=help)


def quiet_option(f):
    """``-q/--quiet``: only warnings and errors on stderr, no progress, no summary text."""
    import click

    return click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr (no progress).")(f)


def dry_run_option(help: str = "Print the plan (and its cost estimate) and exit; compute and write nothing."):
    """``--dry-run``: print what would be done and exit."""
    import click

    return click.option("--dry-run", is_flag=True, help=help)


def progress_option(f):
    """``--no-progress``: no progress bar / progress lines on stderr."""
    import click

    return click.option("--no-progress", is_flag=True,
                        help="No progress (default: a bar on a terminal, a line every 5% or 30 s in logs).")(f)


def resume_option(f):
    """``--resume``: continue the run stored at ``--out`` (finished work is kept)."""
    import click

    return click.option("--resume", is_flag=True,
                        help="Continue the run stored at --out (same parameters and inputs; finished work is kept).")(f)


def overwrite_option(f):
    """``--overwrite``: replace an existing result at ``--out``."""
    import click

    return click.option("--overwrite", is_flag=True, help="Replace an existing result at --out.")(f)


def echo_json(obj) -> None:
    """Print ``obj`` as one line of JSON on stdout (NumPy scalars and paths made plain)."""
    import json

    import click

    click.echo(json.dumps(obj, default=_plain))


def _plain(v):
    try:
        import numpy as np

        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, np.ndarray):
            return v.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(v)
