"""A complexity study interrupted after some cells (the interrupt.STOP_AFTER test hook: a Ctrl-C at that
moment) keeps them; ``resume=True`` computes the rest and gives exactly the uninterrupted values.
Also: ``--dry-run`` with a cost estimate, progress lines, convergence figures in the attrs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from otpipe.cli import main
from otpipe.engine import interrupt
from otpipe.engine.cluster import ClusterSpec, open_client
from otpipe.engine.interrupt import Interrupted
from otpipe.pipelines.complexity import open_study, run_study

GRID = dict(eps=(0.1, 10.0), dims=(2,), ns=(10, 20, 40), reps=4, seed=3)


@pytest.fixture(scope="module")
def client():
    with open_client(ClusterSpec(n_workers=2, threads_per_worker=1, memory_limit="1GiB")) as c:
        yield c


def test_interrupt_then_resume_is_identical(client, tmp_path, monkeypatch, capsys):
    ref = run_study(None, client=client, figures=None, **GRID)  # uninterrupted, in a temporary store
    out = tmp_path / "cut.zarr"
    monkeypatch.setattr(interrupt, "STOP_AFTER", 2)
    with pytest.raises(Interrupted, match=r"2 of 6 cells are saved in .*resume=True"):
        run_study(out, client=client, figures=None, **GRID)
    attrs = json.loads((out / "zarr.json").read_text())["attributes"]
    assert attrs["complete"] is False and attrs["otpipe_result"] == "complexity"
    assert np.asarray(zarr.open_group(str(out / "_checkpoint"), mode="r")["done"][:]).sum() == 2
    monkeypatch.setattr(interrupt, "STOP_AFTER", None)
    with pytest.raises(FileExistsError, match="--resume"):
        run_study(out, client=client, figures=None, **GRID)
    ds = run_study(out, client=client, figures=None, resume=True, progress=True, **GRID)
    err = capsys.readouterr().err
    assert "otpipe: complexity: 6/6 cells (100%)" in err and "\r" not in err
    for v in ("sinkhorn", "transport", "n_iter", "marginal_error", "mean", "kappa"):
        np.testing.assert_array_equal(ds[v].values, ref[v].values)
    stored = open_study(out)
    assert stored.attrs["complete"] and not (out / "_checkpoint").exists()
    np.testing.assert_array_equal(stored.sinkhorn.values, ref.sinkhorn.values)
    # convergence figures: the stored per-repetition errors, summarised
    e = stored.marginal_error.values
    assert stored.attrs["marginal_error_max"] == pytest.approx(e.max()) and stored.attrs["convergence_warning"] == ""
    assert stored.attrs["marginal_error_median"] == pytest.approx(np.median(e))
    # a finished study resumes to itself without computing
    again = run_study(out, client=client, figures=None, resume=True, **GRID)
    np.testing.assert_array_equal(again.sinkhorn.values, ref.sinkhorn.values)


def test_cli_dry_run_estimates_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "plan.zarr"
    main(["complexity", "-o", str(out), "--eps", "0.1,10", "--dims", "2,3", "--n", "10,30", "--reps", "5",
          "--dry-run", "--json", "--n-workers", "2"])
    plan = json.loads(capsys.readouterr().out)
    assert plan["cells"] == 8 and plan["solves"] == 8 * 5 * 2 * 3 and plan["estimated_seconds"] > 0
    assert plan["large"] is False and not out.exists()
