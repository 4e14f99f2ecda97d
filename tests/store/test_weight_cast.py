"""Weights that the storage dtype cannot hold are refused with the reason, never stored wrong (issue 21, item 18)."""
from __future__ import annotations

import numpy as np
import pytest

from otpipe import store
from otpipe.store import Measure


def _npz(path, weights, n=5):
    rng = np.random.default_rng(0)
    np.savez(path, points=rng.random((n, 2)), weights=np.asarray(weights, dtype=np.float64))
    return path


def test_underflowing_weights_say_so_and_float64_keeps_them(tmp_path, cli):
    f = _npz(tmp_path / "tiny.npz", np.full(5, 1e-300))
    r = cli("ingest", f, "--out", tmp_path / "t32.zarr")
    assert r.code == 1 and len(r.err_lines) == 1, r.err
    assert str(f) in r.err and "all weights underflow to zero when stored as float32" in r.err, r.err
    assert "--dtype float64" in r.err and "zero total mass" not in r.err
    assert not (tmp_path / "t32.zarr").exists()
    r = cli("ingest", f, "--out", tmp_path / "t64.zarr", "--dtype", "float64")
    assert r.code == 0, r.err
    m = store.open(tmp_path / "t64.zarr")[0]
    np.testing.assert_array_equal(m.weights, np.full(5, 1e-300))


def test_partial_underflow_that_changes_the_mass_is_refused(tmp_path):
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="would change the total mass by .* relative .*1 weight\\(s\\) would become zero"):
        store.create(tmp_path / "a.zarr", [Measure(x, np.array([1e-40, 1e-40, 1e-40, 1e-50]), "m")])
    assert not (tmp_path / "a.zarr").exists()
    # a negligible share of the mass underflowing is the float32 rounding the user asked for
    c = store.create(tmp_path / "b.zarr", [Measure(x, np.array([1.0, 1.0, 1.0, 1e-50]), "m")])
    assert c[0].weights.tolist() == [1.0, 1.0, 1.0, 0.0]
    # and ordinary weights are stored as before
    w = np.random.default_rng(0).uniform(0.1, 3.0, 4)
    c = store.create(tmp_path / "c.zarr", [Measure(x, w, "m")])
    np.testing.assert_array_equal(c[0].weights, w.astype(np.float32))


def test_genuinely_zero_and_overflowing_weights(tmp_path):
    x = np.zeros((2, 2))
    with pytest.raises(ValueError, match="zero total mass \\(all weights are zero\\)"):
        store.create(tmp_path / "z.zarr", [Measure(x, np.zeros(2), "m")])
    with pytest.raises(ValueError, match="weights beyond the float32 range \\(largest 1e\\+300"):
        store.create(tmp_path / "o.zarr", [Measure(x, np.array([1e300, 1.0]), "m")])
    with pytest.raises(ValueError, match="negative weights"):  # -1e-50 is -0.0 in float32: still negative input
        store.create(tmp_path / "n.zarr", [Measure(x, np.array([1.0, -1e-50]), "m")])
