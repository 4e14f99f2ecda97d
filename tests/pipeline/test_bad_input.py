"""Bad input: one-line errors, non-zero exit, and stored results left untouched."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from otpipe.cli import main
from otpipe.pipeline.pairwise import pairwise


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
    from otpipe.pipeline import result

    out = tmp_path / "half.zarr"
    result.create(out, names_source=["a", "b"], names_target=["a", "b"], tile=1, n_tiles=3, n_self_source=2, n_self_target=0, attrs={})
    with pytest.raises(ValueError, match="incomplete"):
        result.open_result(out)
