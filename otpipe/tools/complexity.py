"""Sample complexity of Sinkhorn divergences (Genevay et al. 2018, ``001_*.txt``, Appendix A).

For two empirical measures ``mu_N, nu_N`` of ``N`` i.i.d. points each, drawn from the *same*
distribution ``xi``, the divergence ``D(mu_N, nu_N)`` decays to 0 as ``N`` grows. We estimate

* ``R(N) = E D(mu_N, nu_N)`` (mean over repetitions) and ``S(N)`` (its standard deviation),
* the decay rate ``kappa`` of ``R(N) ~ c N^-kappa`` by least squares on
  ``log R(N) = log c - kappa log N`` with a Student-t confidence interval on the slope.

Two divergences, both with the plain cost ``C(x, y) = |x - y|^p`` of the paper (``p = 3/2``):

* ``"sinkhorn"``: the debiased ``S_eps = OT_eps(a,b) - OT_eps(a,a)/2 - OT_eps(b,b)/2`` (dual value);
* ``"transport"``: ``Wbar_eps = W_eps(a,b) - W_eps(a,a)/2 - W_eps(b,b)/2`` with ``W_eps = <pi_eps, C>``.
  The paper's ``Wbar`` is ``2 W(a,b) - W(a,a) - W(b,b)``, **twice** ours; a constant factor does
  not change ``kappa`` (it shifts ``log R`` by ``log 2``).

Known limits: ``kappa -> p/d`` as ``eps -> 0`` (OT, for ``d > 2p``-ish) and ``kappa -> 1`` as
``eps -> inf`` (the energy-distance MMD).

Reproducibility: the points of repetition ``rep`` at sample size ``n`` in dimension ``d`` are
drawn from ``numpy.random.default_rng(SeedSequence([seed, d, n, rep]))`` whatever the grid or the
scheduling, so every eps sees the same samples (common random numbers: curves for different eps
are compared on identical draws). All repetitions of one cell ``(eps, d, n)`` are solved in one
padded-free batch ``(reps, n, d)`` in converged mode (``tol``), with a fixed ``diameter`` per
distribution, so a cell's values depend on nothing but the cell and the seed.

This module knows nothing of Dask: see :mod:`otpipe.pipelines.complexity` for the grid runner.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["DISTRIBUTIONS", "DIVERGENCES", "draw", "cell_values", "fit_rate", "RateFit", "diameter_of"]

#: sample distributions ``xi``
DISTRIBUTIONS = ("uniform", "gaussian", "mixture")
#: divergence names -> ``otpipe.sinkhorn_divergence`` variant
DIVERGENCES = {"sinkhorn": "dual", "transport": "transport"}
#: the paper's transport variant is this factor times ours
PAPER_FACTOR = 2.0


def _rng(seed: int, dim: int, n: int, rep: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(dim), int(n), int(rep)]))


def _mixture_centers(dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(dim), 7919])).uniform(0.0, 1.0, size=(3, dim))


def draw(distribution: str, n: int, dim: int, seed: int, rep: int) -> tuple[np.ndarray, np.ndarray]:
    """Two independent samples ``x, y`` of ``n`` points in ``R^dim`` from ``distribution``.

    ``uniform``: ``U([0,1]^d)``; ``gaussian``: ``N(0, I_d)``; ``mixture``: equal-weight mixture
    of 3 Gaussians ``N(c_k, 0.1^2 I_d)`` with centres ``c_k ~ U([0,1]^d)`` fixed by ``(seed, d)``.
    Deterministic in ``(seed, dim, n, rep)``.

    Parameters
    ----------
    distribution : {"uniform", "gaussian", "mixture"}
        The distribution ``xi``.
    n : int
        Points per sample.
    dim : int
        Dimension ``d``.
    seed : int
        Seed of the study.
    rep : int
        Index of the repetition.

    Returns
    -------
    x : numpy.ndarray
        ``(n, dim)`` float64.
    y : numpy.ndarray
        ``(n, dim)`` float64.

    Raises
    ------
    ValueError
        On an unknown distribution.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}: use one of {', '.join(DISTRIBUTIONS)}")
    g = _rng(seed, dim, n, rep)
    if distribution == "uniform":
        z = g.uniform(0.0, 1.0, size=(2, n, dim))
    elif distribution == "gaussian":
        z = g.standard_normal(size=(2, n, dim))
    else:
        c = _mixture_centers(dim, seed)
        k = g.integers(0, 3, size=(2, n))
        z = c[k] + 0.1 * g.standard_normal(size=(2, n, dim))
    return z[0], z[1]


def diameter_of(distribution: str, dim: int) -> float:
    """A fixed start ``diameter`` of the eps-scaling per distribution.

    Parameters
    ----------
    distribution : {"uniform", "gaussian", "mixture"}
        The distribution.
    dim : int
        Dimension ``d``.

    Returns
    -------
    float
        ``sqrt(d)`` (the unit cube's diagonal) for ``uniform``, ``6 sqrt(d)`` for ``gaussian``, ``1.6 sqrt(d)`` for
        ``mixture``.
    """
    if distribution == "uniform":
        return math.sqrt(dim)
    if distribution == "gaussian":
        return 6.0 * math.sqrt(dim)
    return math.sqrt(dim) + 0.6 * math.sqrt(dim)


