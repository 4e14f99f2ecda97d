"""Packaging and entry points: cheap import, CLI basics, the built-in example, GPU paths."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
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
@pytest.mark.parametrize("backend", ["tensorized", "keops"])
def test_cuda_tensors_stay_on_the_device_and_match_cpu(backend):
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
def test_cuda_float32_large_keops():
    x = torch.randn(50_000, 3, device="cuda")
    y = torch.randn(50_000, 3, device="cuda") + 0.2
    v = otpipe.sinkhorn_divergence(x, y, backend="keops")
    assert torch.isfinite(v) and float(v) > 0


# ------------------------------------------------------------------ one API convention
def test_collection_level_entry_points_in_the_top_level_api():
    from otpipe.pipeline.barycenter import group_barycenters
    from otpipe.pipeline.complexity import run_study
    from otpipe.pipeline.convergence import ConvergenceWarning
    from otpipe.pipeline.pairwise import pairwise
    from otpipe.pipeline.two_sample import many_two_sample_tests

    assert otpipe.pairwise is pairwise
    assert otpipe.pairwise_two_sample is many_two_sample_tests
    assert otpipe.group_barycenters is group_barycenters
    assert otpipe.complexity_study is run_study
    assert otpipe.ConvergenceWarning is ConvergenceWarning
    assert {"pairwise_two_sample", "group_barycenters", "complexity_study"} <= set(otpipe.__all__)


def _shifted(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    return x, x + np.array([0.3, -0.4])  # a translation: S_eps = |t|^2 / 2 = 0.125 exactly (p = 2)


def test_numpy_in_numpy_out():
    x, y = _shifted()
    v = otpipe.sinkhorn_divergence(x, y, blur=0.5, tol=1e-9)
    assert isinstance(v, np.floating) and v == pytest.approx(0.125, rel=1e-6)
    full = otpipe.sinkhorn_divergence(x, y, blur=0.5, tol=1e-9, full_output=True)
    assert isinstance(full.value, np.floating) and isinstance(full.marginal_error, np.floating)
    r = otpipe.solve(x, y, blur=0.1)
    assert isinstance(r.value, np.floating)
    assert isinstance(r.f, np.ndarray) and r.f.shape == (40,) and isinstance(r.g, np.ndarray)
    assert isinstance(r.plan(), np.ndarray) and r.plan().shape == (40, 40)
    T = r.transport_map()
    assert isinstance(T, np.ndarray) and T.shape == (40, 2)
    # batched input: arrays
    vb = otpipe.sinkhorn_divergence(np.stack([x, x]), np.stack([y, x]), blur=0.5, tol=1e-9)
    assert isinstance(vb, np.ndarray) and vb.shape == (2,)
    assert vb[0] == pytest.approx(0.125, rel=1e-6) and abs(vb[1]) < 1e-8
    for val in (otpipe.energy_distance(x, y), otpipe.mmd(x, y, sigma=1.0), otpipe.hausdorff(x, y)):
        assert isinstance(val, np.floating)
    F, G = otpipe.hausdorff(x, y, potentials=True)
    assert isinstance(F, np.ndarray) and isinstance(G, np.ndarray)
    # the energy distance by its direct formula: 1/2 (2 E|x-y| - E|x-x'| - E|y-y'|)
    d = lambda a, b: np.linalg.norm(a[:, None] - b[None], axis=-1).mean()  # noqa: E731
    assert otpipe.energy_distance(x, y) == pytest.approx(0.5 * (2 * d(x, y) - d(x, x) - d(y, y)), rel=1e-10)


def test_torch_in_torch_out_with_gradients():
    x, y = (torch.tensor(a) for a in _shifted())
    x.requires_grad_(True)
    v = otpipe.sinkhorn_divergence(x, y, blur=0.5, tol=1e-9)
    assert isinstance(v, torch.Tensor) and float(v.detach()) == pytest.approx(0.125, rel=1e-6)
    (g,) = torch.autograd.grad(v, [x])
    # d S / d x_i = a_i (x_i - T(x_i)) = -t / N for a translation by t
    np.testing.assert_allclose(g.numpy(), np.tile([[-0.3, 0.4]], (40, 1)) / 40, atol=1e-6)
    r = otpipe.solve(x.detach(), y, blur=0.1)
    assert isinstance(r.value, torch.Tensor) and isinstance(r.plan(), torch.Tensor)
    assert isinstance(otpipe.energy_distance(x.detach(), y), torch.Tensor)
    # mixed input (one tensor) stays torch
    assert isinstance(otpipe.mmd(x.detach(), y.numpy(), sigma=1.0), torch.Tensor)


def test_short_reprs():
    x = np.random.default_rng(0).normal(size=(2000, 3))
    r = otpipe.solve(x, x + 1.0, blur=0.5)
    s = repr(r)
    assert s.startswith("OTResult(value=") and "N=2000, M=2000, D=3" in s and len(s) < 250 and "\n" not in s
    d = repr(otpipe.sinkhorn_divergence(x, x + 1.0, blur=0.5, full_output=True))
    assert d.startswith("DivergenceResult(value=") and len(d) < 250
    rb = repr(otpipe.solve(torch.tensor(np.stack([x[:50], x[50:100]])), torch.tensor(np.stack([x[:40], x[:40]])), blur=0.5))
    assert "B=2, N=50, M=40" in rb and "(2 values)" in rb and "tensor(" not in rb


# ------------------------------------------------------------------ one CLI
#: the shared options every command that makes sense of them has (otpipe.cli._common)
SHARED = {
    "synth": {"--out", "-o", "--json", "--quiet", "-q", "--dry-run"},
    "ingest": {"--out", "-o", "--json", "--quiet", "-q", "--dry-run"},
    "info": {"--json", "--quiet", "-q"},
    "distances": {"--out", "-o", "--json", "--quiet", "-q", "--dry-run", "--resume", "--no-progress"},
    "barycenter": {"--out", "-o", "--json", "--quiet", "-q", "--dry-run", "--no-progress"},
    "two-sample": {"--out", "-o", "--json", "--quiet", "-q", "--dry-run", "--resume", "--no-progress"},
    "complexity": {"--out", "-o", "--json", "--quiet", "-q", "--dry-run", "--resume", "--no-progress"},
    "run": {"--out", "-o", "--json", "--quiet", "-q", "--dry-run", "--resume"},
    "report": {"--out", "-o"},
}


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_options_are_spelled_the_same(name):
    import click

    from otpipe.cli import cli

    with click.Context(cli) as ctx:
        cmd = cli.get_command(ctx, name)
    spellings = {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts}
    assert SHARED[name] <= spellings, SHARED[name] - spellings
    r = subprocess.run([sys.executable, "-m", "otpipe.cli", name, "--help"], capture_output=True, text=True)
    assert r.returncode == 0


def test_synth_out_option_and_deprecated_positional(tmp_path):
    from otpipe import store

    r = subprocess.run([sys.executable, "-m", "otpipe.cli", "synth", "--out", str(tmp_path / "a.zarr"),
                        "--n-measures", "3", "--json"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    import json

    assert json.loads(r.stdout)["n_measures"] == 3
    r = subprocess.run([sys.executable, "-m", "otpipe.cli", "synth", str(tmp_path / "b.zarr"), "--n-measures", "3", "-q"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == ""
    assert "deprecated" in r.stderr and "--out" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    a, b = store.open(tmp_path / "a.zarr"), store.open(tmp_path / "b.zarr")
    assert a.content_hash == b.content_hash
    r = subprocess.run([sys.executable, "-m", "otpipe.cli", "synth", "--n-measures", "3"], capture_output=True, text=True)
    assert r.returncode != 0 and "--out" in r.stderr
    r = subprocess.run([sys.executable, "-m", "otpipe.cli", "synth", "-o", str(tmp_path / "c.zarr"), "--dry-run"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("plan: ") and not (tmp_path / "c.zarr").exists()
