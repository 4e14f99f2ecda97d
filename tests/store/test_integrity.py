"""Structural checks at open and data checks on read: every tampering is a one-line error naming it.

Each case copies a good store, damages the copy the way a clumsy or hostile user would (editing
arrays with Zarr, deleting or editing files), and checks that ``store.open``, ``otpipe info`` and
``otpipe info --verify`` refuse it with one line naming the problem, never a ``TypeError`` or a
silent answer.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import zarr

from otpipe import store
from otpipe.store import Measure
from otpipe.store.integrity import CorruptCollection

from .conftest import known_measures


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """30 labelled measures in several shards (chunks of 64 rows)."""
    p = tmp_path_factory.mktemp("good") / "good.zarr"
    store.create(p, known_measures(30, dim=3, max_points=40), shard_points=64)
    return p


def _g(p):
    return zarr.open_group(str(p), mode="r+")


def _set(p, name, index, value):
    a = _g(p)[name]
    v = a[:]
    v[index] = value
    a[:] = v


def _attr(p, key, value):
    meta = p / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"][key] = value
    meta.write_text(json.dumps(doc))


def _del_chunk(p, arr, j):
    f = p / arr / "c" / str(j)
    f = f / "0" if arr == "points" else f
    os.remove(f)


def _row_of(p, i, k=0):
    return int(_g(p)["starts"][i]) + k


TAMPERINGS = {
    # the three: offsets[1] += 5, a deleted points chunk, offsets[-1] += 1e6
    "offsets[1] += 5": (lambda p: _set(p, "offsets", 1, _g(p)["offsets"][1] + 5), "starts at row"),
    "deleted points chunk": (lambda p: _del_chunk(p, "points", 1), "points chunk 1 (rows 64:128, shard 1) is missing"),
    "offsets[-1] += 1e6": (lambda p: _set(p, "offsets", -1, _g(p)["offsets"][-1] + 1_000_000), "offsets end at"),
    "non-monotone offsets": (lambda p: _set(p, "offsets", 3, _g(p)["offsets"][6]), "offsets decrease at measure 'm003'"),
    "offsets[0] = 1": (lambda p: _set(p, "offsets", 0, 1), "offsets[0] is 1"),
    "deleted weights chunk": (lambda p: _del_chunk(p, "weights", 2), "weights chunk 2"),
    "deleted offsets array": (lambda p: shutil.rmtree(p / "offsets"), "array 'offsets' is missing"),
    "short names": (lambda p: _g(p)["names"].resize((5,)), "array 'names' has shape (5,)"),
    "duplicate names": (lambda p: _set(p, "names", 4, "m007"), "measure name 'm007' appears 2 times"),
    "empty name": (lambda p: _set(p, "names", 4, ""), "measure #4 has an empty name"),
    "short labels": (lambda p: _g(p)["labels"].resize((3,)), "array 'labels' has shape (3,)"),
    "starts edited": (lambda p: _set(p, "starts", 5, _g(p)["starts"][5] + 1), "measure 'm005' (#5) starts at row"),
    "shard_rows edited": (lambda p: _set(p, "shard_rows", -1, _g(p)["shard_rows"][-1] + 64), "rows for"),
    "shard_rows off grid": (lambda p: _set(p, "shard_rows", 1, _g(p)["shard_rows"][1] + 1), "not increasing multiples of chunk_points"),
    "shard_offsets edited": (lambda p: _set(p, "shard_offsets", 1, 0), "shard_offsets are not increasing"),
    "attr dim": (lambda p: _attr(p, "dim", 2), "points have D = 3, but the attributes say D = 2"),
    "attr dtype": (lambda p: _attr(p, "dtype", "float64"), "array 'points' has dtype float32, but the attributes say float64"),
    "attr dtype junk": (lambda p: _attr(p, "dtype", "int8"), "attribute 'dtype' is 'int8'"),
    "attr n_points": (lambda p: _attr(p, "n_points", 7), "attribute 'n_points' is 7, expected an integer >= 30"),
    "attr n_measures": (lambda p: _attr(p, "n_measures", 31), "array"),
    "attr chunk_points": (lambda p: _attr(p, "chunk_points", 32), "do not match chunk_points = 32"),
    "attr hash": (lambda p: _attr(p, "hash", "md5:0"), "attribute 'hash' is not a sha256 content hash"),
    "attr format_version": (lambda p: _attr(p, "format_version", 2), "newer than this otpipe supports"),
    "attr format": (lambda p: _attr(p, "format", "other"), "not an otpipe collection"),
    "attributes not a mapping": (lambda p: _attr(p, "n_shards", "many"), "attribute 'n_shards' is 'many'"),
    "truncated points": (lambda p: _g(p)["points"].resize((64, 3)), "rows of points, the array has 64"),
}


@pytest.mark.parametrize("case", list(TAMPERINGS))
def test_tampered_store_refused_at_open(good, tmp_path, cli, case):
    p = tmp_path / "t.zarr"
    shutil.copytree(good, p)
    damage, msg = TAMPERINGS[case]
    damage(p)
    with pytest.raises(ValueError, match=None) as e:
        store.open(p)
    assert msg in str(e.value) and str(p) in str(e.value), str(e.value)
    for args in (["info", p], ["info", p, "--verify"], ["info", p, "--json"]):
        r = cli(*args)
        assert r.code == 1 and len(r.err_lines) == 1 and r.err_lines[0].startswith("Error: "), r.err
        assert msg in r.err and "TypeError" not in r.err and "Traceback" not in r.err, r.err


@pytest.mark.parametrize(
    "case,msg",
    [("negative weight", "measure 'm004' (#4) has negative weights"),
     ("nan weight", "measure 'm004' (#4) has NaN or infinite weights"),
     ("inf coordinate", "measure 'm004' (#4) has NaN or infinite coordinates"),
     ("zero mass", "measure 'm004' (#4) has zero total mass")],
)
def test_tampered_values_refused_on_read(good, tmp_path, cli, case, msg):
    """Values are not read at open; reading the measure (or its shard) names it."""
    p = tmp_path / "t.zarr"
    shutil.copytree(good, p)
    r0 = _row_of(p, 4)
    n = int(np.diff(_g(p)["offsets"][4:6])[0])
    if case == "negative weight":
        _set(p, "weights", r0 + n - 1, -0.5)
    elif case == "nan weight":
        _set(p, "weights", r0, np.nan)
    elif case == "inf coordinate":
        a = _g(p)["points"]
        a[r0, 1] = np.inf
    else:
        a = _g(p)["weights"]
        a[r0 : r0 + n] = 0.0
    c = store.open(p)  # structure intact
    with pytest.raises(CorruptCollection, match=msg.replace("(", r"\(").replace(")", r"\)")):
        c["m004"]
    assert c.shard_of(20) != c.shard_of(4) and c["m020"].name == "m020"  # other shards still read
    r = cli("info", p, "--verify")
    assert r.code == 1 and len(r.err_lines) == 1 and msg in r.err, r.err


def test_changed_value_found_by_verify_only(good, tmp_path, cli):
    """A changed coordinate keeps the structure: open works, --verify names the measure."""
    p = tmp_path / "t.zarr"
    shutil.copytree(good, p)
    a = _g(p)["points"]
    r = _row_of(p, 9, 1)
    a[r, 0] = a[r, 0] + 1
    assert cli("info", p).code == 0
    r = cli("info", p, "--verify")
    assert r.code == 1 and len(r.err_lines) == 1 and "'m009' (#9) does not match its recorded digest" in r.err


def test_every_chunk_written_even_when_all_zero(tmp_path):
    """A measure at the origin gives an all-zero points chunk: written anyway, so absence means damage."""
    ms = [Measure(np.zeros((5, 2)), None, "origin"), Measure(np.ones((5, 2)), None, "ones")]
    store.create(tmp_path / "c.zarr", ms, shard_points=5)
    files = sorted(str(f.relative_to(tmp_path / "c.zarr" / "points")) for f in (tmp_path / "c.zarr" / "points").rglob("*") if f.is_file() and f.name != "zarr.json")
    assert files == ["c/0/0", "c/1/0"]


def test_legacy_missing_fill_chunk_accepted_when_digests_match(tmp_path):
    """Stores from before every chunk was written may lack an all-zero chunk: the zeros are the data.

    Known answer: the measure really is all zeros, so its digest matches and the store opens;
    the same missing chunk under a non-zero measure is damage.
    """
    ms = [Measure(np.zeros((5, 2)), None, "origin"), Measure(np.ones((5, 2)), None, "ones")]
    p = tmp_path / "c.zarr"
    store.create(p, ms, shard_points=5)
    os.remove(p / "points" / "c" / "0" / "0")  # what the old writer left out
    c = store.open(p)
    np.testing.assert_array_equal(c["origin"].points, np.zeros((5, 2), dtype=np.float32))
    assert c.verify()
    os.remove(p / "points" / "c" / "1" / "0")
    with pytest.raises(CorruptCollection, match="points chunk 1 .* 'ones' \\(#1\\) no longer matches its digest"):
        store.open(p)


@pytest.mark.parametrize(
    "args",
    [
        ["distances", "{p}", "--out", "{o}/d.zarr", "--no-progress"],
        ["distances", "{good}", "--other", "{p}", "--out", "{o}/d.zarr", "--no-progress"],
        ["barycenter", "{p}", "--out", "{o}/b.zarr"],
        ["two-sample", "{p}", "--out", "{o}/t.zarr"],
        ["report", "{p}", "--out", "{o}/r.png"],
        ["ingest", "{o}/x.npy", "--out", "{p}", "--append"],
    ],
    ids=["distances", "distances-other", "barycenter", "two-sample", "report", "ingest-append"],
)
def test_every_command_refuses_a_damaged_store(good, tmp_path, cli, args):
    """Each command that reads a collection opens it through the checks: one line, nothing written."""
    p = tmp_path / "t.zarr"
    shutil.copytree(good, p)
    _set(p, "offsets", 1, _g(p)["offsets"][1] + 5)  # the first tampering
    o = tmp_path / "outs"
    o.mkdir()
    np.save(o / "x.npy", np.ones((3, 3)))
    r = cli(*[a.format(p=p, o=o, good=good) for a in args])
    assert r.code == 1 and len(r.err_lines) == 1, r.err
    assert f"{p}: damaged collection: measure 'm001' (#1) starts at row" in r.err, r.err
    assert sorted(x.name for x in o.iterdir()) == ["x.npy"]
