"""The solver against exact answers: closed forms, exact EMD, invariances, diagnostics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import otpipe
from otpipe.problems.measures import pad_batch
from otpipe.solvers.sinkhorn import epsilon_schedule

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


# ------------------------------------------------------------------ issue 21: large p, diameter, scaling, warnings
def _issue21_clouds():
    """The clouds of issue 21: 30 and 25 points in 2-D, the second shifted by 1, uniform weights."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(30, 2, generator=g, dtype=torch.float64), torch.randn(25, 2, generator=g, dtype=torch.float64) + 1


@pytest.mark.parametrize("p", [2.5, 3, 4, 8])
def test_fixed_schedule_refuses_p_above_two(p):
    """Issue 21 item 1: the fixed schedule gave S_eps = -2.79 at p = 4 (exact 2.80): its unconverged potentials are
    off by ~ marginal error x diameter^p / p. It is refused beyond p = 2 with the supported range and the remedy."""
    x, y = _issue21_clouds()
    for call in (lambda: otpipe.sinkhorn_divergence(x, y, p=p), lambda: otpipe.solve(x, y, p=p),
                 lambda: otpipe.SamplesLoss("sinkhorn", p=p)):
        with pytest.raises(ValueError, match=r"needs tol= .*supported for 0 < p <= 2 only"):
            call()
    assert float(otpipe.hausdorff(x, y, p=p)) > 0  # no Sinkhorn loop: any p


def test_large_p_converged_matches_exact_emd():
    """Issue 21 item 1, the fix: p = 4 with tol gives S_eps >= 0 equal to the exact OT (POT's network simplex) up to
    the entropic bias of eps = 0.05^4 (6e-6)."""
    ot = pytest.importorskip("ot")
    x, y = _issue21_clouds()
    a, b = np.full(30, 1 / 30), np.full(25, 1 / 25)
    for p in (3, 4):
        exact = ot.emd2(a, b, (torch.cdist(x, y) ** p / p).numpy())
        s = float(otpipe.sinkhorn_divergence(x, y, p=p, tol=1e-6))
        assert s >= 0 and s == pytest.approx(exact, rel=1e-4)


@pytest.mark.parametrize("p, blur", [(16, 0.05), (100, 0.05), (100, 2.0)])
def test_large_p_beyond_the_dtype_is_refused_with_the_range(p, blur):
    """Issue 21 item 1: p = 16 gave -2.29e8 (exact 6.2e5), p = 100 -8.3e58 reported converged: the potentials'
    rounding exceeds eps. Refused, naming the blur that fits; that blur then solves."""
    x, y = _issue21_clouds()
    with pytest.raises(ValueError, match=r"outside the range float64 resolves.*blur >= ([0-9.e+-]+) for this p") as e:
        otpipe.sinkhorn_divergence(x, y, p=p, blur=blur, tol=1e-5)
    b_min = float(str(e.value).split("blur >= ")[1].split(" ")[0])
    assert b_min > blur
    side = float((torch.cat([x, y]).amax(0) - torch.cat([x, y]).amin(0)).max())
    assert b_min == pytest.approx(side * (torch.finfo(torch.float64).eps / p) ** (1 / p), rel=1e-2)


def test_negative_balanced_ot_is_never_returned():
    """A stalled solve (p = 16 at blur 1: within the dtype, but Sinkhorn does not converge) ended at OT_eps = -2.3e8,
    impossible for balanced OT (C >= 0): a ValueError, never a value."""
    x, y = _issue21_clouds()
    with pytest.raises(ValueError, match=r"OT_eps = -[0-9.e+]+ < 0 .*impossible for balanced OT"):
        otpipe.solve(x, y, p=16, blur=1.0, tol=1e-5, max_iter=200)
    from otpipe.solvers.sinkhorn import _nonnegative

    a = torch.full((1, 3), 1 / 3, dtype=torch.float64)
    f = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    v = (a * f).sum(-1) * 2
    with pytest.raises(ValueError, match="impossible for balanced OT"):
        _nonnegative(v, a, f, a, f, 0.1)
    tiny = torch.tensor([-1e-17], dtype=torch.float64)  # rounding: returned
    assert _nonnegative(tiny, a, f, a, f, 0.1) is tiny


