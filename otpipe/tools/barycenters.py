"""Wasserstein barycenters of weighted point clouds: free support and fixed support.

For input measures ``beta_k`` and barycentric weights ``lambda_k >= 0`` with ``sum lambda_k = 1``:

* **Free support** (positions, optionally weights, of ``alpha = sum_i a_i delta_{x_i}`` move):
  ``min_alpha F(alpha) = sum_k lambda_k S_eps(alpha, beta_k)`` with the debiased Sinkhorn
  divergence. The gradient comes from the envelope theorem and, divided by ``a_i``, gives the
  step ``x_i <- x_i - tau * grad_{x_i} F / a_i``; for ``p = 2`` and ``tau = 1`` this is the
  Brenier-map step ``x_i <- sum_k lambda_k T_k(x_i) + x_i - T_aa(x_i)`` (``T_k``: barycentric
  projection onto ``beta_k``, ``T_aa``: that of the self term, ``~ x_i`` for small blur).
  With ``learn_weights=True`` positions and weights move together: L-BFGS on ``(X, z)``, ``a = softmax(z)``,
  preconditioned by the Brenier step and a mirror step ``a <- a exp(-step (g - <a, g>) / diameter^p)``, with an Armijo
  line search whose trial points count only if their inner solves reach ``sinkhorn_tol`` (``1e-6`` by default then:
  the weight gradient is the potentials). Where the inner solves stall (atoms far apart compared with the blur, whose
  kernel ``exp(-C / eps)`` moves no mass between them) the run stops, not converged, and says so in ``reason``.
  Inner solves run in the converged mode, warm-started from the previous iteration's potentials, to a
  tolerance that tightens with the displacement down to ``sinkhorn_tol``.
  Stopping rule (all at one iteration): largest displacement ``< tol * diameter`` (the first-order condition
  ``grad_{x_i} F / a_i ~ 0``), objective change ``< tol**2 * diameter**p``, inner solves within
  ``sinkhorn_tol`` (and, learned weights, the L1 change of a plain mirror step ``< tol``); otherwise a
  :class:`~otpipe.diagnostics.ConvergenceWarning` with the reason (``BarycenterResult.reason``).
* **Fixed support** (Benamou et al. 2015, iterative Bregman projections, log domain) on a common
  support with cost ``C``: ``v_k = b_k / K^T u_k``, ``a = d * prod_k (K v_k)^lambda_k``,
  ``u_k = a / K v_k``; with ``debiased=True`` (Janati et al. 2020) ``d`` solves the
  autocorrelation fixed point ``d * K d = a`` (``d <- sqrt(d a / K d)``), so the barycenter of
  identical inputs is that input; otherwise ``d = 1``. On regular 2-D/3-D grids the kernel
  ``K = exp(-C / eps)`` of ``C = |x - y|^2 / 2`` is applied axis by axis (separable log-sum-exp
  convolutions) instead of as a dense matrix.

Inputs are probability measures: weights are normalised to unit mass (raw store weights, such as
image intensities, are fine). This module knows nothing of Dask or Zarr; the distributed runner
(:mod:`otpipe.pipelines.barycenters`) plugs its own per-iteration terms in through :class:`Terms`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from otpipe.diagnostics import ConvergenceWarning
from otpipe.geometry.boxes import bounds, box_diagonal, lattice

__all__ = [
    "barycenter",
    "free_support_barycenter",
    "fixed_support_barycenter",
    "BarycenterResult",
    "LocalTerms",
    "InnerInfo",
    "init_support",
    "detect_grid",
    "as_measure",
    "bbox_diameter",
]

_log = logging.getLogger("otpipe.barycenter")

_MAX_GRID_CELLS = 1 << 22
_SMALL_IBP = 1 << 16  # fixed-support problems below this many entries run on one torch thread
#: symmetric-Sinkhorn updates of the debiasing factor ``d`` per outer iteration
D_INNER = 5


@dataclass
class BarycenterResult:
    """A barycenter ``sum_i weights_i delta_{points_i}`` with its diagnostics.

    Attributes
    ----------
    points : numpy.ndarray or None
        ``(n, D)`` support of the barycenter (``None`` for a fixed support given by a cost matrix).
    weights : numpy.ndarray
        ``(n,)`` weights, unit mass.
    n_iter : int
        Outer iterations.
    converged : bool
        Whether the stopping rule was met.
    method : str
        ``"free"``, ``"fixed"`` or ``"fixed-convolutional"``.
    history : list, default []
        The objective per iteration (free support) or the marginal error (fixed support).
    displacement : list, default []
        The largest point move per iteration (free support).
    params : dict, default {}
        The parameters of the run and run statistics.
    image : numpy.ndarray or None, default None
        The barycenter as an array on the grid (convolutional path), else ``None``.
    reason : str, default ""
        Why the iteration stopped without converging (empty when ``converged``).
    """

    points: np.ndarray
    weights: np.ndarray
    n_iter: int
    converged: bool
    method: str
    history: list = field(default_factory=list)
    displacement: list = field(default_factory=list)
    params: dict = field(default_factory=dict)
    image: np.ndarray | None = None
    reason: str = ""

    def __repr__(self) -> str:
        last = f", objective={self.history[-1]:.6g}" if self.history and self.method == "free" else ""
        img = "" if self.image is None else f", image={tuple(self.image.shape)}"
        return (f"BarycenterResult(method={self.method!r}, points={tuple(np.shape(self.points))}, n_iter={self.n_iter}, "
                f"converged={bool(self.converged)}{last}{img})")


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------


def as_measure(m, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Input ``k`` (a measure object, a ``(points, weights)`` pair or an array of points) as ``(points, weights)``.

    Points of weight 0 are dropped and the weights normalised to unit mass.

    Parameters
    ----------
    m : object
        An object with ``.points`` (and optionally ``.weights``), a ``(points, weights)`` pair, or an array of
        points ``(N, D)`` (``(N,)``: one-dimensional points).
    k : int
        Index of the input, for the messages.

    Returns
    -------
    points : numpy.ndarray
        ``(N', D)`` float64 points with positive weight.
    weights : numpy.ndarray
        ``(N',)`` float64 weights summing to one.

    Raises
    ------
    ValueError
        On empty or non-finite points, a weight count that differs from the point count, or negative,
        non-finite or all-zero weights.
    """
    if hasattr(m, "points"):
        pts, w = m.points, getattr(m, "weights", None)
    elif isinstance(m, (tuple, list)) and len(m) == 2 and np.ndim(m[0]) >= 1 and np.ndim(m[1]) == 1 and len(m[0]) == len(m[1]):
        pts, w = m
    else:
        pts, w = m, None
    pts = np.asarray(pts, dtype=np.float64)
    if pts.ndim == 1:
        pts = pts[:, None]
    if pts.ndim != 2 or pts.shape[0] == 0 or pts.shape[1] == 0:
        raise ValueError(f"measure {k}: points must be a non-empty (N, D) array, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError(f"measure {k}: points contain NaN or inf")
    w = np.full(len(pts), 1.0 / len(pts)) if w is None else np.asarray(w, dtype=np.float64).reshape(-1)
    if w.shape != (len(pts),):
        raise ValueError(f"measure {k}: {len(w)} weights for {len(pts)} points")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"measure {k}: weights must be finite, non-negative, with positive total")
    keep = w > 0
    return pts[keep], w[keep] / w[keep].sum()


