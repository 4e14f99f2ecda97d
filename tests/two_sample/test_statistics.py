"""Statistics, permutations and p-values of otpipe.tools.two_sample against direct (independent) formulas."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

import otpipe
from otpipe.tools.two_sample import block_permutations, prepare_test, two_sample_test


def _energy(x, y):
    return 2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()


def _mmd_u(x, y, sigma):
    k = lambda a, b: np.exp(-cdist(a, b, "sqeuclidean") / (2 * sigma**2))  # noqa: E731
    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * k(x, y).mean())


@pytest.fixture
def xy():
    rng = np.random.default_rng(3)
    return rng.normal(size=(13, 3)), rng.normal(size=(9, 3)) + 0.4


def _split(x, y, perm):
    z = np.concatenate([x, y])
    return z[perm[: len(x)]], z[perm[len(x):]]


def test_energy_statistic_and_null_are_direct_formulas(xy):
    x, y = xy
    r = two_sample_test(x, y, statistic="energy", n_permutations=30, seed=5, block_size=7)
    assert r.statistic == pytest.approx(_energy(x, y), rel=1e-12)
    prep = prepare_test(x, y, statistic="energy", n_permutations=30, seed=5, block_size=7)
    perms = np.concatenate([block_permutations(prep, k) for k in range(prep.n_blocks)])
    # the permutations are those of SeedSequence(seed, spawn_key=(k,)), re-drawn here independently
    rng = np.random.default_rng(np.random.SeedSequence(5, spawn_key=(2,)))
    assert np.array_equal(perms[14:21], rng.permuted(np.tile(np.arange(22), (7, 1)), axis=1))
    assert all(sorted(p) == list(range(22)) for p in perms)
    expect = [_energy(*_split(x, y, p)) for p in perms]
    np.testing.assert_allclose(r.null_distribution, expect, rtol=1e-11)
    assert r.pvalue == (1 + np.sum(np.asarray(expect) >= r.statistic)) / 31
    # twice otpipe.energy_distance (GeomLoss normalisation)
    assert r.statistic == pytest.approx(2 * float(otpipe.energy_distance(torch.tensor(x), torch.tensor(y))), rel=1e-6)


def test_mmd_unbiased_with_median_bandwidth(xy):
    x, y = xy
    z = np.concatenate([x, y])
    med = np.median(cdist(z, z)[np.triu_indices(len(z), 1)])
    r = two_sample_test(x, y, statistic="mmd", n_permutations=20, seed=1)
    assert r.params["bandwidths"] == [pytest.approx(med)]
    assert r.statistic == pytest.approx(_mmd_u(x, y, med), rel=1e-10)
    prep = prepare_test(x, y, statistic="mmd", n_permutations=20, seed=1)
    perms = block_permutations(prep, 0)
    np.testing.assert_allclose(r.null_distribution, [_mmd_u(*_split(x, y, p), med) for p in perms], rtol=1e-9, atol=1e-14)
    # unbiased: identical samples still give a negative-or-zero mean; a fixed bandwidth is honoured
    r2 = two_sample_test(x, y, statistic="mmd", n_permutations=5, seed=1, sigma=0.7)
    assert r2.statistic == pytest.approx(_mmd_u(x, y, 0.7), rel=1e-10)


def test_mmd_unbiased_is_unbiased_under_null():
    # E[MMD_u^2] = 0 under H0: average over many independent same-distribution pairs
    rng = np.random.default_rng(0)
    vals = [two_sample_test(rng.normal(size=(8, 2)), rng.normal(size=(8, 2)), statistic="mmd",
                            n_permutations=1, sigma=1.0).statistic for _ in range(400)]
    assert abs(np.mean(vals)) < 3 * np.std(vals) / np.sqrt(len(vals))


def test_mmd_several_bandwidths_is_max_of_standardised(xy):
    x, y = xy
    sig = [0.3, 1.0, 3.0]
    r = two_sample_test(x, y, statistic="mmd", n_permutations=40, seed=2, sigma=sig)
    prep = prepare_test(x, y, statistic="mmd", n_permutations=40, seed=2, sigma=sig)
    perms = np.concatenate([np.arange(22)[None], block_permutations(prep, 0)])
    raw = np.array([[_mmd_u(*_split(x, y, p), s) for s in sig] for p in perms])
    std = (raw - raw.mean(0)) / raw.std(0)
    assert r.statistic == pytest.approx(std[0].max(), rel=1e-8)
    np.testing.assert_allclose(r.null_distribution, std[1:].max(1), rtol=1e-8)
    assert r.pvalue == (1 + np.sum(std[1:].max(1) >= std[0].max())) / 41


def test_sinkhorn_statistic_matches_direct_divergences(xy):
    x, y = xy
    z = np.concatenate([x, y])
    diam = float(np.linalg.norm(z.max(0) - z.min(0)))
    r = two_sample_test(x, y, statistic="sinkhorn", n_permutations=12, seed=4, block_size=5, blur=0.3)
    assert r.params["diameter"] == pytest.approx(diam)
    direct = lambda a, b: float(otpipe.sinkhorn_divergence(  # noqa: E731
        torch.tensor(a), torch.tensor(b), blur=0.3, diameter=diam, backend=r.params["backend"]))
    assert r.statistic == pytest.approx(direct(x, y), rel=1e-9)
    prep = prepare_test(x, y, statistic="sinkhorn", n_permutations=12, seed=4, block_size=5, blur=0.3)
    perms = np.concatenate([block_permutations(prep, k) for k in range(prep.n_blocks)])
    np.testing.assert_allclose(r.null_distribution, [direct(*_split(x, y, p)) for p in perms], rtol=1e-9, atol=1e-12)


def test_same_seed_same_result_other_seed_other_null(xy):
    x, y = xy
    a = two_sample_test(x, y, statistic="energy", n_permutations=50, seed=11)
    b = two_sample_test(torch.tensor(x), torch.tensor(y), statistic="energy", n_permutations=50, seed=11)
    c = two_sample_test(x, y, statistic="energy", n_permutations=50, seed=12)
    assert np.array_equal(a.null_distribution, b.null_distribution) and a.pvalue == b.pvalue
    assert not np.array_equal(a.null_distribution, c.null_distribution)
    assert a.null_distribution.shape == (50,) and a.n_permutations == 50 and a.name == "energy"
    assert a.params["n"] == 13 and a.params["m"] == 9 and a.params["seed"] == 11


def test_clear_separation_gives_smallest_p_value():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(30, 2)) + 5
    for st in ("energy", "mmd", "sinkhorn"):
        r = two_sample_test(x, y, statistic=st, n_permutations=99, seed=0, blur=0.5) if st == "sinkhorn" else \
            two_sample_test(x, y, statistic=st, n_permutations=99, seed=0)
        assert r.pvalue == pytest.approx(0.01)
