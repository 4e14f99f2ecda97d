"""``otpipe barycenter`` checkpoints each group as soon as it is done: a run interrupted after some
groups (the interrupt.STOP_AFTER test hook: a Ctrl-C at that moment) keeps them, ``--resume`` computes
only the others (counted on the real cluster's task stream) and gives exactly the uninterrupted
result; other parameters are refused; the CLI exits 130 with the command that resumes."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import zarr
from distributed import get_task_stream

from otpipe import store
from otpipe.engine import interrupt
from otpipe.engine.cluster import ClusterSpec, open_client
from otpipe.engine.interrupt import Interrupted
from otpipe.pipelines.barycenters import run_barycenter
from tests.cli_hooks import stopping_after

SIDE = 5


def _blob(cx: float, cy: float) -> np.ndarray:
    """A positive image on the SIDE x SIDE pixel grid (every pixel carries mass: one common grid)."""
    i, j = np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij")
    w = np.exp(-((i - cx) ** 2 + (j - cy) ** 2) / 2.0) + 0.05
    return w / w.sum()


@pytest.fixture(scope="module")
def client():
    with open_client(ClusterSpec(n_workers=1, threads_per_worker=1, memory_limit="1GiB")) as c:
        yield c


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three groups, each two copies of one image: the barycenter of identical inputs is that input."""
    pts = np.stack(np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij"), -1).reshape(-1, 2).astype(float)
    blobs = {"a": _blob(1, 1), "b": _blob(2, 3), "c": _blob(3.5, 1.5)}
    ms = [store.Measure(pts, blobs[g].reshape(-1), f"{g}{k}", g) for g in blobs for k in range(2)]
    path = tmp_path_factory.mktemp("bary_resume") / "img.zarr"
    store.create(path, ms, dtype="float64")
    return path, pts, blobs


def _fixed_tasks(ts) -> int:
    return sum(1 for t in ts.data if str(t["key"]).startswith("_group_fixed"))


def test_interrupt_then_resume_is_identical_and_skips_finished_groups(client, images, tmp_path, monkeypatch):
    path, pts, blobs = images
    kw = dict(client=client)
    with get_task_stream(client) as ts:
        ref = run_barycenter(path, tmp_path / "ref.zarr", **kw)
    assert _fixed_tasks(ts) == 3 and {d["method"] for d in ref["groups"].values()} == {"fixed-convolutional"}
    assert ref["convergence_warning"] == ""

    out = tmp_path / "cut.zarr"
    monkeypatch.setattr(interrupt, "STOP_AFTER", 1)
    with pytest.raises(Interrupted, match=r"1 of 3 groups are saved in .*cut\.zarr; continue with"):
        run_barycenter(path, out, **kw)
    monkeypatch.setattr(interrupt, "STOP_AFTER", None)
    attrs = json.loads((out / "zarr.json").read_text())["attributes"]
    assert attrs["otpipe_result"] == "barycenter" and attrs["complete"] is False and attrs["groups"] == ["a", "b", "c"]
    done = np.asarray(zarr.open_group(str(out / "_checkpoint"), mode="r")["done"][:])
    assert done.tolist() == [True, False, False]
    with pytest.raises(ValueError, match="incomplete|not an otpipe collection"):
        store.open(out)  # an unfinished run is not mistaken for the result
    from otpipe.report import result_kind

    with pytest.raises(ValueError, match="unfinished barycenter run: finish it with .*--resume"):
        result_kind(out)
    with pytest.raises(FileExistsError, match="--resume"):
        run_barycenter(path, out, **kw)
    with pytest.raises(ValueError, match=r"cannot resume .*blur: stored None, now 2\.0"):
        run_barycenter(path, out, resume=True, blur=2.0, **kw)  # other parameters: refused, nothing touched
    assert np.asarray(zarr.open_group(str(out / "_checkpoint"), mode="r")["done"][:]).tolist() == [True, False, False]

    with get_task_stream(client) as ts:
        s = run_barycenter(path, out, resume=True, **kw)
    assert _fixed_tasks(ts) == 2  # the finished group was not recomputed
    assert s["groups"] == ref["groups"] and not (out / "_checkpoint").exists()
    a, b = store.open(out), store.open(tmp_path / "ref.zarr")
    assert list(a.names) == ["a", "b", "c"] and a.content_hash == b.content_hash
    for g, img in blobs.items():
        np.testing.assert_array_equal(a[g].points, b[g].points)
        np.testing.assert_array_equal(a[g].weights, b[g].weights)
        np.testing.assert_allclose(a[g].points, pts)  # the inputs' grid
        np.testing.assert_allclose(a[g].weights, img.reshape(-1), atol=1e-4)  # identical inputs: that input
    assert a.attrs["barycenter"] == b.attrs["barycenter"] and a.attrs["fingerprint"] == b.attrs["fingerprint"]
    assert a.attrs["otpipe_result"] == "barycenter"  # the one type tag, on the collection it ends with too

    # a finished store resumes to itself without computing; the report reads it as barycenters
    with get_task_stream(client) as ts:
        again = run_barycenter(path, out, resume=True, **kw)
    assert _fixed_tasks(ts) == 0 and again["groups"] == ref["groups"]
    assert result_kind(out) == "barycenter"


def test_free_support_resume_is_identical(client, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    ms = [store.Measure(rng.normal(size=(n, 2)) + [3 * (i % 2), 0], None, f"m{i}", f"g{i % 2}")
          for i, n in enumerate((7, 12, 9, 15))]
    path = tmp_path / "c.zarr"
    store.create(path, ms, dtype="float64")
    kw = dict(client=client, method="free", n_points=6, max_iter=3, seed=2)
    with pytest.warns(Warning):
        ref = run_barycenter(path, tmp_path / "ref.zarr", **kw)
    monkeypatch.setattr(interrupt, "STOP_AFTER", 1)
    with pytest.raises(Interrupted, match="1 of 2 groups"):
        run_barycenter(path, tmp_path / "cut.zarr", **kw)
    monkeypatch.setattr(interrupt, "STOP_AFTER", None)
    with pytest.warns(Warning):
        s = run_barycenter(path, tmp_path / "cut.zarr", resume=True, **kw)
    assert s["groups"] == ref["groups"] and s["convergence_warning"] == ref["convergence_warning"]
    a, b = store.open(tmp_path / "cut.zarr"), store.open(tmp_path / "ref.zarr")
    for g in ("g0", "g1"):
        np.testing.assert_array_equal(a[g].points, b[g].points)
        np.testing.assert_array_equal(a[g].weights, b[g].weights)
        # p = 2: the barycenter's mean is the average of its inputs' means (Sinkhorn's marginal error aside)
        group = [m for m in ms if m.label == g]
        mean = np.mean([m.points.mean(0) for m in group], axis=0)
        assert np.linalg.norm(np.average(a[g].points, axis=0, weights=a[g].weights) - mean) < 0.1


def test_cli_interrupt_exits_130_with_the_resume_command(images, tmp_path):
    path, _, _ = images
    out = tmp_path / "b.zarr"
    args, env = stopping_after(2, "barycenter", str(path), "-o", str(out), "--n-workers", "1")  # tests/cli_hooks.py
    r = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 130, r.stderr
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("Interrupted:")]
    assert len(line) == 1 and f"2 of 3 groups are saved in {out}" in line[0]
    assert line[0].rstrip().endswith(f"-o {out} --n-workers 1 --resume")
    assert np.asarray(zarr.open_group(str(out / "_checkpoint"), mode="r")["done"][:]).sum() == 2
