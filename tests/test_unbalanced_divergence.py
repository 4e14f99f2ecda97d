"""The debiased unbalanced Sinkhorn divergence (Sejourne et al. 2019) with its mass term: non-negative,
zero only for equal measures, a closed form on identical supports, finite-difference gradients; and what
holds (and does not) for the unbalanced transport variant."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

import otpipe

from .known_answers import gaussian_cloud, random_weights


def _self_plan(x: np.ndarray, eps: float, rho: float, p: float = 2.0):
    """The unit-mass uniform self problem solved densely here: potential ``h = d softmin(h)``, ``d = rho/(rho+eps)``.

    Returns ``(Q, W)``: the plan's mass ``<mu, e^{-h/rho}>`` and its transport cost ``<pi, C>``.
    """
    n = len(x)
    C = (np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1)) ** p) / p
    lmu = np.full(n, -np.log(n))
    d = rho / (rho + eps)
    h = np.zeros(n)
    for _ in range(100000):
        hn = 0.5 * (h - d * eps * logsumexp(lmu[None] + (h[None] - C) / eps, axis=1))
        if np.abs(hn - h).max() < 1e-14:
            break
        h = hn
    logpi = lmu[:, None] + lmu[None] + (h[:, None] + h[None] - C) / eps
    pi = np.exp(logpi)
    return float(np.exp(lmu - h / rho).sum()), float((pi * C).sum())


def _kappa(eps, rho):
    return (rho + eps) / (2 * rho + eps)


# ------------------------------------------------------------------ the example, closed form
@pytest.mark.parametrize("blur, reach", [(1.0, 0.5), (3.0, 0.5), (0.3, 1.0), (0.1, 0.2)])
def test_identical_supports_closed_form(blur, reach):
    """``a = m_a mu``, ``b = m_b mu``: the potentials are ``h + c`` (``h`` the unit self potential, ``c`` constants)
    so ``S = (rho + eps/2) Q (m_a^k - m_b^k)^2``, ``k = (rho+eps)/(2 rho+eps)``, ``Q`` the unit self plan's mass."""
    torch.manual_seed(0)
    u = torch.full((200,), 1 / 200, dtype=torch.float64)
    x = 0.5 * torch.randn(200, 2, dtype=torch.float64)
    r = otpipe.sinkhorn_divergence(x, x, 1.5 * u, 0.7 * u, blur=blur, reach=reach, tol=1e-10, full_output=True)
    eps, rho = blur**2, reach**2
    Q, _ = _self_plan(x.numpy(), eps, rho)
    k = _kappa(eps, rho)
    ref = (rho + 0.5 * eps) * Q * (1.5**k - 0.7**k) ** 2
    assert float(r.value) > 0
    assert float(r.value) == pytest.approx(ref, rel=1e-8)
    # the mass term is exactly what the old combination lacked (it was about -0.07 at blur 1, reach 0.5)
    assert float(r.mass_term) == pytest.approx(0.5 * eps * 0.8**2, rel=1e-14)
    assert float(r.ot_xy - 0.5 * (r.ot_xx + r.ot_yy)) == pytest.approx(ref - 0.5 * eps * 0.64, rel=1e-7)


# ------------------------------------------------------------------ >= 0, = 0 iff a = b
@pytest.mark.parametrize("blur", [0.1, 0.5, 2.0])
@pytest.mark.parametrize("reach", [0.05, 0.5, 5.0])
@pytest.mark.parametrize("p", [1, 2])
def test_nonnegative_for_random_unequal_masses(blur, reach, p):
    rng = np.random.default_rng(int(100 * blur + 10 * reach + p))
    B = 6
    x = torch.as_tensor(rng.normal(size=(B, 20, 2)))
    y = torch.as_tensor(rng.normal(size=(B, 15, 2)) * rng.uniform(0.3, 1.5, (B, 1, 1)) + rng.uniform(-1, 1, (B, 1, 2)))
    a = torch.as_tensor(rng.uniform(0.05, 1, (B, 20)) * rng.uniform(0.01, 0.2, (B, 1)))
    b = torch.as_tensor(rng.uniform(0.05, 1, (B, 15)) * rng.uniform(0.01, 0.2, (B, 1)))
    for tol in (None, 1e-9):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the error is checked below
            r = otpipe.sinkhorn_divergence(x, y, a, b, p=p, blur=blur, reach=reach, tol=tol, max_iter=50000,
                                           full_output=True)
        assert (r.value > 0).all(), r.value
        assert tol is None or (r.marginal_error < 1e-8).all()
    # identical supports, different masses: > 0; identical measures: 0 (exactly in the symmetric fixed-schedule
    # mode, where the cross potentials equal the self one; to the solver's accuracy in the converged mode)
    s_mass = otpipe.sinkhorn_divergence(x, x, a, 1.7 * a, p=p, blur=blur, reach=reach, tol=1e-9, max_iter=50000)
    assert (s_mass > 0).all()
    r = otpipe.sinkhorn_divergence(x, x, a, a, p=p, blur=blur, reach=reach, full_output=True)
    assert (r.value.abs() <= 1e-14 * r.ot_xx.abs()).all()
    r = otpipe.sinkhorn_divergence(x, x, a, a, p=p, blur=blur, reach=reach, tol=1e-9, max_iter=50000, full_output=True)
    assert (r.value.abs() <= 1e-7 * r.ot_xx.abs()).all()


