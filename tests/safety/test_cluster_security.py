"""Cluster security: the embedded cluster listens on loopback only; a tls:// scheduler is used with
its certificates and refuses plain or foreign clients; batch-job clusters get TLS with temporary
certificates (``--no-tls`` warns) and keep their logs and certificate files in ``OUT.jobs``;
``--dashboard`` prints a loopback address that answers; ``-q`` silences distributed's warnings;
bad cluster options are one-line errors."""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from otpipe.engine.cluster import ClusterSpec, job_script, open_client


def _listening(pids: set[int]) -> list[tuple[int, str]]:
    import psutil

    return [(c.pid, c.laddr.ip) for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]


def test_local_cluster_listens_on_loopback_only():
    import psutil

    with open_client(ClusterSpec(n_workers=2)) as c:
        me = psutil.Process()
        pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
        assert len(c.scheduler_info()["workers"]) == 2
        socks = _listening(pids)
    assert len({pid for pid, _ in socks}) >= 3, socks  # the scheduler (here) and both worker processes
    assert all(ipaddress.ip_address(ip).is_loopback for _, ip in socks), socks


@pytest.mark.parametrize("args, needle", [
    (["--no-tls"], "--no-tls applies to --cluster slurm/pbs and --gpus"),
    (["--tls-cert", "c.pem"], "certificates of a tls:// --scheduler"),
    (["--scheduler", "tls://127.0.0.1:1"], "give its --tls-ca-file and --tls-cert"),
    (["--scheduler", "tcp://127.0.0.1:1", "--tls-ca-file", "ca.pem"], "is not a tls:// address"),
    (["--scheduler", "tls://127.0.0.1:1", "--tls-ca-file", "nope.pem", "--tls-cert", "nope.pem"], "no such file"),
    (["--cluster", "slurm", "--interface", "nope0"], "no such network interface"),
    (["--interface", "lo"], "--interface sets the scheduler's network interface of --cluster slurm/pbs only"),
])
def test_bad_cluster_options_one_line(args, needle, small, tmp_path, cli):
    out = tmp_path / "d.zarr"
    code, err = cli("distances", small, "--out", out, *args)
    assert code == 1 and err.strip().count("\n") == 0 and needle in err, err
    assert not out.exists()


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """A LocalCluster on 127.0.0.1 with TLS (throw-away CA), and its CA/cert/key written to files."""
    from distributed import LocalCluster
    from distributed.security import Security

    sec = Security.temporary()
    d = tmp_path_factory.mktemp("tls")
    files = {}
    for name, pem in (("ca", sec.tls_ca_file), ("cert", sec.tls_client_cert), ("key", sec.tls_client_key)):
        files[name] = d / f"{name}.pem"
        files[name].write_text(pem)
        os.chmod(files[name], 0o600)
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", protocol="tls://", security=sec,
                      dashboard_address="127.0.0.1:0") as cluster:
        yield cluster.scheduler_address, files


def test_tls_scheduler_with_certificates(tls_cluster, small, tmp_path, cli):
    from distributed.security import Security

    from otpipe.engine.result import open_result
    from otpipe.pipelines.pairwise import pairwise

    address, f = tls_cluster
    assert address.startswith("tls://127.0.0.1:")
    out = tmp_path / "d.zarr"
    code, err = cli("distances", small, "--out", out, "--scheduler", address, "--tls-ca-file", f["ca"],
                    "--tls-cert", f["cert"], "--tls-key", f["key"], "--no-progress", "-q")
    assert code == 0, err
    sec = Security(tls_ca_file=str(f["ca"]), tls_client_cert=str(f["cert"]), tls_client_key=str(f["key"]),
                   require_encryption=True)
    with open_client(ClusterSpec(scheduler=address, tls_ca_file=str(f["ca"]), tls_cert=str(f["cert"]),
                                 tls_key=str(f["key"]))) as c:
        ref = pairwise(small, client=c, progress=False)
    assert sec.require_encryption
    assert np.array_equal(open_result(out).divergence.values, ref.divergence.values)
    # the same through a scheduler file naming the tls:// address
    sched = tmp_path / "scheduler.json"
    sched.write_text(json.dumps({"type": "Scheduler", "address": address}))
    code, err = cli("distances", small, "--out", tmp_path / "e.zarr", "--scheduler-file", sched, "--tls-ca-file", f["ca"],
                    "--tls-cert", f["cert"], "--tls-key", f["key"], "--no-progress", "-q")
    assert code == 0, err
    assert np.array_equal(open_result(tmp_path / "e.zarr").divergence.values, ref.divergence.values)
    code, err = cli("distances", small, "--out", tmp_path / "f.zarr", "--scheduler-file", sched, "-q")
    assert code == 1 and "uses TLS" in err and err.strip().count("\n") == 0
    # nobody else gets in: plain TCP, or TLS with another CA's certificate
    from distributed import Client

    for bad in (dict(address=address.replace("tls://", "tcp://")), dict(address=address, security=Security.temporary())):
        with pytest.raises(Exception):  # noqa: B017 - any failure to connect is the answer
            with Client(timeout="3s", **bad) as c:
                c.submit(os.getpid).result(timeout=5)


