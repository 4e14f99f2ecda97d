"""Two-sample permutation tests with Sinkhorn divergences, unbiased MMD and the energy distance.

Given samples ``x_1..x_n`` and ``y_1..y_m`` in ``R^D``, the null hypothesis is that both come
from one distribution. All statistics are computed on the pooled sample ``z = (x; y)``; a
permutation ``pi`` of ``0..n+m-1`` gives the split ``x' = z[pi[:n]]``, ``y' = z[pi[n:]]``, and

``p = (1 + #{b : T(pi_b) >= T_obs}) / (1 + n_permutations)``

is a valid p-value (``P(p <= alpha) <= alpha`` under the null, for every ``alpha``).

Statistics
----------
* ``"sinkhorn"``: ``S_eps(x', y')`` (:func:`otpipe.sinkhorn_divergence`, uniform weights). A block
  of permutations is **one** batched ``(B, n, D)`` solve; the eps-scaling starts at the diameter
  of the pooled sample for every permutation, and the backend is fixed once per test, so each
  permutation's value does not depend on the block it is solved in.
* ``"mmd"``: the unbiased squared MMD (U-statistic, diagonal terms excluded),
  ``1/(n(n-1)) sum_{i!=i'} k(x_i,x_i') + 1/(m(m-1)) sum_{j!=j'} k(y_j,y_j') - 2/(nm) sum_ij k(x_i,y_j)``,
  Gaussian kernel ``exp(-|x-y|^2 / 2 sigma^2)``; ``sigma="median"`` (default) is the median pairwise
  distance of the pooled sample (permutation invariant, so the test stays exact). With several
  bandwidths (``sigma=[s1, s2, ...]``) the statistic is ``max_k (T_k - mean_k) / sd_k`` where
  ``mean_k``, ``sd_k`` are taken over the observed and all permuted values of bandwidth ``k``: a
  symmetric function of the permutation set, so the permutation null accounts for the choice of
  the best bandwidth and the p-value stays valid.
* ``"energy"``: the energy distance (Szekely-Rizzo, V-statistic)
  ``2/(nm) sum_ij |x_i-y_j| - 1/n^2 sum_ii' |x_i-x_i'| - 1/m^2 sum_jj' |y_j-y_j'|``
  (twice :func:`otpipe.energy_distance`).

The kernel statistics of all permutations come from one pooled ``(n+m, n+m)`` matrix ``K``: with
the 0/1 indicator ``s`` of the ``x`` part, ``sum_{x x} K = s^T K s``, ``sum_{x y} K = s^T K 1 - s^T K s``
and ``sum_{y y} K = 1^T K 1 - 2 s^T K 1 + s^T K s`` (dense route, right for ``n + m`` up to a few
thousand).

Reproducibility: permutations come in blocks of ``block_size``; block ``k`` draws from
``numpy.random.SeedSequence(seed, spawn_key=(k,))``, so the null sample depends on the seed and
``block_size`` only, never on how blocks are distributed (:mod:`otpipe.pipelines.two_sample`).

This module knows nothing of Dask.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["two_sample_test", "TwoSampleResult", "STATISTICS", "holm", "benjamini_hochberg", "seed_entropy"]

STATISTICS = ("sinkhorn", "mmd", "energy")
#: permutations per block (one batched solve / one task); part of what fixes the null sample
DEFAULT_BLOCK_SIZE = 100
_SINKHORN_KEYS = ("p", "blur", "reach", "scaling", "tol", "max_iter", "backend", "cost", "variant", "debias")
_MMD_KEYS = ("sigma",)


@dataclass
class TwoSampleResult:
    """Outcome of a permutation two-sample test (names as in ``scipy.stats.permutation_test``).

    Attributes
    ----------
    statistic : float
        Observed value ``T(x, y)`` (for several MMD bandwidths: the max of the standardised values).
    pvalue : float
        ``(1 + #{null_distribution >= statistic}) / (1 + n_permutations)``.
    null_distribution : np.ndarray
        ``(n_permutations,)`` statistic of each permuted split, in permutation order.
    n_permutations : int
        Number of permuted splits.
    params : dict
        Everything needed to reproduce the test (statistic, seed, block size, sizes, solver or
        kernel parameters, the diameter or bandwidths actually used).
    name : str
        The statistic's name.
    marginal_error : float or None
        ``"sinkhorn"``: the largest marginal error of the test's solves (observed and permuted);
        ``None`` for the kernel statistics.

    ``p_value`` and ``null``, the names of otpipe 0.1, still work with a ``DeprecationWarning``
    (removed in the next release).
    """

    statistic: float
    pvalue: float
    null_distribution: np.ndarray
    n_permutations: int
    params: dict = field(default_factory=dict)
    name: str = ""
    marginal_error: float | None = None

    @property
    def p_value(self) -> float:
        """Deprecated name of :attr:`pvalue`."""
        _deprecated("p_value", "pvalue")
        return self.pvalue

    @property
    def null(self) -> np.ndarray:
        """Deprecated name of :attr:`null_distribution`."""
        _deprecated("null", "null_distribution")
        return self.null_distribution

    def __repr__(self) -> str:
        err = "" if self.marginal_error is None else f", marginal_error={self.marginal_error:.2g}"
        return (
            f"TwoSampleResult(name={self.name!r}, statistic={self.statistic:.6g}, pvalue={self.pvalue:.4g}, "
            f"n_permutations={self.n_permutations}{err})"
        )


def _deprecated(old: str, new: str) -> None:
    import warnings

    warnings.warn(f"TwoSampleResult.{old} is deprecated: use .{new} (scipy.stats' name)", DeprecationWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------
# input
# --------------------------------------------------------------------------------------------


def _as_sample(v, name: str) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    try:
        arr = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of points (n, D)") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (n, D), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def seed_entropy(seed) -> list[int]:
    """The seed as a list of non-negative ints for ``numpy.random.SeedSequence``.

    Parameters
    ----------
    seed : int or sequence of int
        The test's seed (required: the test must be reproducible).

    Returns
    -------
    list of int
        The entropy of the seed sequence.

    Raises
    ------
    ValueError
        If ``seed`` is ``None``, a bool, negative, or not an int (or a sequence of them).
    """
    if seed is None:
        raise ValueError("seed is required (an int or a sequence of ints) so that the test is reproducible")
    vals = [seed] if np.isscalar(seed) else list(seed)
    out = []
    for s in vals:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"seed must be a non-negative int or a sequence of them, got {seed!r}")
        out.append(int(s))
    return out


# --------------------------------------------------------------------------------------------
# the prepared test: everything a permutation block needs (small, picklable)
# --------------------------------------------------------------------------------------------


@dataclass
class _PreparedTest:
    z: np.ndarray  # pooled sample (n + m, D), float64
    n: int
    statistic: str
    n_permutations: int
    block_size: int
    entropy: list
    params: dict
    sigmas: list = field(default_factory=list)

    @property
    def m(self) -> int:
        return self.z.shape[0] - self.n

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.n_permutations / self.block_size)


def prepare_test(x, y, *, statistic: str = "sinkhorn", n_permutations: int = 999, seed=0,
                 block_size: int = DEFAULT_BLOCK_SIZE, **loss_params) -> _PreparedTest:
    """Validate the input and fix everything the permutation blocks need (see :func:`two_sample_test`)."""
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}: use one of {', '.join(STATISTICS)}")
    x, y = _as_sample(x, "x"), _as_sample(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got D={x.shape[1]} and D={y.shape[1]}")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"each sample needs at least 2 points, got n={x.shape[0]} and m={y.shape[0]}")
    if isinstance(n_permutations, bool) or int(n_permutations) != n_permutations or n_permutations < 1:
        raise ValueError(f"n_permutations must be a positive integer, got {n_permutations!r}")
    if isinstance(block_size, bool) or int(block_size) != block_size or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    n_permutations, block_size = int(n_permutations), int(block_size)
    entropy = seed_entropy(seed)
    z = np.concatenate([x, y], axis=0)
    n, m = x.shape[0], y.shape[0]
    params: dict[str, Any] = {"statistic": statistic, "n": n, "m": m, "dim": x.shape[1], "seed": seed,
                              "block_size": block_size}
    allowed = {"sinkhorn": _SINKHORN_KEYS + ("diameter",), "mmd": _MMD_KEYS, "energy": ()}[statistic]
    unknown = sorted(set(loss_params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) for statistic={statistic!r}: {', '.join(unknown)}"
                         + (f" (accepted: {', '.join(allowed)})" if allowed else ""))
    sigmas: list = []
    if statistic == "sinkhorn":
        from otpipe.geometry.backends import choose_backend
        from otpipe.solvers.sinkhorn import SinkhornParams

        sp = dict(p=2.0, blur=0.05, reach=None, scaling=0.5, tol=None, max_iter=None, backend="auto", cost=None)
        sp.update({k: v for k, v in loss_params.items() if k in sp})
        diam = loss_params.get("diameter")
        if diam is None:
            from otpipe.geometry.boxes import bounds, box_diagonal

            diam = box_diagonal(bounds(z), 1.0)
        SinkhornParams.make(diameter=diam, **sp)  # validate now, with one clear error
        # fix the backend once (auto depends on the batch size) so values do not depend on the block
        sp["backend"] = choose_backend(sp["backend"], block_size, n, m, device="cpu")
        params.update(sp, diameter=float(diam), variant=loss_params.get("variant", "dual"),
                      debias=bool(loss_params.get("debias", True)))
    elif statistic == "mmd":
        sigma = loss_params.get("sigma", "median")
        raw = [sigma] if isinstance(sigma, (str, int, float)) else list(sigma)
        if not raw:
            raise ValueError("sigma must be 'median', a positive number or a non-empty list of them")
        med = None
        for s in raw:
            if isinstance(s, str):
                if s != "median":
                    raise ValueError(f"sigma must be 'median' or positive numbers, got {s!r}")
                if med is None:  # on the pooled sample: the same for every permutation
                    from otpipe.tools.losses import median_distance

                    med = median_distance(torch.from_numpy(z), max_points=2000, subsample="numpy", exact=True)
                sigmas.append(med)
            else:
                s = float(s)
                if not (s > 0 and math.isfinite(s)):
                    raise ValueError(f"sigma must be positive and finite, got {s}")
                sigmas.append(s)
        params.update(kernel="gaussian", sigma=sigma if isinstance(sigma, str) else raw, bandwidths=list(sigmas))
    return _PreparedTest(z, n, statistic, n_permutations, block_size, entropy, params, sigmas)


# --------------------------------------------------------------------------------------------
# statistics of a batch of splits
# --------------------------------------------------------------------------------------------


def block_permutations(prep: _PreparedTest, k: int) -> np.ndarray:
    """The permutations of block ``k``: ``(b, n + m)`` int64, from ``SeedSequence(entropy, spawn_key=(k,))``."""
    start = k * prep.block_size
    b = min(prep.block_size, prep.n_permutations - start)
    if not 0 <= k < prep.n_blocks:
        raise ValueError(f"block {k} out of range 0..{prep.n_blocks - 1}")
    rng = np.random.default_rng(np.random.SeedSequence(prep.entropy, spawn_key=(k,)))
    N = prep.z.shape[0]
    return rng.permuted(np.broadcast_to(np.arange(N), (b, N)), axis=1)


def _cdist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # exact differences (not the |x|^2 - 2xy + |y|^2 shortcut): exact zeros on the diagonal
    return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")


def _pooled_kernels(prep: _PreparedTest) -> list[torch.Tensor]:
    z = torch.from_numpy(prep.z)
    if prep.statistic == "energy":
        return [_cdist(z, z)]
    d2 = _cdist(z, z).square_()
    return [torch.exp(-d2 / (2.0 * s * s)) for s in prep.sigmas]


def _kernel_stats(prep: _PreparedTest, K: torch.Tensor, perms: np.ndarray) -> np.ndarray:
    """Kernel statistic of each split, via the indicator identities of the module docstring."""
    n, m, N = prep.n, prep.m, prep.z.shape[0]
    s = torch.zeros(perms.shape[0], N, dtype=K.dtype)
    s.scatter_(1, torch.from_numpy(np.ascontiguousarray(perms[:, :n])), 1.0)
    r = K.sum(1)
    sKs = ((s @ K) * s).sum(1)
    sK1 = s @ r
    total = r.sum()
    sxx, sxy = sKs, sK1 - sKs
    syy = total - 2.0 * sK1 + sKs
    if prep.statistic == "energy":  # V-statistic, zero diagonal
        out = 2.0 * sxy / (n * m) - sxx / n**2 - syy / m**2
    else:  # unbiased MMD^2: remove the diagonal k(z, z) of each part
        diag = torch.diagonal(K)
        dx = s @ diag
        dy = diag.sum() - dx
        out = (sxx - dx) / (n * (n - 1)) + (syy - dy) / (m * (m - 1)) - 2.0 * sxy / (n * m)
    return out.numpy()


def _sinkhorn_stats(prep: _PreparedTest, perms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``S_eps`` of each split and the marginal error of its (cross) solve."""
    import warnings

    from otpipe.tools.losses import sinkhorn_divergence

    z = torch.from_numpy(prep.z)
    idx = torch.from_numpy(np.ascontiguousarray(perms))
    xb, yb = z[idx[:, : prep.n]], z[idx[:, prep.n:]]
    pr = prep.params
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # convergence is reported per test (marginal_error)
        r = sinkhorn_divergence(
            xb, yb, p=pr["p"], blur=pr["blur"], reach=pr["reach"], diameter=pr["diameter"],
            scaling=pr["scaling"], tol=pr["tol"], max_iter=pr["max_iter"], backend=pr["backend"],
            cost=pr["cost"], debias=pr["debias"], variant=pr["variant"], full_output=True,
        )
    return (r.value.detach().cpu().numpy().astype(np.float64),
            r.marginal_error.detach().cpu().numpy().astype(np.float64))


def split_statistics(prep: _PreparedTest, perms: np.ndarray, *, errors: bool = False):
    """Raw statistic of each split ``perms (b, n + m)``: ``(b, n_bandwidths)`` for MMD, ``(b, 1)`` otherwise.

    ``errors=True``: also the largest marginal error of the splits' solves (``nan`` for kernel statistics).
    """
    perms = np.asarray(perms)
    if prep.statistic == "sinkhorn":
        val, err = _sinkhorn_stats(prep, perms)
        return (val[:, None], float(err.max())) if errors else val[:, None]
    out = np.stack([_kernel_stats(prep, K, perms) for K in _pooled_kernels(prep)], axis=1)
    return (out, math.nan) if errors else out


def run_block(prep: _PreparedTest, k: int, *, errors: bool = False):
    """Raw statistics of the permutations of block ``k`` (the unit of work of the distributed runner);
    ``errors=True``: ``(statistics, largest marginal error)``."""
    return split_statistics(prep, block_permutations(prep, k), errors=errors)


def observed(prep: _PreparedTest, *, errors: bool = False):
    """Raw statistic of the observed split (identity permutation), shape ``(n_bandwidths,)``;
    ``errors=True``: ``(statistic, marginal error)``."""
    res = split_statistics(prep, np.arange(prep.z.shape[0])[None, :], errors=errors)
    return (res[0][0], res[1]) if errors else res[0]


def finish(prep: _PreparedTest, obs: np.ndarray, blocks: Sequence[np.ndarray], marginal_error: float | None = None) -> TwoSampleResult:
    """Assemble the observed value and the blocks (in block order) into a :class:`TwoSampleResult`."""
    raw = np.concatenate(list(blocks), axis=0)
    if raw.shape[0] != prep.n_permutations:
        raise ValueError(f"expected {prep.n_permutations} permuted statistics, got {raw.shape[0]}")
    obs = np.asarray(obs, dtype=np.float64).reshape(-1)
    if raw.shape[1] == 1:
        stat, null = float(obs[0]), raw[:, 0].astype(np.float64)
    else:  # several bandwidths: standardise over observed + null (a symmetric function), then max
        allv = np.concatenate([obs[None, :], raw], axis=0)
        mu, sd = allv.mean(0), allv.std(0)
        sd = np.where(sd > 0, sd, 1.0)
        std = (allv - mu) / sd
        stat, null = float(std[0].max()), std[1:].max(1)
    p = (1.0 + float(np.count_nonzero(null >= stat))) / (1.0 + prep.n_permutations)
    params = dict(prep.params, n_permutations=prep.n_permutations)
    if prep.statistic != "sinkhorn" or marginal_error is None or not math.isfinite(marginal_error):
        marginal_error = None
    return TwoSampleResult(stat, p, null, prep.n_permutations, params, prep.statistic, marginal_error)


# --------------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------------


def two_sample_test(
    x,
    y,
    *,
    statistic: str = "sinkhorn",
    n_permutations: int = 999,
    seed=0,
    block_size: int = DEFAULT_BLOCK_SIZE,
    **loss_params,
) -> TwoSampleResult:
    """Permutation two-sample test ``H0: x ~ y`` with ``p = (1 + #{T_perm >= T_obs}) / (1 + n_permutations)``.

    Parameters
    ----------
    x, y : array-like (n, D), (m, D)
        The two samples (NumPy or torch; 1-D input is read as ``D = 1``); ``n, m >= 2``.
    statistic : {"sinkhorn", "mmd", "energy"}
        See the module docstring.
    n_permutations : int
        Number of random permutations (e.g. 999: p-values on the grid ``k / 1000``).
    seed : int or sequence of int
        Entropy of the permutations; the null sample is a function of ``(seed, block_size)``.
    block_size : int
        Permutations per batched call (and per Dask task in :mod:`otpipe.pipelines.two_sample`).
    **loss_params
        ``"sinkhorn"``: ``p, blur, reach, diameter, scaling, tol, max_iter, backend, cost, variant,
        debias`` of :func:`otpipe.sinkhorn_divergence` (``diameter`` defaults to that of the
        pooled sample). ``"mmd"``: ``sigma`` = ``"median"`` (default), a bandwidth, or a list.

    Returns
    -------
    TwoSampleResult
        ``statistic``, ``pvalue``, ``null_distribution`` (scipy's names), ``marginal_error``.
    """
    prep = prepare_test(x, y, statistic=statistic, n_permutations=n_permutations, seed=seed,
                     block_size=block_size, **loss_params)
    blocks = [run_block(prep, k, errors=True) for k in range(prep.n_blocks)]
    obs, err = observed(prep, errors=True)
    err = max([err] + [e for _, e in blocks])
    return finish(prep, obs, [b for b, _ in blocks], marginal_error=err)


# --------------------------------------------------------------------------------------------
# multiple-testing corrections
# --------------------------------------------------------------------------------------------


def _finite_sorted(p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = np.asarray(p, dtype=np.float64)
    flat = p.reshape(-1)
    ok = np.flatnonzero(np.isfinite(flat))
    if ((flat[ok] < 0) | (flat[ok] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    order = ok[np.argsort(flat[ok], kind="stable")]
    return p, flat, order


def holm(p) -> np.ndarray:
    """Holm step-down adjusted p-values: ``p~_(i) = max_{j<=i} min(1, (m - j + 1) p_(j))``.

    ``p_(1) <= ... <= p_(m)`` are the finite entries of ``p`` (any shape); NaN entries (e.g. the
    diagonal of a test matrix) are not tests and stay NaN. Rejecting ``p~ <= alpha`` controls the
    family-wise error rate at ``alpha``.

    Parameters
    ----------
    p : array_like
        p-values in ``[0, 1]``, any shape; NaN entries are not tests.

    Returns
    -------
    numpy.ndarray
        The adjusted p-values, the shape of ``p`` (NaN where ``p`` is not finite).

    Raises
    ------
    ValueError
        If a finite entry lies outside ``[0, 1]``.
    """
    p, flat, order = _finite_sorted(p)
    m = order.size
    out = np.full(flat.shape, np.nan)
    if m:
        adj = np.minimum(1.0, (m - np.arange(m)) * flat[order])
        out[order] = np.maximum.accumulate(adj)
    return out.reshape(p.shape)


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values: ``p~_(i) = min_{j>=i} min(1, m p_(j) / j)``.

    Same conventions as :func:`holm`; rejecting ``p~ <= alpha`` controls the false discovery
    rate at ``alpha`` (independent or positively dependent tests).

    Parameters
    ----------
    p : array_like
        p-values in ``[0, 1]``, any shape; NaN entries are not tests.

    Returns
    -------
    numpy.ndarray
        The adjusted p-values, the shape of ``p`` (NaN where ``p`` is not finite).

    Raises
    ------
    ValueError
        If a finite entry lies outside ``[0, 1]``.
    """
    p, flat, order = _finite_sorted(p)
    m = order.size
    out = np.full(flat.shape, np.nan)
    if m:
        adj = np.minimum(1.0, m * flat[order] / np.arange(1, m + 1))
        out[order] = np.minimum.accumulate(adj[::-1])[::-1]
    return out.reshape(p.shape)
