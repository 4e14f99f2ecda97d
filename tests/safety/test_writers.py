"""One writer per output, through the commands: a second writer is refused with the holder named
and the first run's result is complete and correct; a killed run's lock is taken over (with a
warning) by ``--resume``; every command that writes a store (and ``otpipe run``) takes the lock."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from otpipe._made import made_by_otpipe
from otpipe.engine.result import load_state, open_result
from otpipe.workflows import tree_hash

from .conftest import held

BLUR = "0.1"


def _otpipe(*args) -> list[str]:
    return [sys.executable, "-m", "otpipe.cli", *map(str, args)]


@pytest.fixture(scope="module")
def reference(medium):
    """A clean single run (blur 0.1, tile 2): what every run below must give, bit for bit."""
    from otpipe.engine.cluster import ClusterSpec
    from otpipe.pipelines.pairwise import pairwise

    return pairwise(medium, blur=float(BLUR), tile=2, progress=False, cluster=ClusterSpec(n_workers=1)).load()


def _wait_tiles(out, proc, timeout=180.0):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        try:
            d = load_state(out)["tile_done"]
            if d.sum() > 0:
                return d
        except Exception:  # noqa: BLE001 - the template is not there yet
            pass
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError("no tile finished in time")


def _same(ds, ref) -> None:
    assert ds.attrs["complete"]
    for v in ("divergence", "ot", "n_iter", "marginal_error", "self_source"):
        assert np.array_equal(ds[v].values, ref[v].values, equal_nan=True), v


def test_second_overwrite_run_is_refused_and_first_result_is_intact(medium, reference, tmp_path, cli):
    """The issue's case: two `distances --overwrite` into one --out with different --blur."""
    out = tmp_path / "d.zarr"
    first = subprocess.Popen(_otpipe("distances", medium, "--out", out, "--blur", BLUR, "--tile", 2, "--n-workers", 1,
                                     "--overwrite", "--no-progress", "-q"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = tmp_path / "d.zarr.lock"
        t_end = time.monotonic() + 120
        while not (lock.exists() and lock.read_text().strip()) and time.monotonic() < t_end:
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.02)
        code, err = cli("distances", medium, "--out", out, "--blur", "0.05", "--tile", 2, "--n-workers", 1,
                        "--overwrite", "--no-progress", "-q")
        assert first.poll() is None, "the refusal must come while the first run holds the lock"
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        if first.poll() is None:
            first.kill()
    assert code == 1
    err = err.strip()
    assert err.count("\n") == 0 and err.startswith("Error: ")
    assert f"pid {first.pid}" in err and "--blur 0.1" in err and "started" in err
    ds = open_result(out)
    assert ds.attrs["parameters"]["blur"] == float(BLUR)
    _same(ds, reference)
    assert not lock.exists()


def test_lock_of_a_killed_run_is_taken_over_by_resume(medium, reference, tmp_path):
    out = tmp_path / "d.zarr"
    cmd = _otpipe("distances", medium, "--out", out, "--blur", BLUR, "--tile", 2, "--n-workers", 1, "--no-progress")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_tiles(out, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and the cluster it started
        proc.wait()
    assert json.loads((tmp_path / "d.zarr.lock").read_text())["pid"] == proc.pid
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"taking over the lock of {out.resolve()} left by a killed run (pid {proc.pid}" in r.stderr
    _same(open_result(out), reference)
    assert not (tmp_path / "d.zarr.lock").exists()


def _files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.savetxt(src / f"m{i}.csv", rng.normal(size=(10, 2)), delimiter=",")
    return src


WF = """\
version: 1
name: w
run_dir: {run_dir}
steps:
  - {{step: synth, id: shapes, params: {{n_measures: 3, n_points: 10}}}}
"""


@pytest.mark.parametrize("command, existing", [
    ("synth", False), ("synth --overwrite", True), ("ingest", False), ("ingest --append", True),
    ("ingest --overwrite", True), ("distances --overwrite", True), ("distances --resume", True),
    ("barycenter", False), ("two-sample", False), ("complexity --overwrite", True), ("run", True),
])
def test_every_writer_takes_the_lock(command, existing, small, tmp_path, cli):
    name, *flags = command.split()
    out = tmp_path / "out.zarr"
    inside = False
    if name == "synth":
        args = ["synth", "--out", out, "--n-measures", 3, "--n-points", 5]
    elif name == "ingest":
        args = ["ingest", _files(tmp_path), "--out", out]
    elif name == "distances":
        args = ["distances", small, "--out", out, "--n-workers", 1, "--no-progress"]
    elif name == "barycenter":
        args = ["barycenter", small, "--out", out, "--n-workers", 1]
    elif name == "two-sample":
        args = ["two-sample", small, "--out", out, "--n-permutations", 9, "--n-workers", 1]
    elif name == "complexity":
        args = ["complexity", "--out", out, "--eps", 1, "--dims", 2, "--n", "10,20", "--reps", 2, "--n-workers", 1,
                "--no-figures"]
    else:
        out = tmp_path / "run"
        spec = tmp_path / "w.yaml"
        spec.write_text(textwrap.dedent(WF.format(run_dir=out)))
        args, inside = ["run", spec], True
    if existing:
        code, err = cli(*args)
        assert code == 0, err
        assert made_by_otpipe(out)  # every store and run folder otpipe writes carries its marker
    before = tree_hash(out) if out.exists() else None
    with held(out, inside=inside) as pid:
        code, err = cli(*args, *flags)
    assert code == 1 and err.strip().count("\n") == 0, err
    assert "being written by another otpipe run" in err and f"pid {pid}" in err
    assert (tree_hash(out) if out.exists() else None) == before  # nothing written, nothing lost