def test_workflow_on_a_tls_scheduler(tls_cluster, tmp_path, cli):
    address, f = tls_cluster
    spec = tmp_path / "w.yaml"
    spec.write_text(f"""version: 1
name: w
run_dir: {tmp_path / 'run'}
cluster: {{scheduler: '{address}', tls_ca_file: '{f['ca']}', tls_cert: '{f['cert']}', tls_key: '{f['key']}'}}
steps:
  - {{step: synth, id: shapes, params: {{n_measures: 4, n_points: 10}}}}
  - {{step: distances, id: d, inputs: [shapes]}}
""")
    code, err = cli("run", spec)
    assert code == 0, err
    from otpipe.engine.result import open_result

    assert open_result(tmp_path / "run" / "d" / "d.zarr").attrs["complete"]


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_batch_jobs_use_tls_and_log_into_the_run_folder(kind, tmp_path, caplog):
    pytest.importorskip("dask_jobqueue")
    pytest.importorskip("cryptography")
    jobs = tmp_path / "d.zarr.jobs"
    script = job_script(ClusterSpec(cluster=kind, job_dir=str(jobs)))
    assert "--tls-ca-file" in script and "--tls-cert" in script and "--tls-key" in script
    assert "tls://" in script and str(jobs) in script  # the scheduler's address; logs and certificates in OUT.jobs
    assert (jobs / ".otpipe").is_file() and oct(jobs.stat().st_mode & 0o777) == "0o700"
    with caplog.at_level(logging.WARNING, logger="otpipe.cluster"):
        plain = job_script(ClusterSpec(cluster=kind, job_dir=str(jobs), tls=False))
    assert "--tls" not in plain and "tcp://" in plain
    assert any("--no-tls" in r.getMessage() for r in caplog.records)


def test_batch_job_folder_must_be_otpipes(tmp_path):
    pytest.importorskip("dask_jobqueue")
    jobs = tmp_path / "mine"
    jobs.mkdir()
    (jobs / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not made by otpipe"):
        job_script(ClusterSpec(cluster="slurm", job_dir=str(jobs)))
    assert sorted(p.name for p in jobs.iterdir()) == ["notes.txt"]


def test_tls_without_cryptography_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("dask_jobqueue")
    for name in [m for m in sys.modules if m == "cryptography" or m.startswith("cryptography.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cryptography", None)  # as if not installed
    with pytest.raises(ValueError, match="needs the 'cryptography' package .* or pass --no-tls"):
        job_script(ClusterSpec(cluster="slurm", job_dir=str(tmp_path / "jobs")))


def test_dashboard_address_is_printed_and_answers(capsys):
    with open_client(ClusterSpec(n_workers=1, dashboard=True)):
        err = capsys.readouterr().err
        line = [ln for ln in err.splitlines() if "dashboard at" in ln]
        assert len(line) == 1 and "http://127.0.0.1:" in line[0], err
        url = line[0].split("dashboard at ")[1].split()[0]
        with urllib.request.urlopen(url.replace("/status", "/health"), timeout=10) as r:
            assert r.read() == b"ok"


QUIET = """
import contextlib, os, sys, time
from otpipe.cli.options import setup_logging
quiet = sys.argv[1] == "quiet"
setup_logging(quiet)
from otpipe.engine.cluster import ClusterSpec, open_client
with open_client(ClusterSpec(n_workers=1, quiet=quiet)) as c:
    w = list(c.scheduler_info()["workers"])
    with contextlib.suppress(Exception):
        c.run(os._exit, 1, workers=w)  # the nanny restarts it, with warnings
    t_end = time.time() + 60
    while list(c.scheduler_info()["workers"]) in ([], w) and time.time() < t_end:
        time.sleep(0.1)
"""


def test_quiet_silences_distributed_warnings():
    """A worker dies and is restarted: distributed warns on stderr, except with quiet (ERROR and above only)."""
    loud = subprocess.run([sys.executable, "-c", QUIET, "loud"], capture_output=True, text=True, timeout=300)
    quiet = subprocess.run([sys.executable, "-c", QUIET, "quiet"], capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0 and quiet.returncode == 0, loud.stderr + quiet.stderr
    assert "distributed.nanny - WARNING" in loud.stderr
    assert "WARNING" not in quiet.stderr and "INFO" not in quiet.stderr, quiet.stderr