def test_balanced_problems_carry_no_mass_term():
    x, y = gaussian_cloud(30, 2, seed=1), gaussian_cloud(20, 2, mean=0.5, seed=2)
    r = otpipe.sinkhorn_divergence(x, y, blur=0.3, full_output=True)
    assert r.mass_term == 0.0
    assert float(r.value) == float(r.ot_xy - 0.5 * (r.ot_xx + r.ot_yy))
    # debias=False: OT_eps alone, no mass term either
    r = otpipe.sinkhorn_divergence(x, y, 2 * random_weights(30, seed=3), random_weights(20, seed=4), blur=0.3,
                                   reach=1.0, debias=False, full_output=True)
    assert r.mass_term == 0.0 and float(r.value) == float(r.ot_xy)


# ------------------------------------------------------------------ gradients
def test_gradcheck_unequal_masses():
    x = gaussian_cloud(6, 2, seed=5).requires_grad_()
    y = gaussian_cloud(5, 2, mean=0.4, seed=6).requires_grad_()
    a = (2.0 * random_weights(6, seed=7)).requires_grad_()
    b = (0.4 * random_weights(5, seed=8)).requires_grad_()

    def f(x, y, a, b):
        return otpipe.sinkhorn_divergence(x, y, a, b, blur=0.7, reach=0.6, tol=1e-12, max_iter=50000)

    assert torch.autograd.gradcheck(f, (x, y, a, b), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_weight_gradient_central_differences_identical_supports():
    """On the issue's example, d S / d a_i against central differences of S (mass term included)."""
    torch.manual_seed(1)
    n = 40
    u = torch.full((n,), 1 / n, dtype=torch.float64)
    x = 0.5 * torch.randn(n, 2, dtype=torch.float64)
    kw = dict(blur=1.0, reach=0.5, tol=1e-13, max_iter=50000)
    a = (1.5 * u).requires_grad_()
    s = otpipe.sinkhorn_divergence(x, x, a, 0.7 * u, **kw)
    (ga,) = torch.autograd.grad(s, [a])
    h = 1e-6
    for i in (0, 7, 23):
        e = torch.zeros(n, dtype=torch.float64)
        e[i] = h
        fd = (otpipe.sinkhorn_divergence(x, x, 1.5 * u + e, 0.7 * u, **kw)
              - otpipe.sinkhorn_divergence(x, x, 1.5 * u - e, 0.7 * u, **kw)) / (2 * h)
        assert float(ga[i]) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)


# ------------------------------------------------------------------ the transport variant
def test_transport_variant_unbalanced_is_not_a_divergence():
    """Plans on identical supports scale as ``(m_a m_b)^k pi_mu``, so the debiased transport variant is
    ``-W_mu/2 (m_a^k - m_b^k)^2 <= 0``; with equal masses, far-apart supports give ``~ -W(a,a)/2 - W(b,b)/2 < 0``."""
    torch.manual_seed(2)
    n = 60
    u = torch.full((n,), 1 / n, dtype=torch.float64)
    x = 0.5 * torch.randn(n, 2, dtype=torch.float64)
    blur, reach = 1.0, 0.5
    eps, rho = blur**2, reach**2
    with pytest.warns(RuntimeWarning, match="not a divergence"):
        v = otpipe.sinkhorn_divergence(x, x, 1.5 * u, 0.7 * u, blur=blur, reach=reach, tol=1e-11, variant="transport")
    _, W_mu = _self_plan(x.numpy(), eps, rho)
    k = _kappa(eps, rho)
    assert float(v) == pytest.approx(-0.5 * W_mu * (1.5**k - 0.7**k) ** 2, rel=1e-7)
    assert float(v) < 0
    # equal masses, identical measures: 0; far apart: negative, about -W_mu (the cross plan's mass vanishes)
    with pytest.warns(RuntimeWarning):
        v0 = otpipe.sinkhorn_divergence(x, x, u, u, blur=blur, reach=reach, tol=1e-11, variant="transport")
        vfar = otpipe.sinkhorn_divergence(x, x + 20.0, u, u, blur=blur, reach=reach, tol=1e-11, variant="transport")
    assert abs(float(v0)) < 1e-10 * W_mu
    assert float(vfar) == pytest.approx(-W_mu, rel=1e-6)
