"""otpipe deletes only what it made: --overwrite and report steps refuse (one line, nothing lost)
anything without an otpipe marker; stores of earlier otpipe versions (format attrs, no marker) are
accepted; ``otpipe run --dry-run`` lists what a run would replace and what it would refuse."""
from __future__ import annotations

import json
import os
import textwrap

import numpy as np
import pytest

from otpipe._made import made_by_otpipe
from otpipe.workflows import tree_hash


def _foreign_zarr(path):
    import zarr

    g = zarr.open_group(str(path), mode="w")
    g.attrs["owner"] = "someone else"
    g.create_array("data", shape=(4,), dtype="f8")[:] = np.arange(4.0)
    return path


def _user_folder(path):
    path.mkdir()
    (path / "main.py").write_text("print('my code')\n")
    return path


def _attrs(path) -> dict:
    return json.loads((path / "zarr.json").read_text())["attributes"]


@pytest.mark.parametrize("make", [_foreign_zarr, _user_folder, "file", "symlink"])
@pytest.mark.parametrize("command", ["synth", "ingest", "distances", "barycenter", "two-sample", "complexity"])
def test_overwrite_refuses_what_otpipe_did_not_make(command, make, small, tmp_path, cli):
    out = tmp_path / "out.zarr"
    if make == "file":
        out.write_text("precious\n")
    elif make == "symlink":
        os.symlink(small, out)
    else:
        make(out)
    before = tree_hash(out)
    args = {
        "synth": ["synth", "--out", out, "--n-measures", 2, "--n-points", 5],
        "ingest": ["ingest", small, "--out", out],  # a store is not an ingest source: refused first anyway
        "distances": ["distances", small, "--out", out, "--n-workers", 1],
        "barycenter": ["barycenter", small, "--out", out, "--n-workers", 1],
        "two-sample": ["two-sample", small, "--out", out, "--n-permutations", 9, "--n-workers", 1],
        "complexity": ["complexity", "--out", out, "--eps", 1, "--dims", 2, "--n", "10,20", "--reps", 2, "--no-figures"],
    }[command]
    if command == "ingest":
        src = tmp_path / "src"
        src.mkdir()
        np.save(src / "a.npy", np.ones((3, 2)))
        args = ["ingest", src, "--out", out]
    code, err = cli(*args, "--overwrite")
    line = [ln for ln in err.splitlines() if ln.startswith("Error:")]
    assert code != 0 and len(line) == 1, err  # one error line (Click's own usage errors add a usage hint)
    assert str(out) in line[0] and any(w in line[0] for w in ("not made by otpipe", "symbolic link", "is a file",
                                                              "not an otpipe result")), err
    assert tree_hash(out) == before and (make != "symlink" or out.is_symlink())
    assert made_by_otpipe(small)


def test_new_stores_carry_the_marker_and_legacy_stores_are_accepted(small, tmp_path, cli):
    out = tmp_path / "s.zarr"
    assert cli("synth", "--out", out, "--n-measures", 2, "--n-points", 5)[0] == 0
    assert _attrs(out)["otpipe_made"]["kind"] == "collection" and made_by_otpipe(out)
    # a store of an earlier otpipe (no marker, but otpipe's format attrs) is still replaced
    meta = json.loads((out / "zarr.json").read_text())
    del meta["attributes"]["otpipe_made"]
    (out / "zarr.json").write_text(json.dumps(meta))
    assert made_by_otpipe(out)
    assert cli("synth", "--out", out, "--n-measures", 3, "--n-points", 5, "--overwrite")[0] == 0
    assert "otpipe_made" in _attrs(out)
    # the result writers of two-sample and complexity mark their stores too
    import xarray as xr

    from otpipe.engine.checkpoint import Checkpoint, finalise
    from otpipe.pipelines.two_sample import write_result

    ds = xr.Dataset({"pvalue": (("source", "target"), np.full((2, 2), 0.5))}, attrs={"kind": "otpipe.tools.two_sample"})
    write_result(ds, tmp_path / "t.zarr")
    # checkpointed results (two-sample, complexity): marked at creation, the mark kept when finished
    Checkpoint.create(tmp_path / "c.zarr", {"otpipe_result": "complexity"}, 1, {}, kind="complexity")
    finalise(tmp_path / "c.zarr", ds.copy())
    assert _attrs(tmp_path / "t.zarr")["otpipe_made"]["kind"] == "two_sample"
    assert _attrs(tmp_path / "c.zarr")["otpipe_made"]["kind"] == "complexity"


SPEC = """\
version: 1
name: w
run_dir: .
steps:
  - {{step: synth, id: shapes, params: {{n_measures: 3, n_points: 10}}}}
  - {{step: report, id: {report}, inputs: [shapes]}}
"""


def test_workflow_report_step_never_replaces_a_user_folder(tmp_path, cli, monkeypatch):
    """The issue's case: run_dir '.', a report step with id 'src' and the user's src/ there."""
    monkeypatch.chdir(tmp_path)
    src = _user_folder(tmp_path / "src")
    before = tree_hash(src)
    spec = tmp_path / "w.yaml"
    spec.write_text(textwrap.dedent(SPEC.format(report="src")))
    code, err = cli("run", spec, "--dry-run")
    assert code == 1 and err.strip().count("\n") == 0 and "src" in err and "not made by otpipe" in err, err
    code, err = cli("run", spec)
    assert code == 1 and err.strip().count("\n") == 0 and "src" in err, err
    assert tree_hash(src) == before
    assert not (tmp_path / "shapes").exists() and not (tmp_path / "provenance.json").exists()  # refused in advance


def test_workflow_dry_run_lists_what_it_replaces(tmp_path, cli, capsys):
    run_dir = tmp_path / "run"
    spec = tmp_path / "w.yaml"
    spec.write_text(textwrap.dedent(SPEC.format(report="report")).replace("run_dir: .", f"run_dir: {run_dir}"))
    assert cli("run", spec)[0] == 0
    assert all((run_dir / d / ".otpipe").is_file() for d in ("", "shapes", "report"))
    # a run folder of an earlier otpipe (no markers): its provenance names the steps, so it is accepted
    for d in ("shapes", "report"):
        (run_dir / d / ".otpipe").unlink()
    capsys.readouterr()
    from otpipe.cli import main

    main(["run", str(spec), "--dry-run"])
    out = capsys.readouterr().out
    assert f"replaces {run_dir / 'shapes' / 'shapes.zarr'}" in out
    assert f"replaces {run_dir / 'report'}/" in out and f"replaces {run_dir / 'provenance.json'}" in out
    assert "refused" not in out
    code, err = cli("run", spec)
    assert code == 0, err
    # a provenance.json that otpipe did not write is refused too
    (run_dir / "provenance.json").write_text("{}")
    code, err = cli("run", spec)
    assert code == 1 and "provenance" in err and (run_dir / "provenance.json").read_text() == "{}"
