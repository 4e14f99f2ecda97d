"""Memory follows the data, not D: chunks and default shards are bounded in bytes.

Peak memory is read by the child process itself (``ru_maxrss`` of ``RUSAGE_SELF`` at exit): a
bound on bytes, not a timing.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr

from otpipe import store
from otpipe.store.collection import CHUNK_BYTES

from .conftest import assert_same_measure


def _run_measured(*args) -> tuple[int, str, float]:
    """``otpipe ARGS`` in a child; returns (exit code, stderr, peak RSS in MiB)."""
    code = textwrap.dedent(f"""
        import resource, sys
        from otpipe.cli import main
        try:
            main({[str(a) for a in args]!r})
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        else:
            rc = 0
        # VmHWM is this process's own high-water mark; ru_maxrss would carry the forking pytest's over exec
        try:
            hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
            peak = int(hwm[0].split()[1])
        except (OSError, IndexError):
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print("PEAK_KIB", peak, file=sys.stderr)
        sys.exit(rc)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    peak = [ln for ln in r.stderr.splitlines() if ln.startswith("PEAK_KIB")]
    return r.returncode, r.stderr, int(peak[0].split()[1]) / 1024 if peak else float("nan")


@pytest.mark.parametrize("dim,dtype", [(1, "float32"), (3, "float32"), (100, "float64"), (100_000, "float32")])
def test_chunks_never_exceed_the_byte_budget(tmp_path, dim, dtype):
    rng = np.random.default_rng(dim)
    ms = [store.Measure(rng.random((n, dim)), None, f"m{i}") for i, n in enumerate([3, 2, 5])]
    c = store.create(tmp_path / "c.zarr", ms, dtype=dtype)
    g = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    rows = g["points"].chunks[0]
    assert g["points"].chunks == (rows, dim)
    assert rows * dim * np.dtype(dtype).itemsize <= CHUNK_BYTES
    assert rows * np.dtype(dtype).itemsize <= CHUNK_BYTES
    for got, want in zip(c, ms):
        assert_same_measure(got, want, dtype)


def test_default_shards_hold_about_chunk_bytes_of_points(tmp_path):
    """D = 3 float32: 2^20 points per shard (12 MiB), as before; D = 2000: 2^11 points (16 MiB max)."""
    ms = [store.Measure(np.zeros((700, 2000)) + i, None, f"m{i}") for i in range(4)]
    c = store.create(tmp_path / "c.zarr", ms)
    assert c.attrs["shard_points"] == 2048 and c.attrs["chunk_points"] == 2048
    assert [len(r) for r in c.shards] == [2, 2]  # 1400 points each, the third measure would pass 2048
    small = store.create(tmp_path / "s.zarr", [np.zeros((10, 3))])
    assert small.attrs["shard_points"] == 1 << 20
    # an explicit larger shard spans several chunks, each still within the budget
    big = store.create(tmp_path / "b.zarr", ms, shard_points=1_000_000)
    assert big.attrs["chunk_points"] * 2000 * 4 <= CHUNK_BYTES and big.n_shards == 1
    for got, want in zip(big, ms):
        assert_same_measure(got, want)


def test_ingest_of_a_wide_array_uses_little_memory(tmp_path):
    """The issue's case: a 2 x 100,000 array asked for 24.4 GiB (65,536 rows x D); now ~ the data."""
    x = np.random.default_rng(0).random((2, 100_000)).astype(np.float32)
    np.save(tmp_path / "wide.npy", x)
    rc, err, peak = _run_measured("ingest", tmp_path / "wide.npy", "--out", tmp_path / "w.zarr")
    assert rc == 0, err
    assert peak < 1024, f"peak RSS {peak:.0f} MiB"
    c = store.open(tmp_path / "w.zarr")
    np.testing.assert_array_equal(c["wide"].points, x)
    assert c.verify()


def test_synth_high_dimension(tmp_path):
    """``synth --dim 50000 --n-measures 2 --n-points 3`` (every family of 'mixed'): no D x D matrix."""
    rc, err, peak = _run_measured("synth", "--out", tmp_path / "s.zarr", "--dim", "50000", "--n-measures", "12", "--n-points", "3")
    assert rc == 0, err
    assert peak < 1024, f"peak RSS {peak:.0f} MiB"
    c = store.open(tmp_path / "s.zarr")
    assert len(c) == 12 and c.dim == 50000 and set(c.labels) == {"uniform", "gaussian", "mixture", "circle", "sphere", "torus"}


def test_low_rank_gaussian_covariance():
    """Above D = 256 the Gaussian family has covariance A A^T / 64 + 0.05 I, A of rank 64 (known spectrum).

    The sample covariance of many draws has 64 eigenvalues well above 0.05 and the other D - 64
    at 0.05 (up to sampling noise ~ sqrt(D / n)).
    """
    from otpipe.store.synth import sample

    d, n = 300, 40_000
    x = sample("gaussian", n, d, np.random.default_rng(1))
    ev = np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1]
    bulk = ev[64:]
    assert np.all(np.abs(bulk - 0.05) < 0.05 * 4 * np.sqrt(d / n)), (bulk.min(), bulk.max())
    assert ev[63] > 0.05 + 0.05 * 4 * np.sqrt(d / n)
    # D <= 256: full rank (the draws of earlier versions, unchanged)
    y = sample("gaussian", 4000, 20, np.random.default_rng(1))
    assert np.linalg.eigvalsh(np.cov(y.T)).min() > 0.04
