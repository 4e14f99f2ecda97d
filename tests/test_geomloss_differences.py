"""Where otpipe and GeomLoss differ, and why (README table "Where otpipe differs from GeomLoss"): one test per row,
each asserting the documented difference and that the workaround (an exact distance, the missing factor or constant)
makes the two agree. GeomLoss's tensorized backend only (no KeOps), float64."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import otpipe

from .known_answers import gaussian_cloud, random_weights

geomloss = pytest.importorskip("geomloss", reason="geomloss is not installed: the comparison needs it")


def _data(n=60, m=50):
    return gaussian_cloud(n, 2, seed=1), gaussian_cloud(m, 2, mean=0.7, scale=0.8, seed=2), random_weights(n, seed=3), random_weights(m, seed=4)


def _exact_distance(x, y):
    """``|x - y|`` without GeomLoss's floor, in its tensorized cost signature ``(B, N, D), (B, M, D) -> (B, N, M)``."""
    return ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1).sqrt()


def _double_sum(x, y, a, b, k):
    """``1/2 <a - b, K (a - b)>`` with ``K = k(|x - y|)``, float64 NumPy."""
    x, y, a, b = (np.asarray(t, dtype=np.float64) for t in (x, y, a, b))

    def K(u, v):
        return k(np.sqrt(((u[:, None] - v[None]) ** 2).sum(-1)))

    return float(0.5 * a @ K(x, x) @ a + 0.5 * b @ K(y, y) @ b - a @ K(x, y) @ b)


# ------------------------------------------------------------------ (a) the 1e-8 floor on squared distances
def test_p1_sinkhorn_distance_floor():
    x, y, a, b = _data()
    ours = float(otpipe.SamplesLoss("sinkhorn", p=1, blur=0.1)(a, x, b, y))
    gl = float(geomloss.SamplesLoss("sinkhorn", p=1, blur=0.1, backend="tensorized")(a, x, b, y))
    exact = float(geomloss.SamplesLoss("sinkhorn", p=1, blur=0.1, backend="tensorized", cost=_exact_distance)(a, x, b, y))
    assert abs(ours - gl) > 1e-6  # the floor: every self-distance 0 counts as 1e-4
    assert ours == pytest.approx(exact, rel=1e-13, abs=1e-15)


@pytest.mark.parametrize("name", ["laplacian", "energy"])
def test_kernel_distance_floor(name):
    x, y, a, b = _data()
    k = (lambda d: np.exp(-d / 0.5)) if name == "laplacian" else (lambda d: -d)

    def exact_kernel(u, v, blur=None, use_keops=False, ranges=None):
        d = _exact_distance(u, v)
        return -d if name == "energy" else (-d / blur).exp()

    ours = float(otpipe.SamplesLoss(name, blur=0.5)(a, x, b, y))
    gl = float(geomloss.SamplesLoss(name, blur=0.5, backend="tensorized")(a, x, b, y))
    gl_exact = float(geomloss.SamplesLoss(name, blur=0.5, backend="tensorized", kernel=exact_kernel)(a, x, b, y))
    assert ours == pytest.approx(_double_sum(x, y, a, b, k), rel=1e-13)
    assert ours == pytest.approx(gl_exact, rel=1e-13)
    assert abs(ours - gl) > 1e-8
    # and the cause, exactly: GeomLoss's value is the double sum with distances floored at 1e-4 (in units of blur
    # for the Laplacian kernel, which it evaluates on x / blur)
    floor = 1e-4 * (0.5 if name == "laplacian" else 1.0)
    assert gl == pytest.approx(_double_sum(x, y, a, b, lambda d: k(np.maximum(d, floor))), rel=1e-12)


# ------------------------------------------------------------------ (b) unbalanced gradients
@pytest.mark.parametrize("debias", [False, True])
def test_unbalanced_position_gradients(debias):
    """Same fixed schedule, so the same potentials: GeomLoss's gradient is otpipe's times (rho + eps/2)/(rho + eps)
    (its UnbalancedWeight.backward is never called by autograd); otpipe's converged gradient is the finite difference."""
    x, y, a, b = _data(30, 25)
    a, b = 1.3 * a, 0.7 * b
    eps, rho = 0.5**2, 0.8**2
    kw = dict(blur=0.5, reach=0.8, debias=debias, scaling=0.9)
    grads = []
    for loss in (otpipe.SamplesLoss("sinkhorn", **kw), geomloss.SamplesLoss("sinkhorn", backend="tensorized", **kw)):
        xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
        grads.append(torch.autograd.grad(loss(a, xr, b, yr), [xr, yr]))
    factor = (rho + eps / 2) / (rho + eps)
    for ours, gl in zip(*grads):
        assert not torch.allclose(gl, ours, rtol=1e-3)
        assert torch.allclose(gl, factor * ours, rtol=1e-12, atol=1e-15)
    # otpipe's gradient is the derivative of its value
    conv = otpipe.SamplesLoss("sinkhorn", blur=0.5, reach=0.8, debias=debias, tol=1e-13, max_iter=100000)
    xr = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(conv(a, xr, b, y), [xr])
    h = 1e-6
    for i, d in [(0, 0), (7, 1), (19, 0)]:
        e = torch.zeros_like(x)
        e[i, d] = h
        fd = (float(conv(a, x + e, b, y)) - float(conv(a, x - e, b, y))) / (2 * h)
        assert float(g[i, d]) == pytest.approx(fd, rel=1e-6, abs=1e-10)


