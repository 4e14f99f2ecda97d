"""Default paths never need pykeops (an optional extra): the ``cpu`` backend's fallbacks compute the
dense reductions by blocks of rows, with the same values and gradients as the tensorized backend."""
from __future__ import annotations

import sys

import pytest
import torch

import otpipe
from otpipe.geometry import backends as kernels
from otpipe.geometry.backends import cpu
from otpipe.geometry.backends.tensorized import ChunkedDenseOperator, DenseOperator
from otpipe.geometry.costs import Cost


def _pts(seed, B=2, N=23, M=31, D=3):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, N, D, generator=g, dtype=torch.float64),
            torch.randn(B, M, D, generator=g, dtype=torch.float64) + 0.5,
            torch.randn(B, M, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_chunked_dense_equals_dense_values_and_gradients(p):
    x, y, h = _pts(0)
    h[1, 20:] = -1e30  # padding
    cost = Cost(p)
    x.requires_grad_(True)
    v = torch.randn(2, 31, 4, dtype=torch.float64)
    assert ChunkedDenseOperator(x, y, cost, max_entries=2 * 31 * 5).rows == 5  # 23 rows in 5 blocks
    for name, args in (("softmin", (0.3, h)), ("softmax_mean", (0.3, h, v)), ("softmax_cost", (0.3, h)),
                       ("kernel_apply", ("gaussian", 0.7, h))):
        dense, chunked = DenseOperator(x, y, cost), ChunkedDenseOperator(x, y, cost, max_entries=2 * 31 * 5)
        a, b = getattr(dense, name)(*args), getattr(chunked, name)(*args)
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
        ga, = torch.autograd.grad(a.sum(), x)
        gb, = torch.autograd.grad(b.sum(), x)
        torch.testing.assert_close(gb, ga, rtol=1e-12, atol=1e-12)
    h0 = torch.zeros(2, 23, dtype=torch.float64)
    torch.testing.assert_close(ChunkedDenseOperator(x, y, cost, max_entries=50).transpose().softmin(0.3, h0),
                               DenseOperator(x, y, cost).transpose().softmin(0.3, h0))


@pytest.fixture
def no_pykeops(monkeypatch):
    """pykeops cannot be imported (as after ``pip install otpipe`` without the ``keops`` extra)."""
    for name in [m for m in sys.modules if m == "pykeops" or m.startswith(("pykeops.", "keopscore"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pykeops", None)
    monkeypatch.setitem(sys.modules, "pykeops.torch", None)
    monkeypatch.setattr(kernels, "AUTO_DENSE_MAX_ENTRIES", 40 * 40)  # every problem below is "large"
    yield
    assert sys.modules.get("pykeops") is None


def test_no_compiler_no_pykeops_large_problems(monkeypatch, no_pykeops):
    monkeypatch.setattr(cpu, "_lib", None)
    monkeypatch.setattr(cpu, "_tried", True)
    monkeypatch.setattr(cpu, "_error", "RuntimeError: no C++ compiler found")
    monkeypatch.setattr(cpu, "_warned", True)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(120, 2, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(90, 2, generator=g, dtype=torch.float64) + 1.0
    assert kernels.choose_backend("auto", 1, 120, 90, device="cpu") == "cpu"
    assert isinstance(cpu.operator(x[None], y[None], Cost()), ChunkedDenseOperator)
    s = otpipe.sinkhorn_divergence(x, y, blur=0.1)
    gx, = torch.autograd.grad(s, x)
    x0 = x.detach().clone().requires_grad_(True)
    s0 = otpipe.sinkhorn_divergence(x0, y, blur=0.1, backend="tensorized")
    g0, = torch.autograd.grad(s0, x0)
    torch.testing.assert_close(s, s0, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gx, g0, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(otpipe.mmd(x.detach(), y, kernel="gaussian", sigma=0.5),
                               otpipe.mmd(x.detach(), y, kernel="gaussian", sigma=0.5, backend="tensorized"))


def test_compiled_kernel_apply_without_pykeops(no_pykeops):
    if not cpu.available():
        pytest.skip(f"cpu backend unavailable: {cpu.build_error()}")
    x, y, _ = _pts(2, B=1, N=130, M=120)  # >= AUTO_CPU_MIN_ENTRIES: the compiled backend
    v = torch.rand(1, 120, dtype=torch.float64)
    op = cpu.operator(x, y, Cost())
    assert isinstance(op, cpu.CpuOperator)
    torch.testing.assert_close(op.kernel_apply("energy", 1.0, v), DenseOperator(x, y, Cost()).kernel_apply("energy", 1.0, v))
    torch.testing.assert_close(otpipe.energy_distance(x[0], y[0]), otpipe.energy_distance(x[0], y[0], backend="tensorized"))
