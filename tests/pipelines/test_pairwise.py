"""pairwise() on a real 2-worker LocalCluster with real Zarr stores: values against pair-by-pair
sinkhorn_divergence, independence of tile size and worker count, N x M and labelled runs."""
from __future__ import annotations

import numpy as np
import pytest

from otpipe.pipelines.pairwise import pairwise

from .conftest import reference_matrix

RTOL = 1e-6


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


def test_symmetric_matches_pair_by_pair_any_tile(client, small, tmp_path):
    ds = pairwise(small, client=client, out=tmp_path / "r3.zarr", tile=3, progress=False)
    D = ds.attrs["diameter"]
    # the diameter is the bounding box of all points of the collection (computed independently)
    from otpipe import store

    allp = np.concatenate([m.points for m in store.open(small)])
    assert D == pytest.approx(np.linalg.norm(allp.max(0) - allp.min(0)), rel=1e-12)
    ref = reference_matrix(small, None, D, True)
    S = ds.divergence.values
    assert _rel(S, ref) < RTOL
    assert np.array_equal(S, S.T) and np.all(np.diag(S) == 0)
    assert ds.attrs["complete"] and ds.attrs["tiles_computed"] == ds.attrs["n_tiles"] == 10  # 4 blocks: 4*5/2
    # self terms are OT_eps(a_i, a_i) with the same schedule, and S = OT - (self_i + self_j) / 2
    s = ds.self_source.values
    assert np.array_equal(s, ds.self_target.values)
    off = ~np.eye(len(s), dtype=bool)
    combo = ds.ot.values - 0.5 * (s[:, None] + s[None, :])
    assert np.allclose(combo[off], S[off], rtol=0, atol=1e-13)
    assert (ds.n_iter.values[off] > 0).all() and np.isfinite(ds.marginal_error.values).all()
    assert list(ds.source.values) == [f"m{i:03d}" for i in range(11)]
    assert list(ds.source_label.values) == [f"fam{i % 3}" for i in range(11)]
    # another tile size (one tile and a ragged grid) gives the same matrix
    ds5 = pairwise(small, client=client, tile=5, progress=False)
    assert _rel(ds5.divergence.values, ref) < RTOL
    assert ds5.attrs["n_tiles"] == 6


def test_worker_count_and_in_memory(small):
    """One worker (a real in-process LocalCluster: inproc comms, nothing listens) gives the same matrix; no ``out``: returned in memory."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as lc, Client(lc) as c:
        ds = pairwise(small, client=c, tile=4, progress=False)
    ref = reference_matrix(small, None, ds.attrs["diameter"], True)
    assert _rel(ds.divergence.values, ref) < RTOL


def test_cross_collection_labelled(client, small, other, tmp_path):
    ds = pairwise(small, other, client=client, out=tmp_path / "x.zarr", tile=4, progress=False)
    assert ds.divergence.shape == (11, 7)
    from otpipe import store

    allp = np.concatenate([m.points for m in store.open(small)] + [m.points for m in store.open(other)])
    D = np.linalg.norm(allp.max(0) - allp.min(0))
    assert ds.attrs["diameter"] == pytest.approx(D, rel=1e-12)
    ref = reference_matrix(small, other, ds.attrs["diameter"], False)
    assert _rel(ds.divergence.values, ref) < RTOL
    assert list(ds.target.values) == [f"o{i:03d}" for i in range(7)]
    assert list(ds.target_label.values) == [f"fam{i % 3}" for i in range(7)]
    assert not ds.attrs["symmetric"] and ds.attrs["inputs"]["target"]["hash"] == store.open(other).content_hash


def test_selection_and_unbalanced(client, small):
    """A select() view, and unbalanced OT (raw weights, reach) also match pair by pair."""
    from otpipe import store

    view = store.open(small).select(label="fam1")
    ds = pairwise(view, client=client, reach=1.0, tile=2, progress=False)
    assert list(ds.source.values) == ["m001", "m004", "m007", "m010"]
    import otpipe

    ms = [store.open(small)[n] for n in ds.source.values]
    D = ds.attrs["diameter"]
    for i in range(4):
        for j in range(4):
            if i != j:
                ref = float(otpipe.sinkhorn_divergence(ms[i].points, ms[j].points, ms[i].weights, ms[j].weights, reach=1.0, diameter=D))
                assert ds.divergence.values[i, j] == pytest.approx(ref, rel=RTOL)


@pytest.mark.parametrize("loss", ["energy", "gaussian", "hausdorff"])
def test_kernel_losses(client, small, other, loss):
    import otpipe
    from otpipe import store

    ds = pairwise(small, other, client=client, loss=loss, blur=0.5, tile=4, progress=False)
    a = [m.normalized() for m in store.open(small)]
    b = [m.normalized() for m in store.open(other)]
    f = {
        "energy": lambda x, y, u, v: otpipe.energy_distance(x, y, u, v),
        "gaussian": lambda x, y, u, v: otpipe.mmd(x, y, u, v, kernel="gaussian", sigma=0.5),
        "hausdorff": lambda x, y, u, v: otpipe.hausdorff(x, y, u, v, blur=0.5),
    }[loss]
    ref = np.array([[float(f(m.points, n.points, m.weights, n.weights)) for n in b] for m in a])
    assert _rel(ds.divergence.values, ref) < RTOL


def test_dry_run_plans_without_computing(small, tmp_path):
    s = pairwise(small, out=tmp_path / "none.zarr", tile=3, dry_run=True)
    assert s["pairs"] == 55 and s["tiles"] == 10 and s["self_terms"] == 11
    assert s["solves"] == 66 and s["solves_pair_by_pair"] == 165
    assert not (tmp_path / "none.zarr").exists()


def test_cli_unbalanced_has_the_mass_term(client, small, other, tmp_path):
    """``otpipe distances --reach`` (raw weights, unequal masses): each entry is Sejourne et al.'s unbalanced
    divergence, ``OT_ij - (self_i + self_j)/2 + eps/2 (m_i - m_j)^2``, as :func:`otpipe.sinkhorn_divergence`."""
    import otpipe
    from otpipe import store
    from otpipe.cli import main
    from otpipe.engine.result import open_result

    out = tmp_path / "u.zarr"
    main(["distances", str(small), "--other", str(other), "--out", str(out), "--reach", "0.7", "--blur", "0.3",
          "--scheduler", client.scheduler.address, "--no-progress"])
    ds = open_result(out)
    ms, ns = list(store.open(small)), list(store.open(other))
    D, eps = ds.attrs["diameter"], 0.3**2
    mi = np.array([m.weights.sum() for m in ms])
    mj = np.array([n.weights.sum() for n in ns])
    assert np.ptp(mi) > 5  # the masses differ a lot: the term matters
    combo = ds.ot.values - 0.5 * (ds.self_source.values[:, None] + ds.self_target.values[None, :])
    np.testing.assert_allclose(ds.divergence.values - combo, 0.5 * eps * (mi[:, None] - mj[None, :]) ** 2, rtol=0, atol=1e-13)
    assert (ds.divergence.values > 0).all()
    for i, j in [(0, 0), (3, 5), (10, 6)]:
        ref = float(otpipe.sinkhorn_divergence(ms[i].points, ns[j].points, ms[i].weights, ns[j].weights,
                                               reach=0.7, blur=0.3, diameter=D))
        assert ds.divergence.values[i, j] == pytest.approx(ref, rel=RTOL)
    assert "m(a_i) - m(b_j)" in ds.attrs["divergence_formula"]
