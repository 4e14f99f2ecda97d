"""What ``backend="auto"`` picks on CUDA tensors and which explicit choices are refused (decisions only: they
need no GPU), and that no default path imports pykeops."""
from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

import otpipe
from otpipe.geometry import backends as kernels
from otpipe.geometry.backends import AUTO_MULTISCALE_MIN_ENTRIES_GPU, choose_backend


@pytest.fixture
def no_triton(monkeypatch):
    """A machine whose Python cannot import Triton (``import triton`` raises ImportError)."""
    monkeypatch.setitem(sys.modules, "triton", None)
    monkeypatch.setattr(kernels, "_warned_triton", False)


def test_auto_on_cuda_picks_triton_then_multiscale():
    pytest.importorskip("triton")
    n_ms = int(AUTO_MULTISCALE_MIN_ENTRIES_GPU ** 0.5) + 1
    assert choose_backend("auto", 1, 20_000, 20_000, device="cuda") == "triton"
    assert choose_backend("auto", 512, 64, 64, device="cuda:0") == "triton"  # padded batches of small measures
    assert choose_backend("auto", 1, 10, 10, device=torch.device("cuda", 1)) == "triton"
    assert choose_backend("auto", 1, n_ms, n_ms, device="cuda", converging=True) == "multiscale"
    assert choose_backend("auto", 1, n_ms, n_ms, device="cuda") == "triton"  # fixed schedule: the full solver
    assert choose_backend("auto", 2, n_ms, n_ms, device="cuda", converging=True) == "triton"  # batches: the full solver


def test_auto_on_cuda_without_triton_warns_once_and_falls_back(no_triton):
    with pytest.warns(RuntimeWarning, match="'triton' backend is unavailable.*pip install triton"):
        assert choose_backend("auto", 1, 2000, 2000, device="cuda") == "tensorized"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        assert choose_backend("auto", 1, 20_000, 20_000, device="cuda") == "chunked"
        assert choose_backend("auto", 1, 10**6, 10**6, device="cuda") == "chunked"  # no block kernels either


def test_auto_never_picks_keops():
    pytest.importorskip("triton")
    for dev in ("cpu", "cuda"):
        for B, N in ((1, 10), (1, 3000), (1, 20_000), (1, 300_000), (64, 5000), (4, 100_000)):
            assert choose_backend("auto", B, N, N, device=dev) != "keops"
    assert choose_backend("keops", 1, 10, 10, device="cuda") == "keops"  # by name only
    assert choose_backend("online", 1, 10, 10, device="cpu") == "keops"


@pytest.mark.parametrize("args, kw, needle", [
    (("cpu", 1, 100, 100), dict(device="cuda:0"), "backend 'cpu' runs on CPU tensors, but the points are on a cuda"),
    (("triton", 1, 100, 100), dict(device="cuda", dtype=torch.float16), "computes in float32 or float64, got float16"),
    (("cpu", 1, 100, 100), dict(device="cpu", dtype=torch.bfloat16), "computes in float32 or float64, got bfloat16"),
    (("multiscale", 1, 100, 100), dict(device="cuda", dtype=torch.float16), "float32 or float64"),
    (("triton", 1, 100, 100), dict(device="mps"), "backend 'triton' runs on CUDA tensors, but the points are on a mps"),
    (("warp", 1, 100, 100), {}, "unknown backend 'warp'"),
])
def test_backends_that_cannot_serve_the_input(args, kw, needle):
    with pytest.raises(ValueError) as err:
        choose_backend(*args, **kw)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_triton_on_cpu_tensors_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="backend 'triton' runs on CUDA tensors.*use backend='cpu'"):
        choose_backend("triton", 1, 10, 10, device="cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert choose_backend("triton", 1, 10, 10, device="cpu") == "triton"


def test_public_api_names_the_problem(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.rand(20, 2)
    with pytest.raises(ValueError, match="backend 'triton' runs on CUDA tensors") as err:
        otpipe.sinkhorn_divergence(x, x + 0.1, backend="triton")
    assert "\n" not in str(err.value)
    # points on two devices: refused before any computation (meta stands in for a second device here)
    with pytest.raises(ValueError, match="x is on cpu but y is on meta: put both measures on one device"):
        otpipe.solve(x, torch.empty(20, 2, device="meta"))
    with pytest.raises(ValueError, match="a is on meta but the points are on cpu"):
        otpipe.solve(x, x, torch.empty(20, device="meta"))


def test_no_pykeops_on_default_paths():
    """Every backend ``auto`` picks on the CPU, the kernel losses, the multiscale solver, and the CPU fallback
    of a machine without a compiler run without importing pykeops."""
    code = """
import sys, warnings, torch, otpipe
from otpipe.geometry.backends import cpu, choose_backend
g = torch.Generator().manual_seed(0)
x, y = torch.rand(300, 3, generator=g), torch.rand(250, 3, generator=g)
otpipe.sinkhorn_divergence(x, y, blur=0.1)
otpipe.energy_distance(x, y); otpipe.mmd(x, y); otpipe.hausdorff(x, y)
otpipe.solve(x, y, blur=0.1, backend="multiscale").transport_map()
cpu._lib, cpu._tried, cpu._error, cpu._warned = None, True, "RuntimeError: no compiler", True
for n in (50, 6000):
    assert choose_backend("auto", 1, n, n, device="cpu") == ("tensorized" if n < 100 else "cpu")
otpipe.sinkhorn_divergence(x, y, blur=0.1)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    otpipe.solve(x, y, blur=0.1, backend="multiscale")
    cpu.operator(x[None], y[None], otpipe.geometry.costs.Cost()).kernel_apply("gaussian", 1.0, torch.ones(1, 250))
print("pykeops" in sys.modules, "keopscore" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
