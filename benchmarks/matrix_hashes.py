"""Hashes of the distance matrices of the quickstart and of the pipeline benchmark's collection, by the CLI.

A refactor that claims "behaviour unchanged" runs this before and after on the same machine: the hashes must be
equal (bit-identical matrices). The hashes depend on the machine (the CPU's vector paths, BLAS kernels), so they
are recorded here with the machine and the commit, not asserted by the test suite.

* quickstart: ``otpipe synth`` with the parameters of ``workflows/quickstart.yaml`` (24 measures x 200 points in
  3-D), then ``otpipe distances --blur 0.05 --p 2 --tol 1e-3`` (its ``matrix`` step);
* pipeline: the collection of ``benchmarks/bench_pipeline.py`` (its generator, ``--n-measures`` x ``--n-points``),
  then ``otpipe distances`` with its parameters (blur 0.05, fixed schedule, float32).

Usage: python benchmarks/matrix_hashes.py [--n-measures 60 --n-points 200] [--record]
(``--record`` appends a line to benchmarks/results/matrix_hashes.md).
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _otpipe(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "otpipe.cli", *args], cwd=cwd, check=True, capture_output=True, text=True)


def _matrix_hash(path: Path) -> tuple[str, tuple[int, ...]]:
    import numpy as np
    import xarray as xr

    ds = xr.open_zarr(path)
    h = hashlib.sha256()
    shape = ()
    for name in sorted(ds.data_vars):
        v = np.ascontiguousarray(ds[name].values)
        if v.dtype.kind not in "fiub":
            continue
        h.update(name.encode() + str(v.dtype).encode() + str(v.shape).encode() + v.tobytes())
        if v.ndim == 2 and not shape:
            shape = v.shape
    return h.hexdigest()[:16], shape


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-measures", type=int, default=60)
    ap.add_argument("--n-points", type=int, default=200)
    ap.add_argument("--dim", type=int, default=3)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()

    import numpy as np

    from otpipe import store

    tmp = Path(tempfile.mkdtemp(prefix="matrix-hashes-"))
    _otpipe("synth", "--out", "shapes.zarr", "--kind", "circle,gaussian,torus", "--n-measures", "24",
            "--n-points", "200", "--dim", "3", "--spread", "0", "--seed", "0", "-q", cwd=tmp)
    _otpipe("distances", "shapes.zarr", "--out", "quick.zarr", "--blur", "0.05", "--p", "2", "--tol", "1e-3",
            "--n-workers", "2", "--no-progress", "-q", cwd=tmp)
    rng = np.random.default_rng(0)
    ms = [store.Measure(rng.normal(size=(args.n_points, args.dim)) * (1 + i % 3) + i % 5, None, f"m{i}", str(i % 3))
          for i in range(args.n_measures)]
    store.create(tmp / "bench.zarr", ms, dtype="float32")
    _otpipe("distances", "bench.zarr", "--out", "bench-d.zarr", "--blur", "0.05", "--n-workers", "2",
            "--no-progress", "-q", cwd=tmp)
    hq, sq = _matrix_hash(tmp / "quick.zarr")
    hb, sb = _matrix_hash(tmp / "bench-d.zarr")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE, capture_output=True,
                           text=True).stdout.strip()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    line = (f"| {datetime.date.today()} | {commit}{'+' if dirty else ''} | {cpu}, {os.cpu_count()} cores | "
            f"quickstart {sq[0]}x{sq[1]}: `{hq}` | pipeline {sb[0]}x{sb[1]}: `{hb}` |")
    print(line)
    if args.record:
        out = HERE / "results" / "matrix_hashes.md"
        if not out.exists():
            out.write_text("# Distance-matrix hashes (benchmarks/matrix_hashes.py)\n\n"
                           "Equal hashes on one machine = bit-identical matrices across the commits.\n\n"
                           "| date | commit | machine | quickstart matrix | pipeline matrix |\n|---|---|---|---|---|\n")
        with out.open("a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
