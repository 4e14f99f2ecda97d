"""The solver against exact answers: closed forms, exact EMD, invariances, diagnostics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import otpipe
from otpipe.measures import pad_batch
from otpipe.sinkhorn import epsilon_schedule

from .known_answers import blog_lines, gaussian_cloud, ot_1d_sorted, random_weights


def test_schedule_matches_the_annealing_rule():
    s = epsilon_schedule(2, 4.0, 0.05, 0.5)
    assert s[0] == 16.0 and s[1] == pytest.approx(16.0) and s[-1] == pytest.approx(0.0025)
    ratios = np.array(s[2:-1]) / np.array(s[1:-2])
    assert np.allclose(ratios, 0.25)
    assert s[-2] > s[-1]


@pytest.mark.parametrize("cost, expected_scale", [("|x-y|^p", 1.0), (None, 0.5)])
def test_blog_examples(cost, expected_scale):
    # 004: points (i, 0) vs (i, s): W = s^2 for the cost |x-y|^2; a batch of shifts 1..4
    x, y, expected = blog_lines(5, shifts=(1, 2, 3, 4))
    v = otpipe.sinkhorn_divergence(x.astype(np.float64), y.astype(np.float64), blur=0.1, cost=cost, tol=1e-9)
    assert v.shape == (4,)
    assert isinstance(v, np.ndarray)  # NumPy in, NumPy out
    assert np.allclose(v, np.array(expected) * expected_scale, rtol=1e-6)
    # the single pair of the first example, with integer input
    v1 = otpipe.sinkhorn_divergence(x[0], y[0], blur=0.1, cost="|x-y|^p", tol=1e-9)
    assert float(v1) == pytest.approx(1.0, rel=1e-5)
    # the transport-cost variant (what the blog's layer returns) agrees
    w = otpipe.sinkhorn_divergence(x[0].astype(float), y[0].astype(float), blur=0.1, cost="|x-y|^p", tol=1e-9,
                                   variant="transport")
    assert float(w) == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("p, blur_factor", [(2, 1e-3), (1.5, 1e-3), (1, 1e-4)])
def test_one_dimensional_closed_form(p, blur_factor):
    # S_eps -> W_p^p / p (sorted quantiles) as blur -> 0; N = M = 300, blur = 1e-3 x diameter.
    # p = 1 needs a smaller blur for 1%: the 1-D optimal plan is far from unique for p = 1, so
    # the entropic term shifts the value by O(eps log N) (2.4% at 1e-3 x diameter, 0.3% at 1e-4).
    g = torch.Generator().manual_seed(1)
    x = torch.rand(300, 1, generator=g, dtype=torch.float64)
    y = torch.randn(300, 1, generator=g, dtype=torch.float64) * 0.3 + 0.8
    W = ot_1d_sorted(x, y, p)
    diam = float(torch.cat([x, y]).max() - torch.cat([x, y]).min())
    r = otpipe.sinkhorn_divergence(x, y, p=p, blur=blur_factor * diam, tol=TOL_1D, full_output=True)
    assert bool(r.converged)
    assert abs(float(r.value) - W) / W < 0.01


TOL_1D = 2e-3


def test_exact_emd_against_pot():
    ot = pytest.importorskip("ot")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 2, generator=g, dtype=torch.float64)
    y = torch.randn(200, 2, generator=g, dtype=torch.float64) * 0.6 + torch.tensor([1.5, 0.5], dtype=torch.float64)
    a = random_weights(200, seed=3)
    b = random_weights(200, seed=4)
    M = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1).numpy() / 2
    emd = ot.emd2(a.numpy(), b.numpy(), M)
    r = otpipe.sinkhorn_divergence(x, y, a, b, blur=0.01, tol=1e-3, full_output=True)
    assert bool(r.converged)
    assert abs(float(r.value) - emd) / emd < 0.01


def test_divergence_properties():
    x = gaussian_cloud(60, 2, seed=5)
    y = gaussian_cloud(50, 2, mean=0.7, scale=0.5, seed=6)
    s_xx = otpipe.sinkhorn_divergence(x, x)
    assert abs(float(s_xx)) < 1e-12
    s_xy = otpipe.sinkhorn_divergence(x, y)
    s_yx = otpipe.sinkhorn_divergence(y, x)
    assert float(s_xy) > 0
    assert float(s_xy) == pytest.approx(float(s_yx), rel=1e-10)
    for blur in (0.01, 0.1, 1.0, 10.0):
        assert float(otpipe.sinkhorn_divergence(x, y, blur=blur)) > 0


@pytest.mark.parametrize("blur", [0.02, 1.0, 3.0])
def test_translation_gives_half_squared_shift(blur):
    # p = 2: S_eps(alpha, alpha + t) = |t|^2 / 2 exactly, at every eps
    x = gaussian_cloud(80, 3, seed=7)
    t = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    v = otpipe.sinkhorn_divergence(x, x + t, blur=blur, tol=1e-6)
    assert float(v) == pytest.approx(float(t @ t) / 2, rel=1e-6)


def test_unbalanced_reach_to_infinity_recovers_balanced():
    x = gaussian_cloud(40, 2, seed=8)
    y = gaussian_cloud(30, 2, mean=0.5, seed=9)
    bal = float(otpipe.sinkhorn_divergence(x, y, blur=0.3, tol=1e-9))
    ub = [float(otpipe.sinkhorn_divergence(x, y, blur=0.3, reach=r, tol=1e-9)) for r in (1e1, 1e2, 1e3)]
    errs = [abs(u - bal) / bal for u in ub]
    assert errs[-1] < 1e-4
    assert errs[0] > errs[1] > errs[2]


def test_unbalanced_reach_ignores_far_outliers():
    x = gaussian_cloud(50, 2, seed=10)
    y = gaussian_cloud(50, 2, seed=11) * 1.1
    far = torch.full((5, 2), 30.0, dtype=torch.float64) + gaussian_cloud(5, 2, seed=12)
    y_out = torch.cat([y, far])
    a = torch.full((50,), 1 / 50, dtype=torch.float64)
    b_out = torch.full((55,), 1 / 55, dtype=torch.float64)
    a_bal = a
    balanced = float(otpipe.sinkhorn_divergence(x, y_out, a_bal, b_out, blur=0.05))
    with_reach = float(otpipe.sinkhorn_divergence(x, y_out, a_bal, b_out, blur=0.05, reach=0.5))
    assert with_reach < balanced
    assert with_reach < 0.1 * balanced


def test_solve_result_diagnostics_plan_and_map():
    x = gaussian_cloud(30, 2, seed=13)
    y = gaussian_cloud(25, 2, mean=1.0, seed=14)
    r = otpipe.solve(x, y, blur=0.2, tol=1e-8)
    assert bool(r.converged) and float(r.marginal_error) <= 1e-8
    assert r.f.shape == (30,) and r.g.shape == (25,)
    assert int(r.n_iter) >= len(r.schedule)
    P = r.plan()
    assert P.shape == (30, 25)
    assert torch.allclose(P.sum(1), torch.full((30,), 1 / 30, dtype=torch.float64), rtol=1e-6)
    assert torch.allclose(P.sum(0), torch.full((25,), 1 / 25, dtype=torch.float64), rtol=1e-6)
    # value = <a, f> + <b, g> = <P, C> + eps KL(P | a x b) at the optimum
    C = ((x[:, None] - y[None]) ** 2).sum(-1) / 2
    ab = torch.full((30, 25), 1 / (30 * 25), dtype=torch.float64)
    primal = (P * C).sum() + r.eps * (P * torch.log(P / ab)).sum()
    assert float(r.value) == pytest.approx(float(primal), rel=1e-6)
    T = r.transport_map()
    assert torch.allclose(T, (P @ y) / P.sum(1, keepdim=True), rtol=1e-8)
    # default mode: no stopping rule, converged is None, a marginal error is still reported
    r0 = otpipe.solve(x, y, blur=0.2)
    assert r0.converged is None and float(r0.marginal_error) >= 0


def test_not_converging_is_reported():
    x = gaussian_cloud(30, 2, seed=15)
    y = gaussian_cloud(25, 2, mean=3.0, seed=16)
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        r = otpipe.sinkhorn_divergence(x, y, blur=0.01, tol=1e-12, max_iter=15, full_output=True)
    assert not bool(r.converged)
    assert int(r.n_iter) == 15


def test_padding_gives_exactly_the_unpadded_result():
    sizes_x, sizes_y = [7, 12, 9], [10, 5, 11]
    xs = [gaussian_cloud(n, 2, seed=20 + k) for k, n in enumerate(sizes_x)]
    ys = [gaussian_cloud(n, 2, mean=0.5, seed=30 + k) for k, n in enumerate(sizes_y)]
    ws = [random_weights(n, seed=40 + k) for k, n in enumerate(sizes_x)]
    X, A = pad_batch(xs, ws)
    Y, Bw = pad_batch(ys)
    for kw in (dict(diameter=5.0), dict(tol=1e-10)):
        batched = otpipe.sinkhorn_divergence(X, Y, A, Bw, blur=0.1, **kw)
        single = torch.stack([otpipe.sinkhorn_divergence(x, y, w, None, blur=0.1, **kw) for x, y, w in zip(xs, ys, ws)])
        assert torch.allclose(batched, single, rtol=1e-9, atol=0), (kw, batched, single)


def test_float32_and_float64():
    x = gaussian_cloud(100, 3, seed=50)
    y = gaussian_cloud(90, 3, mean=0.3, seed=51)
    v64 = otpipe.sinkhorn_divergence(x, y)
    v32 = otpipe.sinkhorn_divergence(x.float(), y.float())
    assert v32.dtype == torch.float32 and v64.dtype == torch.float64
    assert float(v32) == pytest.approx(float(v64), rel=1e-4)


def test_gaussians_bures():
    # Gaussians: W2^2 = |m1 - m2|^2 + Bures; sample clouds of a Gaussian and its affine image
    # (the affine map is optimal, so the sample OT is exact for the matched samples)
    z = gaussian_cloud(150, 2, seed=52)
    A = torch.tensor([[1.5, 0.3], [0.3, 0.8]], dtype=torch.float64)  # symmetric positive definite
    m = torch.tensor([1.0, -0.5], dtype=torch.float64)
    y = z @ A + m
    exact = float(((z - y) ** 2).sum(1).mean() / 2)  # the map z -> Az + m is the Brenier map
    v = otpipe.sinkhorn_divergence(z, y, blur=0.01, tol=1e-4)
    assert float(v) == pytest.approx(exact, rel=0.01)
