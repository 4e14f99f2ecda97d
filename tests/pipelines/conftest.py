"""Fixtures of the pipeline tests: one real 2-process LocalCluster and small real collections on disk."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def client():
    from otpipe.engine.cluster import ClusterSpec, open_client

    with open_client(ClusterSpec(n_workers=2, threads_per_worker=1, memory_limit="2GiB")) as c:
        yield c


def make_measures(n: int, npts: tuple[int, int], dim: int, seed: int, labels: bool = True, prefix: str = "m"):
    """Ragged clouds with random (unnormalised) weights, three families shifted apart."""
    from otpipe.store import Measure

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(rng.integers(npts[0], npts[1] + 1))
        fam = i % 3
        x = rng.normal(size=(k, dim)) * (0.5 + 0.25 * fam) + fam
        w = rng.random(k) + 0.1
        out.append(Measure(x, w, f"{prefix}{i:03d}", f"fam{fam}" if labels else None))
    return out


@pytest.fixture(scope="session")
def small(tmp_path_factory):
    """11 labelled measures of 15..40 points in 2-D, float64."""
    from otpipe import store

    p = tmp_path_factory.mktemp("coll") / "small.zarr"
    store.create(p, make_measures(11, (15, 40), 2, seed=1), dtype="float64")
    return p


@pytest.fixture(scope="session")
def other(tmp_path_factory):
    """7 labelled measures in 2-D (a second collection, for N x M runs)."""
    from otpipe import store

    p = tmp_path_factory.mktemp("coll") / "other.zarr"
    store.create(p, make_measures(7, (10, 30), 2, seed=2, prefix="o"), dtype="float64")
    return p


def reference_matrix(src, tgt, diameter: float, symmetric: bool, **kw) -> np.ndarray:
    """S[i, j] from otpipe.sinkhorn_divergence pair by pair (weights normalised), the independent answer."""
    import otpipe
    from otpipe import store

    a = [m.normalized() for m in store.open(src)]
    b = a if symmetric else [m.normalized() for m in store.open(tgt)]
    S = np.zeros((len(a), len(b)))
    for i, mi in enumerate(a):
        for j, mj in enumerate(b):
            if symmetric and i == j:
                continue
            S[i, j] = float(otpipe.sinkhorn_divergence(mi.points, mj.points, mi.weights, mj.weights, diameter=diameter, **kw))
    return S
