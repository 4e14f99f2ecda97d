"""Tasks are quiet: the run records every solve's marginal error and summarises them once, so a solver warning
raised inside a task (printed raw by a worker, once per batch, with a Dask file name) is not issued there."""
from __future__ import annotations

import threading
import warnings

import numpy as np

from otpipe import diagnostics, store
from otpipe.pipelines.tasks import RunParams, cross_task, self_task


def _stalling(tmp_path):
    """float32 measures of 100 points at a blur where the potentials' rounding stalls tol=1e-7 (a warning)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "c.zarr"
    store.create(path, [store.Measure(rng.normal(size=(100, 2)) * 3, None, f"m{k}", None) for k in range(2)],
                 dtype="float32")
    return str(path), RunParams(blur=0.01, tol=1e-7, max_iter=3000, dtype="float32", diameter=30.0)


def test_a_task_issues_no_solver_warning_that_a_plain_solve_issues(tmp_path):
    import torch

    import otpipe

    path, rp = _stalling(tmp_path)
    c = store.open(path)
    x = torch.as_tensor(np.asarray(c[0].points))
    with warnings.catch_warnings(record=True) as plain:
        warnings.simplefilter("always")
        otpipe.solve(x, torch.as_tensor(np.asarray(c[1].points)), blur=rp.blur, tol=rp.tol, max_iter=rp.max_iter,
                     diameter=rp.diameter)
    assert any(issubclass(w.category, diagnostics.ConvergenceWarning) for w in plain)  # the case does warn
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        s = self_task(path, [0, 1], rp)
        r = cross_task(path, [0], path, [1], rp, self_rows=s["value"][:1], self_cols=s["value"][1:])
    assert not [w for w in rec if issubclass(w.category, diagnostics.ConvergenceWarning)]
    assert np.isfinite(r["marginal_error"]).all() and r["marginal_error"][0, 0] > 0  # recorded, for the summary


def test_quiet_is_per_thread():
    seen = {}

    def other():
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            diagnostics.warn("from another thread")
        seen["n"] = len(rec)

    with diagnostics.quiet(), warnings.catch_warnings(record=True) as mine:
        warnings.simplefilter("always")
        diagnostics.warn("silenced here")
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert not mine and seen["n"] == 1
