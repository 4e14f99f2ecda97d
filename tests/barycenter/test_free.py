"""Free-support barycenters against closed forms (Diracs, translations, 1-D Gaussians) and POT."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.stats import norm

import otpipe
from otpipe.tools.barycenters import free_support_barycenter


def _matching_error(X, T):
    C = ((X[:, None] - T[None]) ** 2).sum(-1)
    i, j = linear_sum_assignment(C)
    return float(np.sqrt(C[i, j].max()))


def test_two_diracs_give_the_midpoint():
    r = otpipe.barycenter([np.array([[0.0, 0.0]]), np.array([[2.0, 4.0]])])
    np.testing.assert_allclose(r.points, [[1.0, 2.0]], atol=1e-9)
    assert r.converged and r.method == "free"
    r = otpipe.barycenter([np.array([[0.0]]), np.array([[4.0]])], [0.25, 0.75])
    np.testing.assert_allclose(r.points, [[3.0]], atol=1e-9)


def test_translated_copies_give_the_shape_at_the_mean_translation():
    th = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    Y = np.c_[2 * np.cos(th), np.sin(th) + 0.3 * np.cos(2 * th)]
    ts = np.array([[0.0, 0.0], [3.0, 1.0], [-1.0, 2.0]])
    lam = np.array([0.5, 0.3, 0.2])
    r = free_support_barycenter([Y + t for t in ts], lam, max_iter=60)
    assert r.converged
    diam = np.linalg.norm(np.ptp(np.concatenate([Y + t for t in ts]), axis=0))
    assert _matching_error(r.points, Y + lam @ ts) < 2e-3 * diam
    # the objective decreased to sum_k lambda_k |t_k - tbar|^2 / 2 (+ S_eps(alpha, Y) ~ 0)
    spread = 0.5 * float(lam @ ((ts - lam @ ts) ** 2).sum(1))
    assert r.history[-1] == pytest.approx(spread, rel=1e-3) and r.history[0] > r.history[-1]


def _as_sorted_measure(points, weights):
    order = np.argsort(points[:, 0])
    return points[order], weights[order]


def test_learned_weights_recover_a_weighted_input():
    """Copies of one weighted measure: the barycenter is that measure (S_eps = 0), weights included, reached by the
    method's own criterion from uniform starting weights on its support (atoms may trade places: compared as measures)."""
    pts, w = np.array([[0.0], [1.0], [3.0]]), np.array([0.6, 0.3, 0.1])
    r = free_support_barycenter([(pts, w), (pts, w)], n_points=3, init=pts.copy(), learn_weights=True, blur=0.5)
    assert r.converged and r.reason == ""
    h = np.asarray(r.history)
    assert (np.diff(h) <= 1e-12).all()  # the line search accepts no rise
    assert abs(h[-1]) < 1e-6 * h[0]  # the known minimum is 0
    pts_r, w_r = _as_sorted_measure(r.points, r.weights)
    # first-order conditions at tol = 1e-4 on this well-conditioned problem (kernel exp(-2) between atoms)
    np.testing.assert_allclose(w_r, w, atol=1e-3)
    np.testing.assert_allclose(pts_r, pts, atol=1e-2)
    # the certified bound: F is convex in the weights, so F - min_a F <= <a, g> - min g
    assert r.params["weight_gap"] >= 0
    # without learned weights the uniform atoms sit at the quantile means of the input: 0, 0.2, 1.6
    r0 = free_support_barycenter([(pts, w)], n_points=3, init=pts.copy(), blur=0.05, sinkhorn_tol=1e-7)
    np.testing.assert_allclose(np.sort(r0.points.ravel()), [0.0, 0.2, 1.6], atol=2e-3)


