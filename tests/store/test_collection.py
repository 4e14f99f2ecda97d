"""The collection format from Python: round trip, shards, hash, append, atomicity, errors."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr

from otpipe import store
from otpipe.store import FORMAT_NAME, FORMAT_VERSION, Measure

from .conftest import assert_same_measure, known_measures


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_bit_identical(tmp_path, dtype):
    ms = known_measures(30, dim=3, dtype=np.float64)
    c = store.create(tmp_path / "c.zarr", ms, dtype=dtype, shard_points=100)
    assert len(c) == 30 and c.dim == 3 and c.dtype == np.dtype(dtype)
    assert c.n_points == sum(m.n for m in ms)
    c2 = store.open(tmp_path / "c.zarr")
    for i, m in enumerate(ms):
        assert_same_measure(c2[i], m, dtype)
        assert_same_measure(c2[m.name], m, dtype)
    for got, want in zip(c2, ms):  # iteration, shard by shard
        assert_same_measure(got, want, dtype)
    assert c2.names.tolist() == [m.name for m in ms]
    assert c2.labels.tolist() == [m.label for m in ms]
    np.testing.assert_array_equal(c2.sizes, [m.n for m in ms])
    assert c2[-1].name == ms[-1].name


def test_raw_weights_kept_and_uniform_default(tmp_path):
    pts = np.arange(12, dtype=np.float32).reshape(4, 3)
    c = store.create(tmp_path / "c.zarr", [Measure(pts, np.array([1, 2, 3, 4.0]), "a"), (pts * 2,)])
    np.testing.assert_array_equal(c["a"].weights, np.array([1, 2, 3, 4], dtype=np.float32))  # not normalised
    np.testing.assert_allclose(c["a"].normalized().weights.sum(), 1.0, rtol=1e-6)
    assert c[1].name == "m000001" and c.labels is None
    np.testing.assert_array_equal(c[1].weights, np.full(4, 0.25, dtype=np.float32))


def test_attrs_and_layout(tmp_path):
    ms = known_measures(25, dim=2)
    c = store.create(tmp_path / "c.zarr", ms, shard_points=64)
    g = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    a = dict(g.attrs)
    assert a["format"] == FORMAT_NAME == "otpipe.collection" and a["format_version"] == FORMAT_VERSION == 1
    assert a["complete"] is True and a["dim"] == 2 and a["dtype"] == "float32"
    assert a["n_measures"] == 25 and a["n_points"] == c.n_points and a["hash"].startswith("sha256:")
    assert g.metadata.zarr_format == 3
    # CSR arrays
    offsets = g["offsets"][:]
    assert offsets.dtype == np.int64 and offsets[0] == 0 and offsets[-1] == c.n_points
    np.testing.assert_array_equal(np.diff(offsets), [m.n for m in ms])
    # every measure is points[starts[i] : starts[i] + size]
    starts = g["starts"][:]
    for i, m in enumerate(ms):
        np.testing.assert_array_equal(g["points"][starts[i] : starts[i] + m.n], m.points.astype(np.float32))
    # shards: whole measures, start on chunk boundaries, occupy whole chunks
    cp = a["chunk_points"]
    assert g["points"].chunks == (cp, 2) and g["weights"].chunks == (cp,)
    rows = g["shard_rows"][:]
    assert np.all(rows % cp == 0)
    covered = [i for r in c.shards for i in r]
    assert covered == list(range(25))
    for k, r in enumerate(c.shards):
        sizes = sum(ms[i].n for i in r)
        assert sizes <= 64 or len(r) == 1
        assert [m.name for m in c.read_shard(k)] == [ms[i].name for i in r]
        assert all(c.shard_of(i) == k for i in r)


def test_read_shard_reads_only_its_chunks(tmp_path):
    ms = known_measures(40, dim=3, max_points=30)
    c = store.create(tmp_path / "c.zarr", ms, shard_points=50)
    assert c.n_shards >= 10
    k = c.n_shards // 2
    cp = c.attrs["chunk_points"]
    mine = set(range(int(c.shard_rows[k]) // cp, int(c.shard_rows[k + 1]) // cp))
    # garble every points/weights chunk file that is not shard k's (reading one would fail; a
    # deleted one is refused at open): reading shard k must still work
    for arr in ("points", "weights"):
        base = tmp_path / "c.zarr" / arr / "c"
        for f in base.rglob("*"):
            if f.is_file() and int(f.relative_to(base).parts[0]) not in mine:
                f.write_bytes(b"not a zstd frame")
    fresh = store.open(tmp_path / "c.zarr")
    for i, got in zip(fresh.shards[k], fresh.read_shard(k)):
        assert_same_measure(got, ms[i])
    assert_same_measure(fresh[fresh.shards[k][0]], ms[fresh.shards[k][0]])


def test_measure_larger_than_shard(tmp_path):
    rng = np.random.default_rng(1)
    ms = [Measure(rng.random((n, 2)), None, f"x{n}") for n in (5, 300, 7, 8, 1000, 3)]
    c = store.create(tmp_path / "c.zarr", ms, shard_points=100)
    for m in ms:
        assert_same_measure(c[m.name], m)
    assert any(len(r) == 1 and c.sizes[r[0]] == 1000 for r in c.shards)


def test_hash_recorded_deterministic_and_verifiable(tmp_path):
    ms = known_measures(30)
    a = store.create(tmp_path / "a.zarr", ms, shard_points=50)
    b = store.create(tmp_path / "b.zarr", ms, shard_points=10_000)  # other chunking, same content
    assert a.content_hash == b.content_hash and a.verify() and b.verify()
    other = store.create(tmp_path / "o.zarr", ms[:-1] + [Measure(ms[-1].points, ms[-1].weights * 2, ms[-1].name, ms[-1].label)])
    assert other.content_hash != a.content_hash
    float64 = store.create(tmp_path / "f.zarr", ms, dtype="float64")
    assert float64.content_hash != a.content_hash
    # silent corruption of one stored coordinate is detected and the measure named
    i = 17
    g = zarr.open_group(str(tmp_path / "a.zarr"), mode="r+")
    row = int(g["starts"][i])
    g["points"][row, 0] = g["points"][row, 0] + 1
    c = store.open(tmp_path / "a.zarr")
    assert c.verify() is False
    with pytest.raises(ValueError, match=f"'{ms[i].name}'.*does not match"):
        c.verify(raise_on_error=True)


def test_append_equals_create_and_is_all_or_nothing(tmp_path):
    ms = known_measures(30, max_points=20)
    whole = store.create(tmp_path / "whole.zarr", ms, shard_points=64)
    c = store.create(tmp_path / "c.zarr", ms[:12], shard_points=64)
    c.append(ms[12:20])
    c.append(iter(ms[20:]))
    assert len(c) == 30 and c.content_hash == whole.content_hash and c.verify()
    for i, m in enumerate(ms):
        assert_same_measure(store.open(tmp_path / "c.zarr")[i], m)

    before = (len(c), c.content_hash, c.n_shards)
    rng = np.random.default_rng(5)
    good = Measure(rng.random((500, 3)), None, "good", "class0")  # spans whole new shards before failing
    bad_cases = [
        ([good, Measure(rng.random((4, 2)), None, "bad", "class0")], "mixed dimensions"),
        ([good, Measure(rng.random((4, 3)), None, "m003", "class0")], "duplicate measure name 'm003'"),
        ([good, Measure(np.full((4, 3), np.nan), None, "nan", "class0")], "NaN or infinite"),
        ([good, Measure(rng.random((4, 3)), None, "nolabel")], "has no label"),
    ]
    for measures, msg in bad_cases:
        with pytest.raises(ValueError, match=msg):
            store.open(tmp_path / "c.zarr").append(measures)
        again = store.open(tmp_path / "c.zarr")
        assert (len(again), again.content_hash, again.n_shards) == before
        assert again.verify()
    with pytest.raises(ValueError, match="cannot append as float64"):
        store.open(tmp_path / "c.zarr").append([good], dtype="float64")
    # and it still accepts a good append afterwards
    c = store.open(tmp_path / "c.zarr").append([good])
    assert len(c) == 31 and c.verify() and c["good"].n == 500


def test_existing_output_needs_overwrite(tmp_path):
    ms = known_measures(3)
    store.create(tmp_path / "c.zarr", ms)
    with pytest.raises(FileExistsError, match="already exists"):
        store.create(tmp_path / "c.zarr", ms)
    c = store.create(tmp_path / "c.zarr", ms[:2], overwrite=True)
    assert len(store.open(tmp_path / "c.zarr")) == 2 == len(c)
    (tmp_path / "notzarr").mkdir()
    (tmp_path / "notzarr" / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not made by otpipe"):
        store.create(tmp_path / "notzarr", ms, overwrite=True)
    assert (tmp_path / "notzarr" / "precious.txt").exists()


def test_failed_create_leaves_nothing(tmp_path):
    ms = known_measures(10)

    def gen():
        yield from ms[:6]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.create(tmp_path / "c.zarr", gen(), shard_points=20)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="empty measure"):
        store.create(tmp_path / "c.zarr", ms[:5] + [Measure(np.zeros((0, 3)), None, "e")])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        store.open(tmp_path / "c.zarr")


def _killed(code: str, tmp_path) -> None:
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stderr


def test_killed_create_and_append_never_look_complete(tmp_path):
    prelude = textwrap.dedent("""
        import os, numpy as np
        from otpipe import store
        def gen(n, kill_at, dim=3):
            for i in range(n):
                if i == kill_at:
                    os._exit(3)   # hard kill: no cleanup, no finally
                yield store.Measure(np.random.default_rng(i).random((50, dim)), None, f"k{i}")
    """)
    _killed(prelude + "store.create('c.zarr', gen(100, 60), shard_points=200)\n", tmp_path)
    assert not (tmp_path / "c.zarr").exists()
    with pytest.raises(FileNotFoundError):
        store.open(tmp_path / "c.zarr")
    (leftover,) = [p for p in tmp_path.iterdir() if p.name.startswith(".c.zarr.tmp-")]  # hidden sibling
    with pytest.raises(ValueError, match="incomplete collection"):
        store.open(leftover)
    # the next create of the same output removes it (its process is gone), and only it
    store.create(tmp_path / "c.zarr", [Measure(np.ones((2, 3)), None, "again")])
    assert not leftover.exists() and store.open(tmp_path / "c.zarr")["again"].n == 2

    first = Measure(np.ones((3, 3)), None, "first")
    store.create(tmp_path / "d.zarr", [first], shard_points=200)
    h = store.open(tmp_path / "d.zarr").content_hash
    _killed(prelude + "store.open('d.zarr').append(gen(100, 60))\n", tmp_path)
    # the append never committed: the store is the previous one, complete and verifiable
    d = store.open(tmp_path / "d.zarr")
    assert len(d) == 1 and d.content_hash == h and d.verify()
    assert_same_measure(d["first"], first)
    d.append(Measure(np.full((4, 3), 2.0), None, f"k{i}") for i in range(5))
    d = store.open(tmp_path / "d.zarr")
    assert len(d) == 6 and d.verify() and d["k4"].n == 4


def test_incomplete_flag_is_refused(tmp_path):
    store.create(tmp_path / "c.zarr", known_measures(3))
    g = zarr.open_group(str(tmp_path / "c.zarr"), mode="r+")
    g.attrs["complete"] = False
    with pytest.raises(ValueError, match="incomplete collection"):
        store.open(tmp_path / "c.zarr")


def test_foreign_and_other_version_stores_are_refused(tmp_path):
    g = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w", zarr_format=3)
    g.create_array("points", shape=(3, 2), dtype="f4")
    with pytest.raises(ValueError, match="not an otpipe collection"):
        store.open(tmp_path / "foreign.zarr")
    zarr.open_group(str(tmp_path / "v2.zarr"), mode="w", zarr_format=2)
    with pytest.raises(ValueError, match="Zarr v2"):
        store.open(tmp_path / "v2.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="no Zarr v3 metadata"):
        store.open(tmp_path / "plain")
    store.create(tmp_path / "c.zarr", known_measures(3))
    meta = tmp_path / "c.zarr" / "zarr.json"
    doc = json.loads(meta.read_text())
    for version, msg in ((0, "older than"), (2, "newer than")):
        doc["attributes"]["format_version"] = version
        meta.write_text(json.dumps(doc))
        with pytest.raises(ValueError, match=msg):
            store.open(tmp_path / "c.zarr")


def test_select_view_and_pickle(tmp_path):
    ms = known_measures(30)
    c = store.create(tmp_path / "c.zarr", ms, shard_points=60)
    v = c.select(label="class1")
    want = [m for m in ms if m.label == "class1"]
    assert len(v) == len(want) == 10
    assert v.names.tolist() == [m.name for m in want]
    for got, m in zip(v, want):
        assert_same_measure(got, m)
    assert_same_measure(v[0], want[0])
    assert_same_measure(v[want[3].name], want[3])
    assert len(c.select(label=["class0", "class2"])) == 20
    assert len(c.select(label="class1", names=["m001", "m002"])) == 1
    c2 = pickle.loads(pickle.dumps(c))
    assert c2.path == c.path and c2.content_hash == c.content_hash
    assert_same_measure(c2[5], ms[5])
    with pytest.raises(KeyError):
        c["nope"]
    with pytest.raises(IndexError):
        c[30]


@pytest.mark.parametrize(
    "points, weights, msg",
    [
        (np.array([[0.0, np.nan]]), None, "NaN or infinite coordinates"),
        (np.array([[0.0, np.inf]]), None, "NaN or infinite coordinates"),
        (np.array([[1e300, 0.0]]), None, "coordinates beyond the float32 range"),  # overflows float32
        (np.zeros((2, 2)), np.array([1e300, 1.0]), "weights beyond the float32 range"),
        (np.zeros((2, 2)), np.array([1e-300, 1e-300]), "all weights underflow to zero when stored as float32"),
        (np.zeros((0, 2)), None, "empty measure"),
        (np.zeros((2, 2)), np.array([1.0, -1.0]), "negative weights"),
        (np.zeros((2, 2)), np.array([0.0, 0.0]), "zero total mass"),
        (np.zeros((2, 2)), np.array([1.0, np.nan]), "NaN or infinite weights"),
        (np.zeros((2, 2)), np.array([1.0]), "weights must have shape"),
        (np.zeros(3), None, "shape \\(N, D\\)"),
        (np.array([["a", "b"]]), None, "real numbers"),
    ],
)
def test_python_validation_names_the_measure(tmp_path, points, weights, msg):
    with pytest.raises(ValueError, match=f"measure 'bad': .*{msg}"):
        store.create(tmp_path / "c.zarr", [Measure(np.ones((2, 2)), None, "ok"), Measure(points, weights, "bad")])
    assert not os.path.exists(tmp_path / "c.zarr")


def test_info_summary(tmp_path):
    ms = known_measures(12, dim=4)
    c = store.create(tmp_path / "c.zarr", ms)
    d = c.info()
    sizes = [m.n for m in ms]
    assert d["n_measures"] == 12 and d["dim"] == 4 and d["dtype"] == "float32"
    assert d["points_per_measure"] == {"min": min(sizes), "median": float(np.median(sizes)), "max": max(sizes)}
    assert d["labels"] == {"class0": 4, "class1": 4, "class2": 4}
    assert d["hash"] == c.content_hash and d["n_shards"] == 1 and d["stored_bytes"] > 0
