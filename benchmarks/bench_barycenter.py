"""Free-support barycenter of two 600-point Gaussian samples (issue 14): time, iterations, stopping diagnostics,
the mean condition and the objective against the exact Bures (Gaussian) barycenter.

Inputs: ``x ~ N([0,0], [[1,.6],[.6,.8]])`` and ``y ~ N([3,1], [[.5,-.3],[-.3,1.5]])``, 600 points each, drawn in
that order from ``np.random.default_rng(5)``; barycentric weights ``(.3, .7)``; ``n_points=600, blur=0.05, seed=0``.

Reference (Gelbrich bound): for any measure ``alpha``, ``W2^2(alpha, beta) >= |m_alpha - m_beta|^2 +
B^2(S_alpha, S_beta)`` (Bures distance of the covariances), so the barycenter objective
``sum_k lambda_k W2^2(alpha, beta_k) / 2`` is at least that of the Gaussian (Bures) barycenter of the inputs'
sample means and covariances, ``N(sum lambda_k m_k, S*)`` with ``S* = sum_k lambda_k (S*^1/2 S_k S*^1/2)^1/2``
(fixed point). The ratio objective / Bures objective is printed, and the ratio to the exact W2 barycenter objective of
the two point clouds, ``lambda_1 lambda_2 W2^2(x, y) / 2`` (McCann interpolation of the optimal assignment): the
gap to Bures is mostly the clouds' non-Gaussianity, the gap to the exact one the entropic bias at blur 0.05.

Usage::

    python benchmarks/bench_barycenter.py [--sinkhorn-tol 1e-5] [--tol 1e-5] [--max-iter 100] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np
import torch
from scipy.linalg import sqrtm

__all__ = ["main", "inputs", "bures_barycenter"]


def inputs():
    rng = np.random.default_rng(5)
    x = rng.multivariate_normal([0, 0], [[1, 0.6], [0.6, 0.8]], 600)
    y = rng.multivariate_normal([3, 1], [[0.5, -0.3], [-0.3, 1.5]], 600)
    return x, y


def _psd_sqrt(S):
    w, V = np.linalg.eigh(S)
    return (V * np.sqrt(np.clip(w, 0, None))) @ V.T


def bures_barycenter(covs, lam, iters: int = 1000):
    """Fixed point ``S <- S^-1/2 (sum_k lambda_k (S^1/2 S_k S^1/2)^1/2)^2 S^-1/2`` (Alvarez-Esteban et al. 2016)."""
    S = sum(w * C for w, C in zip(lam, covs))
    for _ in range(iters):
        r = _psd_sqrt(S)
        ri = np.linalg.inv(r)
        M = sum(w * _psd_sqrt(r @ C @ r) for w, C in zip(lam, covs))
        Sn = ri @ M @ M @ ri
        if np.abs(Sn - S).max() < 1e-15:
            return Sn
        S = Sn
    return S


def _bures2(A, B):
    ra = _psd_sqrt(A)
    return float(np.trace(A + B - 2 * np.real(sqrtm(ra @ B @ ra))))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sinkhorn-tol", type=float, default=None)
    ap.add_argument("--tol", type=float, default=None)
    ap.add_argument("--max-iter", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from otpipe.tools.barycenters import free_support_barycenter

    x, y = inputs()
    lam = np.array([0.3, 0.7])
    ms = [x.mean(0), y.mean(0)]
    covs = [np.cov(x.T, bias=True), np.cov(y.T, bias=True)]
    m_star = lam @ np.array(ms)
    S_star = bures_barycenter(covs, lam)
    bures_obj = 0.5 * sum(w * (np.sum((m_star - m) ** 2) + _bures2(S_star, C)) for w, m, C in zip(lam, ms, covs))
    from scipy.optimize import linear_sum_assignment

    i, j = linear_sum_assignment(((x[:, None] - y[None]) ** 2).sum(-1))
    exact_obj = 0.5 * lam[0] * lam[1] * float(((x[i] - y[j]) ** 2).sum(1).mean())  # McCann: the exact W2 barycenter
    kw = {k: v for k, v in dict(sinkhorn_tol=args.sinkhorn_tol, tol=args.tol, max_iter=args.max_iter).items() if v is not None}
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        r = free_support_barycenter([x, y], lam, n_points=600, blur=0.05, seed=0, **kw)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    mean_err = float(np.abs(r.weights @ r.points - m_star).max())
    C = np.cov(r.points.T, aweights=r.weights, bias=True)
    cov_err = float(np.abs(C - S_star).max())
    lines = [
        "call: free_support_barycenter([x, y], [.3, .7], n_points=600, blur=0.05, seed=0"
        + "".join(f", {k}={v}" for k, v in kw.items()) + ")",
        f"time {dt:.1f} s (CPU {cpu:.1f} s, {torch.get_num_threads()} threads), outer iterations {r.n_iter}, converged={r.converged}, inner Sinkhorn updates "
        f"{r.params.get('inner_updates', 'n/a')}",
        f"last displacement {r.displacement[-1]:.3g} (threshold {r.params['outer_tol'] * r.params['diameter']:.3g}), "
        f"last objective change {abs(r.history[-1] - r.history[-2]) if len(r.history) > 1 else float('nan'):.3g}",
        f"mean error |sum a_i x_i - sum lambda_k m_k|_inf = {mean_err:.2e}",
        f"objective {r.history[-1]:.8f} vs Bures {bures_obj:.8f}: {100 * (r.history[-1] / bures_obj - 1):+.4f} %; "
        f"vs the exact W2 barycenter of the two clouds {exact_obj:.8f}: {100 * (r.history[-1] / exact_obj - 1):+.4f} %",
        f"covariance max |C - S*| = {cov_err:.2e} (|S*| = {np.abs(S_star).max():.3f})",
        "warnings: " + ("; ".join(str(x.message) for x in w if issubclass(x.category, RuntimeWarning)) or "none"),
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("```\n" + text + "\n```\n\n")
    return r


if __name__ == "__main__":
    main()
