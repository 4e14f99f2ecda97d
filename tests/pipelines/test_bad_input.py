"""Bad input: one-line errors, non-zero exit, and stored results left untouched."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from otpipe.cli import main
from otpipe.pipelines.pairwise import pairwise


def _snapshot(path: Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def _cli_error(capsys, *args) -> str:
    with pytest.raises(SystemExit) as e:
        main(["distances", *map(str, args), "--no-progress"])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and "Traceback" not in err[0]
    return err[0]


@pytest.fixture(scope="module")
def done_result(client, small, tmp_path_factory):
    out = tmp_path_factory.mktemp("res") / "done.zarr"
    pairwise(small, client=client, out=out, tile=4, progress=False)
    return out


def test_unknown_store(capsys, tmp_path):
    msg = _cli_error(capsys, tmp_path / "nope.zarr", "--out", tmp_path / "o.zarr")
    assert "nope.zarr" in msg
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x.txt").write_text("hi")
    msg = _cli_error(capsys, tmp_path / "plain", "--out", tmp_path / "o.zarr")
    assert "plain" in msg
    assert not (tmp_path / "o.zarr").exists()


def test_dimension_mismatch(capsys, small, tmp_path):
    from otpipe import store

    d3 = tmp_path / "d3.zarr"
    store.create(d3, [store.Measure(np.zeros((3, 3)) + i, None, f"z{i}") for i in range(3)])
    msg = _cli_error(capsys, small, "--other", d3, "--out", tmp_path / "o.zarr")
    assert "dimension mismatch" in msg and "D = 2" in msg and "D = 3" in msg
    assert not (tmp_path / "o.zarr").exists()


def test_existing_output_needs_flag(capsys, small, done_result):
    before = _snapshot(done_result)
    msg = _cli_error(capsys, small, "--out", done_result)
    assert "exists" in msg and "--overwrite" in msg and "--resume" in msg
    assert _snapshot(done_result) == before


def test_overwrite_refuses_foreign_directory(capsys, small, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    msg = _cli_error(capsys, small, "--out", foreign, "--overwrite")
    assert "not an otpipe result" in msg
    assert (foreign / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "extra,what",
    [(["--blur", "0.1"], "blur"), (["--loss", "energy"], "loss"), (["--tile", "3"], "tile"), (["--p", "1"], "p")],
)
def test_resume_with_other_parameters(capsys, small, done_result, extra, what):
    before = _snapshot(done_result)
    msg = _cli_error(capsys, small, "--out", done_result, "--resume", *extra)
    assert "cannot resume" in msg and what in msg
    assert _snapshot(done_result) == before


def test_resume_with_other_input(capsys, other, done_result):
    before = _snapshot(done_result)
    msg = _cli_error(capsys, other, "--out", done_result, "--resume")
    assert "cannot resume" in msg and "hash" in msg
    assert _snapshot(done_result) == before


def test_bad_parameters(capsys, small, tmp_path):
    assert "blur" in _cli_error(capsys, small, "--out", tmp_path / "o.zarr", "--blur", "-1")
    assert "scaling" in _cli_error(capsys, small, "--out", tmp_path / "o.zarr", "--scaling", "2")
    assert "applies to loss 'sinkhorn' only" in _cli_error(capsys, small, "--out", tmp_path / "o.zarr", "--loss", "energy", "--tol", "1e-3")
    assert "backend" in _cli_error(capsys, small, "--out", tmp_path / "o.zarr", "--backend", "gpu9")
    assert not (tmp_path / "o.zarr").exists()


def test_incomplete_result_is_not_opened_as_complete(small, tmp_path):
    from otpipe.engine import result

    out = tmp_path / "half.zarr"
    result.create(out, names_source=["a", "b"], names_target=["a", "b"], tile=1, n_tiles=3, n_self_source=2, n_self_target=0, attrs={})
    with pytest.raises(ValueError, match="incomplete"):
        result.open_result(out)


# ---- damaged inputs: refused with one line, never a complete wrong matrix ---------------------
@pytest.fixture
def on_client(client):
    """CLI arguments running on the session cluster, quietly (``-q``: only the error on stderr).

    The CLI's log handler is bound to the stderr of the test that first set it up: drop it so
    that this test's captured stderr gets a fresh one.
    """
    import logging

    lg = logging.getLogger("otpipe")
    for h in [h for h in lg.handlers if getattr(h, "_otpipe", False)]:
        lg.removeHandler(h)
    return ["--scheduler", client.scheduler.address, "-q"]


def _tampered(small, tmp_path, how: str):
    import os
    import shutil

    import zarr

    p = tmp_path / "in.zarr"
    shutil.copytree(small, p)
    g = zarr.open_group(str(p), mode="r+")
    if how == "offsets[1] += 5":
        v = g["offsets"][:]
        v[1] += 5
        g["offsets"][:] = v
    elif how == "offsets[-1] += 1e6":
        v = g["offsets"][:]
        v[-1] += 1_000_000
        g["offsets"][:] = v
    elif how == "deleted points chunk":
        os.remove(p / "points" / "c" / "0" / "0")
    elif how == "negative weight":
        g["weights"][int(g["starts"][3]) + 2] = -1.0
    elif how == "nan weight":
        g["weights"][int(g["starts"][3])] = np.nan
    elif how == "changed value":
        g["points"][int(g["starts"][3]), 0] += 1.0
    return p


@pytest.mark.parametrize(
    "how,msg",
    [
        ("offsets[1] += 5", "damaged collection: measure 'm001' (#1) starts at row"),
        ("offsets[-1] += 1e6", "damaged collection: offsets end at"),
        ("deleted points chunk", "damaged collection: points chunk 0"),
    ],
)
def test_tampered_input_refused_before_anything_runs(capsys, small, tmp_path, how, msg):
    p = _tampered(small, tmp_path, how)
    for extra in ([], ["--other", small], ["--dry-run"]):
        err = _cli_error(capsys, p, "--out", tmp_path / "o.zarr", *extra)
        assert str(p) in err and msg in err, err
    err = _cli_error(capsys, small, "--other", p, "--out", tmp_path / "o.zarr")
    assert str(p) in err and msg in err, err
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize(
    "how,msg", [("negative weight", "measure 'm003' (#3) has negative weights"), ("nan weight", "measure 'm003' (#3) has NaN or infinite weights")]
)
def test_tampered_values_refused_by_the_workers(capsys, on_client, small, tmp_path, how, msg):
    p = _tampered(small, tmp_path, how)
    err = _cli_error(capsys, p, "--out", tmp_path / "o.zarr", *on_client)
    assert msg in err, err
    assert not (tmp_path / "o.zarr").exists()  # found by the bounding-box pass, before the result exists


def test_resume_verify_rehashes_the_inputs(capsys, client, on_client, small, tmp_path):
    from otpipe import store

    src = tmp_path / "in.zarr"
    import shutil

    shutil.copytree(small, src)
    out = tmp_path / "r.zarr"
    pairwise(src, client=client, out=out, tile=4, progress=False)
    before = _snapshot(out)
    # a value changed in place: the structure (and the recorded hash) is unchanged
    import zarr

    g = zarr.open_group(str(src), mode="r+")
    g["points"][int(g["starts"][3]), 0] += 1.0
    assert store.open(src).content_hash == store.open(small).content_hash
    err = _cli_error(capsys, src, "--out", out, "--resume", "--verify", *on_client)
    assert "'m003' (#3) does not match its recorded digest" in err, err
    assert _snapshot(out) == before
    err = _cli_error(capsys, src, "--out", tmp_path / "new.zarr", "--verify", *on_client)
    assert "'m003' (#3) does not match its recorded digest" in err
    assert not (tmp_path / "new.zarr").exists()


def test_resume_refuses_an_input_whose_recorded_hash_changed(capsys, client, on_client, small, tmp_path):
    """A rewritten input (other content, so another content hash) cannot be resumed into a result."""
    import shutil

    from otpipe import store

    src = tmp_path / "in.zarr"
    shutil.copytree(small, src)
    out = tmp_path / "r.zarr"
    pairwise(src, client=client, out=out, tile=4, progress=False)
    before = _snapshot(out)
    ms = list(store.open(small))
    ms[3] = store.Measure(ms[3].points + 1.0, ms[3].weights, ms[3].name, ms[3].label)
    store.create(src, ms, overwrite=True, dtype="float64")
    err = _cli_error(capsys, src, "--out", out, "--resume", *on_client)
    assert "cannot resume" in err and "source.hash" in err, err
    assert _snapshot(out) == before


def test_coordinates_float32_cannot_hold(capsys, on_client, tmp_path):
    from otpipe import store

    rng = np.random.default_rng(0)
    p = tmp_path / "huge.zarr"
    store.create(p, [store.Measure(rng.random((20, 2)) * 1e20, None, f"h{i}") for i in range(4)], dtype="float32")
    err = _cli_error(capsys, p, "--out", tmp_path / "o.zarr", *on_client)
    assert "the costs overflow float32" in err and "rescale the points" in err and "float64" in err, err
    assert not (tmp_path / "o.zarr").exists()
