"""Warm starts (``init=``) of solve / solve_symmetric: the final temperature only, the same answer as a cold solve to the
tolerance, fewer updates from nearby potentials, and clear errors."""
from __future__ import annotations

import pytest
import torch

import otpipe
from otpipe.solvers.sinkhorn import solve_symmetric

from .known_answers import gaussian_cloud, random_weights


def _problem():
    return gaussian_cloud(80, 2, seed=1), gaussian_cloud(70, 2, mean=0.8, seed=2), random_weights(80, seed=3), random_weights(70, seed=4)


@pytest.mark.parametrize("reach", [None, 0.7])
def test_restart_from_the_solution_and_from_a_nearby_problem(reach):
    x, y, a, b = _problem()
    kw = dict(blur=0.1, reach=reach, tol=1e-9, max_iter=100000)
    cold = otpipe.solve(x, y, a, b, **kw)
    # from its own potentials: already converged, nothing to do, the same value
    again = otpipe.solve(x, y, a, b, init=(cold.f, cold.g), **kw)
    assert again.schedule == [0.1**2]  # the final temperature only
    assert int(again.n_iter) <= 1 and float(again.marginal_error) <= 1e-9
    assert float(again.value) == pytest.approx(float(cold.value), rel=1e-12)
    # moved points: the warm start converges to the cold solution of the new problem, in fewer updates
    g = torch.Generator().manual_seed(5)
    x2 = x + 0.02 * torch.randn(x.shape, generator=g, dtype=x.dtype)
    new_cold = otpipe.solve(x2, y, a, b, **kw)
    warm = otpipe.solve(x2, y, a, b, init=(cold.f, cold.g), **kw)
    assert bool(warm.converged) and bool(new_cold.converged)
    assert int(warm.n_iter) < int(new_cold.n_iter)
    assert float(warm.value) == pytest.approx(float(new_cold.value), rel=1e-8)
    assert torch.allclose(warm.transport_map(), new_cold.transport_map(), atol=1e-7)


def test_symmetric_and_batched_warm_starts():
    x, _, a, _ = _problem()
    kw = dict(blur=0.1, tol=1e-9, max_iter=100000)
    s = solve_symmetric(x, a, **kw)
    s2 = solve_symmetric(x + 0.01, a, init=s.f, **kw)  # a translation: the same self problem
    assert int(s2.n_iter) <= 1 and float(s2.value) == pytest.approx(float(s.value), rel=1e-10)
    X = torch.stack([x, x + 1.0])
    Y = torch.stack([x + 0.3, x - 0.2])
    cold = otpipe.solve(X, Y, **kw)
    # a small change (potentials move by much less than eps): a translation of Y by 0.01 would move them by up to
    # ~3 eps here, and the final temperature alone then needs more updates than the cold eps-scaling
    Y2 = Y + 0.002 * torch.randn(Y.shape, generator=torch.Generator().manual_seed(6), dtype=Y.dtype)
    warm = otpipe.solve(X, Y2, init=(cold.f, cold.g), **kw)
    ref = otpipe.solve(X, Y2, **kw)
    assert torch.allclose(warm.value, ref.value, rtol=1e-8) and (warm.n_iter < ref.n_iter).all()


def test_bad_warm_starts():
    x, y, a, b = _problem()
    r = otpipe.solve(x, y, a, b, blur=0.1, tol=1e-6)
    with pytest.raises(ValueError, match="needs tol"):
        otpipe.solve(x, y, a, b, blur=0.1, init=(r.f, r.g))
    with pytest.raises(ValueError, match=r"potential g must have shape \(70,\)"):
        otpipe.solve(x, y, a, b, blur=0.1, tol=1e-6, init=(r.f, r.g[:-1]))
    with pytest.raises(ValueError, match="pair"):
        otpipe.solve(x, y, a, b, blur=0.1, tol=1e-6, init=r.f)
    bad = r.f.clone()
    bad[0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        otpipe.solve(x, y, a, b, blur=0.1, tol=1e-6, init=(bad, r.g))
    with pytest.raises(ValueError, match="multiscale"):
        otpipe.solve(x, y, a, b, blur=0.1, tol=1e-6, init=(r.f, r.g), backend="multiscale")
