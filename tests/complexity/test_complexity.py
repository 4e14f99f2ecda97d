"""Sample complexity: the kappa fit against exact power laws and scipy's regression, seeding, and a
small study on a real 2-worker LocalCluster showing the paper's rates (kappa ~ 1 for huge eps, ~ p/d for small)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from otpipe.tools.complexity import cell_values, draw, fit_rate


@pytest.mark.parametrize("kappa", [0.3, 0.75, 1.0, 2.5])
def test_fit_recovers_exact_power_law(kappa):
    n = np.array([10, 30, 100, 300, 1000, 3000])
    f = fit_rate(n, 4.2 * n**-kappa)
    assert f.kappa == pytest.approx(kappa, abs=1e-12)
    assert f.log_c == pytest.approx(math.log(4.2), abs=1e-10)
    assert f.high - f.low < 1e-9 and f.low <= f.kappa <= f.high


def test_fit_interval_matches_scipy_linregress():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    n = np.array([10, 20, 50, 100, 200, 500, 1000])
    r = 2.0 * n**-0.6 * np.exp(0.1 * rng.standard_normal(n.size))
    f = fit_rate(n, r, level=0.9)
    lr = stats.linregress(np.log(n), np.log(r))
    h = stats.t.ppf(0.95, n.size - 2) * lr.stderr
    assert f.kappa == pytest.approx(-lr.slope, rel=1e-10)
    assert (f.low, f.high) == pytest.approx((-lr.slope - h, -lr.slope + h), rel=1e-10)


def test_fit_interval_covers_true_exponent_under_noise():
    rng = np.random.default_rng(0)
    n = np.geomspace(10, 5000, 8)
    # coverage of the 95% t interval over 400 independent noisy power laws
    cover = 0
    for _ in range(400):
        f = fit_rate(n, n**-0.5 * np.exp(0.05 * rng.standard_normal(n.size)))
        cover += f.low <= 0.5 <= f.high
    assert 0.91 <= cover / 400 <= 0.99


def test_fit_skips_non_positive_means():
    f = fit_rate([10, 100, 1000, 10000], [1e-1, 1e-2, -1e-5, 1e-4])
    assert f.n_points == 3 and f.kappa == pytest.approx(1.0)
    assert math.isnan(fit_rate([10, 100], [0.0, -1.0]).kappa)


def test_draws_are_seeded_per_cell_and_differ():
    x1, y1 = draw("uniform", 50, 3, seed=7, rep=2)
    x2, y2 = draw("uniform", 50, 3, seed=7, rep=2)
    np.testing.assert_array_equal(x1, x2)
    assert not np.allclose(x1, y1)
    assert not np.allclose(x1, draw("uniform", 50, 3, seed=7, rep=3)[0])
    assert x1.min() >= 0 and x1.max() <= 1
    g, _ = draw("gaussian", 4000, 2, seed=0, rep=0)
    assert abs(g.mean()) < 0.05 and abs(g.std() - 1) < 0.05
    with pytest.raises(ValueError, match="unknown distribution"):
        draw("cauchy", 5, 2, 0, 0)


def test_huge_eps_transport_variant_is_energy_distance():
    """eps -> inf: the entropic plan is a (x) b, so Wbar -> E|X-Y|^p - E|X-X'|^p/2 - E|Y-Y'|^p/2 (half the paper's)."""
    v = cell_values(1e8, 2, 40, 3, p=1.5, seed=1)
    for r in range(3):
        x, y = draw("uniform", 40, 2, seed=1, rep=r)
        d = lambda u, w: (np.linalg.norm(u[:, None] - w[None], axis=-1) ** 1.5).mean()  # noqa: E731
        ed = d(x, y) - d(x, x) / 2 - d(y, y) / 2
        assert v["transport"][r] == pytest.approx(ed, rel=1e-5)
        assert v["sinkhorn"][r] == pytest.approx(ed, rel=1e-3)


def test_small_study_rates_on_local_cluster(tmp_path):
    xr = pytest.importorskip("xarray")
    from otpipe.engine.cluster import ClusterSpec
    from otpipe.pipelines.complexity import run_study

    out = tmp_path / "study.zarr"
    run_study(out, eps=(0.01, 1e4), dims=(5,), ns=(10, 30, 100), reps=10, seed=0,
              cluster=ClusterSpec(n_workers=2), figures=tmp_path / "fig")
    back = xr.open_zarr(out, consolidated=False)
    assert back["sinkhorn"].dims == ("eps", "dim", "n", "rep") and back["sinkhorn"].shape == (2, 1, 3, 10)
    assert back["kappa"].dims == ("eps", "dim")
    k_small, k_large = (float(back["kappa"].sel(eps=e, dim=5)) for e in (0.01, 1e4))
    assert 0.8 < k_large < 1.2  # MMD rate 1
    assert k_small < 0.55 and k_small < k_large - 0.4  # close to p/d = 0.3
    assert float(back["kappa_low"].sel(eps=1e4, dim=5)) < k_large < float(back["kappa_high"].sel(eps=1e4, dim=5))
    # every value is a function of the cell alone: recompute one cell here, without Dask
    direct = cell_values(0.01, 5, 30, 10, seed=0)
    np.testing.assert_array_equal(back["sinkhorn"].sel(eps=0.01, dim=5, n=30).values, direct["sinkhorn"])
    np.testing.assert_allclose(back["mean"].values, back["sinkhorn"].values.mean(-1))
    assert back.attrs["paper_factor"] == 2.0 and back.attrs["complete"]
    assert (tmp_path / "fig" / "by_dim.png").stat().st_size > 1000
    with pytest.raises(FileExistsError):
        run_study(out, eps=(1.0,), dims=(2,), ns=(10, 20), reps=2, cluster=ClusterSpec(n_workers=1))
    assert xr.open_zarr(out, consolidated=False)["sinkhorn"].shape == (2, 1, 3, 10)  # nothing lost


def test_cli_bad_input_one_line_error(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "otpipe.cli", "complexity", "--out", str(tmp_path / "o.zarr"),
                        "--eps", "0,1", "--n-workers", "1"], capture_output=True, text=True)
    assert r.returncode != 0 and "--eps values must be positive" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o.zarr").exists()
