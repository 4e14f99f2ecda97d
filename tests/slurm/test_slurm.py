"""``otpipe distances --cluster slurm`` end to end on a real single-node SLURM: TLS with temporary
certificates, batch-job logs in ``OUT.jobs``, and one job cancelled (``scancel``) mid-run, which
must still give the complete result, bit for bit that of a local run with the same tiles.

Run by hand (as root; Debian 12 or Ubuntu, whose packages give SLURM 22.05+):

    apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge
    pip install -c constraints-cpu.txt -e ".[test]"      # dask-jobqueue, cryptography
    python -m pytest -q -rs -m slurm tests/slurm

The fixture (``tests/slurm/conftest.py``) starts munged, slurmctld and slurmd privately in a
temporary folder (own key, socket, ports and state: a SLURM of the machine is not touched) and
stops them at teardown. The test skips, saying why (``-rs``), where the packages are missing, the
user is not root, or the daemons cannot start. About a minute on 2 cores.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ..pipelines.conftest import make_measures

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    """26 measures of 60..100 points in 3-D: 91 tiles of size 2."""
    from otpipe import store

    p = tmp_path_factory.mktemp("coll") / "medium.zarr"
    store.create(p, make_measures(26, (60, 100), 3, seed=3), dtype="float64")
    return p


def _otpipe(*args: str) -> list[str]:
    return [sys.executable, "-m", "otpipe.cli", *args]


def _tiles_done(out: Path) -> tuple[int, int]:
    from otpipe.engine.result import load_state

    try:
        d = load_state(out)["tile_done"]
    except Exception:  # noqa: BLE001 - the template is not written yet
        return 0, 1
    return int(d.sum()), len(d)


def _refuses(address: str, security) -> bool:
    """Whether a client with ``security`` (``None``: plain TCP) is refused by the scheduler at ``address``."""
    from distributed import Client

    try:
        with Client(address, security=security, timeout="4s") as c:
            c.submit(os.getpid).result(timeout=10)
    except Exception:  # noqa: BLE001 - any failure to connect is the answer
        return True
    return False


def test_distances_on_slurm_over_tls_survive_scancel(slurm, medium, tmp_path):
    from distributed.security import Security

    from otpipe.engine.result import open_result

    local = tmp_path / "local.zarr"
    r = subprocess.run(_otpipe("distances", str(medium), "--out", str(local), "--tile", "2", "--n-workers", "1",
                               "-q", "--no-progress"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr

    out = tmp_path / "d.zarr"
    cmd = _otpipe("distances", str(medium), "--out", str(out), "--cluster", "slurm", "--jobs", "2", "--cores", "1",
                  "--memory", "1GB", "--walltime", "00:10:00", "--tile", "2", "--no-progress")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=slurm.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        t_end = time.monotonic() + 240
        while time.monotonic() < t_end:
            done, total = _tiles_done(out)
            if done > 0 and len(slurm.jobs()) == 2:
                break
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.2)
        else:
            raise AssertionError("no tile done on two jobs in time: " + "".join(lines))
        address = next(ln.split()[2].rstrip(":") for ln in lines if ln.startswith("otpipe: dask: "))
        assert address.startswith("tls://"), address
        # nobody without the run's certificates gets in: plain TCP, or TLS with another CA
        assert _refuses(address.replace("tls://", "tcp://"), None)
        assert _refuses(address, Security.temporary())
        job = slurm.jobs()[0]
        done_at_cancel, total = _tiles_done(out)
        assert done_at_cancel < total, "cancel the job mid-run"
        slurm.run("scancel", job)
        assert proc.wait(timeout=300) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    reader.join(10)

    ds, ref = open_result(out), open_result(local)
    assert ds.attrs["complete"] and ds.attrs["tiles_computed"] == total
    for v in ("divergence", "ot", "n_iter", "marginal_error", "self_source", "self_target"):
        assert np.array_equal(ds[v].values, ref[v].values, equal_nan=True), v
    # job logs in OUT.jobs beside the output, none in the working directory; certificates deleted
    jobs_dir = tmp_path / "d.zarr.jobs"
    logs = sorted(p.name for p in jobs_dir.iterdir())
    assert any(n.endswith(".err") for n in logs), logs
    assert not [n for n in logs if n.startswith(".dask-jobqueue")], logs
    assert oct(jobs_dir.stat().st_mode & 0o777) == "0o700"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("slurm-") or p.suffix in (".out", ".err")]
    t_end = time.monotonic() + 30  # the command's cluster cancelled its jobs when it closed
    while slurm.jobs() and time.monotonic() < t_end:
        time.sleep(0.5)
    assert slurm.jobs() == []


def test_a_lost_last_job_is_resubmitted(slurm, tmp_path, monkeypatch):
    """``scancel`` of the only job: the cluster submits a replacement and the work still gets done."""
    import dask

    from otpipe.engine.cluster import ClusterSpec, open_client

    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    spec = ClusterSpec(cluster="slurm", jobs=1, memory="1GB", walltime="00:10:00", job_dir=str(tmp_path / "jobs"))
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "2s"}), open_client(spec) as c:
        first = slurm.jobs()
        assert len(first) == 1 and c.submit(os.getpid, pure=False).result(timeout=60)
        slurm.run("scancel", first[0])
        t_end = time.monotonic() + 60
        while (first[0] in slurm.jobs() or c.scheduler_info()["workers"]) and time.monotonic() < t_end:
            time.sleep(0.2)
        assert not c.scheduler_info()["workers"], "the cancelled job's worker is gone"
        fut = c.submit(sum, [1, 2, 3], pure=False)  # runs once the replacement job's worker is up
        assert fut.result(timeout=120) == 6
        now = slurm.jobs()
        assert now and first[0] not in now