# ------------------------------------------------------------------ (c) soft Hausdorff
def test_hausdorff_raises_in_geomloss_and_matches_a_double_sum_here():
    x, y, a, b = _data()
    with pytest.raises(KeyError):
        geomloss.SamplesLoss("hausdorff", blur=0.1, backend="tensorized")(a, x, b, y)
    eps = 0.1**2
    X, Y, A, B = (np.asarray(t) for t in (x, y, a, b))

    def soft(u, v, w):  # F_w(u) = -eps log sum_j w_j exp(-|u - v_j|^2 / 2 eps)
        d2 = ((u[:, None] - v[None]) ** 2).sum(-1)
        return -eps * np.log((w[None] * np.exp(-d2 / (2 * eps))).sum(1))

    ref = 0.5 * A @ (soft(X, Y, B) - soft(X, X, A)) + 0.5 * B @ (soft(Y, X, A) - soft(Y, Y, B))
    assert float(otpipe.SamplesLoss("hausdorff", blur=0.1)(a, x, b, y)) == pytest.approx(float(ref), rel=1e-13)


# ------------------------------------------------------------------ (d) unbalanced values with unequal masses
def test_unbalanced_values_with_unequal_masses():
    """Debiased: both carry Sejourne et al.'s mass term (GeomLoss through its Prop. 12 formula), so they agree.
    ``debias=False``: GeomLoss's raw value lacks the constant ``eps (m_a m_b - (m_a + m_b)/2)`` of the dual (zero only
    for unit masses); otpipe's is the primal objective of its plan."""
    x, y, a, b = _data()
    a, b = 1.5 * a, 0.7 * b
    eps, rho, ma, mb = 1.0, 0.25, 1.5, 0.7
    kw = dict(blur=1.0, reach=0.5)
    ours = float(otpipe.SamplesLoss("sinkhorn", **kw)(a, x, b, y))
    gl = float(geomloss.SamplesLoss("sinkhorn", backend="tensorized", **kw)(a, x, b, y))
    assert ours == pytest.approx(gl, rel=1e-12)
    r = otpipe.sinkhorn_divergence(x, y, a, b, full_output=True, **kw)
    assert float(r.mass_term) == pytest.approx(0.5 * eps * (ma - mb) ** 2, rel=1e-14)

    # the same fixed schedule (same potentials): the values differ by exactly the constant
    ours_raw = float(otpipe.SamplesLoss("sinkhorn", debias=False, **kw)(a, x, b, y))
    gl_raw = float(geomloss.SamplesLoss("sinkhorn", backend="tensorized", debias=False, **kw)(a, x, b, y))
    const = eps * (ma * mb - 0.5 * (ma + mb))
    assert abs(ours_raw - gl_raw) > 1e-3
    assert ours_raw == pytest.approx(gl_raw + const, rel=1e-13)
    raw = otpipe.solve(x, y, a, b, tol=1e-13, max_iter=100000, **kw)
    # primal objective <pi, C> + eps KL(pi | a b) + rho KL(pi 1 | a) + rho KL(pi^T 1 | b) (generalised KL) at the plan
    P = raw.plan().numpy()
    A, B = a.numpy(), b.numpy()
    C = 0.5 * ((x.numpy()[:, None] - y.numpy()[None]) ** 2).sum(-1)

    def kl(p, q):
        return float((p * np.log(p / q) - p + q).sum())

    primal = (P * C).sum() + eps * kl(P, A[:, None] * B[None]) + rho * kl(P.sum(1), A) + rho * kl(P.sum(0), B)
    assert float(raw.value) == pytest.approx(primal, rel=1e-9)


# ------------------------------------------------------------------ (e) what agrees
@pytest.mark.parametrize(
    "loss, kw",
    [("sinkhorn", dict(blur=0.05)), ("sinkhorn", dict(blur=0.3, debias=False)), ("sinkhorn", dict(reach=0.5)),
     ("gaussian", dict(blur=0.5))],
    ids=["S_eps", "OT_eps", "unbalanced-unit-masses", "gaussian"],
)
def test_what_agrees(loss, kw):
    x, y, a, b = _data()
    ours = float(otpipe.SamplesLoss(loss, **kw)(a, x, b, y))
    gl = float(geomloss.SamplesLoss(loss, backend="tensorized", **kw)(a, x, b, y))
    assert ours == pytest.approx(gl, rel=1e-12)
