"""The distributed runner on a real 2-worker LocalCluster equals the single-process computation."""
from __future__ import annotations

import numpy as np
import pytest

import otpipe
from otpipe import store
from otpipe.engine.cluster import ClusterSpec
from otpipe.pipelines.barycenters import run_barycenter


@pytest.mark.parametrize("learn_weights", [False, True])
def test_distributed_equals_single_process(tmp_path, learn_weights):
    rng = np.random.default_rng(0)
    ms = [store.Measure(rng.normal(size=(n, 2)) + [2 * (i % 2), 0], rng.uniform(0.5, 1, n), f"m{i}", f"g{i % 2}")
          for i, n in enumerate((7, 12, 9, 15, 5, 11))]
    store.create(tmp_path / "c.zarr", ms, dtype="float64")
    s = run_barycenter(tmp_path / "c.zarr", tmp_path / "b.zarr", method="free", max_iter=5, seed=3, n_points=10,
                       spec=ClusterSpec(n_workers=2), learn_weights=learn_weights)
    out = store.open(tmp_path / "b.zarr")
    assert list(out.names) == ["g0", "g1"] and (tmp_path / "b.png").exists()
    for g in ("g0", "g1"):
        group = [(m.points, m.weights) for m in ms if m.label == g]
        local = otpipe.barycenter(group, method="free", max_iter=5, seed=3, n_points=10, learn_weights=learn_weights)
        np.testing.assert_allclose(out[g].points, local.points, atol=1e-10)
        np.testing.assert_allclose(out[g].weights, local.weights, atol=1e-10)
        if learn_weights:
            assert np.ptp(local.weights) > 1e-3  # the weights did move
        assert s["groups"][g]["n_iter"] == local.n_iter


def test_bad_groups(tmp_path):
    store.create(tmp_path / "c.zarr", [store.Measure(np.zeros((2, 2)), None, "a", "x")])
    with pytest.raises(ValueError, match="no measures in group 'y'"):
        run_barycenter(tmp_path / "c.zarr", tmp_path / "b.zarr", groups=["y"], spec=ClusterSpec(n_workers=1))
    assert not (tmp_path / "b.zarr").exists()
