"""``otpipe run --resume`` after a step was interrupted part-way: the step continues its own
unfinished output (its function gets ``resume=True``, recorded as ``--resume`` in the step's command line; the finished tiles are kept, not recomputed) and
the provenance records the same content hash as an uninterrupted run; a changed parameter starts
the step again."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import zarr

from otpipe.engine import interrupt
from otpipe.workflows import STEP_RECORD, run_workflow

SPEC = """\
version: 1
name: cut
run_dir: {run_dir}
steps:
  - step: synth
    id: shapes
    params: {{kind: [circle, gaussian], n_measures: 8, n_points: 30, dim: 2, seed: 5}}
  - step: distances
    id: matrix
    inputs: [shapes]
    params: {{loss: energy, tile: 2{extra}}}
"""
N_TILES = 10  # 8 x 8 symmetric in tiles of 2 x 2: the 4 x 5 / 2 tiles on and above the diagonal


@pytest.fixture(scope="module")
def client():
    from otpipe.engine.cluster import ClusterSpec, open_client

    with open_client(ClusterSpec(n_workers=1, threads_per_worker=1, memory_limit="1GiB")) as c:
        yield c


def _spec(tmp_path, run_dir, name="spec.yaml", extra=""):
    p = tmp_path / name
    p.write_text(textwrap.dedent(SPEC.format(run_dir=run_dir, extra=extra)))
    return p


def _quiet(*a):
    return None


def test_interrupted_distances_step_is_continued(tmp_path, client, monkeypatch):
    ref = run_workflow(_spec(tmp_path, tmp_path / "ref", "ref.yaml"), client=client, echo=_quiet)
    run_dir = tmp_path / "run"
    spec = _spec(tmp_path, run_dir)
    store = run_dir / "matrix" / "matrix.zarr"

    monkeypatch.setattr(interrupt, "STOP_AFTER", 3)  # a Ctrl-C after the third tile
    with pytest.raises(interrupt.Interrupted) as exc:
        run_workflow(spec, client=client, echo=_quiet)
    monkeypatch.setattr(interrupt, "STOP_AFTER", None)
    assert "3 of 10 tiles are saved" in str(exc.value)
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert not prov["complete"] and [s["id"] for s in prov["steps"]] == ["shapes"]
    attrs = json.loads((store / "zarr.json").read_text())["attributes"]
    assert attrs["complete"] is False and attrs["n_tiles"] == N_TILES
    assert int(np.asarray(zarr.open_group(str(store), mode="r")["tile_done"][:]).sum()) == 3
    assert json.loads((run_dir / "matrix" / STEP_RECORD).read_text())["fingerprint"]

    lines: list[str] = []
    prov = run_workflow(spec, resume=True, client=client, echo=lines.append)
    steps = {s["id"]: s for s in prov["steps"]}
    assert steps["shapes"]["status"] == "skipped (unchanged)" and steps["matrix"]["status"] == "ran"
    argv = steps["matrix"]["argv"]
    assert "--resume" in argv and "--overwrite" not in argv
    assert any(ln.startswith("[matrix] continuing the unfinished") for ln in lines)
    attrs = json.loads((store / "zarr.json").read_text())["attributes"]
    # the three finished tiles were kept, only the other seven computed
    assert attrs["complete"] is True and attrs["tiles_resumed"] == 3 and attrs["tiles_computed"] == N_TILES - 3
    # content-only provenance: the same hash as the uninterrupted run's
    assert steps["matrix"]["output_hash"] == {s["id"]: s for s in ref["steps"]}["matrix"]["output_hash"]
    import xarray as xr

    a = xr.open_zarr(store, consolidated=False).load()
    b = xr.open_zarr(tmp_path / "ref" / "matrix" / "matrix.zarr", consolidated=False).load()
    np.testing.assert_array_equal(a["divergence"].values, b["divergence"].values)
    D = a["divergence"].values
    np.testing.assert_array_equal(D, D.T)  # a symmetric matrix with a zero diagonal: every tile is there
    assert np.allclose(np.diag(D), 0.0, atol=1e-12) and (D[~np.eye(8, dtype=bool)] > 0).all()


def test_changed_parameter_starts_the_step_again(tmp_path, client, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.setattr(interrupt, "STOP_AFTER", 3)
    with pytest.raises(interrupt.Interrupted):
        run_workflow(_spec(tmp_path, run_dir), client=client, echo=_quiet)
    monkeypatch.setattr(interrupt, "STOP_AFTER", None)
    prov = run_workflow(_spec(tmp_path, run_dir, extra=", p: 1.0"), resume=True, client=client, echo=_quiet)
    m = {s["id"]: s for s in prov["steps"]}["matrix"]
    assert "--overwrite" in m["argv"] and "--resume" not in m["argv"]
    attrs = json.loads((run_dir / "matrix" / "matrix.zarr" / "zarr.json").read_text())["attributes"]
    assert attrs["complete"] is True and attrs["tiles_resumed"] == 0 and attrs["tiles_computed"] == N_TILES
