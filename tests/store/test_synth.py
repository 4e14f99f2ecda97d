"""Synthetic collections: reproducible, labelled by family, with the right geometry."""
from __future__ import annotations

import numpy as np
import pytest

from otpipe import store
from otpipe.store.synth import KINDS, resolve_kinds, synth_measures


def test_cli_synth_reproducible_and_labelled(tmp_path, cli):
    args = ["--kind", "mixed", "--n-measures", "12", "--n-points", "64", "--dim", "3"]
    assert cli("synth", "--out", tmp_path / "a.zarr", *args, "--seed", "7").code == 0
    assert cli("synth", "--out", tmp_path / "b.zarr", *args, "--seed", "7").code == 0
    assert cli("synth", "--out", tmp_path / "c.zarr", *args, "--seed", "8").code == 0
    a, b, c = (store.open(tmp_path / f"{x}.zarr") for x in "abc")
    assert a.content_hash == b.content_hash != c.content_hash
    assert len(a) == 12 and a.dim == 3 and set(a.sizes) == {64}
    assert a.info()["labels"] == {k: 2 for k in KINDS}
    assert all(n.startswith(lab + "_") for n, lab in zip(a.names, a.labels))
    r = cli("synth", "--out", tmp_path / "a.zarr", *args)
    assert r.code != 0 and "already exists" in r.err
    assert cli("synth", "--out", tmp_path / "a.zarr", *args, "--seed", "8", "--overwrite").code == 0
    assert store.open(tmp_path / "a.zarr").content_hash == c.content_hash


def test_measure_i_independent_of_collection_size():
    short = list(synth_measures("mixed", 4, 30, 3, seed=3))
    long = list(synth_measures("mixed", 9, 30, 3, seed=3))
    for s, t in zip(short, long):
        np.testing.assert_array_equal(s.points, t.points)


def test_geometry_of_families():
    rng = np.random.default_rng
    from otpipe.store.synth import sample

    u = sample("uniform", 2000, 4, rng(0))
    assert u.min() >= 0 and u.max() <= 1 and abs(u.mean() - 0.5) < 0.02
    circ = sample("circle", 500, 3, rng(1), noise=0.0)
    r = np.linalg.norm(circ[:, :2] - circ[:, :2].mean(0), axis=1)  # centre = mean for many points
    assert r.std() / r.mean() < 0.05 and np.ptp(circ[:, 2]) < 1e-12
    sph = sample("sphere", 4000, 3, rng(2), noise=0.0)
    r = np.linalg.norm(sph - sph.mean(0), axis=1)
    assert r.std() / r.mean() < 0.03
    tor = sample("torus", 500, 4, rng(3), noise=0.0)
    assert np.ptp(tor[:, 3]) < 1e-12
    g = sample("gaussian", 20000, 2, rng(4))
    assert np.all(np.linalg.eigvalsh(np.cov(g.T)) > 0.04)


def test_sizes_weights_and_kind_checks():
    ms = list(synth_measures(["gaussian", "circle"], 10, 50, 2, seed=1, min_points=10, weights="random"))
    assert [m.label for m in ms[:4]] == ["gaussian", "circle", "gaussian", "circle"]
    assert all(10 <= m.n <= 50 for m in ms) and len({m.n for m in ms}) > 1
    assert all(m.weights is not None and m.weights.min() >= 0.1 for m in ms)
    assert resolve_kinds("mixed", 2) == ["uniform", "gaussian", "mixture", "circle", "sphere"]
    assert resolve_kinds(["circle,torus", "circle"], 3) == ["circle", "torus"]
    with pytest.raises(ValueError, match="needs --dim >= 3"):
        resolve_kinds("torus", 2)
    with pytest.raises(ValueError, match="unknown kind"):
        resolve_kinds("banana", 2)