def test_divergence_is_never_negative_for_p_up_to_two():
    """S_eps >= 0 for p <= 2 (positive definite kernel): a value that rounds below 0 (identical clouds in float32)
    is returned as 0, the parts keep the rounding; the gradient stays that of the raw value."""
    g = torch.Generator().manual_seed(3)
    for k in range(6):  # measured: the raw combination is below 0 (-1.7e-7) for some of these
        x = torch.randn(40, 2, generator=g)
        y = x[torch.randperm(40, generator=g)]
        r = otpipe.sinkhorn_divergence(x, y, blur=0.01, full_output=True)
        raw = float(r.ot_xy - 0.5 * (r.ot_xx + r.ot_yy))
        assert float(r.value) == max(raw, 0.0) and float(r.value) >= 0
    from otpipe.tools.losses import _sign_guard

    v = torch.tensor([-1.0, 0.5], dtype=torch.float64, requires_grad=True)
    with pytest.warns(otpipe.ConvergenceWarning, match="returned as 0"):
        out = _sign_guard(v, torch.tensor([1e-3, 1e-3], dtype=torch.float64), p=2)
    assert out.tolist() == [0.0, 0.5]
    out.sum().backward()
    assert v.grad.tolist() == [1.0, 1.0]


def test_divergence_can_be_negative_beyond_p_two_and_says_so():
    """For p > 2 exp(-C/eps) is not positive definite: delta_0 against (delta_-1 + delta_1)/2 gives
    S_eps -> (4 - 2^p) / (4p) as blur -> inf (-0.75 at p = 4; 0 at p = 2): returned with a RuntimeWarning."""
    x = torch.tensor([[0.0]], dtype=torch.float64)
    y = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match=r"p = 4 > 2 .*no divergence"):
        s = float(otpipe.sinkhorn_divergence(x, y, p=4, blur=100.0, tol=1e-10))
    assert s == pytest.approx((4 - 2**4) / (4 * 4), abs=1e-6)
    assert float(otpipe.sinkhorn_divergence(x, y, p=2, blur=100.0, tol=1e-10)) >= 0


def test_diameter_below_the_points_is_refused():
    """Issue 21 item 6: diameter=1e-6 gave 0.777 (default 1.286, converged 1.331) without a word."""
    x, y = _issue21_clouds()
    with pytest.raises(ValueError, match=r"diameter=1e-06 is below the points' extent .*pass diameter >= "):
        otpipe.sinkhorn_divergence(x, y, diameter=1e-6)
    with pytest.raises(ValueError, match="diameter=0.5 is below"):
        otpipe.solve(x, y, diameter=0.5)
    side = float((torch.cat([x, y]).amax(0) - torch.cat([x, y]).amin(0)).max())
    ok = float(otpipe.sinkhorn_divergence(x, y, diameter=0.5 * side))  # the documented bound: accepted
    assert ok == pytest.approx(float(otpipe.sinkhorn_divergence(x, y)), rel=0.01)
    # the converging mode solves every temperature: any diameter gives the converged value
    conv = float(otpipe.sinkhorn_divergence(x, y, tol=1e-8))
    assert float(otpipe.sinkhorn_divergence(x, y, diameter=1e-6, tol=1e-8)) == pytest.approx(conv, rel=1e-6)


def test_scaling_close_to_one_is_refused_at_once():
    """Issue 21 item 12: scaling 0.9999 ran 8.9 s (46,000 temperatures), 0.999999 about 15 minutes."""
    from otpipe.solvers.loop import MAX_TEMPERATURES, n_temperatures

    x, y = _issue21_clouds()
    for s in (0.9999, 0.999999):
        with pytest.raises(ValueError, match=rf"above the limit of {MAX_TEMPERATURES:,}: use scaling <= (0\.\d+)") as e:
            otpipe.sinkhorn_divergence(x, y, scaling=s)
    fit = float(str(e.value).split("scaling <= ")[1].split(" ")[0])
    diam = float((torch.cat([x, y]).amax(0) - torch.cat([x, y]).amin(0)).norm())
    assert n_temperatures(diam, 0.05, fit) <= MAX_TEMPERATURES < n_temperatures(diam, 0.05, fit + 2e-6)
    assert len(epsilon_schedule(2, diam, 0.05, fit)) <= MAX_TEMPERATURES
