"""In-memory distance matrices (otpipe.tools.matrix, otpipe.distances on a list of measures)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import otpipe
from otpipe.tools.matrix import distance_matrix


def _measures(k=12, d=2, seed=0, weighted=True):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(k):
        n = int(rng.integers(3, 30))
        x = rng.normal(size=(n, d)) + (i % 3)
        out.append((x, rng.uniform(0.1, 1.0, n)) if weighted else x)
    return out


@pytest.mark.parametrize("tol", [None, 1e-4])
def test_entries_equal_pair_by_pair_divergences(tol):
    ms = _measures()
    r = distance_matrix(ms, blur=0.1, tol=tol)
    S, D = r["divergence"], r["diameter"]
    assert S.shape == (12, 12) and np.allclose(S, S.T) and np.all(np.diag(S) == 0)
    for i, j in [(0, 1), (3, 7), (11, 2), (5, 6)]:
        x, a = ms[i]
        y, b = ms[j]
        v = otpipe.sinkhorn_divergence(torch.as_tensor(x), torch.as_tensor(y), torch.as_tensor(a / a.sum()),
                                       torch.as_tensor(b / b.sum()), blur=0.1, diameter=D, tol=tol)
        # converging mode: each entry's solves stop at tol on their own, batched or not
        assert abs(float(v) - S[i, j]) <= (1e-12 if tol is None else 5 * tol * max(1.0, abs(S[i, j])))


def test_cross_matrix_is_the_block_of_the_symmetric_one_and_kernel_losses_work():
    ms = _measures(k=10, weighted=False)
    full = distance_matrix(ms, blur=0.2)
    block = distance_matrix(ms[:4], ms[4:], blur=0.2, diameter=full["diameter"])
    assert np.abs(block["divergence"] - full["divergence"][:4, 4:]).max() < 1e-12
    assert np.allclose(block["self_source"], full["self_source"][:4])
    en = distance_matrix(ms[:4], ms[4:], loss="energy")
    x, y = torch.as_tensor(ms[1]), torch.as_tensor(ms[6])
    assert abs(float(otpipe.energy_distance(x, y)) - en["divergence"][1, 2]) < 1e-12
    assert np.isnan(en["ot"]).all()


def test_distances_takes_a_list_and_returns_the_result_variables():
    ms = _measures(k=6)
    ds = otpipe.distances(ms, blur=0.1, dtype="float32")
    assert set(ds.data_vars) >= {"divergence", "ot", "n_iter", "marginal_error", "self_source", "self_target"}
    assert ds.divergence.dtype == np.float64 and ds.attrs["in_memory"] and ds.attrs["diameter"] > 0
    assert ds.divergence.shape == (6, 6) and bool((ds.n_iter.values[np.triu_indices(6, 1)] > 0).all())
    # the Measure objects of a store are accepted too
    from otpipe.store import Measure

    ds2 = otpipe.distances([Measure(np.asarray(x), w, f"m{k}", None) for k, (x, w) in enumerate(ms)], blur=0.1,
                           dtype="float32")
    assert np.abs(ds2.divergence.values - ds.divergence.values).max() < 1e-6


@pytest.mark.parametrize("bad,match", [
    ([], "empty"),
    ([np.zeros((0, 2))], r"measures\[0\]: expected points of shape"),
    ([np.array([[0.0, np.nan]])], r"measures\[0\]: points contain NaN"),
    ([(np.zeros((2, 2)), [1.0, -1.0])], "non-negative"),
    ([(np.zeros((2, 2)), [0.0, 0.0])], "sum to zero"),
    ([np.zeros((2, 2)), np.zeros((2, 3))], "different dimensions"),
])
def test_bad_measures_are_one_line_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        distance_matrix(bad)


def test_store_options_with_measures_in_memory_are_refused(tmp_path):
    with pytest.raises(ValueError, match="out applies to collection stores only"):
        otpipe.distances(_measures(k=3), out=tmp_path / "r.zarr")
    assert not (tmp_path / "r.zarr").exists()
