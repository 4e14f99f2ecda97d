"""``otpipe barycenter`` end to end on a synthetic labelled collection, and bad input via the CLI."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from otpipe import store

N_MEASURES, N_POINTS = 6, 20


def _otpipe(*args: str) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess (one-line errors, exit codes)."""
    return subprocess.run([sys.executable, "-m", "otpipe.cli", *map(str, args)], capture_output=True, text=True, timeout=300)


def _otpipe_here(capsys, *args: str) -> subprocess.CompletedProcess:
    """``otpipe.cli.main`` in this process (the same entry point, without the start-up cost)."""
    from otpipe.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bary_cli")
    r = _otpipe("synth", "--out", tmp / "c.zarr", "--kind", "gaussian,circle", "--n-measures", N_MEASURES, "--n-points", N_POINTS,
                "--dim", 2, "--seed", 1, "--dtype", "float64")
    assert r.returncode == 0, r.stderr
    r = _otpipe("barycenter", tmp / "c.zarr", "--out", tmp / "b.zarr", "--method", "free", "--n-points", 15,
                "--max-iter", 5, "--n-workers", 2)
    assert r.returncode == 0, r.stderr
    return tmp


def test_free_support_barycenter_per_family(synth_run):
    coll = store.open(synth_run / "c.zarr")
    labels = sorted(set(np.asarray(coll.labels).astype(str).tolist()))
    assert len(labels) == 2
    out = store.open(synth_run / "b.zarr")
    assert sorted(out.names) == labels
    for lab in labels:
        b = out[lab]
        assert b.label == lab and b.points.shape == (15, 2) and np.isfinite(b.points).all()
        assert b.weights.sum() == pytest.approx(1.0)
        # p = 2: the barycenter's mean is the average of its inputs' means (up to Sinkhorn's marginal error)
        group = [coll[i] for i in range(len(coll)) if str(coll[i].label) == lab]
        means = np.mean([np.average(m.points, axis=0, weights=m.weights) for m in group], axis=0)
        diam = np.linalg.norm(np.ptp(np.concatenate([m.points for m in group]), axis=0))
        assert np.linalg.norm(np.average(b.points, axis=0, weights=b.weights) - means) < 0.02 * diam
    assert (synth_run / "b.png").stat().st_size > 1000


def _one_line_error(r: subprocess.CompletedProcess, pattern: str) -> None:
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and pattern in lines[0], r.stderr


def test_existing_output_is_kept_without_overwrite(synth_run, capsys):
    before = store.open(synth_run / "b.zarr")
    pts = {n: np.asarray(before[n].points).copy() for n in before.names}
    r = _otpipe_here(capsys, "barycenter", synth_run / "c.zarr", "--out", synth_run / "b.zarr", "--n-workers", 1)
    _one_line_error(r, "exists")
    after = store.open(synth_run / "b.zarr")
    assert sorted(after.names) == sorted(pts)
    for n, p in pts.items():
        np.testing.assert_array_equal(after[n].points, p)


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["--groups", "nosuchlabel"], "no measures in group 'nosuchlabel'"),
        (["--group-by", "none", "--weights", ",".join(["0.2"] * N_MEASURES)], "sum to one"),
        (["--group-by", "none", "--weights", "0.5,0.5"], f"2 barycenter weights for {N_MEASURES} measures"),
        (["--weights", "a,b"], "comma-separated numbers"),
    ],
)
def test_bad_input_gives_one_line_error_and_no_output(synth_run, tmp_path, capsys, args, pattern):
    r = _otpipe_here(capsys, "barycenter", synth_run / "c.zarr", "--out", tmp_path / "o.zarr", "--n-workers", 1, *args)
    _one_line_error(r, pattern)
    assert not (tmp_path / "o.zarr").exists() and not (tmp_path / "o.png").exists()


def test_missing_collection(tmp_path, capsys):
    r = _otpipe_here(capsys, "barycenter", tmp_path / "missing.zarr", "--out", tmp_path / "o.zarr")
    _one_line_error(r, "missing.zarr")
    assert not (tmp_path / "o.zarr").exists()
