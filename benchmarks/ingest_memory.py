"""Peak memory of a streaming ingest: a ~5 GB collection ingested with bounded RSS, and memory
that follows the data, not ``D``.

Generates ``--size-gb`` of ``.npy`` point clouds (float32, ``(N, 3)``), runs
``otpipe ingest DATA --out STORE`` in a subprocess, reads its peak RSS, optionally verifies the
store in a second subprocess. Then the wide cases of issue 15 (``ingest`` of a 2 x 100,000
array, ``synth --dim 50000 --n-measures 2 --n-points 3``), each in a subprocess that reports its
own peak RSS, and the cost of the structural checks run by ``otpipe.store.open`` on a
10,000-measure store. Writes the figures to ``benchmarks/INGEST.md`` and deletes the generated data.

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


_MEASURED = """
import resource, sys, time
from otpipe.cli import main
t0 = time.perf_counter()
try:
    main(sys.argv[1:])
except SystemExit as e:
    rc = e.code if isinstance(e.code, int) else 1
else:
    rc = 0
print("MEASURED", rc, time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def _measured(*args: str) -> dict:
    """``otpipe ARGS`` in a child that reports its own exit code, wall time and peak RSS (MiB)."""
    r = subprocess.run([sys.executable, "-c", _MEASURED, *args], capture_output=True, text=True)
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("MEASURED")]
    if not line:
        sys.exit(f"otpipe {' '.join(args)} died: {r.stderr.strip()[-500:]}")
    _, rc, sec, kib = line[0].split()
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("Error")]
    return {"rc": int(rc), "seconds": float(sec), "peak_rss_mib": int(kib) / 1024, "error": err[0] if err else None}


def wide_cases(work: Path) -> dict:
    """Issue 15's cases where memory followed D: a wide array ingested, a high-dimensional synth."""
    x = np.random.default_rng(0).random((2, 100_000)).astype(np.float32)
    np.save(work / "wide.npy", x)
    out = {"ingest_wide": _measured("ingest", str(work / "wide.npy"), "--out", str(work / "wide.zarr"))}
    out["synth_wide"] = _measured(
        "synth", "--out", str(work / "synth.zarr"), "--dim", "50000", "--n-measures", "2", "--n-points", "3"
    )
    for k, v in out.items():
        print(k, json.dumps(v), flush=True)
    return out


def open_cost(work: Path, n: int = 10_000, repeat: int = 30) -> dict:
    """Seconds of ``otpipe.store.open`` and of its structural check alone (best of ``repeat``)."""
    from otpipe import store
    from otpipe.store.collection import _open_group, _read_attrs
    from otpipe.store.integrity import check_structure

    p = work / "open10k.zarr"
    r = _measured("synth", "--out", str(p), "--n-measures", str(n), "--n-points", "50", "--kind", "uniform", "--shard-points", "1000")
    if r["rc"] != 0:
        sys.exit(f"synth failed: {r['error']}")
    attrs, group = _read_attrs(p), _open_group(p, "r")
    t_check, t_open = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        check_structure(p, attrs, group)
        t_check.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        c = store.open(p)
        t_open.append(time.perf_counter() - t0)
    res = {"n_measures": n, "n_shards": c.n_shards, "check_ms": 1e3 * min(t_check), "open_ms": 1e3 * min(t_open)}
    print("open", json.dumps(res), flush=True)
    return res


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
        wide = wide_cases(work)
        opening = open_cost(work)
        res = {
            "wide": wide,
            "open": opening,
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
            "load": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
        }
        print(json.dumps(res, indent=2))
        if not args.no_write:
            _write_md(res, args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


#: measured on this machine with the code before issue 15 (the D x D Cholesky and 65,536-row chunks)
SYNTH_BEFORE = (
    "still running after 218 s with 15.5 GiB resident (killed before it took the machine's 23 GiB): "
    "a 50,000 x 50,000 covariance, its Cholesky factor, then 65,536-row chunks"
)


def _write_md(r: dict, args) -> None:
    import otpipe

    verify = f"| `otpipe info --verify` (re-hash everything) | {r['verify_s']:.0f} s |\n" if r["verify_s"] else ""
    iw, sw, op = r["wide"]["ingest_wide"], r["wide"]["synth_wide"], r["open"]
    text = f"""# Ingest memory benchmark

`python benchmarks/ingest_memory.py` (this file is written by it). It generates {r['files']} `.npy`
files of {r['points_per_file']:,} float32 points in R^{args.dim} (standard normal), runs
`otpipe ingest DATA --out STORE` in a subprocess (default options: float32, uniform weights,
shards of 2^20 points, i.e. 12 MiB) and reads the subprocess's peak resident memory with
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

Memory is bounded by one shard (by default as many points as fit in 16 MiB: 2^20 points in R^3
float32) plus one chunk being written, and one input file, independent of the collection size;
the rest is the Python, NumPy and Zarr baseline.

## Memory follows the data, not D (issue 15)

Chunks are bounded in bytes (at most 16 MiB of coordinates) instead of rows (at least 65,536 rows
x D before), and the Gaussian family of `synth` no longer forms a D x D covariance above D = 256.
Each command runs in a subprocess that reports its own peak RSS (`ru_maxrss`) and wall time.

| command | before (otpipe 0.1.0 as of issue 15) | now: peak RSS | now: wall time |
|---|---|---|---|
| `otpipe ingest wide.npy` (a 2 x 100,000 float32 array, 781 KiB) | `MemoryError`: asks for 24.4 GiB (65,536 x 100,000 float32 chunk) | {iw['peak_rss_mib']:.0f} MiB (exit {iw['rc']}) | {iw['seconds']:.1f} s |
| `otpipe synth --dim 50000 --n-measures 2 --n-points 3` | {SYNTH_BEFORE} | {sw['peak_rss_mib']:.0f} MiB (exit {sw['rc']}) | {sw['seconds']:.1f} s |

## Cost of the structural checks at open

`otpipe.store.open` checks the structure of every store it opens (attributes, array metadata,
CSR offsets, shard layout, `starts`, unique names, and that every `points`/`weights` chunk file
exists; no point data read). On a {op['n_measures']:,}-measure collection in {op['n_shards']} shards
(best of 30): the check takes **{op['check_ms']:.1f} ms**, the whole `open` {op['open_ms']:.1f} ms.

Machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()},
otpipe {otpipe.__version__}, run {time.strftime('%Y-%m-%d')}; load average {r.get('load', 'n/a')} during the
run (other jobs inflate the times, not the peak memory).
"""
    (HERE / "INGEST.md").write_text(text)
    print(f"wrote {HERE / 'INGEST.md'}")


if __name__ == "__main__":
    main()
