"""Peak memory of a streaming ingest: a ~5 GB collection ingested with bounded RSS.

Generates ``--size-gb`` of ``.npy`` point clouds (float32, ``(N, 3)``), runs
``otpipe ingest DATA --out STORE`` in a subprocess, reads its peak RSS with
``resource.getrusage(RUSAGE_CHILDREN)``, optionally verifies the store in a second subprocess,
writes the figures to ``benchmarks/INGEST.md`` and deletes the generated data.

Not part of the test suite. Usage::

    python benchmarks/ingest_memory.py                   # 5 GB, writes benchmarks/INGEST.md
    python benchmarks/ingest_memory.py --size-gb 0.2 --no-write   # quick check
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _otpipe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "otpipe.cli", *args], capture_output=True, text=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=5.0, help="input size in GB (10^9 bytes of point data)")
    ap.add_argument("--points-per-file", type=int, default=400_000)
    ap.add_argument("--dim", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="where to put the data (default: the system temp dir)")
    ap.add_argument("--verify", action="store_true", help="also time `otpipe info --verify` on the result")
    ap.add_argument("--keep", action="store_true", help="keep the generated data and store")
    ap.add_argument("--no-write", action="store_true", help="do not write INGEST.md")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="otpipe-ingest-bench-", dir=args.workdir))
    data, store = work / "data", work / "store.zarr"
    data.mkdir()
    bytes_per_file = args.points_per_file * args.dim * 4
    n_files = max(1, int(round(args.size_gb * 1e9 / bytes_per_file)))
    try:
        t0 = time.perf_counter()
        for i in range(n_files):
            rng = np.random.default_rng(i)
            np.save(data / f"cloud_{i:06d}.npy", rng.standard_normal((args.points_per_file, args.dim), dtype=np.float32))
        t_gen = time.perf_counter() - t0
        input_bytes = _du(data)
        print(f"generated {n_files} files, {input_bytes / 1e9:.2f} GB in {t_gen:.0f} s", flush=True)

        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        r = _otpipe("ingest", str(data), "--out", str(store))
        t_ingest = time.perf_counter() - t0
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
        if r.returncode != 0:
            sys.exit(f"ingest failed: {r.stderr.strip()}")
        print(r.stdout.strip(), flush=True)
        info = json.loads(_otpipe("info", str(store), "--json").stdout)
        stored = _du(store)
        t_verify = None
        if args.verify:
            t0 = time.perf_counter()
            v = _otpipe("info", str(store), "--verify")
            t_verify = time.perf_counter() - t0
            if v.returncode != 0:
                sys.exit(f"verify failed: {v.stderr.strip()}")
        res = {
            "files": n_files,
            "points_per_file": args.points_per_file,
            "input_gb": input_bytes / 1e9,
            "collection_gb": info["data_bytes"] / 1e9,
            "stored_gb": stored / 1e9,
            "n_points": info["n_points"],
            "n_shards": info["n_shards"],
            "ingest_s": t_ingest,
            "peak_rss_mib": peak_kib / 1024,
            "peak_rss_before_mib": before / 1024,
            "throughput_mb_s": input_bytes / 1e6 / t_ingest,
            "verify_s": t_verify,
            "hash": info["hash"],
        }
        print(json.dumps(res, indent=2))
        if not args.no_write:
            _write_md(res, args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _write_md(r: dict, args) -> None:
    import otpipe

    verify = f"| `otpipe info --verify` (re-hash everything) | {r['verify_s']:.0f} s |\n" if r["verify_s"] else ""
    text = f"""# Ingest memory benchmark

`python benchmarks/ingest_memory.py` (this file is written by it). It generates {r['files']} `.npy`
files of {r['points_per_file']:,} float32 points in R^{args.dim} (standard normal), runs
`otpipe ingest DATA --out STORE` in a subprocess (default options: float32, uniform weights,
shards of 2^20 points) and reads the subprocess's peak resident memory with
`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`. The generated data and store are deleted afterwards.

| quantity | value |
|---|---|
| input files | {r['files']} `.npy`, {r['input_gb']:.2f} GB |
| collection (points + weights, no padding) | {r['n_points']:,} points, {r['collection_gb']:.2f} GB |
| store on disk (zstd: uniform weights compress to almost nothing, random coordinates a little) | {r['stored_gb']:.2f} GB, {r['n_shards']} shards |
| ingest wall time | {r['ingest_s']:.0f} s |
| ingest throughput (input bytes) | {r['throughput_mb_s']:.0f} MB/s |
| **peak RSS of the ingest process** | **{r['peak_rss_mib']:.0f} MiB** |
{verify}
Content hash: `{r['hash']}`.

Memory is bounded by one shard (2^20 points: 12 MiB of coordinates, plus a padded copy while
writing) and one input file, independent of the collection size; the rest is the Python, NumPy
and Zarr baseline.

Machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()},
otpipe {otpipe.__version__}, run {time.strftime('%Y-%m-%d')}.
"""
    (HERE / "INGEST.md").write_text(text)
    print(f"wrote {HERE / 'INGEST.md'}")


if __name__ == "__main__":
    main()
