"""Convergence honesty of a distance matrix: the marginal errors of its solves are summarised in the
attrs (checked against the stored matrix), a run above the thresholds warns once with the figures
and the remedy, a converged run does not; the user gets no checkpoint bookkeeping; Ctrl-C keeps the
finished tiles and says how to resume."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import zarr

from otpipe.cli import main
from otpipe.engine import interrupt
from otpipe.engine.convergence import MAX_THRESHOLD, MEDIAN_THRESHOLD, ConvergenceWarning
from otpipe.engine.interrupt import Interrupted
from otpipe.engine.result import open_result
from otpipe.pipelines.pairwise import pairwise


def _stored_errors(path) -> np.ndarray:
    """The i < j marginal errors, read straight from the Zarr store."""
    e = np.asarray(zarr.open_group(str(path), mode="r")["marginal_error"][:])
    return e[np.triu_indices(e.shape[0], 1)]


def test_fixed_schedule_warns_once_and_records_the_figures(client, small, tmp_path):
    out = tmp_path / "fixed.zarr"
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = pairwise(small, client=client, out=out, tile=4, progress=False)
    conv = [w for w in rec if issubclass(w.category, ConvergenceWarning)]
    assert len(conv) == 1
    e = _stored_errors(out)
    a = ds.attrs
    assert a["marginal_error_median"] == pytest.approx(np.median(e), rel=1e-12)
    assert a["marginal_error_max"] == pytest.approx(e.max(), rel=1e-12)
    assert np.median(e) > MEDIAN_THRESHOLD  # the fixed schedule leaves the marginals far from converged
    msg = str(conv[0].message)
    assert msg == a["convergence_warning"] and "--tol 1e-3" in msg and f"{np.median(e):.2g}" in msg
    assert a["marginal_error_threshold"] == {"median": MEDIAN_THRESHOLD, "max": MAX_THRESHOLD}
    # the result has no checkpoint bookkeeping; the store keeps it
    assert not {"tile_done", "self_done_source", "self_done_target"} & set(ds.variables)
    assert not {"tile", "source_chunk", "target_chunk"} & set(ds.dims)
    assert "tile_done" in open_result(out, bookkeeping=True)


def test_converged_run_is_quiet(client, small, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        ds = pairwise(small, client=client, out=tmp_path / "tol.zarr", tile=4, tol=1e-5, blur=0.5, progress=False)
    e = _stored_errors(tmp_path / "tol.zarr")
    # quiet because every reported error is within tol (the count above tol is 0), not because of a threshold
    assert e.max() <= 1e-5 and ds.attrs["solves_above_tol"] == 0 and ds.attrs["marginal_error_max"] == pytest.approx(e.max(), rel=1e-12)
    assert ds.attrs["convergence_warning"] == ""


def test_tol_run_counts_the_solves_above_tol(client, small, tmp_path):
    # a cap of 12 updates: some solves stop above the tolerance; each is reported, and counted in one warning
    with pytest.warns(ConvergenceWarning, match=r"(\d+) of (\d+) solves stopped above tol=1e-06") as rec:
        ds = pairwise(small, client=client, out=tmp_path / "cap.zarr", tile=4, tol=1e-6, max_iter=12, blur=0.1,
                      progress=False)
    e = _stored_errors(tmp_path / "cap.zarr")
    above = int((e > 1e-6).sum())
    assert 0 < above and ds.attrs["solves_above_tol"] == above and ds.attrs["marginal_error_tol"] == 1e-6
    assert f"{above} of {e.size} solves" in str(rec[0].message)
    assert ds.attrs["convergence_warning"] == str(rec[0].message)


def test_cli_warning_is_one_line_on_stderr(client, small, tmp_path, capsys):
    main(["distances", str(small), "-o", str(tmp_path / "c.zarr"), "--tile", "4", "--no-progress", "--json",
          "--scheduler", client.scheduler.address])
    cap = capsys.readouterr()
    warn = [ln for ln in cap.err.splitlines() if ln.startswith("otpipe: warning:")]
    assert len(warn) == 1 and warn[0].startswith("otpipe: warning: the Sinkhorn solves of") and "--tol" in warn[0]
    assert "Traceback" not in cap.err
    import json

    summary = json.loads(cap.out.strip().splitlines()[-1])
    assert summary["convergence_warning"] in warn[0] and summary["marginal_error_median"] > MEDIAN_THRESHOLD


def test_interrupted_run_keeps_its_tiles_and_resumes(client, small, tmp_path, monkeypatch):
    out = tmp_path / "cut.zarr"
    # a Ctrl-C after 10 tasks: the 6 self-term chunks, then 4 of the 21 tiles (test hook of otpipe.engine.interrupt)
    monkeypatch.setattr(interrupt, "STOP_AFTER", 10)
    with pytest.raises(Interrupted, match=r"tiles are saved in .*resume=True"):
        pairwise(small, client=client, out=out, tile=2, progress=False)
    done = np.asarray(zarr.open_group(str(out), mode="r")["tile_done"][:])
    assert 0 < done.sum() < len(done)
    monkeypatch.setattr(interrupt, "STOP_AFTER", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ds = pairwise(small, client=client, out=out, tile=2, progress=False, resume=True)
        ref = pairwise(small, client=client, tile=2, progress=False)
    assert ds.attrs["tiles_resumed"] == done.sum()
    np.testing.assert_array_equal(ds.divergence.values, ref.divergence.values)
