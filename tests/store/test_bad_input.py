"""Bad input: non-zero exit, one line on stderr naming the file and the problem, no half-written store."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from otpipe import store

from .conftest import run_otpipe


def _good(d, n=3, dim=3, prefix="g"):
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        np.save(d / f"{prefix}{k}.npy", rng.random((10, dim)).astype(np.float32))


def _write_bad(tmp_path, case):
    """Create the bad file for ``case`` next to good ones; return (bad file, expected message, extra args)."""
    d = tmp_path / "in"
    _good(d)
    extra: list[str] = []
    if case == "nan":
        bad = d / "bad.csv"
        bad.write_text("1,2,3\n4,nan,6\n")
        msg = "contains NaN or infinite coordinates"
    elif case == "inf":
        bad = d / "bad.xyz"
        bad.write_text("1 2 3\n4 inf 6\n")
        msg = "contains NaN or infinite coordinates"
    elif case == "empty-csv":
        bad = d / "bad.csv"
        bad.write_text("# only a comment\n")
        msg = "empty measure"
    elif case == "empty-npy":
        bad = d / "bad.npy"
        np.save(bad, np.zeros((0, 3), dtype=np.float32))
        msg = "empty measure"
    elif case == "empty-image":
        bad = d / "bad.png"
        Image.fromarray(np.zeros((4, 4), dtype=np.uint8), mode="L").save(bad)
        msg = "empty measure"
    elif case == "negative":
        bad = d / "bad.csv"
        bad.write_text("x,y,z,w\n1,2,3,0.5\n4,5,6,-0.5\n")
        msg = "negative weights"
        extra = ["--weight-column", "w"]
    elif case == "mixed-dims":
        bad = d / "h0.npy"  # sorts after g*.npy
        np.save(bad, np.zeros((5, 2), dtype=np.float32))
        msg = "mixed dimensions: D = 2"
    elif case == "corrupt-npy":
        bad = d / "bad.npy"
        raw = (d / "g0.npy").read_bytes()
        bad.write_bytes(raw[: len(raw) // 2])
        msg = "cannot read as npy"
    elif case == "pickle-npy":
        bad = d / "bad.npy"
        with open(bad, "wb") as fh:
            np.lib.format.write_array(fh, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        msg = "cannot read as npy"
    elif case == "pickle-file":
        bad = d / "bad.npy"
        bad.write_bytes(pickle.dumps(np.zeros((3, 3))))
        msg = "cannot read as npy"
    elif case == "corrupt-png":
        bad = d / "bad.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
        msg = "cannot read as image"
    elif case == "corrupt-ply":
        bad = d / "bad.ply"
        bad.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nend_header\n1\n")
        msg = "cannot read as ply"
    elif case == "corrupt-csv":
        bad = d / "bad.csv"
        bad.write_text("1,2,3\n4,five,6\n")
        msg = "cannot read as csv"
    elif case == "binary-csv":
        bad = d / "bad.csv"
        bad.write_bytes(b"\xff\xfe\x00\x01garbage")
        msg = "cannot read as csv"
    elif case == "duplicate":
        (d / "sub").mkdir()
        bad = d / "sub" / "g1.npy"
        np.save(bad, np.zeros((5, 3), dtype=np.float32))
        msg = "duplicate measure name 'g1'"
    else:  # pragma: no cover
        raise AssertionError(case)
    return bad, msg, extra


CASES = [
    "nan", "inf", "empty-csv", "empty-npy", "empty-image", "negative", "mixed-dims", "corrupt-npy",
    "pickle-npy", "pickle-file", "corrupt-png", "corrupt-ply", "corrupt-csv", "binary-csv", "duplicate",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_file_one_line_error_and_no_store(tmp_path, cli, case):
    bad, msg, extra = _write_bad(tmp_path, case)
    out = tmp_path / "out.zarr"
    r = cli("ingest", tmp_path / "in", "--out", out, *extra)
    assert r.code != 0
    assert len(r.err_lines) == 1, r.err
    line = r.err_lines[0]
    assert line.startswith("Error: ") and str(bad) in line and msg in line, line
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in"]  # no temporary leftovers either


@pytest.mark.parametrize("case", ["nan", "corrupt-npy", "mixed-dims"])
def test_bad_file_real_entry_point(tmp_path, case):
    bad, msg, extra = _write_bad(tmp_path, case)
    r = run_otpipe("ingest", tmp_path / "in", "--out", tmp_path / "out.zarr", *extra)
    assert r.code == 1
    assert len(r.err_lines) == 1 and str(bad) in r.err and msg in r.err, r.err
    assert "Traceback" not in r.err
    assert not (tmp_path / "out.zarr").exists()


def test_missing_input_and_existing_output(tmp_path, cli):
    r = cli("ingest", tmp_path / "nope.npy", "--out", tmp_path / "o.zarr")
    assert r.code != 0 and len(r.err_lines) == 1 and "nope.npy" in r.err and "no such file" in r.err
    r = cli("ingest", tmp_path / "*.npy", "--out", tmp_path / "o.zarr")
    assert r.code != 0 and len(r.err_lines) == 1 and "no files match" in r.err
    (tmp_path / "x.foo").write_text("1 2\n")
    r = cli("ingest", tmp_path / "x.foo", "--out", tmp_path / "o.zarr")
    assert r.code != 0 and len(r.err_lines) == 1 and "x.foo" in r.err and "unknown file type" in r.err
    _good(tmp_path / "in")
    assert cli("ingest", tmp_path / "in", "--out", tmp_path / "o.zarr").code == 0
    before = store.open(tmp_path / "o.zarr").content_hash
    r = cli("ingest", tmp_path / "in", "--out", tmp_path / "o.zarr")
    assert r.code != 0 and len(r.err_lines) == 1 and "already exists" in r.err and "--append" in r.err
    r = cli("ingest", tmp_path / "in", "--out", tmp_path / "o.zarr", "--append")  # same names again
    assert r.code != 0 and len(r.err_lines) == 1 and "g0.npy" in r.err and "already exists in" in r.err
    assert store.open(tmp_path / "o.zarr").content_hash == before


def test_append_never_silently_mixes(tmp_path, cli):
    _good(tmp_path / "in")
    out = tmp_path / "o.zarr"
    assert cli("ingest", tmp_path / "in", "--out", out).code == 0
    c0 = store.open(out)
    before = (len(c0), c0.content_hash, c0.n_shards)

    def unchanged():
        c = store.open(out)
        assert (len(c), c.content_hash, c.n_shards) == before and c.verify()

    # another dimension: fails on the first new file, store left as it was
    _good(tmp_path / "d2", dim=2, prefix="two")
    r = cli("ingest", tmp_path / "d2", "--out", out, "--append")
    assert r.code != 0 and len(r.err_lines) == 1 and "two0.npy" in r.err and "mixed dimensions" in r.err, r.err
    unchanged()
    # good files followed by a bad one (written in new shards first, then rolled back)
    _good(tmp_path / "mix", prefix="new")
    np.save(tmp_path / "mix" / "zz.npy", np.zeros((4, 2), dtype=np.float32))
    r = cli("ingest", tmp_path / "mix", "--out", out, "--append", "--shard-points", "10")
    assert r.code != 0 and "zz.npy" in r.err
    unchanged()
    # another dtype
    _good(tmp_path / "more", prefix="more")
    r = cli("ingest", tmp_path / "more", "--out", out, "--append", "--dtype", "float64")
    assert r.code != 0 and len(r.err_lines) == 1 and "float32" in r.err and "float64" in r.err
    unchanged()
    # labelled files into an unlabelled store
    r = cli("ingest", tmp_path / "more", "--out", out, "--append", "--labels", "parent")
    assert r.code != 0 and len(r.err_lines) == 1 and "labels" in r.err
    unchanged()
    # --append and --overwrite together
    r = cli("ingest", tmp_path / "more", "--out", out, "--append", "--overwrite")
    assert r.code != 0 and len(r.err_lines) == 1
    unchanged()
    r = cli("ingest", tmp_path / "more", "--out", out, "--append")
    assert r.code == 0, r.err
    assert len(store.open(out)) == before[0] + 3


def test_open_errors_via_cli(tmp_path, cli):
    r = cli("info", tmp_path / "missing.zarr")
    assert r.code != 0 and len(r.err_lines) == 1 and "missing.zarr" in r.err
    import zarr

    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w", zarr_format=3).attrs["format"] = "something.else"
    r = cli("info", tmp_path / "foreign.zarr")
    assert r.code != 0 and len(r.err_lines) == 1 and "not an otpipe collection" in r.err


def test_synth_bad_arguments(tmp_path, cli):
    r = cli("synth", "--out", tmp_path / "s.zarr", "--kind", "torus", "--dim", "2")
    assert r.code != 0 and len(r.err_lines) == 1 and "torus" in r.err
    r = cli("synth", "--out", tmp_path / "s.zarr", "--kind", "banana")
    assert r.code != 0 and len(r.err_lines) == 1 and "banana" in r.err
    assert not (tmp_path / "s.zarr").exists()
