"""Barycenters that stop at max_iter: one warning on stderr naming the groups, recorded in the
store's attrs; ``--json``/``--dry-run``/progress; ``otpipe.api.barycenter`` without ``out`` (in memory) in the API."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import zarr

import otpipe
from otpipe import store
from otpipe.cli import main
from otpipe.engine.cluster import ClusterSpec, open_client


@pytest.fixture(scope="module")
def client():
    with open_client(ClusterSpec(n_workers=1, threads_per_worker=1, memory_limit="1GiB")) as c:
        yield c


@pytest.fixture(scope="module")
def coll(tmp_path_factory):
    rng = np.random.default_rng(0)
    ms = [store.Measure(rng.normal(size=(n, 2)) + [3 * (i % 2), 0], None, f"m{i}", f"g{i % 2}")
          for i, n in enumerate((7, 12, 9, 15))]
    return store.create(tmp_path_factory.mktemp("bary") / "c.zarr", ms, dtype="float64")


def test_max_iter_warns_once_naming_the_groups(client, coll, tmp_path, capsys):
    out = tmp_path / "b.zarr"
    main(["barycenter", str(coll.path), "-o", str(out), "--method", "free", "--n-points", "6", "--max-iter", "2",
          "--json", "--scheduler", client.scheduler.address])
    cap = capsys.readouterr()
    warn = [ln for ln in cap.err.splitlines() if ln.startswith("otpipe: warning:")]
    assert len(warn) == 1 and "group(s) g0, g1 stopped at max_iter (2 iterations)" in warn[0] and "--max-iter" in warn[0]
    assert [ln for ln in cap.err.splitlines() if ln.startswith("otpipe: barycenter: 2/2 groups (100%)")]
    summary = json.loads(cap.out)
    assert summary["groups"]["g0"] == {"method": "free", "n_iter": 2, "converged": False, "n_measures": 2, "n_points": 6}
    attrs = zarr.open_group(str(out), mode="r").attrs
    assert attrs["not_converged"] == ["g0", "g1"] and attrs["convergence_warning"] in warn[0]
    assert sorted(store.open(out).names) == ["g0", "g1"]  # still a valid collection


def test_dry_run_lists_groups_and_writes_nothing(coll, tmp_path, capsys):
    out = tmp_path / "none.zarr"
    main(["barycenter", str(coll.path), "-o", str(out), "--dry-run", "--json"])
    plan = json.loads(capsys.readouterr().out)
    assert plan["n_groups"] == 2 and plan["groups"]["g1"] == {"measures": 2, "points": 27, "method": "free", "support": 15}
    assert not out.exists()


def test_api_barycenter_in_memory(client, coll):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", otpipe.ConvergenceWarning)
        res = otpipe.api.barycenter(coll, client=client, method="free", max_iter=3, seed=1, n_points=5)
    assert list(res) == ["g0", "g1"]
    group = [(m.points, m.weights) for m in coll if m.label == "g1"]
    local = otpipe.barycenter(group, method="free", max_iter=3, seed=1, n_points=5)
    np.testing.assert_allclose(res["g1"].points, local.points, atol=1e-10)
    r = repr(res["g1"])
    assert r.startswith("BarycenterResult(method='free', points=(5, 2), n_iter=3") and len(r) < 200
