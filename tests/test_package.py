"""Packaging and entry points: cheap import, CLI basics, the built-in example, GPU paths."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import otpipe


def test_import_is_light():
    code = (
        "import sys, otpipe; "
        "heavy = [m for m in ('dask', 'distributed', 'zarr', 'xarray', 'pykeops', 'torch') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import otpipe pulled in: {out}"


def test_public_api_names():
    for name in ("solve", "sinkhorn_divergence", "energy_distance", "mmd", "hausdorff", "SamplesLoss", "OTResult"):
        assert callable(getattr(otpipe, name))


def test_cli_version_and_help():
    r = subprocess.run([sys.executable, "-m", "otpipe.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and otpipe.__version__ in r.stdout
    r = subprocess.run([sys.executable, "-m", "otpipe.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "example" in r.stdout


def test_example_command_prints_the_known_values():
    from click.testing import CliRunner

    from otpipe.cli import cli

    res = CliRunner().invoke(cli, ["example", "--n-points", "200"])
    assert res.exit_code == 0, res.output
    rows = {line[:16].strip(): line[16:].split() for line in res.output.splitlines()[2:6]}
    assert float(rows["circle"][0]) == pytest.approx(0.0, abs=1e-9)
    assert float(rows["shifted circle"][0]) == pytest.approx(0.125, rel=1e-4)  # |t|^2 / 2
    assert float(rows["ellipse"][0]) > 0


def test_cli_bad_option_is_one_line_and_nonzero():
    r = subprocess.run([sys.executable, "-m", "otpipe.cli", "example", "--n-points", "0"], capture_output=True, text=True)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "--n-points" in r.stderr


# ------------------------------------------------------------------ CUDA (skipped without a GPU)
@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["tensorized", "chunked", "triton", "auto",
                                     pytest.param("keops", marks=pytest.mark.keops)])
def test_cuda_tensors_stay_on_the_device_and_match_cpu(backend):
    if backend == "keops":
        pytest.importorskip("pykeops")
    x = torch.randn(300, 3, dtype=torch.float64)
    y = torch.randn(200, 3, dtype=torch.float64) + 0.5
    ref = otpipe.sinkhorn_divergence(x, y, backend="tensorized")
    xc, yc = x.cuda().requires_grad_(), y.cuda()
    v = otpipe.sinkhorn_divergence(xc, yc, backend=backend)
    assert v.device.type == "cuda"
    (g,) = torch.autograd.grad(v, [xc])
    assert g.device.type == "cuda"
    assert float(v) == pytest.approx(float(ref), rel=1e-6)


@pytest.mark.gpu
def test_cuda_float32_large_auto_is_triton_and_never_imports_pykeops():
    x = torch.randn(50_000, 3, device="cuda")
    y = torch.randn(50_000, 3, device="cuda") + 0.2
    r = otpipe.solve(x, y)
    assert r.backend == "triton" and torch.isfinite(r.value) and r.value.device.type == "cuda"
    v = otpipe.sinkhorn_divergence(x, y)
    assert torch.isfinite(v) and float(v) > 0
    code = ("import sys, torch, otpipe; x = torch.rand(3000, 3, device='cuda'); "
            "otpipe.sinkhorn_divergence(x, x + 0.1); otpipe.energy_distance(x, x * 0.5); "
            "print('pykeops' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