def cell_values(
    eps: float,
    dim: int,
    n: int,
    reps: int,
    *,
    p: float = 1.5,
    seed: int = 0,
    distribution: str = "uniform",
    divergences=("sinkhorn", "transport"),
    tol: float = 1e-4,
    scaling: float = 0.7,
    max_iter: int | None = None,
    dtype: str = "float64",
    backend: str = "auto",
) -> dict[str, np.ndarray]:
    """Divergences between ``reps`` independent pairs ``(mu_N, nu_N)`` of one cell ``(eps, d, N)``.

    ``D_r = D_eps(mu_N^r, nu_N^r)`` with cost ``|x - y|^p`` and ``blur = eps^(1/p)``, solved as one
    batch ``(reps, n, d)`` in converged mode.

    Parameters
    ----------
    eps : float
        Temperature (positive).
    dim : int
        Dimension ``d``.
    n : int
        Points per sample ``N``.
    reps : int
        Number of independent pairs.
    p : float, default 1.5
        Exponent of the cost ``|x - y|^p``.
    seed : int, default 0
        Seed of the study (:func:`draw`).
    distribution : {"uniform", "gaussian", "mixture"}, default "uniform"
        The distribution ``xi``.
    divergences : sequence of str, default ("sinkhorn", "transport")
        Keys of :data:`DIVERGENCES`.
    tol : float, default 1e-4
        Marginal-error tolerance of the solves.
    scaling : float, default 0.7
        Ratio of successive blurs in the eps-scaling.
    max_iter : int or None, default None
        Cap on the updates per solve (``None``: the solver's default).
    dtype : {"float64", "float32"}, default "float64"
        Dtype of the computation.
    backend : str, default "auto"
        Reduction backend.

    Returns
    -------
    dict
        ``{name: (reps,) float64}`` per divergence, plus ``"n_iter"`` (max over divergences) and
        ``"marginal_error"`` (``(reps,)``, largest over the divergences).

    Raises
    ------
    ValueError
        On a non-positive ``eps`` or an unknown divergence.
    """
    import torch

    from otpipe.tools.losses import sinkhorn_divergence

    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    bad = [d for d in divergences if d not in DIVERGENCES]
    if bad:
        raise ValueError(f"unknown divergence {bad[0]!r}: use {' or '.join(DIVERGENCES)}")
    tdt = {"float64": torch.float64, "float32": torch.float32}[dtype]
    xs, ys = zip(*(draw(distribution, n, dim, seed, r) for r in range(reps)))
    x = torch.as_tensor(np.stack(xs), dtype=tdt)
    y = torch.as_tensor(np.stack(ys), dtype=tdt)
    blur = float(eps) ** (1.0 / p)
    out: dict[str, np.ndarray] = {}
    n_iter = np.zeros(reps, dtype=np.int64)
    err = np.zeros(reps)
    for name in divergences:
        with warnings.catch_warnings():  # convergence is reported per repetition (marginal_error)
            warnings.simplefilter("ignore", RuntimeWarning)
            r = sinkhorn_divergence(
                x, y, p=p, blur=blur, cost="|x-y|^p", diameter=diameter_of(distribution, dim), scaling=scaling,
                tol=tol, max_iter=max_iter, backend=backend, variant=DIVERGENCES[name], full_output=True,
            )
        out[name] = r.value.detach().cpu().numpy().astype(np.float64)
        n_iter = np.maximum(n_iter, r.n_iter.cpu().numpy())
        err = np.maximum(err, r.marginal_error.detach().cpu().numpy().astype(np.float64))
    out["n_iter"] = n_iter
    out["marginal_error"] = err
    return out


@dataclass
class RateFit:
    """Fitted decay ``R(N) ~ c N^-kappa``: ``kappa`` with a ``level`` confidence interval ``[low, high]``.

    Parameters
    ----------
    kappa : float
        The fitted rate (NaN with fewer than two usable sizes).
    low : float
        Lower end of the confidence interval (``-inf`` with two sizes).
    high : float
        Upper end of the confidence interval (``inf`` with two sizes).
    log_c : float
        Fitted intercept ``log c``.
    n_points : int
        Number of sizes used (those with a finite positive ``R(N)``).
    level : float
        Confidence level of the interval.
    """

    kappa: float
    low: float
    high: float
    log_c: float
    n_points: int
    level: float


def fit_rate(n, r, *, level: float = 0.95) -> RateFit:
    """Least-squares decay rate: ``log R(N) = log c - kappa log N``, Student-t interval on the slope.

    ``kappa_hat +- t_{level, m-2} * se`` with ``se^2 = sum(res^2) / (m - 2) / sum((log N - mean)^2)``
    over the ``m`` sizes with ``R(N) > 0`` (non-positive or non-finite means are skipped). Two
    sizes give the exact slope with an infinite interval; fewer give NaN.

    Parameters
    ----------
    n : array_like
        Sample sizes ``N``.
    r : array_like
        Mean divergences ``R(N)``, one per size.
    level : float, default 0.95
        Confidence level of the interval.

    Returns
    -------
    RateFit
        The rate, its interval and the intercept.
    """
    from scipy import stats

    n = np.asarray(n, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    ok = np.isfinite(r) & (r > 0) & (n > 0)
    u, v = np.log(n[ok]), np.log(r[ok])
    m = int(u.size)
    if m < 2:
        return RateFit(math.nan, math.nan, math.nan, math.nan, m, level)
    um = u.mean()
    sxx = float(((u - um) ** 2).sum())
    slope = float(((u - um) * (v - v.mean())).sum() / sxx)
    log_c = float(v.mean() - slope * um)
    if m == 2:
        return RateFit(-slope, -math.inf, math.inf, log_c, m, level)
    res = v - (log_c + slope * u)
    se = math.sqrt(float((res**2).sum()) / (m - 2) / sxx)
    h = float(stats.t.ppf(0.5 + level / 2, m - 2)) * se
    return RateFit(-slope, -slope - h, -slope + h, log_c, m, level)