def validate_inputs(measures, lambdas=None) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Points, unit-mass weights and barycentric weights of the inputs, or a one-line ``ValueError``."""
    measures = list(measures) if measures is not None else []
    if not measures:
        raise ValueError("no measures to average (the group is empty)")
    ys, bs = zip(*(as_measure(m, k) for k, m in enumerate(measures)))
    D = ys[0].shape[1]
    for k, y in enumerate(ys):
        if y.shape[1] != D:
            raise ValueError(f"dimension mismatch: measure 0 has D = {D}, measure {k} has D = {y.shape[1]}")
    return list(ys), list(bs), check_lambdas(lambdas, len(ys))


def check_lambdas(lambdas, K: int) -> np.ndarray:
    """Barycentric weights: ``K`` finite non-negative numbers summing to one (uniform if ``None``)."""
    if lambdas is None:
        return np.full(K, 1.0 / K)
    lam = np.asarray(lambdas, dtype=np.float64).reshape(-1)
    if lam.shape != (K,):
        raise ValueError(f"{len(lam)} barycenter weights for {K} measures")
    if not np.isfinite(lam).all() or (lam < 0).any():
        raise ValueError("barycenter weights must be finite and non-negative")
    if abs(lam.sum() - 1.0) > 1e-6:
        raise ValueError(f"barycenter weights must sum to one, got sum = {lam.sum():.6g}")
    return lam


def bbox_diameter(arrays: Sequence[np.ndarray]) -> float:
    """Diagonal of the bounding box of all the points of ``arrays`` (1.0 when they coincide).

    Parameters
    ----------
    arrays : sequence of numpy.ndarray
        Point arrays ``(..., D)``, one ``D``.

    Returns
    -------
    float
        ``|max - min|_2`` over all the points, or 1.0 when it is 0.
    """
    z = np.concatenate([np.asarray(a).reshape(-1, np.asarray(a).shape[-1]) for a in arrays])
    return box_diagonal(bounds(z), 1.0)


# --------------------------------------------------------------------------------------------
# free support
# --------------------------------------------------------------------------------------------


def init_support(ys, bs, lambdas, n_points: int, init="sample", seed: int = 0) -> np.ndarray:
    """Starting positions of a free-support barycenter.

    ``"sample"``: points drawn without replacement from the pooled inputs with probabilities
    ``lambda_k b_kj`` (with replacement and a tiny jitter if there are too few; repeated coordinates, as from
    inputs sharing points, are jittered too: coincident points would move together forever);
    ``"mean"``: a Gaussian with the pooled mean and covariance; an array: used as given.

    Parameters
    ----------
    ys : list of numpy.ndarray
        Input points ``(N_k, D)``.
    bs : list of numpy.ndarray
        Input weights ``(N_k,)``, unit mass.
    lambdas : numpy.ndarray
        Barycentric weights ``(K,)``.
    n_points : int
        Support size (``>= 1``; ignored for an array ``init``).
    init : {"sample", "mean"} or array_like, default "sample"
        How to start.
    seed : int, default 0
        Seed of the random draws.

    Returns
    -------
    numpy.ndarray
        ``(n_points, D)`` float64 positions (a copy of ``init`` when it is an array).

    Raises
    ------
    ValueError
        On ``n_points < 1``, an unknown ``init`` or an array ``init`` that is not a finite ``(n, D)`` array.
    """
    D = ys[0].shape[1]
    if not isinstance(init, str):
        X = np.asarray(init, dtype=np.float64)
        if X.ndim == 1 and D == 1:
            X = X[:, None]
        if X.ndim != 2 or X.shape[1] != D or not np.isfinite(X).all():
            raise ValueError(f"init must be a finite (n, {D}) array, got shape {X.shape}")
        return X.copy()
    if n_points < 1:
        raise ValueError(f"n_points must be >= 1, got {n_points}")
    rng = np.random.default_rng(seed)
    Z = np.concatenate(ys)
    w = np.concatenate([lam * b for lam, b in zip(lambdas, bs)])
    w = w / w.sum()
    if init == "sample":
        nz = int((w > 0).sum())
        if n_points <= nz:
            X = Z[rng.choice(len(Z), size=n_points, replace=False, p=w)].copy()
            # coincident starting points (inputs that share points, e.g. copies) get identical steps and never part:
            # jitter the repeats
            _, first = np.unique(X, axis=0, return_index=True)
            rep = np.setdiff1d(np.arange(n_points), first)
            if len(rep):
                X[rep] += 1e-3 * bbox_diameter([Z]) * rng.standard_normal((len(rep), X.shape[1]))
            return X
        X = Z[rng.choice(len(Z), size=n_points, replace=True, p=w)]
        return X + 1e-3 * bbox_diameter([Z]) * rng.standard_normal(X.shape)
    if init == "mean":
        mean = w @ Z
        cov = (Z - mean).T @ ((Z - mean) * w[:, None])
        return rng.multivariate_normal(mean, cov + 1e-12 * np.eye(D), size=n_points)
    raise ValueError(f"unknown init {init!r}: use 'sample', 'mean' or an (n, D) array")


class Terms(Protocol):
    """The per-iteration terms of the free-support objective (local or distributed)."""

    def cross(self, X: np.ndarray, a: np.ndarray, grad_weights: bool, tol: float | None = None):
        """``sum_k lambda_k OT_eps(alpha, beta_k)``, its gradients w.r.t. ``X`` and ``a`` (``None`` unless
        ``grad_weights``) and :class:`InnerInfo`, with the Sinkhorn solves run to ``tol`` (default: the options'),
        warm-started from the potentials of the previous call."""

    def self_constant(self) -> float:
        """``sum_k lambda_k OT_eps(beta_k, beta_k) / 2`` (constant part of the objective)."""


@dataclass
class InnerInfo:
    """Diagnostics of a set of inner Sinkhorn solves: largest marginal error, total updates.

    Parameters
    ----------
    err : float, default 0.0
        Largest marginal error of the solves.
    updates : int, default 0
        Total Sinkhorn updates of the solves.
    """

    err: float = 0.0
    updates: int = 0

    def add(self, other: InnerInfo) -> InnerInfo:
        """Combine with the diagnostics of other solves.

        Parameters
        ----------
        other : InnerInfo
            The other solves' diagnostics.

        Returns
        -------
        InnerInfo
            The larger error and the summed updates.
        """
        return InnerInfo(max(self.err, other.err), self.updates + other.updates)


def _solver_kw(opts: dict) -> dict:
    return {k: opts[k] for k in ("p", "blur", "diameter", "scaling", "tol", "max_iter", "backend")}


def _can_warm_start(opts: dict, n: int, m: int) -> bool:
    """Warm starts need the converged mode and a full (not multiscale) backend."""
    from otpipe.geometry.backends import choose_backend

    return opts.get("tol") is not None and choose_backend(opts["backend"], 1, n, m, converging=True) != "multiscale"


def _solve_warm(run, init, tol):
    """``run(init)``, and ``run(None)`` (the cold eps-scaling) if a warm start did not reach ``tol``: potentials from a
    problem that changed by much more than ``eps`` (a large step, moved weights) can leave the final temperature
    crawling for thousands of updates. Convergence warnings are left to the caller (it reads the marginal errors)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = run(init)
        if init is not None and tol is not None and float(r.marginal_error.max()) > tol:
            _log.debug("warm start did not reach tol=%.2g (error %.2g after %d updates): cold solve", tol,
                       float(r.marginal_error.max()), int(r.n_iter.max()))
            cold = run(None)
            total = cold.n_iter + r.n_iter  # both count
            r = cold if float(cold.marginal_error.max()) <= float(r.marginal_error.max()) else r
            r.n_iter = total
    return r


def cross_terms(X, a, ys, bs, lambdas, opts: dict, grad_weights: bool = False, warm: list | None = None):
    """``sum_k lambda_k OT_eps(alpha, beta_k)`` with envelope gradients (NumPy in and out), and :class:`InnerInfo`.

    ``warm``: one entry per measure, ``None`` or the potentials ``(f, g)`` of a previous call, used as warm starts
    (:func:`otpipe.solve`'s ``init``) and replaced in place by the new potentials.
    """
    from otpipe.solvers.sinkhorn import solve

    Xt = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    at = torch.tensor(a, dtype=torch.float64, requires_grad=grad_weights)
    total = torch.zeros((), dtype=torch.float64)
    info = InnerInfo()
    for k, (y, b, lam) in enumerate(zip(ys, bs, lambdas)):
        if lam == 0:
            continue
        init = warm[k] if warm is not None and _can_warm_start(opts, len(X), len(y)) else None
        yt, bt = torch.as_tensor(y, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
        r = _solve_warm(lambda i: solve(Xt, yt, at, bt, init=i, **_solver_kw(opts)), init, opts["tol"])
        if warm is not None:
            warm[k] = (r.f.detach().numpy().copy(), r.g.detach().numpy().copy())
        info = info.add(InnerInfo(float(r.marginal_error), int(r.n_iter)))
        total = total + float(lam) * r.value
    if not total.requires_grad:
        return float(total), np.zeros_like(X), (np.zeros_like(a) if grad_weights else None), info
    grads = torch.autograd.grad(total, [Xt, at] if grad_weights else [Xt], allow_unused=True)
    gX = grads[0].numpy() if grads[0] is not None else np.zeros_like(X)
    ga = None
    if grad_weights:
        ga = grads[1].numpy() if grads[1] is not None else np.zeros_like(a)
    return float(total.detach()), gX, ga, info


def self_terms(ys, bs, lambdas, opts: dict) -> float:
    """``sum_k lambda_k OT_eps(beta_k, beta_k) / 2``."""
    from otpipe.solvers.sinkhorn import solve_symmetric

    with torch.no_grad():
        return float(sum(0.5 * lam * float(solve_symmetric(torch.as_tensor(y), torch.as_tensor(b), **_solver_kw(opts)).value)
                         for y, b, lam in zip(ys, bs, lambdas) if lam > 0))


class LocalTerms:
    """:class:`Terms` computed in this process, measure after measure; keeps the potentials for warm starts.

    Parameters
    ----------
    ys : list of numpy.ndarray
        Input points ``(N_k, D)``.
    bs : list of numpy.ndarray
        Input weights ``(N_k,)``, unit mass.
    lambdas : numpy.ndarray
        Barycentric weights ``(K,)``.
    opts : dict
        Sinkhorn options (``p``, ``blur``, ``diameter``, ``scaling``, ``tol``, ``max_iter``, ``backend``).
    """

    def __init__(self, ys, bs, lambdas, opts: dict):
        self.ys, self.bs, self.lambdas, self.opts = ys, bs, lambdas, opts
        self.warm = [None] * len(ys)

    def cross(self, X, a, grad_weights, tol=None):
        """``sum_k lambda_k OT_eps(alpha, beta_k)`` with its gradients, warm-started from the previous call.

        Parameters
        ----------
        X : numpy.ndarray
            ``(n, D)`` positions of the barycenter.
        a : numpy.ndarray
            ``(n,)`` weights of the barycenter.
        grad_weights : bool
            Also return the gradient w.r.t. ``a``.
        tol : float or None, default None
            Tolerance of the Sinkhorn solves; ``None``: the options'.

        Returns
        -------
        value : float
            The weighted sum of the cross terms.
        grad_X : numpy.ndarray
            ``(n, D)`` gradient w.r.t. ``X``.
        grad_a : numpy.ndarray or None
            ``(n,)`` gradient w.r.t. ``a``; ``None`` unless ``grad_weights``.
        info : InnerInfo
            Diagnostics of the solves.
        """
        opts = self.opts if tol is None else dict(self.opts, tol=tol)
        return cross_terms(X, a, self.ys, self.bs, self.lambdas, opts, grad_weights, self.warm)

    def self_constant(self):
        """``sum_k lambda_k OT_eps(beta_k, beta_k) / 2``, the constant part of the objective.

        Returns
        -------
        float
            The weighted sum of the inputs' halved self terms.
        """
        return self_terms(self.ys, self.bs, self.lambdas, self.opts)


def _self_term(X, a, opts: dict, grad_weights: bool, warm: list | None = None):
    """``OT_eps(alpha, alpha)``, its gradients and :class:`InnerInfo`; ``warm = [f or None]`` (updated in place)."""
    from otpipe.solvers.sinkhorn import solve_symmetric

    Xt = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    at = torch.tensor(a, dtype=torch.float64, requires_grad=grad_weights)
    init = warm[0] if warm is not None and _can_warm_start(opts, len(X), len(X)) else None
    r = _solve_warm(lambda i: solve_symmetric(Xt, at, init=i, **_solver_kw(opts)), init, opts["tol"])
    if warm is not None:
        warm[0] = r.f.detach().numpy().copy()
    v = r.value
    info = InnerInfo(float(r.marginal_error), int(r.n_iter))
    vf = float(v.detach())
    if not v.requires_grad:
        return vf, np.zeros_like(X), (np.zeros_like(a) if grad_weights else None), info
    grads = torch.autograd.grad(v, [Xt, at] if grad_weights else [Xt], allow_unused=True)
    gX = grads[0].numpy() if grads[0] is not None else np.zeros_like(X)
    ga = (grads[1].numpy() if grads[1] is not None else np.zeros_like(a)) if grad_weights else None
    return vf, gX, ga, info


#: Sinkhorn tolerance of the solves when weights are learned: the weight step follows the potentials
LEARN_WEIGHTS_SINKHORN_TOL = 1e-6
#: default inner (Sinkhorn) tolerance as a fraction of the outer ``tol``
SINKHORN_TOL_FACTOR = 0.1
#: loosest inner tolerance (first outer iterations), and the forcing factor that tightens it with the displacement
INNER_TOL_MAX = 1e-2
FORCING = 0.1


#: L-BFGS memory (curvature pairs) of the accelerated free-support iteration
LBFGS_MEMORY = 10


class _LBFGS:
    """Limited-memory BFGS directions for the positions in the metric ``<u, v>_a = sum_i a_i u_i . v_i``.

    In that metric the gradient of ``F`` is ``G = grad_X F / a`` and the plain step ``-step G`` is the fixed-point
    (Brenier) map; curvature pairs ``(s, y) = (dX, dG)`` correct it along the directions where ``F`` is flat
    (rearrangements of points at the scale of the blur, where the plain iteration crawls).
    """

    def __init__(self, a: np.ndarray, memory: int, step: float):
        self.w, self.m, self.step = a[:, None], memory, step
        self.S: list[np.ndarray] = []
        self.Y: list[np.ndarray] = []

    def _dot(self, u, v) -> float:
        return float((self.w * u * v).sum())

    def reset(self):
        self.S, self.Y = [], []

    def update(self, s: np.ndarray, y: np.ndarray):
        if self._dot(s, y) > 1e-12 * math.sqrt(self._dot(s, s) * self._dot(y, y)):  # keep H positive definite
            self.S.append(s)
            self.Y.append(y)
            if len(self.S) > self.m:
                self.S.pop(0)
                self.Y.pop(0)

    def direction(self, G: np.ndarray) -> np.ndarray:
        """``-H G`` (two-loop recursion); ``-step G`` without curvature pairs."""
        if not self.S:
            return -self.step * G
        q, alphas = G.copy(), []
        for s, y in zip(reversed(self.S), reversed(self.Y)):
            al = self._dot(s, q) / self._dot(s, y)
            alphas.append(al)
            q -= al * y
        s, y = self.S[-1], self.Y[-1]
        r = (self._dot(s, y) / self._dot(y, y)) * q
        for (s, y), al in zip(zip(self.S, self.Y), reversed(alphas)):
            r += s * (al - self._dot(y, r) / self._dot(s, y))
        d = -r
        if self._dot(d, G) >= 0:  # not a descent direction: forget the curvature
            self.reset()
            return -self.step * G
        return d


def _noise(F: float, inner_tol: float) -> float:
    """Allowance for the objective's error from inexact inner solves (measured: ~2e-8 |F| at 1e-4, ~1e-9 |F| at 1e-5)."""
    return max(abs(F), 1e-300) * max(1e-3 * inner_tol, 1e-13)


def free_support_barycenter(
    measures,
    lambdas=None,
    *,
    n_points: int | None = None,
    init="sample",
    weights_init=None,
    learn_weights: bool = False,
    p: float = 2,
    blur: float | None = None,
    diameter: float | None = None,
    scaling: float = 0.5,
    sinkhorn_tol: float | None = None,
    sinkhorn_max_iter: int | None = None,
    tol: float = 1e-4,
    max_iter: int = 100,
    step: float = 1.0,
    seed: int = 0,
    backend: str = "auto",
    terms: Terms | None = None,
    acceleration: str = "lbfgs",
) -> BarycenterResult:
    """Free-support barycenter ``argmin_alpha sum_k lambda_k S_eps(alpha, beta_k)``.

    Parameters
    ----------
    measures : sequence
        Input measures: ``(N_k, D)`` arrays, ``(points, weights)`` pairs or objects with
        ``.points``/``.weights`` (store measures); sizes may differ; weights are normalised.
    lambdas : array, optional
        Barycentric weights (non-negative, summing to one); uniform by default.
    n_points : int, optional
        Support size of the barycenter (default: the largest input size).
    init : {"sample", "mean"} or array, default "sample"
        Starting positions (see :func:`init_support`), seeded by ``seed``.
    weights_init : array, optional
        Starting weights of the barycenter's points (normalised to unit mass); default uniform ``1/n``.
    learn_weights : bool, default False
        Also optimise the barycenter's weights (L-BFGS on positions and log-weights together, with a line search;
        see the module docstring), else uniform ``1/n``.
    p, blur, diameter, scaling, sinkhorn_max_iter, backend
        Sinkhorn parameters (:func:`otpipe.solve`); ``blur`` defaults to ``0.02 * diameter``
        and ``diameter`` to the bounding-box diagonal of the inputs and the initial support,
        fixed for the whole run so every iteration solves the same kind of problem.
    sinkhorn_tol : float, optional
        Marginal-error tolerance of the inner Sinkhorn solves at convergence; default ``tol / 10``
        (``1e-6`` with ``learn_weights``: the weight step follows the potentials). Every solve is warm-started
        from the previous iteration's potentials; while the points still move, the solves stop at the looser
        ``min(1e-2, max(sinkhorn_tol, 0.1 * displacement / diameter))`` (an inexact fixed-point iteration
        whose errors shrink with its steps; not with ``learn_weights``, whose safeguard compares objectives).
    tol : float
        Convergence: the largest displacement of a step ``< tol * diameter`` (this is the first-order condition
        ``|grad_{x_i} F| / a_i < tol * diameter / step``; for ``p = 2`` it reads ``sum_k lambda_k T_k(x_i) = T_aa(x_i)``
        with the barycentric maps ``T``), the objective change ``< tol**2 * diameter**p``, the last inner solves
        within ``sinkhorn_tol``, and (``learn_weights``) the L1 change of a plain mirror step
        ``step sum_i a_i |g_i - <a, g>| / diameter^p < tol`` (``g = grad_a F``), all at the same iteration.
    max_iter : int
        Cap on the outer iterations; stopping there without convergence gives a
        :class:`~otpipe.diagnostics.ConvergenceWarning`.
    step : float, default 1.0
        ``tau`` of the step ``x_i <- x_i - tau grad_{x_i} F / a_i`` (1: the Brenier-map step).
    seed : int, default 0
        Seed of the random starting positions (``init="sample"`` or ``"mean"``).
    terms : Terms, optional
        Where the per-measure terms are computed (default: here, :class:`LocalTerms`).
    acceleration : {"lbfgs", "none"}
        ``"lbfgs"`` (default): the positions move along L-BFGS directions built on the fixed-point step (memory
        :data:`LBFGS_MEMORY`, unit steps; an iteration whose objective rises is undone and replaced by the plain
        step); ``"none"``: plain fixed-point steps. ``learn_weights`` always uses its joint L-BFGS.

    Returns
    -------
    BarycenterResult
        ``history``: the objective per accepted iteration; ``displacement``: the largest move per step;
        ``params["inner_updates"]``: Sinkhorn updates over the run; ``params["last_inner_error"]``; with learned
        weights ``params["weight_gap"]`` (``<a, g> - min_i g_i >= F - min_a F``) and ``params["evaluations"]``;
        ``reason``: why it stopped when not converged.
    """
    import warnings

    ys, bs, lam, X, a, opts = _free_setup(measures, lambdas, n_points, init, weights_init, learn_weights, p, blur,
                                          diameter, scaling, sinkhorn_tol, sinkhorn_max_iter, tol, max_iter, step,
                                          seed, backend)
    terms = terms if terms is not None else LocalTerms(ys, bs, lam, opts)
    const = terms.self_constant()
    if acceleration not in ("lbfgs", "none"):
        raise ValueError(f"unknown acceleration {acceleration!r}: use 'lbfgs' or 'none'")
    if learn_weights:
        return _learn_weights(X, a, terms, opts, const, lam, tol=tol, max_iter=max_iter, step=step, init=init, seed=seed)
    run = _free_iterations(X, a, terms, opts, const, tol=tol, max_iter=max_iter, step=step, acceleration=acceleration)
    diameter, sinkhorn_tol = opts["diameter"], opts["tol"]
    reason = ""
    if not run.converged:
        reason = (f"max_iter={max_iter} without converging: largest displacement {run.disp:.3g} (tolerance "
                  f"{tol * diameter:.3g} = tol * diameter), objective change {run.dF:.3g} (tolerance "
                  f"{tol**2 * diameter**p:.3g}), inner marginal error {run.info.err:.3g} (sinkhorn_tol "
                  f"{sinkhorn_tol:.3g})")
        warnings.warn(f"free-support barycenter stopped at {reason}; raise max_iter, or loosen tol", ConvergenceWarning,
                      stacklevel=2)
    n = len(run.X)
    params = dict(opts, method="free", n_points=n, init=init if isinstance(init, str) else "given", seed=seed,
                  step=step, learn_weights=learn_weights, outer_tol=tol, outer_max_iter=max_iter,
                  lambdas=lam.tolist(), inner_updates=run.updates, last_inner_error=run.info.err)
    return BarycenterResult(points=run.X, weights=a, n_iter=run.it, converged=run.converged, method="free",
                            history=run.history, displacement=run.disp_hist, params=params, reason=reason)


def _free_setup(measures, lambdas, n_points, init, weights_init, learn_weights, p, blur, diameter, scaling,
                sinkhorn_tol, sinkhorn_max_iter, tol, max_iter, step, seed, backend):
    """Validate the inputs of :func:`free_support_barycenter`: the measures, the starting support and weights,
    and the inner solver options (``diameter`` and ``blur`` resolved, ``tol`` the inner tolerance)."""
    ys, bs, lam = validate_inputs(measures, lambdas)
    if n_points is None:
        n_points = max(len(y) for y in ys)
    X = init_support(ys, bs, lam, n_points, init, seed)
    n = len(X)
    a = np.full(n, 1.0 / n) if weights_init is None else np.asarray(weights_init, dtype=np.float64) / np.sum(weights_init)
    if a.shape != (n,):
        raise ValueError(f"weights_init must have shape ({n},)")
    if diameter is None:
        diameter = bbox_diameter(list(ys) + [X])
    if blur is None:
        blur = 0.02 * diameter
    for name, v in (("blur", blur), ("diameter", diameter), ("step", step), ("tol", tol)):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive finite number, got {v}")
    if not max_iter >= 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if sinkhorn_tol is None:
        sinkhorn_tol = LEARN_WEIGHTS_SINKHORN_TOL if learn_weights else SINKHORN_TOL_FACTOR * tol
    if not sinkhorn_tol > 0:
        raise ValueError(f"sinkhorn_tol must be positive, got {sinkhorn_tol}")
    opts = dict(p=float(p), blur=float(blur), diameter=float(diameter), scaling=float(scaling), tol=float(sinkhorn_tol),
                max_iter=sinkhorn_max_iter, backend=backend)
    return ys, bs, lam, X, a, opts


@dataclass
class _FreeRun:
    """State of the fixed-point iterations of :func:`free_support_barycenter` (positions only)."""

    X: np.ndarray
    history: list = field(default_factory=list)
    disp_hist: list = field(default_factory=list)
    converged: bool = False
    it: int = 0
    disp: float = math.inf
    dF: float = math.inf
    updates: int = 0
    info: Any = None


def _free_iterations(X, a, terms: Terms, opts: dict, const: float, *, tol: float, max_iter: int, step: float,
                     acceleration: str) -> _FreeRun:
    """The outer loop on the positions: fixed-point steps ``x_i <- x_i - step grad_{x_i} F / a_i``, along L-BFGS
    directions with ``acceleration="lbfgs"`` (a step that raises the objective is undone for the plain one)."""
    p, diameter, sinkhorn_tol = opts["p"], opts["diameter"], opts["tol"]
    r = _FreeRun(X)
    warm_self = [None]
    qn = _LBFGS(a, LBFGS_MEMORY, step) if acceleration == "lbfgs" else None
    last = None  # (X, G, F) of the last accepted iterate (L-BFGS)
    for it in range(1, max_iter + 1):
        r.it = it
        # inexact early solves: the gradient needs no more accuracy than the step it makes
        tol_k = max(sinkhorn_tol, min(INNER_TOL_MAX, FORCING * r.disp / diameter))
        F, gX, _, r.info, _ = _evaluate(terms, r.X, a, opts, const, tol_k, False, warm_self)
        r.updates += r.info.updates
        G = gX / np.maximum(a, 1e-300)[:, None]
        # objectives from inner solves that missed their tolerance are not trusted to reject (or to judge) a step
        reliable = r.info.err <= tol_k
        if qn is not None and last is not None and reliable and F > last[2] + _noise(last[2], tol_k):
            # the L-BFGS step raised the objective: undo it, forget the curvature, take the plain step instead
            X, G, F = last
            qn.reset()
            last = None  # the plain step is the baseline iteration: taken without a test
            r.disp = float(np.sqrt((G**2).sum(1)).max()) * step
            r.dF = math.inf
            r.disp_hist.append(r.disp)
            _log.debug("iteration %d: L-BFGS step rejected (objective rose), plain step", it)
            r.X = X - step * G
            continue
        r.dF = abs(F - r.history[-1]) if r.history else math.inf
        r.history.append(F)
        # the first-order residual: the move of the plain fixed-point step
        r.disp = float(np.sqrt((G**2).sum(1)).max()) * step
        if qn is not None:
            if last is not None:
                qn.update(r.X - last[0], G - last[1])
            last = (r.X, G, F)
            Xn = r.X + qn.direction(G)
        else:
            Xn = r.X - step * G
        r.disp_hist.append(r.disp)
        _log.debug("iteration %d: objective %.12g, residual %.3g, inner tol %.2g, error %.2g, %d updates",
                   it, F, r.disp, tol_k, r.info.err, r.info.updates)
        inner_ok = tol_k <= sinkhorn_tol and r.info.err <= sinkhorn_tol
        if r.disp < tol * diameter and r.dF <= tol**2 * diameter**p and inner_ok:
            r.converged = True  # X satisfies the first-order condition: return it, not the next trial point
            break
        r.X = Xn
    return r


def _evaluate(terms: Terms, X, a, opts: dict, const: float, tol: float, grad_weights: bool, warm_self: list):
    """``F = sum_k lambda_k OT_eps(alpha, beta_k) - OT_eps(alpha, alpha) / 2 - const``, its gradients w.r.t. ``X`` and
    (``grad_weights``) ``a``, :class:`InnerInfo` of the solves, and the size of the terms (for the objective's noise)."""
    vx, gx, ga, info = terms.cross(X, a, grad_weights, tol)
    vs, gsx, gsa, sinfo = _self_term(X, a, dict(opts, tol=tol), grad_weights, warm_self)
    g = ga - 0.5 * gsa if grad_weights else None
    return vx - 0.5 * vs - const, gx - 0.5 * gsx, g, info.add(sinfo), abs(vx) + 0.5 * abs(vs) + abs(const)


#: learned weights: a line search gives up after this many halvings of its step (the run then stops, not converged)
MAX_HALVINGS = 12
#: learned weights: largest change of a log-weight in one step
MAX_LOG_WEIGHT_STEP = 5.0


def _learn_weights(X, a, terms: Terms, opts: dict, const: float, lam, *, tol: float, max_iter: int, step: float,
                   init, seed: int) -> BarycenterResult:
    """Positions and weights together: L-BFGS on ``v = (X, z)``, ``a = softmax(z)``, with an Armijo line search.

    Preconditioned by the natural steps at the starting weights ``a0``: ``X_i -= step grad_{X_i} F / a0_i`` (the
    Brenier step) and ``z_i -= step grad_{z_i} F / (a0_i diameter^p)`` (a mirror step on the weights). A trial point
    whose inner solves miss ``sinkhorn_tol`` cannot be judged and counts as a failed trial (the step is halved), as one
    whose objective does not decrease enough does. Converged (all at one accepted iterate): largest plain displacement
    ``max_i |grad_{X_i} F| / a_i * step < tol * diameter``, L1 change of a plain mirror step
    ``step sum_i a_i |g_i - <a, g>| / diameter^p < tol`` (``g = grad_a F``; both are first-order conditions),
    objective change ``<= tol^2 diameter^p``, inner solves within ``sinkhorn_tol``. Reported: the weights' optimality
    gap ``<a, g> - min_i g_i``, which bounds ``F - min_a F`` at these positions (F is convex in ``a``).
    """
    import warnings

    p, diameter, sinkhorn_tol = opts["p"], opts["diameter"], opts["tol"]
    n, D = X.shape
    ftol = tol**2 * diameter**p
    a = np.maximum(a, 1e-300)
    pre = np.concatenate([np.repeat(step / a, D), step / (a * diameter**p)])  # diagonal preconditioner
    warm_self = [None]
    updates = evaluations = 0

    def unpack(v):
        z = v[n * D:]
        w = np.exp(z - z.max())
        return v[:n * D].reshape(n, D), w / w.sum()

    def evaluate(v):
        nonlocal updates, evaluations
        Xv, av = unpack(v)
        F, gX, g, info, size = _evaluate(terms, Xv, av, opts, const, sinkhorn_tol, True, warm_self)
        updates += info.updates
        evaluations += 1
        grad = np.concatenate([gX.ravel(), av * (g - av @ g)])  # d a_i / d z_j = a_i (delta_ij - a_j)
        return dict(v=v, X=Xv, a=av, F=F, gX=gX, g=g, grad=grad, info=info, size=size,
                    reliable=info.err <= sinkhorn_tol)

    cur = evaluate(np.concatenate([X.ravel(), np.log(a)]))
    S: list[np.ndarray] = []
    Y: list[np.ndarray] = []
    history, disp_hist = [cur["F"]], []
    converged, reason, dF, it = False, "", math.inf, 0
    for it in range(1, max_iter + 1):
        disp = float(np.sqrt(((cur["gX"] / cur["a"][:, None]) ** 2).sum(1)).max()) * step
        gap = float(cur["a"] @ cur["g"] - cur["g"].min())
        dw = step * float(cur["a"] @ np.abs(cur["g"] - cur["a"] @ cur["g"])) / diameter**p
        disp_hist.append(disp)
        _log.debug("iteration %d: objective %.12g, residual %.3g, weight residual %.3g, gap %.3g, inner error %.2g", it,
                   cur["F"], disp, dw, gap, cur["info"].err)
        if disp < tol * diameter and dw < tol and dF <= ftol and cur["reliable"]:
            converged = True
            break
        d = -_two_loop(cur["grad"], S, Y, pre)
        if d @ cur["grad"] >= 0:  # not a descent direction: forget the curvature
            S, Y = [], []
            d = -pre * cur["grad"]
        t = min(1.0, MAX_LOG_WEIGHT_STEP / max(float(np.abs(d[n * D:]).max()), 1e-300))
        slope = float(d @ cur["grad"])
        for _ in range(MAX_HALVINGS):
            trial = evaluate(cur["v"] + t * d)
            noise = 1e-3 * sinkhorn_tol * trial["size"] + 1e-15 * max(trial["size"], 1.0)
            if trial["reliable"] and trial["F"] <= cur["F"] + 1e-4 * t * slope + noise:
                break
            t /= 2.0
        else:
            why = (f"inner marginal error {trial['info'].err:.3g} > sinkhorn_tol {sinkhorn_tol:.3g}" if not trial["reliable"]
                   else "no decrease of the objective")
            reason = (f"the line search failed {MAX_HALVINGS} times in a row (last trial: {why}) at iteration {it}: "
                      f"objective {cur['F']:.6g}, largest displacement {disp:.3g} (tolerance {tol * diameter:.3g}), "
                      f"weight residual {dw:.3g} (tolerance {tol:.3g})")
            break
        s_, y_ = trial["v"] - cur["v"], trial["grad"] - cur["grad"]
        if s_ @ y_ > 1e-12 * math.sqrt((s_ @ s_) * (y_ @ y_)):
            S.append(s_)
            Y.append(y_)
            if len(S) > LBFGS_MEMORY:
                S.pop(0)
                Y.pop(0)
        dF = abs(trial["F"] - cur["F"])
        cur = trial
        history.append(cur["F"])
    else:
        reason = (f"max_iter={max_iter} without converging: largest displacement {disp:.3g} (tolerance "
                  f"{tol * diameter:.3g} = tol * diameter), weight residual {dw:.3g} (tolerance {tol:.3g}), objective change "
                  f"{dF:.3g} (tolerance {ftol:.3g} = tol**2 * diameter**p), inner marginal error {cur['info'].err:.3g} "
                  f"(sinkhorn_tol {sinkhorn_tol:.3g})")
    if not converged:
        warnings.warn(f"free-support barycenter (learned weights) stopped {'at ' if reason.startswith('max_iter') else 'after '}"
                      f"{reason}; raise max_iter (or sinkhorn_max_iter), or loosen tol", ConvergenceWarning, stacklevel=3)
    params = dict(opts, method="free", n_points=n, init=init if isinstance(init, str) else "given", seed=seed, step=step,
                  learn_weights=True, outer_tol=tol, outer_max_iter=max_iter, lambdas=np.asarray(lam).tolist(),
                  inner_updates=updates, evaluations=evaluations, last_inner_error=cur["info"].err, weight_gap=gap)
    return BarycenterResult(points=cur["X"], weights=cur["a"], n_iter=it, converged=converged, method="free",
                            history=history, displacement=disp_hist, params=params, reason=reason)


def _two_loop(grad: np.ndarray, S: list, Y: list, pre: np.ndarray) -> np.ndarray:
    """``H grad`` of L-BFGS with the curvature pairs ``(S, Y)`` and the initial matrix ``gamma diag(pre)``."""
    q, alphas = grad.copy(), []
    for s, y in zip(reversed(S), reversed(Y)):
        al = (s @ q) / (s @ y)
        alphas.append(al)
        q -= al * y
    gamma = (S[-1] @ Y[-1]) / (Y[-1] @ (pre * Y[-1])) if S else 1.0
    r = gamma * pre * q
    for (s, y), al in zip(zip(S, Y), reversed(alphas)):
        r += s * (al - (y @ r) / (s @ y))
    return r


# --------------------------------------------------------------------------------------------
# fixed support (iterative Bregman projections)
# --------------------------------------------------------------------------------------------


class _DenseKernel:
    """``h -> log sum_j exp(h_j - C_ij / eps)`` with a dense cost matrix."""

    def __init__(self, C: torch.Tensor, eps: float):
        self.logK = -C / eps

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(h[..., None, :] + self.logK, dim=-1)


class _GridKernel:
    """The same for ``C = |x - y|^2 / 2`` on a regular grid: one log-sum-exp convolution per axis."""

    def __init__(self, shape: tuple[int, ...], spacing: Sequence[float], eps: float):
        self.logK = []
        for n, s in zip(shape, spacing):
            t = torch.arange(n, dtype=torch.float64) * s
            self.logK.append(-((t[:, None] - t[None, :]) ** 2) / (2 * eps))
        self.ndim = len(shape)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        for d, lk in enumerate(self.logK):
            ax = h.dim() - self.ndim + d
            h = torch.logsumexp(h.movedim(ax, -1)[..., None, :] + lk, dim=-1).movedim(-1, ax)
        return h


#: iterations over which the fixed-support stopping rule estimates the contraction rate
RATE_WINDOW = 10


def _distance_estimate(history: list) -> float:
    """A-posteriori distance to the fixed point of a linearly converging iteration: ``e_k rho / (1 - rho)`` with the
    rate ``rho = (e_k / e_{k-m})^(1/m)`` over the last :data:`RATE_WINDOW` steps (``inf`` if not contracting). A small
    step is no evidence of convergence when the iteration crawls (rho ~ 1): the debiased IBP can move by 1e-6 per
    iteration while 2% away from its fixed point."""
    e, e0 = history[-1], history[-1 - RATE_WINDOW]
    if not (e0 > 0 and e < e0):
        return 0.0 if e == 0 else math.inf
    rho = (e / e0) ** (1.0 / RATE_WINDOW)
    return e * rho / (1.0 - rho)


def _ibp(logb: torch.Tensor, lam: torch.Tensor, kernel, *, debiased: bool, tol: float, max_iter: int):
    """Log-domain iterative Bregman projections; ``logb`` is ``(K, *support)``.

    Converged when, at one iteration, the L1 gaps between every plan's barycenter-side marginal and the barycenter
    (the first-order condition), the barycenter's change and (debiased) the residual of ``d * K d = a`` are ``< tol``,
    and so is the distance to the fixed point that their contraction rate implies (:func:`_distance_estimate`).
    """
    K = logb.shape[0]
    sup_dims = tuple(range(1, logb.dim()))
    lam_b = lam.reshape((K,) + (1,) * (logb.dim() - 1))
    logu = torch.zeros_like(logb)
    logd = torch.zeros_like(logb[0])
    loga = loga_old = logd
    history, converged, it = [], False, 0
    for it in range(1, max_iter + 1):
        logv = logb - kernel(logu)
        lKv = kernel(logv)
        loga = (lam_b * lKv).sum(0)
        if debiased:
            loga = loga + logd
        # plans' barycenter-side marginals before the projection vs the barycenter, and its change
        err = float((torch.exp(logu + lKv) - torch.exp(loga)[None]).abs().sum(dim=sup_dims).max())
        if it > 1:
            err = max(err, float((torch.exp(loga) - torch.exp(loga_old)).abs().sum()))
        logu = loga[None] - lKv
        if debiased:
            for _ in range(D_INNER):
                logd = 0.5 * (logd + loga - kernel(logd))
            # the debiasing factor's own fixed point d * K d = a must hold too (not only a settled a)
            err = max(err, float((torch.exp(logd + kernel(logd)) - torch.exp(loga)).abs().sum()))
        loga_old = loga
        history.append(err)
        if it > RATE_WINDOW and err < tol and _distance_estimate(history) < tol:
            converged = True
            break
    a = torch.exp(loga)
    return (a / a.sum()).numpy(), it, converged, history


def fixed_support_barycenter(
    histograms,
    lambdas=None,
    *,
    support=None,
    cost_matrix=None,
    grid_spacing=None,
    p: float = 2,
    blur: float | None = None,
    debiased: bool = True,
    tol: float = 1e-7,
    max_iter: int = 10000,
) -> BarycenterResult:
    """Fixed-support barycenter by log-domain iterative Bregman projections.

    ``min_a sum_k lambda_k OT_eps(a, b_k)`` (``- OT_eps(a, a)/2`` when ``debiased``), ``eps = blur^p``.

    Parameters
    ----------
    histograms : array ``(K, n)`` or, with ``grid_spacing``, ``(K, n_1, ..., n_D)``
        Non-negative weights of the inputs on the common support (normalised to unit mass).
    lambdas : array, optional
        Barycentric weights (``K`` non-negative numbers summing to one); uniform by default.
    support : array ``(n, D)``, optional
        Support points; the cost is ``|x - y|^p / p``.
    cost_matrix : array ``(n, n)``, optional
        A symmetric cost instead of ``support``.
    grid_spacing : float or sequence, optional
        Convolutional path: the histograms are images/volumes on a regular grid with this
        spacing along each axis; ``C = |x - y|^2 / 2`` (``p = 2`` only).
    p : float, default 2
        Exponent of the cost ``|x - y|^p / p`` on ``support`` (and of ``eps = blur^p``).
    blur : float, optional
        Default: one grid step (grid) or ``0.05 *`` the support diameter.
    debiased : bool, default True
        Janati et al.'s debiased barycenter (identical inputs give that input).
    tol : float, default 1e-7
        Stopping rule: the largest L1 gap between the plans' barycenter-side marginals and the
        barycenter, the barycenter's L1 change and (debiased) the L1 residual of ``d * K d = a``, all ``< tol``
        at one iteration, and their estimated distance to the fixed point ``e rho / (1 - rho)`` (``rho``: observed
        contraction rate) too.
    max_iter : int, default 10000
        Cap on the iterations; a :class:`~otpipe.diagnostics.ConvergenceWarning` when it is reached first.

    Returns
    -------
    BarycenterResult
        ``weights`` on the support (``points``: the support, the grid's points, or ``None`` with ``cost_matrix``);
        ``image`` the barycenter on the grid (convolutional path); ``history`` the stopping quantity per iteration.
    """
    B = np.asarray(histograms, dtype=np.float64)
    if B.ndim < 2 or B.shape[0] == 0:
        raise ValueError("no measures to average: histograms must be (K, n) with K >= 1")
    if not np.isfinite(B).all() or (B < 0).any():
        raise ValueError("histograms must be finite and non-negative")
    mass = B.reshape(len(B), -1).sum(1)
    if (mass <= 0).any():
        raise ValueError(f"histogram {int(np.argmin(mass))} has zero mass")
    B = B / mass.reshape((-1,) + (1,) * (B.ndim - 1))
    lam = check_lambdas(lambdas, len(B))
    if grid_spacing is not None:
        if p != 2:
            raise ValueError("the convolutional (grid) path needs p = 2")
        shape = B.shape[1:]
        spacing = np.broadcast_to(np.asarray(grid_spacing, dtype=np.float64), (len(shape),))
        blur = float(spacing.min()) if blur is None else float(blur)
        eps = blur**p
        kernel = _GridKernel(shape, spacing, eps)
        method = "fixed-convolutional"
    else:
        if B.ndim != 2:
            raise ValueError("histograms must be (K, n) without grid_spacing")
        n = B.shape[1]
        if cost_matrix is not None:
            C = torch.as_tensor(np.asarray(cost_matrix, dtype=np.float64))
            if C.shape != (n, n):
                raise ValueError(f"cost_matrix must be ({n}, {n}), got {tuple(C.shape)}")
            diam = float(C.max()) ** (1.0 / p)
        elif support is not None:
            S = np.asarray(support, dtype=np.float64)
            S = S[:, None] if S.ndim == 1 else S
            if S.shape[0] != n:
                raise ValueError(f"support has {S.shape[0]} points for histograms of length {n}")
            St = torch.as_tensor(S)
            C = torch.cdist(St, St) ** p / p
            diam = bbox_diameter([S])
        else:
            raise ValueError("fixed support needs support points, a cost matrix or a grid spacing")
        blur = 0.05 * diam if blur is None else float(blur)
        eps = blur**p
        kernel = _DenseKernel(C, eps)
        method = "fixed"
    if not blur > 0:
        raise ValueError("blur must be positive")
    with np.errstate(divide="ignore"):
        logb = torch.as_tensor(np.log(B))
    # thousands of tiny torch calls: intra-op threads only add synchronisation (13x slower
    # measured on a loaded 2-core machine), so small problems run single-threaded
    n_threads = torch.get_num_threads()
    small = logb.numel() < _SMALL_IBP and n_threads > 1
    if small:
        torch.set_num_threads(1)
    try:
        a, it, conv, hist = _ibp(logb, torch.as_tensor(lam), kernel, debiased=debiased, tol=tol, max_iter=max_iter)
    finally:
        if small:
            torch.set_num_threads(n_threads)
    if not conv:
        import warnings

        warnings.warn(
            f"fixed-support barycenter stopped at max_iter={max_iter} without converging: marginal gap / change "
            f"{hist[-1]:.3g} (tol {tol:g}); raise max_iter or blur, or loosen tol",
            ConvergenceWarning,
            stacklevel=2,
        )
    params = dict(method=method, p=p, blur=blur, debiased=debiased, tol=tol, max_iter=max_iter, lambdas=lam.tolist())
    if grid_spacing is not None:
        idx = np.indices(a.shape).reshape(a.ndim, -1).T
        pts = idx * spacing
        return BarycenterResult(points=pts, weights=a.reshape(-1), n_iter=it, converged=conv, method=method,
                                history=hist, params=params, image=a)
    pts = None if support is None else np.asarray(support, dtype=np.float64).reshape(B.shape[1], -1)
    return BarycenterResult(points=pts, weights=a, n_iter=it, converged=conv, method=method, history=hist, params=params)


# --------------------------------------------------------------------------------------------
# grids and the dispatcher
# --------------------------------------------------------------------------------------------


def detect_grid(measures, spacing: float | None = None):
    """The regular grid (2-D or 3-D) holding every input point, if there is one.

    The spacing is the smallest gap between distinct coordinates (or ``spacing``); the grid is
    the bounding box of the points. Point clouds that are not on such a lattice give ``None``.

    Parameters
    ----------
    measures : sequence
        Input measures (as :func:`as_measure` takes them).
    spacing : float or None, default None
        Grid spacing; ``None``: detected.

    Returns
    -------
    tuple or None
        ``(origin, spacing, shape)``: the lower corner ``(D,)``, the spacing and the number of cells per axis;
        ``None`` when the points are not on a 2-D or 3-D lattice of at most ``2^22`` cells.
    """
    ys = [as_measure(m, k)[0] for k, m in enumerate(measures)] if measures else []
    if not ys or ys[0].ndim != 2 or ys[0].shape[1] not in (2, 3):
        return None
    return lattice(np.concatenate(ys), spacing, max_cells=_MAX_GRID_CELLS)


def _to_grid(measures, origin, spacing, shape) -> np.ndarray:
    H = np.zeros((len(measures),) + tuple(shape))
    for k, m in enumerate(measures):
        pts, w = as_measure(m, k)
        idx = np.round((pts - origin) / spacing).astype(int)
        if (idx < 0).any() or (idx >= np.asarray(shape)).any():
            raise ValueError(f"measure {k} has points outside the grid")
        np.add.at(H[k], tuple(idx.T), w)
    return H


def barycenter(measures, weights=None, *, method: str = "auto", grid=None, debiased: bool = True, **kw) -> BarycenterResult:
    """Wasserstein barycenter of ``measures`` with barycentric ``weights`` (uniform by default).

    ``method="free"`` (:func:`free_support_barycenter`, the default for 1-D and general point
    clouds), ``"fixed"`` (:func:`fixed_support_barycenter` on the common pixel/voxel grid of the
    inputs: images as stored by ``otpipe ingest``; ``grid`` forces its spacing), or ``"auto"``:
    fixed when ``grid`` is given, free otherwise. Keyword arguments go to the chosen method.
    The returned points are in the inputs' coordinates.

    Parameters
    ----------
    measures : sequence
        Input measures: ``(N_k, D)`` arrays, ``(points, weights)`` pairs or objects with ``.points``/``.weights``.
    weights : array_like, optional
        Barycentric weights (non-negative, summing to one); uniform by default.
    method : {"auto", "free", "fixed"}, default "auto"
        The method.
    grid : float or bool, optional
        ``"fixed"``: the grid spacing (``True``: detected); with ``method="auto"``, selects ``"fixed"``.
    debiased : bool, default True
        ``"fixed"``: the debiased barycenter.
    **kw
        Keyword arguments of the chosen method.

    Returns
    -------
    BarycenterResult
        The barycenter and its diagnostics (``params`` records the grid of a fixed-support run).

    Raises
    ------
    ValueError
        On no measures, an unknown method, or ``"fixed"`` with inputs that are not on a common 2-D/3-D grid.
    """
    measures = list(measures) if measures is not None else []
    if not measures:
        raise ValueError("no measures to average (the group is empty)")
    if method == "auto":
        method = "fixed" if grid is not None else "free"
    if method == "free":
        return free_support_barycenter(measures, weights, **kw)
    if method != "fixed":
        raise ValueError(f"unknown method {method!r}: use free, fixed or auto")
    validate_inputs(measures, weights)  # clear errors first (dimensions, weights)
    g = detect_grid(measures, None if grid in (None, True) else float(grid))
    if g is None:
        raise ValueError("method 'fixed' needs inputs on a common regular 2-D/3-D grid (images); use method 'free'")
    origin, spacing, shape = g
    H = _to_grid(measures, origin, spacing, shape)
    res = fixed_support_barycenter(H, weights, grid_spacing=spacing, debiased=debiased, **kw)
    res.points = res.points + origin
    res.params.update(grid_origin=origin.tolist(), grid_spacing=spacing, grid_shape=list(shape))
    return res
