"""Requests a cluster cannot serve are one line before anything starts (issue 21, items 11 and 16): more
embedded workers than the machine runs, and a ``--scheduler`` address that answers but is not a Dask
scheduler (a real TCP server on 127.0.0.1 in a thread)."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest

from otpipe.engine import preflight
from otpipe.engine.cluster import ClusterSpec, open_client


def test_more_workers_than_the_machine_runs_are_refused():
    cores, memory = preflight.machine()
    most = preflight.MAX_THREADS_PER_CORE * cores
    for spec in (ClusterSpec(n_workers=100_000), ClusterSpec(n_workers=most + 1),
                 ClusterSpec(n_workers=2, threads_per_worker=most)):
        with pytest.raises(ValueError, match=f"at most {most} \\({preflight.MAX_THREADS_PER_CORE} per core, {cores} cores\\)"):
            spec.validate()
    # what the tests and users ask for: 2 workers, a few more workers than cores, threads
    for spec in (ClusterSpec(n_workers=2), ClusterSpec(n_workers=cores + 1), ClusterSpec(n_workers=1, threads_per_worker=most),
                 ClusterSpec()):
        spec.validate()
    # an existing cluster is not limited by this machine (--n-workers does not apply to it)
    ClusterSpec(scheduler="tcp://127.0.0.1:1", n_workers=100_000).validate()


def test_workers_are_limited_by_memory(monkeypatch):
    monkeypatch.setattr(preflight, "machine", lambda: (1024, 3 * preflight.MIN_WORKER_MEMORY))  # a 1024-core, 768 MiB box
    with pytest.raises(ValueError, match="at most 3 workers"):
        preflight.check_local_size(4, 1)
    preflight.check_local_size(3, 1)


def test_cli_refuses_100000_workers_at_once(small, tmp_path):
    out = tmp_path / "d.zarr"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "otpipe.cli", "distances", str(small), "--out", str(out),
                        "--n-workers", "100000", "--no-progress"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "--n-workers 100000" in r.stderr and "more than this machine runs" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert time.perf_counter() - t0 < 60 and not out.exists()  # before: hung at 1 GB and growing


@pytest.mark.parametrize("command", [["distances", "{small}"], ["complexity", "--eps", "1", "--dims", "2", "--n", "10",
                                                                 "--reps", "2"]])
def test_dry_run_refuses_what_the_run_would(command, small, tmp_path, capsys):
    from otpipe.cli import main

    out = tmp_path / "o.zarr"
    with pytest.raises(SystemExit) as exc:
        main([a.format(small=small) for a in command] + ["--out", str(out), "--n-workers", "100000", "--dry-run"])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and "more than this machine runs" in err and not out.exists()


class _Server:
    """A TCP service on 127.0.0.1 that is not Dask: ``reply`` bytes to each connection (``None``: silence)."""

    def __init__(self, reply: bytes | None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.reply = reply
        self.conns: list = []
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            if self.reply is not None:
                c.sendall(self.reply)
                c.close()

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def http_like():
    s = _Server(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nBad Request")
    yield s
    s.close()


def test_non_dask_scheduler_is_named(http_like, small, tmp_path, capsys):
    from otpipe.cli import main

    out = tmp_path / "d.zarr"
    with pytest.raises(SystemExit) as exc:
        main(["distances", str(small), "--out", str(out), "--scheduler", http_like.address, "--no-progress", "-q"])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and f"scheduler address {http_like.address} does not speak the Dask protocol" in err, err
    assert "MemoryError" not in err and "EiB" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("reply, why", [(None, "no Dask handshake within 2 s"), (b"hi\n", "closed the connection"),
                                        (b"\x01" + b"\x00" * 7 + b"\x05" + b"\x00" * 7 + b"\xc1" * 5, "does not decode")])
def test_silent_short_or_garbled_services_are_named(reply, why):
    import dask

    server = _Server(reply)
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
            t0 = time.perf_counter()
            with pytest.raises(ValueError, match=f"does not speak the Dask protocol \\(.*{why}"):
                with open_client(ClusterSpec(scheduler=server.address)):
                    pass
            assert time.perf_counter() - t0 < 20  # before: a silent service hung the connection for ever
    finally:
        server.close()


def test_a_real_scheduler_passes_the_check(client):
    preflight.check_scheduler(client.scheduler.address)  # reads the handshake a scheduler sends first
    with open_client(ClusterSpec(scheduler=client.scheduler.address)) as c:
        assert c.scheduler_info()["workers"]
