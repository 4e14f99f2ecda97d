"""The compiled ``cpu`` reduction backend against the dense (tensorized) reference.

Skipped, with the reason, when the kernels cannot be compiled on this machine.
"""
from __future__ import annotations

import ctypes
import math
import warnings

import pytest
import torch

from otpipe.geometry.backends import choose_backend, cpu, tensorized
from otpipe.geometry.costs import Cost

PAD = -1e30


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    if not cpu.available():
        pytest.skip(f"cpu backend unavailable: {cpu.build_error()}")


def _problem(dt, B=2, N=37, M=700, D=3, seed=0, pad=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, D, generator=g, dtype=torch.float64)
    y = torch.randn(B, M, D, generator=g, dtype=torch.float64) * 0.7 + 0.3
    h = torch.randn(B, M, generator=g, dtype=torch.float64)
    if pad and B > 1:
        h[1, M // 2:] = PAD  # second measure padded to half its length
    return x.to(dt), y.to(dt), h.to(dt)


def _tol(dt):
    return dict(rtol=2e-5, atol=2e-5) if dt == torch.float32 else dict(rtol=1e-11, atol=1e-11)


# p = 1, 3/2, 2 have dedicated code; 0.7 and 2.5 take the general polynomial log/exp path
COSTS = [Cost(2.0, True), Cost(2.0, False), Cost(1.0, True), Cost(1.0, False), Cost(1.5, True), Cost(1.5, False),
         Cost(0.7, True), Cost(2.5, False)]


@pytest.mark.parametrize("dt", [torch.float32, torch.float64])
@pytest.mark.parametrize("cost", COSTS, ids=lambda c: f"p{c.p}-{'halved' if c.halved else 'plain'}")
def test_agrees_with_tensorized(dt, cost):
    D = {2.0: 3, 1.0: 2, 1.5: 5, 0.7: 1, 2.5: 3}[cost.p]  # specialised small D and the generic-D path
    x, y, h = _problem(dt, D=D)
    eps = 0.3 ** cost.p
    A, R = cpu.operator(x, y, cost), tensorized.operator(x, y, cost)
    assert isinstance(A, cpu.CpuOperator)
    tol = _tol(dt)
    torch.testing.assert_close(A.softmin(eps, h), R.softmin(eps, h), **tol)
    v = torch.randn(2, y.shape[1], 4, dtype=dt)
    torch.testing.assert_close(A.softmax_mean(eps, h, v), R.softmax_mean(eps, h, v), **tol)
    torch.testing.assert_close(A.softmax_cost(eps, h), R.softmax_cost(eps, h), **tol)
    f = R.softmin(eps, h)
    torch.testing.assert_close(A.transpose().softmin(eps, f), R.transpose().softmin(eps, f), **tol)
    torch.testing.assert_close(A.dense_cost(), R.dense_cost())

    # gradients w.r.t. row points, column points and offsets, with a random upstream gradient
    wgt = torch.randn(2, x.shape[1], dtype=dt)
    grads = []
    for mod in (cpu, tensorized):
        xs, ys, hs = (t.clone().requires_grad_() for t in (x, y, h))
        out = (mod.operator(xs, ys, cost).softmin(eps, hs) * wgt).sum()
        grads.append(torch.autograd.grad(out, [xs, ys, hs]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)
    assert torch.all(grads[0][2][1, y.shape[1] // 2:] == 0)  # padded columns get exactly 0


def test_row_gradient_only_envelope_pattern():
    """The solver's envelope step: softmin on operator(x, y.detach()) with h detached."""
    x, y, h = _problem(torch.float32)
    cost = Cost(2.0)
    xs = x.clone().requires_grad_()
    (gx,) = torch.autograd.grad(cpu.operator(xs, y, cost).softmin(0.1, h).sum(), [xs])
    xr = x.clone().requires_grad_()
    (rx,) = torch.autograd.grad(tensorized.operator(xr, y, cost).softmin(0.1, h).sum(), [xr])
    torch.testing.assert_close(gx, rx, rtol=1e-4, atol=1e-5)


def test_self_interaction_gradients():
    """``operator(x, x)`` with ``x`` and ``h`` requiring grad: row and column paths add up."""
    x, _, h = _problem(torch.float64, B=2, N=200, M=200, pad=False)
    grads = []
    for mod in (cpu, tensorized):
        xs, hs = x.clone().requires_grad_(), h.clone().requires_grad_()
        f = mod.operator(xs, xs, Cost(1.5)).softmin(0.1, hs)
        grads.append(torch.autograd.grad((f ** 2).sum(), [xs, hs]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_padding_is_exactly_removed():
    x, y, h = _problem(torch.float64, B=1, N=20, M=300, pad=False)
    cost = Cost(2.0)
    hp = torch.cat([h, torch.full((1, 250), PAD, dtype=h.dtype)], dim=1)
    yp = torch.cat([y, torch.randn(1, 250, 3, dtype=y.dtype) * 100], dim=1)
    full, cut = cpu.operator(x, yp, cost), cpu.operator(x, y, cost)
    torch.testing.assert_close(full.softmin(0.05, hp), cut.softmin(0.05, h), rtol=1e-14, atol=1e-14)
    v = torch.randn(1, 550, 2, dtype=y.dtype)
    torch.testing.assert_close(full.softmax_mean(0.05, hp, v), cut.softmax_mean(0.05, h, v[:, :300]), rtol=1e-13,
                               atol=1e-14)
    assert torch.isfinite(full.softmax_cost(0.05, hp)).all()


@pytest.mark.parametrize("dt", [torch.float32, torch.float64])
def test_edge_cases(dt):
    cost = Cost(2.0)
    R = tensorized.operator
    tol = dict(rtol=1e-4, atol=1e-5) if dt == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    # N = 1 and M = 1
    x, y, h = _problem(dt, B=2, N=1, M=1, pad=False)
    torch.testing.assert_close(cpu.operator(x, y, cost).softmin(0.1, h), R(x, y, cost).softmin(0.1, h), **tol)
    # duplicate points (r = 0 exactly), p = 1 and 1.5 whose gradients are singular/zero there
    x, _, _ = _problem(dt, B=1, N=50, M=1, pad=False)
    y = torch.cat([x, x[:, :10]], dim=1)
    h = torch.zeros(1, 60, dtype=dt)
    for c in (Cost(1.0), Cost(1.5, False), Cost(0.7), Cost(2.0)):
        xs = x.clone().requires_grad_()
        fa = cpu.operator(xs, y, c).softmin(0.05, h)
        (ga,) = torch.autograd.grad(fa.sum(), [xs])
        xr = x.clone().requires_grad_()
        fr = R(xr, y, c).softmin(0.05, h)
        (gr,) = torch.autograd.grad(fr.sum(), [xr])
        torch.testing.assert_close(fa, fr, **tol)
        assert torch.isfinite(ga).all()
        torch.testing.assert_close(ga, gr, **tol)
    # very different scales and far-apart clouds (difference form keeps the distances exact)
    x, y, h = _problem(dt, B=1, N=40, M=600, pad=False)
    for xx, yy, eps in ((x * 1e3, y * 1e-3, 10.0), (x * 1e-3, y * 1e-3, 1e-7), (x + 1e4, y + 1e4, 0.1),
                        (x, y + 50.0, 0.01)):
        ref = R(xx.double(), yy.double(), cost).softmin(eps, h.double())
        got = cpu.operator(xx, yy, cost).softmin(eps, h).double()
        scale = ref.abs().max()
        assert torch.isfinite(got).all()
        assert (got - ref).abs().max() <= (1e-5 if dt == torch.float32 else 1e-12) * scale + 1e-6 * eps
    # blur much smaller than the point spacing: the softmin is the hard min
    g = torch.Generator().manual_seed(3)
    x = torch.randperm(200, generator=g)[:30].to(dt).reshape(1, 30, 1) * 0.1
    y = torch.arange(200, dtype=dt).reshape(1, 200, 1) * 0.1 + 0.03
    h = torch.zeros(1, 200, dtype=dt)
    eps = 1e-6
    got = cpu.operator(x, y, cost).softmin(eps, h)
    hard = cost.dense(x.double(), y.double()).min(dim=2).values
    torch.testing.assert_close(got.double(), hard, rtol=1e-5 if dt == torch.float32 else 1e-12, atol=1e-9)


def test_online_max_across_tiles():
    """The dominant column sits in the last tile: running sums must be rescaled, nothing overflows."""
    dt = torch.float32
    x, y, h = _problem(dt, B=1, N=9, M=3000, pad=False)
    h = torch.linspace(-50, 400, 3000, dtype=dt)[None]
    cost = Cost(2.0)
    torch.testing.assert_close(cpu.operator(x, y, cost).softmin(0.5, h),
                               tensorized.operator(x.double(), y.double(), cost).softmin(0.5, h.double()).float(),
                               rtol=1e-6, atol=1e-4)


def test_float32_accuracy_vs_float64_reference():
    x, y, h = _problem(torch.float64, B=1, N=1000, M=4000, D=3, seed=5, pad=False)
    h = h * 0.1
    for cost, eps in ((Cost(2.0), 0.05 ** 2), (Cost(1.5, False), 0.05 ** 1.5), (Cost(2.5), 0.05 ** 2.5)):
        ref = cpu.operator(x, y, cost).softmin(eps, h)
        ref_t = tensorized.operator(x, y, cost).softmin(eps, h)
        torch.testing.assert_close(ref, ref_t, rtol=1e-12, atol=1e-14)
        got = cpu.operator(x.float(), y.float(), cost).softmin(eps, h.float()).double()
        dense32 = tensorized.operator(x.float(), y.float(), cost).softmin(eps, h.float()).double()
        err = ((got - ref).abs().max() / ref.abs().max()).item()
        err_dense = ((dense32 - ref).abs().max() / ref.abs().max()).item()
        assert err < 2e-6, err
        assert err < 5 * err_dense + 1e-7, (err, err_dense)


def test_polynomial_exp_log_accuracy():
    lib = cpu._load()
    for dt, fexp, flog, ulps in ((torch.float32, lib.otp_exp_f32, lib.otp_log_f32, 4),
                                 (torch.float64, lib.otp_exp_f64, lib.otp_log_f64, 4)):
        lim = 87.0 if dt == torch.float32 else 708.0
        xs = torch.linspace(-lim, lim, 100001, dtype=dt)
        out = torch.empty_like(xs)
        fexp(xs.data_ptr(), out.data_ptr(), xs.numel())
        rel = ((out.double() - torch.exp(xs.double())) / torch.exp(xs.double())).abs().max().item()
        assert rel < ulps * torch.finfo(dt).eps, (dt, rel)
        pos = torch.logspace(-30, 30, 100001, dtype=dt)
        flog(pos.data_ptr(), out.data_ptr(), pos.numel())
        err = (out.double() - torch.log(pos.double())).abs().max().item()
        assert err < ulps * torch.finfo(dt).eps * 70, (dt, err)


def test_input_validation():
    x = torch.randn(1, 5, 3, dtype=torch.float16)
    with pytest.raises(ValueError, match="float32 or float64"):
        cpu.CpuOperator(x, x, Cost())
    with pytest.raises(ValueError, match="CPU tensors"):
        cpu.CpuOperator(torch.empty(1, 5, 3, device="meta"), torch.empty(1, 5, 3, device="meta"), Cost())
    op = cpu.operator(torch.randn(1, 5, 3), torch.randn(1, 6, 3), Cost())
    with pytest.raises(ValueError, match="h must have shape"):
        op.softmin(0.1, torch.zeros(1, 5))


def test_auto_choice_and_fallback(monkeypatch):
    assert choose_backend("auto", 1, 1000, 1000, device="cpu") == "cpu"
    assert choose_backend("auto", 1, 1000, 1000, device=torch.device("cpu")) == "cpu"
    assert choose_backend("auto", 1, 10, 10, device="cpu") == "tensorized"  # tiny: dense
    assert choose_backend("auto", 1, 1000, 1000) in ("cpu", "tensorized")  # positional signature still works
    assert choose_backend("cpu", 1, 10, 10) == "cpu"
    # a machine without a compiler: one warning, the dense reductions instead (by blocks of rows when large)
    monkeypatch.setattr(cpu, "_lib", None)
    monkeypatch.setattr(cpu, "_tried", True)
    monkeypatch.setattr(cpu, "_error", "RuntimeError: no C++ compiler found")
    monkeypatch.setattr(cpu, "_warned", False)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        name = choose_backend("auto", 1, 1000, 1000, device="cpu")
    assert name == "tensorized"
    assert choose_backend("auto", 1, 6000, 6000, device="cpu") == "cpu"  # its fallback: dense by blocks of rows
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once already
        op = cpu.operator(torch.randn(1, 5, 3), torch.randn(1, 6, 3), Cost())
    assert not isinstance(op, cpu.CpuOperator)
    assert op.softmin(0.1, torch.zeros(1, 6)).shape == (1, 5)


def test_no_compiler_reports_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu, "_lib", None)
    monkeypatch.setattr(cpu, "_tried", False)
    monkeypatch.setattr(cpu, "_error", None)
    monkeypatch.setenv("CXX", "")
    monkeypatch.setattr(cpu.shutil, "which", lambda name: None)
    assert not cpu.available()
    assert "no C++ compiler" in cpu.build_error()


def test_cache_key_depends_on_flags(monkeypatch):
    cxx = cpu._compiler()
    p1 = cpu._library_path(cxx)
    assert p1 == cpu._library_path(cxx) and p1.exists()
    monkeypatch.setattr(cpu, "_FLAGS", cpu._FLAGS + ("-DOTPIPE_TEST",))
    assert cpu._library_path(cxx) != p1
    assert isinstance(cpu._load(), ctypes.CDLL)


def test_threads_follow_torch():
    x, y, h = _problem(torch.float32, B=1, N=300, M=2000, pad=False)
    op = cpu.operator(x, y, Cost())
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = op.softmin(0.1, h)
    finally:
        torch.set_num_threads(n)
    torch.testing.assert_close(op.softmin(0.1, h), one, rtol=0, atol=0)
    assert math.isfinite(one.sum().item())
