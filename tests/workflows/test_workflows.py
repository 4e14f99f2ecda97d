"""Workflows: a spec run end to end on a real 2-worker LocalCluster, re-run -> identical outputs,
--resume detects a changed parameter, --dry-run computes nothing, invalid specs fail before any work
with a message naming the line."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from otpipe.workflows import load_spec, run_workflow, tree_hash

SPEC = """\
version: 1
name: tiny
run_dir: {run_dir}
steps:
  - step: synth
    id: shapes
    params: {{kind: [circle, gaussian], n_measures: 6, n_points: 40, dim: 2, seed: 3}}
  - step: complexity
    id: rates
    params: {{eps: [0.1, 1000], dims: [2], n: [10, 20, 40], reps: 4, seed: {seed}}}
  - step: report
    id: report
    inputs: [shapes, rates]
"""


def _write(tmp_path, text, name="spec.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


@pytest.fixture(scope="module")
def client():
    from otpipe.engine.cluster import ClusterSpec, open_client

    with open_client(ClusterSpec(n_workers=2)) as c:
        yield c


def test_run_rerun_identical_and_resume_detects_changes(tmp_path, client):
    xr = pytest.importorskip("xarray")
    import otpipe.store

    run_dir = tmp_path / "run"
    spec = _write(tmp_path, SPEC.format(run_dir=run_dir, seed=0))
    prov1 = run_workflow(spec, client=client, echo=lambda *a: None)
    assert [s["status"] for s in prov1["steps"]] == ["ran"] * 3 and prov1["complete"]
    col = otpipe.store.open(str(run_dir / "shapes" / "shapes.zarr"))
    assert len(col) == 6 and sorted(set(col.labels)) == ["circle", "gaussian"]
    ds1 = xr.open_zarr(run_dir / "rates" / "rates.zarr", consolidated=False).load()
    assert ds1["sinkhorn"].shape == (2, 1, 3, 4)
    html = (run_dir / "report" / "index.html").read_text()
    assert "<img" in html and "kappa" in html
    saved = json.loads((run_dir / "provenance.json").read_text())
    assert saved["spec"]["name"] == "tiny" and saved["versions"]["numpy"] == np.__version__
    assert saved["steps"][1]["seed"] == 0 and saved["steps"][0]["output_hash"] == col.content_hash
    assert saved["host"]["hostname"] and all("seconds" in s for s in saved["steps"])

    # the same spec again: every output identical (hashes and arrays)
    prov2 = run_workflow(spec, client=client, echo=lambda *a: None)
    assert [s["output_hash"] for s in prov2["steps"]] == [s["output_hash"] for s in prov1["steps"]]
    assert all(s["changed"] == "unchanged" and s["reproduced"] for s in prov2["steps"])
    ds2 = xr.open_zarr(run_dir / "rates" / "rates.zarr", consolidated=False).load()
    for v in ("sinkhorn", "transport", "kappa", "mean"):
        np.testing.assert_array_equal(ds1[v].values, ds2[v].values)

    # resume with nothing changed: nothing recomputed
    prov3 = run_workflow(spec, resume=True, client=client, echo=lambda *a: None)
    assert [s["status"] for s in prov3["steps"][:2]] == ["skipped (unchanged)"] * 2

    # a changed parameter: detected, that step recomputed, the untouched one kept
    spec = _write(tmp_path, SPEC.format(run_dir=run_dir, seed=1))
    prov4 = run_workflow(spec, resume=True, client=client, echo=lambda *a: None)
    st = {s["id"]: s for s in prov4["steps"]}
    assert st["shapes"]["status"].startswith("skipped") and st["rates"]["status"] == "ran"
    assert st["rates"]["changed"] == "changed: param seed"
    assert st["report"]["changed"] == "changed: input rates"
    assert st["rates"]["output_hash"] != prov1["steps"][1]["output_hash"]


def test_changed_external_input_is_detected(tmp_path):
    src = tmp_path / "clouds"
    src.mkdir()
    for k in range(3):
        np.save(src / f"m{k}.npy", np.random.default_rng(k).normal(size=(20, 2)))
    spec = _write(tmp_path, f"""\
        version: 1
        name: ing
        run_dir: {tmp_path / 'run'}
        steps:
          - step: ingest
            id: data
            params: {{sources: ["{src}/*.npy"]}}
        """)
    p1 = run_workflow(spec, echo=lambda *a: None)
    np.save(src / "m1.npy", np.zeros((20, 2)))
    p2 = run_workflow(spec, resume=True, echo=lambda *a: None)
    assert p2["steps"][0]["status"] == "ran" and p2["steps"][0]["changed"] == f"changed: input {src}/m1.npy"
    assert p2["steps"][0]["output_hash"] != p1["steps"][0]["output_hash"]


def test_dry_run_computes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    spec = _write(tmp_path, SPEC.format(run_dir=run_dir, seed=0))
    r = subprocess.run([sys.executable, "-m", "otpipe.cli", "run", str(spec), "--dry-run"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "otpipe synth" in r.stdout and "otpipe complexity" in r.stdout and "nothing computed" in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


BAD = [
    ("unknown step", "  - step: frobnicate\n    id: x\n", 6, "unknown step 'frobnicate'"),
    ("bad type", "  - step: synth\n    id: x\n    params: {n_measures: many}\n", 8, "param 'n_measures'"),
    ("unknown param", "  - step: synth\n    id: x\n    params:\n      colour: red\n", 9, "unknown param 'colour'"),
    ("missing input", "  - step: two-sample\n    id: t\n", 6, "needs an input"),
    ("later input", "  - step: report\n    id: r\n    inputs: [z]\n  - step: synth\n    id: z\n", 8, "defined later"),
    ("yaml syntax", "  - step: synth\n    id: [x\n", 8, "started on line 7"),
    ("ingest without sources", "  - step: ingest\n    id: i\n", 6, "params.sources"),
]


@pytest.mark.parametrize("what,steps,line,msg", BAD, ids=[b[0] for b in BAD])
def test_invalid_spec_fails_before_any_work(tmp_path, what, steps, line, msg):
    head = f"version: 1\nname: bad\nrun_dir: {tmp_path / 'run'}\n# a comment\nsteps:\n"
    spec = _write(tmp_path, head + steps)
    with pytest.raises(ValueError) as exc:
        run_workflow(spec, echo=lambda *a: None)
    assert f"line {line}:" in str(exc.value) and msg in str(exc.value)
    assert not (tmp_path / "run").exists()


def test_invalid_spec_cli_one_line_error(tmp_path):
    spec = _write(tmp_path, "version: 1\nname: bad\nsteps:\n  - step: synth\n    id: s\n    params: {dim: -1}\n")
    r = subprocess.run([sys.executable, "-m", "otpipe.cli", "run", str(spec)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1 and "line 6:" in r.stderr and "'dim'" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "runs").exists()


def test_unregistered_command_fails_validation(tmp_path, monkeypatch):
    import otpipe.api

    monkeypatch.delitem(otpipe.api.STEPS, "complexity")
    spec = _write(tmp_path, "version: 1\nname: x\nsteps:\n  - step: synth\n    id: s\n  - step: complexity\n    id: c\n")
    with pytest.raises(ValueError, match=r"line 6: step 'c': command 'otpipe complexity' is not available"):
        load_spec(spec)


def test_shipped_specs_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "workflows"
    specs = sorted(root.glob("*.yaml"))
    assert any(p.name == "quickstart.yaml" for p in specs)
    for p in specs:
        wf = load_spec(p)
        assert wf.steps[-1].type == "report"


def test_tree_hash_ignores_creation_times(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, t in ((a, "2020"), (b, "2021")):
        d.mkdir()
        (d / "zarr.json").write_text(json.dumps({"attributes": {"created": t, "p": 1.5}}))
    assert tree_hash(a) == tree_hash(b)
    (b / "zarr.json").write_text(json.dumps({"attributes": {"created": "x", "p": 2.0}}))
    assert tree_hash(a) != tree_hash(b)


def test_quickstart_twice_reproduces_every_step(tmp_path, client):
    """The README's quickstart, run twice: bit-identical outputs are recorded as reproduced, step by step
    (volatile attributes such as timings, worker addresses and dates are not content)."""
    from pathlib import Path

    import xarray as xr

    spec = Path(__file__).resolve().parents[2] / "workflows" / "quickstart.yaml"
    run_dir = tmp_path / "qs"
    p1 = run_workflow(spec, run_dir=str(run_dir), client=client, echo=lambda *a: None)
    m1 = xr.open_zarr(run_dir / "matrix" / "matrix.zarr", consolidated=False).load()
    p2 = run_workflow(spec, run_dir=str(run_dir), client=client, echo=lambda *a: None)
    m2 = xr.open_zarr(run_dir / "matrix" / "matrix.zarr", consolidated=False).load()
    for v in ("divergence", "n_iter", "marginal_error"):
        np.testing.assert_array_equal(m1[v].values, m2[v].values)
    assert [s["id"] for s in p2["steps"]] == ["shapes", "matrix", "tests", "rates", "report"]
    assert [(s["id"], s["changed"], s["reproduced"]) for s in p2["steps"]] == [
        (s["id"], "unchanged", True) for s in p2["steps"]]
    assert [s["output_hash"] for s in p1["steps"]] == [s["output_hash"] for s in p2["steps"]]
    # the run report: a report per input (collection, distances, two-sample, complexity), every reference there
    import re

    page = (run_dir / "report" / "index.html").read_text()
    refs = re.findall(r"(?:src|href)='([^']+)'", page)
    for sub in ("shapes", "matrix", "tests", "rates"):
        assert f"{sub}/index.html" in refs and (run_dir / "report" / sub / "index.html").is_file()
    assert sum(r.endswith(".png") for r in refs) >= 7
    assert all((run_dir / "report" / r).is_file() for r in refs)


def test_tree_hash_is_content_only(tmp_path):
    """Zarr results hash by their arrays and parameters: timings, worker addresses, dates, paths and the
    chunking do not count; one changed value or parameter does."""
    import xarray as xr

    def write(d, *, value=1.0, chunk=2, seconds=1.5, worker="tcp://127.0.0.1:4000", blur=0.05):
        S = np.arange(16.0).reshape(4, 4)
        S[1, 2] = value
        ds = xr.Dataset({"divergence": (("source", "target"), S)},
                        coords={"source": np.array(list("abcd"), dtype=object), "target": np.array(list("abcd"), dtype=object)},
                        attrs={"parameters": {"blur": blur}, "seconds": seconds, "workers": {worker: 3},
                               "completed": f"2026-01-0{int(seconds)}T00:00:00", "inputs": {"source": {"path": str(d), "hash": "h"}}})
        ds.to_zarr(d / "r.zarr", mode="w", consolidated=False, encoding={"divergence": {"chunks": (chunk, chunk)}})
        (d / "distances.log").write_text(f"took {seconds} s")
        return tree_hash(d)

    dirs = [tmp_path / str(k) for k in range(5)]
    for d in dirs:
        d.mkdir()
    h0 = write(dirs[0])
    assert write(dirs[1], chunk=4, seconds=7.25, worker="tcp://127.0.0.1:5000") == h0
    assert write(dirs[2], value=1.0 + 1e-12) != h0
    assert write(dirs[3], blur=0.1) != h0
    assert tree_hash(dirs[0] / "r.zarr") == tree_hash(dirs[1] / "r.zarr")
