"""Distributed permutations and many tests over collections on a real 2-process LocalCluster:
same p-values with 1 and 2 workers for one seed, equal to the in-process test; the CLI end to end."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from otpipe import store
from otpipe.cli import main
from otpipe.engine.cluster import ClusterSpec, open_client
from otpipe.pipelines.two_sample import many_two_sample_tests, two_sample_test_distributed
from otpipe.tools.two_sample import benjamini_hochberg, holm, two_sample_test


@pytest.fixture(scope="module")
def client2():
    with open_client(ClusterSpec(n_workers=2, threads_per_worker=1, memory_limit="1GiB")) as c:
        yield c


@pytest.fixture(scope="module")
def client1():
    with open_client(ClusterSpec(n_workers=1, threads_per_worker=1, memory_limit="1GiB")) as c:
        yield c


@pytest.fixture(scope="module")
def coll(tmp_path_factory):
    rng = np.random.default_rng(5)
    ms = []
    for i in range(5):
        lab = "a" if i < 3 else "b"
        pts = rng.normal(size=(25 + 3 * i, 2)) * (1.0 if lab == "a" else 1.8)
        ms.append(store.Measure(points=pts, weights=None, name=f"m{i}", label=lab))
    return store.create(tmp_path_factory.mktemp("ts") / "c.zarr", ms, dtype="float64")


@pytest.mark.parametrize("statistic, kw", [("sinkhorn", {"blur": 0.5}), ("mmd", {"sigma": [0.5, "median"]}),
                                           ("energy", {})])
def test_one_and_two_workers_same_p_values(client1, client2, statistic, kw):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 3)), rng.normal(size=(24, 3)) + 0.3
    args = dict(statistic=statistic, n_permutations=250, seed=42, block_size=40, **kw)
    r1 = two_sample_test_distributed(x, y, client=client1, **args)
    r2 = two_sample_test_distributed(x, y, client=client2, **args)
    loc = two_sample_test(x, y, **args)
    assert r1.pvalue == r2.pvalue == loc.pvalue
    np.testing.assert_array_equal(r1.null_distribution, r2.null_distribution)
    np.testing.assert_allclose(r1.null_distribution, loc.null_distribution, rtol=1e-12, atol=1e-15)
    assert r1.statistic == r2.statistic


def test_many_tests_by_measure(client1, client2, coll):
    kw = dict(statistic="energy", n_permutations=99, seed=3, by="measure")
    d1 = many_two_sample_tests(coll, client=client1, **kw)
    d2 = many_two_sample_tests(coll, client=client2, **kw)
    xr.testing.assert_identical(d1, d2)
    assert list(d2.source.values) == [f"m{i}" for i in range(5)]
    assert list(d2.source_label.values) == ["a", "a", "a", "b", "b"]
    p = d2.pvalue.values
    assert np.isnan(np.diag(p)).all() and np.allclose(p, p.T, equal_nan=True)
    for i, j in [(0, 1), (1, 4), (3, 4)]:  # each test = the in-process test with seed (seed, i, j)
        r = two_sample_test(coll[i].points, coll[j].points, seed=[3, i, j], statistic="energy", n_permutations=99)
        assert p[i, j] == r.pvalue and d2.statistic.values[i, j] == pytest.approx(r.statistic, rel=1e-12)
    iu = np.triu_indices(5, 1)
    np.testing.assert_allclose(d2.p_holm.values[iu], holm(p[iu]))
    np.testing.assert_allclose(d2.p_bh.values[iu], benjamini_hochberg(p[iu]))
    assert d2.attrs["n_tests"] == 10 and d2.attrs["source_hash"] == coll.content_hash
    assert list(d2.n_source.values) == [25, 28, 31, 34, 37]


def test_many_tests_by_label_pools_the_measures(client2, coll):
    ds = many_two_sample_tests(coll, by="label", statistic="mmd", n_permutations=99, seed=1, client=client2)
    assert list(ds.source.values) == ["a", "b"] and list(ds.n_source.values) == [84, 71]
    xa = np.concatenate([coll[i].points for i in range(3)])
    xb = np.concatenate([coll[i].points for i in range(3, 5)])
    r = two_sample_test(xa, xb, statistic="mmd", n_permutations=99, seed=[1, 0, 1])
    assert ds.pvalue.values[0, 1] == r.pvalue == pytest.approx(0.01)  # variance 1 vs 1.8^2
    np.testing.assert_array_equal(ds.null_distribution.values[0, 1], r.null_distribution)


def test_cli_end_to_end(client2, coll, tmp_path, capsys):
    out = tmp_path / "res.zarr"
    args = ["two-sample", str(coll.path), "--out", str(out), "--statistic", "sinkhorn", "--blur", "0.5",
            "--n-permutations", "49", "--by", "measure", "--scheduler", client2.scheduler.address]
    main(args)
    ds = xr.open_zarr(out, consolidated=False).load()
    assert ds.attrs["complete"] and ds.attrs["statistic"] == "sinkhorn" and ds.attrs["params"]["blur"] == 0.5
    assert ds.pvalue.shape == (5, 5) and (tmp_path / "res.png").stat().st_size > 1000
    # existing output: one-line error, exit 1, result untouched
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 1
    assert "output exists" in capsys.readouterr().err
    xr.testing.assert_identical(xr.open_zarr(out, consolidated=False).load(), ds)
    # two collections, by collection: one test, its null stored and plotted as a histogram
    other = store.create(tmp_path / "o.zarr", [np.random.default_rng(9).normal(size=(40, 2)) + 1.0], dtype="float64")
    out2 = tmp_path / "one.zarr"
    main(["two-sample", str(coll.path), str(other.path), "--by", "collection", "--out", str(out2),
          "--statistic", "mmd", "--sigma", "0.5", "--sigma", "2", "--n-permutations", "99",
          "--scheduler", client2.scheduler.address])
    one = xr.open_zarr(out2, consolidated=False).load()
    assert one.pvalue.shape == (1, 1) and one.null_distribution.shape == (1, 1, 99) and one.pvalue.values.item() == pytest.approx(0.01)
    assert (tmp_path / "one.png").exists()


@pytest.mark.parametrize("extra, match", [
    (["--by", "collection"], "needs two collections"),
    (["--statistic", "mmd", "--sigma", "-2"], "sigma"),
    (["--blur", "-1"], "blur"),
])
def test_cli_bad_input(client2, coll, tmp_path, capsys, extra, match):
    out = tmp_path / "bad.zarr"
    with pytest.raises(SystemExit) as e:
        main(["two-sample", str(coll.path), "--out", str(out), "--n-permutations", "9",
              "--scheduler", client2.scheduler.address, *extra])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error:") and match in err[0]
    assert not out.exists()


def test_mismatched_dimensions_and_tiny_groups(client2, coll, tmp_path):
    d3 = store.create(tmp_path / "d3.zarr", [np.zeros((5, 3)) + np.arange(5)[:, None]])
    with pytest.raises(ValueError, match="different dimensions"):
        many_two_sample_tests(coll, d3, client=client2, n_permutations=9)
    tiny = store.create(tmp_path / "tiny.zarr", [np.ones((1, 2)), np.zeros((4, 2))])
    with pytest.raises(ValueError, match="fewer than 2 points"):
        many_two_sample_tests(tiny, client=client2, n_permutations=9)
    with pytest.raises(ValueError, match="no labels"):
        many_two_sample_tests(tiny, by="label", client=client2, n_permutations=9)
