"""Fixtures and known-answer generators for the collection-store tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def known_measures(n: int = 20, dim: int = 3, seed: int = 0, labels: bool = True, max_points: int = 40, dtype=np.float64):
    """Deterministic measures of varying sizes (1..max_points) with raw, unnormalised weights."""
    from otpipe.store import Measure

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(rng.integers(1, max_points + 1))
        pts = rng.standard_normal((k, dim)).astype(dtype)
        w = rng.uniform(0.1, 3.0, size=k).astype(dtype)
        out.append(Measure(pts, w, f"m{i:03d}", f"class{i % 3}" if labels else None))
    return out


def assert_same_measure(got, want, dtype=np.float32):
    """Bit-identical points and weights (after the storage cast), same name and label."""
    assert got.name == want.name
    assert got.label == want.label
    assert got.points.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got.points, np.asarray(want.points).astype(dtype))
    if want.weights is None:
        np.testing.assert_array_equal(got.weights, np.full(len(got.points), 1.0 / len(got.points), dtype=dtype))
    else:
        np.testing.assert_array_equal(got.weights, np.asarray(want.weights).astype(dtype))


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    @property
    def err_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


@pytest.fixture
def cli(capsys):
    """Run ``otpipe.cli.main(args)`` in-process (same semantics as the console script)."""
    from otpipe.cli import main

    def run(*args) -> CliResult:
        capsys.readouterr()
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        cap = capsys.readouterr()
        return CliResult(code, cap.out, cap.err)

    return run


def run_otpipe(*args, cwd=None, env=None) -> CliResult:
    """Run the real ``otpipe`` entry point in a subprocess."""
    exe = Path(sys.executable).with_name("otpipe")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "otpipe.cli"]
    e = dict(os.environ)
    e.pop("OTPIPE_DEBUG", None)
    e.update(env or {})
    r = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=e, timeout=120)
    return CliResult(r.returncode, r.stdout, r.stderr)
