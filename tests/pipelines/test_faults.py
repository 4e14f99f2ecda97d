"""Fault tolerance and resume: a worker killed mid-run (os._exit, as distributed's
test_failed_workers does) and the ``otpipe distances`` process SIGKILLed mid-run."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from otpipe.engine.result import load_state
from otpipe.pipelines.pairwise import pairwise

from .conftest import make_measures


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    """26 measures of 60..100 points in 3-D: 91 tiles of size 2."""
    from otpipe import store

    p = tmp_path_factory.mktemp("coll") / "medium.zarr"
    store.create(p, make_measures(26, (60, 100), 3, seed=3), dtype="float64")
    return p


@pytest.fixture(scope="module")
def reference(client, medium, tmp_path_factory):
    """A full uninterrupted run with tile 2 (the answer both tests must reproduce bit for bit)."""
    return pairwise(medium, client=client, tile=2, progress=False).divergence.values


def _done(path) -> np.ndarray | None:
    try:
        return load_state(path)["tile_done"]
    except Exception:  # the template is not there yet
        return None


def _wait_some_done(path, timeout=120.0, proc=None):
    t0 = time.time()
    while time.time() - t0 < timeout:
        d = _done(path)
        if d is not None and 0 < d.sum():
            return d
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("no tile finished in time")


def test_killed_worker_same_result(client, medium, reference, tmp_path):
    out = tmp_path / "r.zarr"
    box = {}

    def run():
        try:
            box["ds"] = pairwise(medium, client=client, out=out, tile=2, progress=False)
        except BaseException as exc:  # reported below
            box["exc"] = exc

    th = threading.Thread(target=run)
    th.start()
    done = _wait_some_done(out)
    workers = list(client.scheduler_info()["workers"])
    assert done.sum() < len(done), "the run finished before a worker could be killed"
    from distributed.comm.core import CommClosedError

    with contextlib.suppress(CommClosedError):  # the worker dies before it can answer
        client.run(os._exit, 1, workers=[workers[0]])
    th.join(300)
    assert "exc" not in box, box.get("exc")
    ds = box["ds"]
    assert ds.attrs["complete"]
    assert np.array_equal(ds.divergence.values, reference)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the worker for the next tests


def test_sigkill_then_resume(medium, reference, tmp_path):
    out = tmp_path / "r.zarr"
    cmd = [sys.executable, "-m", "otpipe.cli", "distances", str(medium), "--out", str(out), "--tile", "2",
           "--n-workers", "1", "--no-progress", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_some_done(out, proc=proc)
        time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and the cluster it started
        proc.wait()
    before = _done(out)
    n_tiles = len(before)
    assert 0 < before.sum() < n_tiles, "kill the run mid-way"
    attrs = json.loads((out / "zarr.json").read_text())["attributes"]
    assert attrs["complete"] is False
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    # only the unfinished tiles were computed again
    assert summary["tiles_computed"] == n_tiles - before.sum()
    assert summary["tiles_resumed"] == before.sum()
    from otpipe.engine.result import open_result

    ds = open_result(out)
    assert ds.attrs["complete"] and np.array_equal(ds.divergence.values, reference)
