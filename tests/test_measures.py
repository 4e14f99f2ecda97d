"""Bad input is refused with a ValueError naming the problem, for every public entry point."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import otpipe
from otpipe.problems.measures import pad_batch, validate_pair

ENTRY_POINTS = {
    "solve": lambda x, y, a=None, b=None: otpipe.solve(x, y, a, b),
    "sinkhorn_divergence": lambda x, y, a=None, b=None: otpipe.sinkhorn_divergence(x, y, a, b),
    "energy_distance": lambda x, y, a=None, b=None: otpipe.energy_distance(x, y, a, b),
    "mmd": lambda x, y, a=None, b=None: otpipe.mmd(x, y, a, b, sigma=1.0),
    "hausdorff": lambda x, y, a=None, b=None: otpipe.hausdorff(x, y, a, b),
    "SamplesLoss": lambda x, y, a=None, b=None: otpipe.SamplesLoss()(x, y)
    if a is None and b is None
    else otpipe.SamplesLoss()(a if a is not None else torch.full(x.shape[:-1], 1 / x.shape[-2]), x,
                              b if b is not None else torch.full(y.shape[:-1], 1 / y.shape[-2]), y),
}

x0 = torch.rand(5, 2, dtype=torch.float64)
y0 = torch.rand(4, 2, dtype=torch.float64)


def _nan(t):
    t = t.clone()
    t[1, 0] = math.nan
    return t


def _inf(t):
    t = t.clone()
    t[0, 1] = math.inf
    return t


BAD = {
    "nan points": (dict(x=_nan(x0), y=y0), "NaN or infinite"),
    "inf points": (dict(x=x0, y=_inf(y0)), "NaN or infinite"),
    "empty cloud": (dict(x=torch.zeros(0, 2, dtype=torch.float64), y=y0), "empty"),
    "dimension mismatch": (dict(x=x0, y=torch.rand(4, 3, dtype=torch.float64)), "dimension mismatch"),
    "wrong shape": (dict(x=torch.rand(5, dtype=torch.float64), y=y0), "shape"),
    "negative weights": (dict(x=x0, y=y0, a=torch.tensor([0.5, 0.5, 0.2, -0.2, 0.0], dtype=torch.float64)), "negative"),
    "zero weights": (dict(x=x0, y=y0, a=torch.zeros(5, dtype=torch.float64)), "zero total mass"),
    "nan weights": (dict(x=x0, y=y0, b=torch.tensor([0.5, math.nan, 0.25, 0.25], dtype=torch.float64)), "NaN"),
    "weights shape": (dict(x=x0, y=y0, a=torch.ones(4, dtype=torch.float64) / 4), "shape"),
    "batch mismatch": (dict(x=torch.rand(2, 5, 2), y=torch.rand(3, 4, 2)), "batch size mismatch"),
    # issue 21 item 17: torch's own "Tensor.item() cannot be called on meta tensors" came from deep inside
    # (one meta and one real tensor: "x is on cpu but y is on meta", tests/geometry/test_choose.py)
    "meta points": (dict(x=torch.empty(5, 2, dtype=torch.float64, device="meta"),
                         y=torch.empty(4, 2, dtype=torch.float64, device="meta")), r"x is a meta tensor \(shape and dtype only, no values\)"),
}


# every entry point with every bad input, except SamplesLoss with a bad weight shape: its (x, y) call form
# builds its own weights, so that case does not exist for it
_BAD_CASES = [(e, c) for c in sorted(BAD) for e in sorted(ENTRY_POINTS) if (e, c) != ("SamplesLoss", "weights shape")]


@pytest.mark.parametrize("entry, case", _BAD_CASES)
def test_bad_input_is_a_clear_value_error(entry, case):
    kwargs, needle = BAD[case]
    with pytest.raises(ValueError, match=needle):
        ENTRY_POINTS[entry](**kwargs)


def test_unequal_masses_in_balanced_mode_are_refused_but_fine_with_reach():
    a = torch.full((5,), 1.0, dtype=torch.float64)  # mass 5 vs 1
    with pytest.raises(ValueError, match="equal total masses"):
        otpipe.sinkhorn_divergence(x0, y0, a=a)
    v = otpipe.sinkhorn_divergence(x0, y0, a=a, reach=1.0)
    assert torch.isfinite(v)


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(blur=0), "blur"),
        (dict(blur=-1.0), "blur"),
        (dict(p=0), "p must"),
        (dict(scaling=1.5), "scaling"),
        (dict(reach=-2.0), "reach"),
        (dict(backend="gpu-magic"), "unknown backend"),
        (dict(cost="|x-y|^3"), "unknown cost"),
        (dict(tol=-1e-3), "tol"),
        (dict(max_iter=0), "max_iter"),
    ],
)
def test_bad_parameters(kw, needle):
    with pytest.raises(ValueError, match=needle):
        otpipe.sinkhorn_divergence(x0, y0, **kw)


def test_numpy_and_integer_input_accepted():
    x = np.array([[0, 0], [1, 0]])
    y = np.array([[0, 1], [1, 1]])
    P = validate_pair(x, y)
    assert P.x.dtype == torch.get_default_dtype() and P.x.shape == (1, 2, 2)


def test_pad_batch_keeps_masses_and_positions():
    xs = [torch.rand(3, 2), torch.rand(5, 2)]
    X, A = pad_batch(xs)
    assert X.shape == (2, 5, 2) and A.shape == (2, 5)
    assert torch.equal(A[0, 3:], torch.zeros(2)) and torch.allclose(A.sum(1), torch.ones(2))
    assert torch.equal(X[0, :3], xs[0]) and torch.equal(X[1], xs[1])
    with pytest.raises(ValueError, match="dimension mismatch"):
        pad_batch([torch.rand(3, 2), torch.rand(3, 3)])
