"""Long two-sample runs: Ctrl-C (a real SIGINT) keeps the finished tests and exits with 130 and a
resume command; ``--resume`` then gives exactly the uninterrupted result. Also: the default
``--by``, the test count printed before the run, ``--dry-run`` with its cost estimate, scipy's names
(old stores and old attribute names still read), and convergence figures in the attrs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr
import zarr

from otpipe import store
from otpipe.cli import main
from otpipe.engine.cluster import ClusterSpec, open_client
from otpipe.engine.convergence import ConvergenceWarning
from otpipe.pipelines.two_sample import many_two_sample_tests, open_result
from otpipe.tools.two_sample import two_sample_test

SINKHORN = ["--statistic", "sinkhorn", "--blur", "0.5", "--n-permutations", "59", "--by", "measure", "--seed", "4"]


@pytest.fixture(scope="module")
def client():
    with open_client(ClusterSpec(n_workers=2, threads_per_worker=1, memory_limit="1GiB")) as c:
        yield c


@pytest.fixture(scope="module")
def coll(tmp_path_factory):
    """9 labelled measures of 40 points (36 tests by measure, 3 by label)."""
    rng = np.random.default_rng(7)
    ms = [store.Measure(rng.normal(size=(40, 2)) * (1 + 0.3 * (i % 3)), None, f"m{i}", f"l{i % 3}") for i in range(9)]
    return store.create(tmp_path_factory.mktemp("ts") / "c.zarr", ms, dtype="float64")


@pytest.fixture(scope="module")
def reference(client, coll):
    """The uninterrupted run (in memory)."""
    return many_two_sample_tests(coll, client=client, by="measure", statistic="sinkhorn", blur=0.5,
                                 n_permutations=59, seed=4)


def _done(out) -> np.ndarray | None:
    try:
        return np.asarray(zarr.open_group(str(out / "_checkpoint"), mode="r")["done"][:])
    except Exception:  # not created yet
        return None


def test_sigint_keeps_finished_tests_and_resume_is_identical(client, coll, reference, tmp_path, capsys):
    out = tmp_path / "cut.zarr"
    cmd = [sys.executable, "-m", "otpipe.cli", "two-sample", str(coll.path), "-o", str(out), *SINKHORN,
           "--n-workers", "1", "--no-plot"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while time.time() - t0 < 240:
        d = _done(out)
        if d is not None and d.sum() > 0:
            break
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)  # Ctrl-C
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("Interrupted: ") and "tests are saved in" in last and last.endswith("--resume")
    # no noise from the cluster's shutdown (cancelled tasks, a busy worker killed): otpipe's lines only
    noise = [ln for ln in err.splitlines() if "distributed." in ln or "CancelledError" in ln or "Traceback" in ln]
    assert not noise, err
    done = _done(out)
    assert 0 < done.sum() < 36
    assert json.loads((out / "zarr.json").read_text())["attributes"]["complete"] is False
    with pytest.raises(ValueError, match="unfinished"):
        open_result(out)
    # a different parameter cannot resume this store
    with pytest.raises(SystemExit):
        main(["two-sample", str(coll.path), "-o", str(out), *SINKHORN[:-1], "5", "--resume",
              "--scheduler", client.scheduler.address])
    assert "cannot resume" in capsys.readouterr().err
    main(["two-sample", str(coll.path), "-o", str(out), *SINKHORN, "--resume", "--no-plot", "--json",
          "--scheduler", client.scheduler.address])
    ds = open_result(out)
    assert ds.attrs["complete"] and not (out / "_checkpoint").exists()
    attrs = json.loads((out / "zarr.json").read_text())["attributes"]
    assert attrs["otpipe_result"] == "two_sample" and "kind" not in attrs  # the one type tag
    for v in ("statistic", "pvalue", "p_holm", "p_bh", "marginal_error", "n_source", "n_target"):
        np.testing.assert_array_equal(ds[v].values, reference[v].values)


def test_default_by_label_and_test_count_printed(client, coll, tmp_path, capsys):
    out = tmp_path / "lab.zarr"
    main(["two-sample", str(coll.path), "-o", str(out), "--statistic", "energy", "--n-permutations", "19",
          "--no-plot", "--scheduler", client.scheduler.address])
    err = capsys.readouterr().err
    assert "3 test(s)" in err and "by label: default for labelled collections" in err
    ds = open_result(out)
    assert ds.attrs["by"] == "label" and list(ds.source.values) == ["l0", "l1", "l2"]
    pooled = [np.concatenate([coll[i].points for i in range(9) if i % 3 == k]) for k in range(3)]
    r = two_sample_test(pooled[0], pooled[2], statistic="energy", n_permutations=19, seed=[0, 0, 2])
    assert ds.pvalue.values[0, 2] == r.pvalue and ds.statistic.values[0, 2] == pytest.approx(r.statistic, rel=1e-12)


def test_unlabelled_default_is_by_measure(client, tmp_path):
    rng = np.random.default_rng(1)
    c = store.create(tmp_path / "u.zarr", [rng.normal(size=(10, 2)) for _ in range(3)], dtype="float64")
    ds = many_two_sample_tests(c, client=client, statistic="energy", n_permutations=9)
    assert ds.attrs["by"] == "measure" and ds.attrs["n_tests"] == 3


def test_dry_run_estimates_and_writes_nothing(coll, tmp_path, capsys):
    out = tmp_path / "none.zarr"
    main(["two-sample", str(coll.path), "-o", str(out), *SINKHORN, "--dry-run", "--json", "--n-workers", "2"])
    cap = capsys.readouterr()
    plan = json.loads(cap.out)
    assert plan["n_tests"] == 36 and plan["by"] == "measure" and plan["workers"] == 2
    assert plan["estimated_seconds"] > 0 and plan["large"] is False and "warning" not in cap.err
    assert not out.exists()
    # a large run: a warning with the advice
    main(["two-sample", str(coll.path), "-o", str(out), "--statistic", "sinkhorn", "--by", "measure",
          "--n-permutations", "10000000", "--dry-run", "--n-workers", "2"])
    cap = capsys.readouterr()
    assert "estimated time: about" in cap.out
    warn = [ln for ln in cap.err.splitlines() if ln.startswith("otpipe: warning: this run would take about")]
    assert len(warn) == 1 and "--by label" in warn[0] and not out.exists()


def test_result_names_follow_scipy_and_old_names_still_read(tmp_path):
    rng = np.random.default_rng(0)
    r = two_sample_test(rng.normal(size=(12, 2)), rng.normal(size=(10, 2)) + 2, statistic="sinkhorn", blur=0.5,
                        n_permutations=19)
    assert r.pvalue == pytest.approx(0.05) and r.null_distribution.shape == (19,)
    assert r.marginal_error is not None and r.marginal_error >= 0
    with pytest.warns(DeprecationWarning, match="pvalue"):
        assert r.p_value == r.pvalue
    with pytest.warns(DeprecationWarning, match="null_distribution"):
        assert r.null is r.null_distribution
    assert len(repr(r)) < 200 and "pvalue=0.05" in repr(r)
    # a store written by otpipe 0.1 (p_value, null) opens with the new names
    old = xr.Dataset({"statistic": (("source", "target"), [[np.nan, 1.0], [1.0, np.nan]]),
                      "p_value": (("source", "target"), [[np.nan, 0.05], [0.05, np.nan]]),
                      "null": (("source", "target", "permutation"), np.zeros((2, 2, 3)))},
                     coords={"source": np.array(["a", "b"], dtype=object), "target": np.array(["a", "b"], dtype=object)},
                     attrs={"kind": "otpipe.tools.two_sample", "complete": True, "n_tests": 1})
    old.to_zarr(tmp_path / "old.zarr", consolidated=False)
    ds = open_result(tmp_path / "old.zarr")
    assert "pvalue" in ds and "null_distribution" in ds and "p_value" not in ds
    assert ds.pvalue.values[0, 1] == 0.05


def test_sinkhorn_convergence_figures_in_attrs(reference):
    e = reference.marginal_error.values[np.triu_indices(9, 1)]
    a = reference.attrs
    assert a["marginal_error_median"] == pytest.approx(np.median(e)) and a["marginal_error_max"] == pytest.approx(e.max())
    assert "p-values stay valid" in a["convergence_warning"]  # fixed schedule: far from converged


def test_converged_statistics_do_not_warn(client, tmp_path):
    import warnings

    rng = np.random.default_rng(2)
    c = store.create(tmp_path / "three.zarr", [rng.normal(size=(15, 2)) for _ in range(3)], dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        ds = many_two_sample_tests(c, client=client, statistic="sinkhorn", blur=0.5, tol=1e-4, n_permutations=9)
    assert ds.attrs["convergence_warning"] == "" and ds.attrs["marginal_error_max"] <= 1e-4
