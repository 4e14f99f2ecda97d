"""Checks before a Dask cluster is started or joined, so that a bad request is one clear line.

* :func:`check_local_size`: the embedded ``LocalCluster`` may run at most :data:`MAX_THREADS_PER_CORE`
  threads per core of this machine (``n_workers x threads_per_worker``) and needs at least
  :data:`MIN_WORKER_MEMORY` of memory per worker; beyond that (``--n-workers 100000`` started
  workers until the machine ran out of memory) it is refused before anything starts. Bigger
  clusters: ``--scheduler`` or ``--cluster slurm|pbs``.
* :func:`check_scheduler`: connects to ``--scheduler`` once and reads the Dask handshake that a
  scheduler sends first, with a time limit. A service that is not a Dask scheduler (an HTTP server,
  say) used to give ``MemoryError: Unable to allocate 3.01 EiB`` (its text read as a frame length)
  or to hang; it now gives "does not speak the Dask protocol".
"""
from __future__ import annotations

import asyncio
import threading

__all__ = ["MAX_THREADS_PER_CORE", "MIN_WORKER_MEMORY", "machine", "check_local_size", "check_scheduler"]

#: most threads of the embedded cluster (workers x threads per worker) per core of this machine
MAX_THREADS_PER_CORE = 4
#: least memory per worker of the embedded cluster (a worker process with torch loaded uses about 300 MB)
MIN_WORKER_MEMORY = 256 * 2**20
_GIB = 2**30


def machine() -> tuple[int, int]:
    """The cores and memory available to this process, as Dask counts them (cgroup limits included).

    Returns
    -------
    cores : int
        CPU cores (at least 1).
    memory : int
        Bytes of memory.
    """
    from dask.system import CPU_COUNT
    from distributed.system import MEMORY_LIMIT

    return max(1, int(CPU_COUNT or 1)), int(MEMORY_LIMIT)


def check_local_size(n_workers: int | None, threads_per_worker: int | None) -> None:
    """Refuse an embedded cluster that asks for more than this machine can run.

    At most :data:`MAX_THREADS_PER_CORE` threads per core and :data:`MIN_WORKER_MEMORY` bytes per worker.

    Parameters
    ----------
    n_workers : int or None
        Workers asked for (``None`` with no thread count: nothing to check).
    threads_per_worker : int or None
        Threads per worker asked for.

    Raises
    ------
    ValueError
        Naming the limit exceeded and how to get more.
    """
    if n_workers is None and not threads_per_worker:
        return
    cores, memory = machine()
    workers, threads = n_workers or 1, threads_per_worker or 1
    most_threads = MAX_THREADS_PER_CORE * cores
    if workers * threads > most_threads:
        raise ValueError(
            f"--n-workers {workers} x --threads-per-worker {threads} = {workers * threads} threads is more than this "
            f"machine runs: at most {most_threads} ({MAX_THREADS_PER_CORE} per core, {cores} cores); for more, "
            "connect to a bigger cluster (--scheduler, --cluster slurm|pbs)")
    most_workers = memory // MIN_WORKER_MEMORY
    if workers > most_workers:
        raise ValueError(
            f"--n-workers {workers} is more than this machine's memory holds: at most {most_workers} workers "
            f"({memory / _GIB:.1f} GiB, at least {MIN_WORKER_MEMORY >> 20} MiB per worker)")


def check_scheduler(address: str | None, security=None, timeout: float | None = None) -> None:
    """Refuse an address that accepts a connection but does not answer as a Dask scheduler.

    Plain ``tcp://`` and ``tls://`` addresses only (others are left to Dask). An address where nothing
    answers passes: ``Client`` retries it for the connect timeout and reports it as before.

    Parameters
    ----------
    address : str or None
        The scheduler address (``None``: nothing to check).
    security : distributed.Security, optional
        TLS settings of a ``tls://`` address.
    timeout : float, optional
        Seconds for the connection and then for the handshake (default: Dask's
        ``distributed.comm.timeouts.connect``).

    Raises
    ------
    ValueError
        If something answers at ``address`` without the Dask handshake.
    """
    if not address or not address.startswith(("tcp://", "tls://")):
        return
    import dask
    from dask.utils import parse_timedelta

    if timeout is None:
        timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="seconds")
    box: dict = {}

    def run() -> None:  # a private event loop: callable from anywhere, a running loop (notebook) included
        try:
            box["reply"] = asyncio.run(_handshake(address, security, float(timeout)))
        except BaseException as exc:  # noqa: BLE001 - sorted below
            box["error"] = exc

    t = threading.Thread(target=run, name="otpipe-scheduler-check", daemon=True)
    t.start()
    t.join(2 * float(timeout) + 10)
    error = box.get("error")
    if t.is_alive() or isinstance(error, _NoHandshake):
        why = error.why if isinstance(error, _NoHandshake) else f"no Dask handshake within {timeout:g} s"
        raise ValueError(f"scheduler address {address} does not speak the Dask protocol ({why}): give the address of a "
                         "Dask scheduler (tcp://host:8786, or tls:// with its certificates)")
    # unreachable (nothing listens yet, a TLS mismatch...) or an API this code does not know: the
    # connection proper retries and reports it as before


class _NoHandshake(Exception):
    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


class _Unreachable(Exception):
    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


async def _handshake(address: str, security, timeout: float) -> dict:
    """Connect (TCP, and TLS for ``tls://``), then read the handshake the scheduler sends first."""
    from distributed.comm import parse_address, registry

    scheme, loc = parse_address(address)
    args = security.get_connection_args("client") if security is not None else {}
    connector = registry.get_backend(scheme).get_connector()
    try:
        comm = await asyncio.wait_for(connector.connect(loc, deserialize=True, **args), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise _Unreachable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
    try:
        try:
            reply = await asyncio.wait_for(comm.read(), timeout)
        except asyncio.TimeoutError:
            raise _NoHandshake(f"connected, but no Dask handshake within {timeout:g} s") from None
        except MemoryError:
            raise _NoHandshake("its reply is not a Dask message: its first bytes read as an impossible length") from None
        except OSError as exc:  # closed or reset mid-handshake
            raise _NoHandshake(f"it closed the connection instead of a Dask handshake: {type(exc).__name__}") from None
        except Exception as exc:  # noqa: BLE001 - bytes that do not decode as a Dask message
            raise _NoHandshake(f"its reply does not decode as a Dask message ({type(exc).__name__})") from None
        if not (isinstance(reply, dict) and "compression" in reply and "python" in reply):
            raise _NoHandshake("its reply is not a Dask handshake")
        return reply
    finally:
        comm.abort()
