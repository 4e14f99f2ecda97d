"""A chunk file truncated or emptied on disk: one line naming the store, array, chunk and measures (issue 21, item 15).

Real stores damaged with ``truncate`` semantics (``os.truncate``), read through the Python API,
``otpipe info --verify`` and ``otpipe distances`` (a real subprocess with its own Dask cluster).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from otpipe import store
from otpipe.store.integrity import CorruptCollection

from .conftest import known_measures, run_otpipe


@pytest.fixture
def sharded(tmp_path):
    """12 measures of 2..6 points in shards of at most 8 points (several chunks)."""
    ms = known_measures(n=12, dim=2, max_points=6, labels=False)
    return store.create(tmp_path / "T.zarr", ms, shard_points=8)


def _chunk_of(c, i: int) -> int:
    return int(c.starts[i]) // int(c.attrs["chunk_points"])


@pytest.mark.parametrize("array, size", [("points", 10), ("weights", 0)])
def test_damaged_chunk_named_by_every_reader(sharded, array, size):
    c = sharded
    assert c.n_shards >= 3
    k = 1  # a shard in the middle: its chunk alone is damaged
    i0 = int(c.shard_offsets[k])
    j = _chunk_of(c, i0)
    key = f"c/{j}/0" if array == "points" else f"c/{j}"
    f = c.path / array / key
    assert f.is_file()
    os.truncate(f, size)
    c = store.open(c.path)  # the structure is intact: opening works
    held = [f"'{c.names[i]}' (#{i})" for i in c.shards[k]]
    with pytest.raises(CorruptCollection) as e:
        c[i0]
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{c.path}: damaged collection: {array} chunk {j} (file {array}/{key}"), msg
    assert "cannot be decoded" in msg and held[0] in msg and f"otpipe info --verify {c.path}" in msg, msg
    others = [f"'{c.names[i]}' (#{i})" for i in range(len(c)) if i not in c.shards[k]]
    assert not any(o in msg for o in others), msg
    # the other shards still read
    assert c[0].n == c.sizes[0] and c[len(c) - 1].n == c.sizes[-1]
    with pytest.raises(CorruptCollection, match=f"{array} chunk {j} "):
        c.verify()
    with pytest.raises(CorruptCollection, match=f"{array} chunk {j} "):
        list(c)


def test_damaged_small_array_refused_at_open(sharded):
    os.truncate(sharded.path / "offsets" / "c" / "0", 5)
    with pytest.raises(CorruptCollection, match=r"damaged collection: offsets chunk 0 \(file offsets/c/0, rows 0:13\) cannot be decoded"):
        store.open(sharded.path)


def test_cli_info_verify_and_distances_one_line(sharded, cli):
    p = sharded.path
    os.truncate(p / "points" / "c" / "0" / "0", 10)
    r = cli("info", p, "--verify")
    assert r.code == 1 and len(r.err_lines) == 1, r.err
    assert r.err_lines[0].startswith(f"Error: {p}: damaged collection: points chunk 0 (file points/c/0/0"), r.err
    assert "RuntimeError" in r.err and "measures affected: 'm000' (#0)" in r.err and "info --verify" in r.err
    # distances: the chunk is read by a Dask worker; the worker logs nothing, the CLI prints one line
    r = run_otpipe("distances", p, "--out", p.parent / "d.zarr", "--n-workers", "1", "--no-progress", "-q")
    assert r.code == 1, r.err
    assert len(r.err_lines) == 1, r.err
    assert "damaged collection: points chunk 0 (file points/c/0/0" in r.err and "'m000' (#0)" in r.err, r.err
    assert "Compute Failed" not in r.err and "Traceback" not in r.err
    assert not (p.parent / "d.zarr").exists()
    assert np.isfinite(store.open(p)[len(sharded) - 1].points).all()  # the rest of the store is readable
