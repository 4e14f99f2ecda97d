"""OTT-JAX contestant of ``bench_matrix.py`` (issue 23): the S_eps matrix of padded measures by ``jax.vmap``.

Run by ``bench_matrix.py --ott-python PYTHON`` in a Python that has ``ott-jax`` (and JAX; otpipe's environment
need not): it reads an ``.npz`` of zero-weight padded measures ``X (n, Nmax, D)``, ``W (n, Nmax)``, the pairs
``(k, 2)``, the temperature and the iteration count, and solves the pairs in chunks with one ``jax.jit(jax.vmap(
...))`` of ``ott.tools.sinkhorn_divergence.sinkhorn_divergence`` (``PointCloud``, squared Euclidean cost, so
``epsilon`` is twice otpipe's ``blur^2`` for its ``|x - y|^2 / 2``), exactly ``--iters`` Sinkhorn iterations a
solve, as the issue's measurement (20). The first chunk (compilation) is timed apart. Prints one JSON line:
``{"seconds", "compile_seconds", "pairs", "values"}`` (values halved back to otpipe's cost convention).
"""
from __future__ import annotations

import json
import sys
import time


def main() -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from ott.geometry import pointcloud
    from ott.tools import sinkhorn_divergence as sd

    d = np.load(sys.argv[1])
    X, W, pairs = d["X"], d["W"], d["pairs"]
    eps, iters, chunk = float(d["eps"]), int(d["iters"]), int(d["chunk"])

    def one(x, a, y, b):
        v, _ = sd.sinkhorn_divergence(pointcloud.PointCloud, x, y, a=a, b=b, epsilon=2.0 * eps,
                                      solve_kwargs=dict(min_iterations=iters, max_iterations=iters,
                                                        inner_iterations=1, threshold=0.0))
        return v

    f = jax.jit(jax.vmap(one))
    out = np.empty(len(pairs))

    def run(lo, hi):
        idx = pairs[lo:hi]
        k = len(idx)
        if k < chunk:  # pad the last chunk (one compiled shape)
            idx = np.concatenate([idx, np.repeat(idx[:1], chunk - k, axis=0)])
        v = f(jnp.asarray(X[idx[:, 0]]), jnp.asarray(W[idx[:, 0]]), jnp.asarray(X[idx[:, 1]]), jnp.asarray(W[idx[:, 1]]))
        out[lo:hi] = np.asarray(v)[:k] / 2.0

    t = time.perf_counter()
    run(0, min(chunk, len(pairs)))
    t_compile = time.perf_counter() - t
    t = time.perf_counter()
    for lo in range(0, len(pairs), chunk):
        run(lo, min(lo + chunk, len(pairs)))
    secs = time.perf_counter() - t
    print(json.dumps({"seconds": secs, "compile_seconds": t_compile, "pairs": int(len(pairs)),
                      "values": out.tolist(), "jax": jax.__version__}))


if __name__ == "__main__":
    main()
