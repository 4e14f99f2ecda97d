"""Several Dask worker processes reading different shards of one collection see consistent data."""
from __future__ import annotations

import numpy as np
import pytest

from otpipe import store

from .conftest import assert_same_measure, known_measures

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1") as cluster:
        with Client(cluster) as c:
            yield c


def test_workers_read_shards_consistently(tmp_path, client):
    ms = known_measures(120, dim=3, max_points=40)
    c = store.create(tmp_path / "c.zarr", ms, shard_points=100)
    assert c.n_shards >= 20
    # each task reopens the collection from its path (Collection pickles as its path)
    ks = list(range(c.n_shards)) * 3
    futures = client.map(c.read_shard, ks, pure=False)
    results = client.gather(futures)
    assert len(client.scheduler_info()["workers"]) == 2
    for k, got in zip(ks, results):
        want = [ms[i] for i in c.shards[k]]
        assert len(got) == len(want)
        for g, m in zip(got, want):
            assert_same_measure(g, m)


def _digest_of_shard(path, k, n_expected):
    """Runs on a worker: open, check the committed size, read one shard, return its measure names and sums."""
    from distributed import get_worker

    c = store.open(path)
    assert len(c) >= n_expected
    return get_worker().address, [(m.name, float(m.points.astype(np.float64).sum()), float(m.weights.astype(np.float64).sum())) for m in c.read_shard(k)]


def test_readers_during_append_see_committed_data(tmp_path, client):
    import sys

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ms = known_measures(60, dim=2, max_points=30, seed=3)
    c = store.create(tmp_path / "c.zarr", ms, shard_points=100)
    expected = {
        k: [(ms[i].name, float(ms[i].points.astype(np.float32).astype(np.float64).sum()),
             float(ms[i].weights.astype(np.float32).astype(np.float64).sum())) for i in c.shards[k]]
        for k in range(c.n_shards)
    }
    path = str(c.path)
    ks = list(range(c.n_shards)) * 8
    futures = client.map(_digest_of_shard, [path] * len(ks), ks, [60] * len(ks), pure=False)
    # meanwhile this process appends (new shards after the existing ones, committed at the end)
    extra = known_measures(200, dim=2, max_points=30, seed=4)
    extra = [store.Measure(m.points, m.weights, "x" + m.name, m.label) for m in extra]
    c.append(extra)
    workers = set()
    for k, (worker, res) in zip(ks, client.gather(futures)):
        assert res == expected[k]
        workers.add(worker)
    assert len(workers) == 2  # both worker processes read concurrently
    c2 = store.open(path)
    assert len(c2) == 260 and c2.verify()
    # and the workers see the appended data too
    new_shards = list(range(c2.n_shards))
    got = client.gather(client.map(_digest_of_shard, [path] * len(new_shards), new_shards, [260] * len(new_shards), pure=False))
    names = [n for _, res in got for n, _, _ in res]
    assert names == c2.names.tolist()