def test_learned_weights_report_stalled_inner_solves():
    """At blur 0.1 the kernel between atoms 1 apart is exp(-50): Sinkhorn moves no mass between them and the inner
    solves of any trial point whose weights are off stall above sinkhorn_tol. The run must say so (not converged, the
    reason, one warning), never declare convergence, and still only accept steps that lower the objective."""
    pts, w = np.array([[0.0], [1.0], [3.0]]), np.array([0.6, 0.3, 0.1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = free_support_barycenter([(pts, w), (pts, w)], n_points=3, init=pts.copy(), learn_weights=True,
                                    max_iter=60, blur=0.1, sinkhorn_max_iter=1000)
    assert not r.converged
    assert "line search failed" in r.reason and "> sinkhorn_tol" in r.reason, r.reason
    msgs = [str(c.message) for c in caught if issubclass(c.category, RuntimeWarning) and "barycenter" in str(c.message)]
    assert len(msgs) == 1 and r.reason in msgs[0]
    h = np.asarray(r.history)
    assert (np.diff(h) <= 1e-12).all() and h[-1] < h[0]


def test_1d_gaussians_give_the_averaged_gaussian():
    n = 200
    q = norm.ppf((np.arange(n) + 0.5) / n)
    m1, s1, m2, s2 = 0.0, 1.0, 6.0, 3.0
    r = free_support_barycenter([(m1 + s1 * q)[:, None], (m2 + s2 * q)[:, None]], n_points=n, tol=1e-5, max_iter=80)
    assert r.converged
    x = np.sort(r.points[:, 0])
    ref = (m1 + m2) / 2 + (s1 + s2) / 2 * q  # average of the quantile functions (exact in 1-D)
    assert abs(x.mean() - (m1 + m2) / 2) < 0.02 * (s1 + s2) / 2
    assert abs(x.std() / ref.std() - 1) < 0.02
    inner = slice(n // 20, -n // 20)  # quantiles, tails excluded
    assert np.abs(x[inner] - ref[inner]).max() < 0.02 * (s1 + s2) / 2 * 3


@pytest.mark.filterwarnings("ignore:free-support barycenter stopped at max_iter")  # a few iterations on purpose
def test_init_options_and_measures_of_different_sizes():
    rng = np.random.default_rng(0)
    ms = [rng.normal(size=(k, 2)) + [3 * i, 0] for i, k in enumerate((5, 17, 40))]
    for init in ("sample", "mean", rng.normal(size=(12, 2))):
        r = free_support_barycenter(ms, init=init, n_points=12, max_iter=10, seed=1)
        assert r.points.shape == (12, 2) and np.isfinite(r.points).all()
        np.testing.assert_allclose(r.points.mean(0), np.mean([m.mean(0) for m in ms], axis=0), atol=0.2)
    a = free_support_barycenter(ms, n_points=12, max_iter=5, seed=3)
    b = free_support_barycenter(ms, n_points=12, max_iter=5, seed=3)
    np.testing.assert_array_equal(a.points, b.points)


@pytest.mark.filterwarnings("ignore:free-support barycenter stopped at max_iter")  # POT's 20 iterations vs our 30
def test_agrees_with_pot_free_support():
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(4)
    ms = [rng.normal(size=(30, 2)) * [1.0, 0.5] + [0, 0], rng.normal(size=(30, 2)) * [0.5, 1.0] + [4, 1]]
    X0 = ms[0].copy()
    blur = 0.25
    ours = free_support_barycenter(ms, init=X0, blur=blur, max_iter=30, tol=1e-4)
    reg = 2 * blur**2  # POT: exp(-|x-y|^2 / reg); ours: exp(-|x-y|^2 / (2 blur^2))
    pot = ot.bregman.free_support_sinkhorn_barycenter(ms, [np.full(30, 1 / 30)] * 2, X0, reg=reg, numItermax=20, numInnerItermax=1000)
    # both approximate the W2 barycenter; POT's plan is not debiased (its cloud shrinks a little)
    np.testing.assert_allclose(ours.points.mean(0), pot.mean(0), atol=0.05)
    np.testing.assert_allclose(ours.points.std(0), pot.std(0), rtol=0.1)


@pytest.mark.parametrize(
    "measures, weights, message",
    [
        ([], None, "no measures"),
        ([np.zeros((3, 2)), np.zeros((3, 3))], None, "dimension mismatch"),
        ([np.zeros((3, 2)), np.ones((3, 2))], [0.5, 0.6], "sum to one"),
        ([np.zeros((3, 2)), np.ones((3, 2))], [0.5, 0.3, 0.2], "3 barycenter weights for 2"),
        ([np.full((3, 2), np.nan)], None, "NaN"),
    ],
)
def test_bad_input(measures, weights, message):
    with pytest.raises(ValueError, match=message):
        otpipe.barycenter(measures, weights)


@pytest.mark.parametrize("kw, message", [
    ({"blur": -1.0}, "blur must be a positive finite number, got -1.0"),
    ({"step": 0.0}, "step must be a positive finite number, got 0.0"),
    ({"tol": float("nan")}, "tol must be a positive finite number, got nan"),
    ({"max_iter": 0}, "max_iter must be >= 1, got 0"),
])
def test_bad_parameter_is_named(kw, message):
    ms = [np.zeros((3, 2)), np.ones((3, 2))]
    with pytest.raises(ValueError, match=message):
        otpipe.barycenter(ms, **kw)
