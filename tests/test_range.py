"""Overflow and underflow: an error naming the quantity, never a NaN result.

Known answer for the cases that must work: the Sinkhorn divergence is homogeneous,
``S(s x, s y; blur = s b) = s^p S(x, y; blur = b)`` (costs and eps both scale by ``s^p``), so a
problem scaled close to the dtype's limits must give the scaled answer of the unscaled one.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import otpipe
from otpipe.geometry.costs import RANGE_MARGIN, check_range, make_cost


@pytest.fixture(scope="module")
def xy():
    g = torch.Generator().manual_seed(0)
    return torch.rand(40, 2, generator=g), torch.rand(50, 2, generator=g) + 0.5


def test_issue_case_names_the_costs_not_diameter(xy):
    x, y = xy
    with pytest.raises(ValueError, match=r"the costs overflow float32: the points span 2\.\d+e\+20") as e:
        otpipe.sinkhorn_divergence(x * 1e20, y * 1e20, diameter=1e21)
    assert "rescale the points" in str(e.value) and "float64" in str(e.value)
    with pytest.raises(ValueError, match="the costs overflow float32") as e:
        otpipe.sinkhorn_divergence(x * 1e20, y * 1e20)
    assert "diameter must" not in str(e.value)


def test_float64_holds_what_float32_cannot(xy):
    x, y = xy
    ref = float(otpipe.sinkhorn_divergence(x.double(), y.double(), blur=0.05))
    s = 1e20
    got = float(otpipe.sinkhorn_divergence(x.double() * s, y.double() * s, blur=0.05 * s))
    assert math.isfinite(got)
    np.testing.assert_allclose(got / s**2, ref, rtol=1e-9)


@pytest.mark.parametrize("s", [1e-15, 1e17])
def test_scaled_problems_within_range_give_the_scaled_answer(xy, s):
    """float32 near both ends of the range: homogeneity S(sx, sy; s b) = s^2 S(x, y; b)."""
    x, y = xy
    ref = float(otpipe.sinkhorn_divergence(x, y, blur=0.05))
    got = float(otpipe.sinkhorn_divergence(x * s, y * s, blur=0.05 * s))
    np.testing.assert_allclose(got / s**2, ref, rtol=1e-4)


@pytest.mark.parametrize(
    "scale,kw,msg",
    [
        (1e-30, {}, r"the costs underflow float32: the points span only 2\.\d+e-30"),
        (1.0, {"blur": 1e-32}, r"blur\^p = 1e-32\^2 = 1e-64 underflows float32"),
        (1.0, {"blur": 1e25}, r"blur\^p = 1e\+25\^2 = 1e\+50 overflows float32"),
        (1.0, {"diameter": 1e21}, r"diameter\^p = 1e\+21\^2 = 1e\+42 \(the first temperature of the eps-scaling\) overflows float32"),
        (1.0, {"reach": 1e-30}, r"reach\^p = 1e-30\^2 = 1e-60 underflows float32"),
        (1e16, {"blur": 1e-6}, r"costs / blur\^p overflow float32"),
    ],
)
def test_out_of_range_quantity_is_named(xy, scale, kw, msg):
    x, y = xy
    with pytest.raises(ValueError, match=msg):
        otpipe.sinkhorn_divergence(x * scale, y * scale, **kw)


def test_float64_limits_and_python_overflow(xy):
    x, y = xy
    with pytest.raises(ValueError, match="the costs overflow float64"):
        otpipe.sinkhorn_divergence(x.double() * 1e160, y.double() * 1e160)
    with pytest.raises(ValueError, match=r"reach\^p = 1e\+200\^2 overflows float64"):
        otpipe.sinkhorn_divergence(x, y, reach=1e200)
    with pytest.raises(ValueError, match="the points span more than float64 can hold"):
        otpipe.solve(torch.tensor([[-1.7e308, 0.0]], dtype=torch.float64), torch.tensor([[1.7e308, 0.0]], dtype=torch.float64))


def test_all_points_at_one_place_is_fine(xy):
    z = torch.zeros(5, 2)
    assert float(otpipe.sinkhorn_divergence(z, z)) == 0.0


def test_solve_and_symmetric_check_too(xy):
    x, y = xy
    with pytest.raises(ValueError, match="the costs overflow float32"):
        otpipe.solve(x * 1e20, y * 1e20)
    with pytest.raises(ValueError, match="the costs overflow float32"):
        otpipe.solvers.sinkhorn.solve_symmetric(x * 1e20)


def test_margin_of_the_check():
    """The check keeps extent^p (the first temperature, >= the costs |x-y|^2/2) below max / RANGE_MARGIN."""
    c = make_cost(2.0)
    fmax = torch.finfo(torch.float32).max
    edge = math.sqrt(fmax / RANGE_MARGIN)
    check_range(torch.float32, c, extent=edge * 0.99, diameter=1.0, blur=edge)
    with pytest.raises(ValueError, match="the costs overflow float32"):
        check_range(torch.float32, c, extent=edge * 1.01, diameter=1.0, blur=edge)


def test_a_nan_value_raises_instead_of_returning():
    """The final guard on the value of a solve (whatever slipped past the range checks)."""
    from otpipe.solvers.sinkhorn import _finite

    ok = torch.tensor([1.0, 2.0])
    assert _finite(ok, 0.1) is ok
    with pytest.raises(ValueError, match="ended with a NaN value in float32"):
        _finite(torch.tensor([1.0, float("nan")]), 0.1)
    with pytest.raises(ValueError, match="ended with an infinite value in float64"):
        _finite(torch.tensor([float("inf")], dtype=torch.float64), 0.1)


def test_large_p_resolution_range_names_the_remedies(xy):
    """Issue 21 item 1: for p > 2 every temperature must be resolved by the dtype (finfo.eps * max cost / blur^p
    <= 1); float32 at p = 4 and blur 0.01 is not (the message names the smallest blur, the largest p and float64),
    float64 is."""
    x, y = xy
    with pytest.raises(ValueError, match=r"p=4, blur=0.01 is outside the range float32 resolves.*blur >= .* for this p, "
                                         r"or p <= [0-9.]+ for this blur, or float64"):
        otpipe.sinkhorn_divergence(x, y, p=4, blur=0.01, tol=1e-4)
    v = float(otpipe.sinkhorn_divergence(x.double(), y.double(), p=4, blur=0.01, tol=1e-4))
    assert math.isfinite(v) and v > 0
