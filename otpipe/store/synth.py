"""Reproducible synthetic collections of measures.

Families (the label of each measure is its family):

``uniform``
    Uniform samples of the unit cube ``[0, 1]^D``.
``gaussian``
    One Gaussian blob per measure, mean uniform in ``[-2, 2]^D``, random covariance
    ``A A^T / k + 0.05 I`` with ``A`` a standard normal ``D x k`` matrix (scaled by a random
    factor in [0.2, 1]); ``k = D`` up to ``D = 256`` (sampled through the Cholesky factor), a
    rank ``k = 64`` above (sampled as ``mean + A z / sqrt(k) + sqrt(0.05) z'``, so time and
    memory grow like ``N D``, not ``D^2`` or ``D^3``).
``mixture``
    A mixture of 2 to 4 isotropic Gaussians (Dirichlet proportions, means in ``[-3, 3]^D``,
    standard deviations in ``[0.15, 0.6]``).
``circle``
    A circle of radius in ``[0.5, 1.5]`` in the first two coordinates (``D >= 2``).
``sphere``
    The sphere ``S^{D-1}`` of radius in ``[0.5, 1.5]`` (``D >= 2``; a circle when ``D = 2``).
``torus``
    A torus with radii ``R`` in ``[0.8, 1.2]``, ``r`` in ``[0.2, 0.4]`` in the first three
    coordinates (``D >= 3``), uniform angles.

Shapes get a random centre in ``[-spread, spread]^D`` (default 2) and isotropic Gaussian noise (``noise``, default 0.05).

Measure ``i`` is drawn from ``numpy.random.default_rng([seed, i])``: the same seed gives the same
measures whatever ``n_measures`` is, and generating is streaming (one measure at a time).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from otpipe.store.collection import Measure

__all__ = ["KINDS", "MIN_DIM", "resolve_kinds", "sample", "synth_measures"]

KINDS = ("uniform", "gaussian", "mixture", "circle", "sphere", "torus")
#: smallest dimension of each family
MIN_DIM = {"uniform": 1, "gaussian": 1, "mixture": 1, "circle": 2, "sphere": 2, "torus": 3}


def resolve_kinds(kinds: Sequence[str] | str, dim: int) -> list[str]:
    """Expand ``mixed`` (every family valid in ``dim``) and check the families against ``dim``.

    Parameters
    ----------
    kinds : str or sequence of str
        Family names, comma-separated strings of them, or ``mixed`` / ``all``.
    dim : int
        The dimension.

    Returns
    -------
    list of str
        The families, in order, without duplicates.

    Raises
    ------
    ValueError
        On an unknown family, a family that needs a larger ``dim``, or no family at all.
    """
    if isinstance(kinds, str):
        kinds = [kinds]
    out: list[str] = []
    for k in kinds:
        for part in str(k).split(","):
            part = part.strip()
            if not part:
                continue
            if part in ("mixed", "all"):
                out.extend(f for f in KINDS if MIN_DIM[f] <= dim)
            elif part in KINDS:
                if MIN_DIM[part] > dim:
                    raise ValueError(f"kind {part!r} needs --dim >= {MIN_DIM[part]}, got {dim}")
                out.append(part)
            else:
                raise ValueError(f"unknown kind {part!r} (choose from {', '.join(KINDS)}, mixed)")
    if not out:
        raise ValueError("no kind given")
    return list(dict.fromkeys(out))


def _shape_noise(rng: np.random.Generator, pts: np.ndarray, noise: float, spread: float = 2.0) -> np.ndarray:
    centre = rng.uniform(-2, 2, size=pts.shape[1]) * (spread / 2.0)
    return pts + centre + noise * rng.standard_normal(pts.shape)


#: largest D whose Gaussian covariance has full rank (beyond: rank _LOW_RANK)
_FULL_RANK_MAX = 256
_LOW_RANK = 64


def _low_rank_gaussian(rng: np.random.Generator, mean: np.ndarray, n: int, dim: int) -> np.ndarray:
    """``n`` draws of ``N(mean, A A^T / k + 0.05 I)``, ``A`` standard normal ``(dim, k)`` times a factor.

    ``A`` is drawn a block of columns at a time (never a ``D x D`` matrix): memory ``O(n D)``.
    """
    k = _LOW_RANK
    scale = rng.uniform(0.2, 1.0) / np.sqrt(k)
    z = rng.standard_normal((n, k))
    out = np.sqrt(0.05) * rng.standard_normal((n, dim))
    step = max(1, min(k, (1 << 22) // dim))
    for j in range(0, k, step):
        cols = rng.standard_normal((dim, min(step, k - j)))
        out += (z[:, j : j + cols.shape[1]] @ cols.T) * scale
    return out + mean


def sample(kind: str, n: int, dim: int, rng: np.random.Generator, noise: float = 0.05, spread: float = 2.0) -> np.ndarray:
    """``n`` points of family ``kind`` in ``R^dim``; centres and means in ``[-spread, spread]^dim``.

    Parameters
    ----------
    kind : str
        The family (see the module docstring).
    n : int
        Number of points.
    dim : int
        Dimension.
    rng : numpy.random.Generator
        Source of randomness.
    noise : float, default 0.05
        Standard deviation of the noise added to shapes.
    spread : float, default 2.0
        Half-width of the box of random centres.

    Returns
    -------
    numpy.ndarray
        ``(n, dim)`` float64 points.
    """
    if kind == "uniform":
        return rng.random((n, dim))
    if kind == "gaussian":
        mean = rng.uniform(-2, 2, size=dim) * (spread / 2.0)
        if dim > _FULL_RANK_MAX:
            return _low_rank_gaussian(rng, mean, n, dim)
        a = rng.standard_normal((dim, dim)) * rng.uniform(0.2, 1.0)
        cov = a @ a.T / dim + 0.05 * np.eye(dim)
        return mean + rng.standard_normal((n, dim)) @ np.linalg.cholesky(cov).T
    if kind == "mixture":
        k = int(rng.integers(2, 5))
        props = rng.dirichlet(np.ones(k))
        means = rng.uniform(-3, 3, size=(k, dim)) * (spread / 2.0)
        sds = rng.uniform(0.15, 0.6, size=k)
        comp = rng.choice(k, size=n, p=props)
        return means[comp] + sds[comp, None] * rng.standard_normal((n, dim))
    pts = np.zeros((n, dim))
    if kind == "circle":
        r = rng.uniform(0.5, 1.5)
        t = rng.uniform(0, 2 * np.pi, size=n)
        pts[:, 0], pts[:, 1] = r * np.cos(t), r * np.sin(t)
    elif kind == "sphere":
        r = rng.uniform(0.5, 1.5)
        v = rng.standard_normal((n, dim))
        pts = r * v / np.linalg.norm(v, axis=1, keepdims=True)
    elif kind == "torus":
        big, small = rng.uniform(0.8, 1.2), rng.uniform(0.2, 0.4)
        u, v = rng.uniform(0, 2 * np.pi, size=(2, n))
        pts[:, 0] = (big + small * np.cos(v)) * np.cos(u)
        pts[:, 1] = (big + small * np.cos(v)) * np.sin(u)
        pts[:, 2] = small * np.sin(v)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return _shape_noise(rng, pts, noise, spread)


def synth_measures(
    kinds: Sequence[str] | str = "mixed",
    n_measures: int = 10,
    n_points: int = 100,
    dim: int = 2,
    seed: int = 0,
    *,
    min_points: int | None = None,
    weights: str = "uniform",
    noise: float = 0.05,
    spread: float = 2.0,
) -> Iterator[Measure]:
    """Generate measures ``kind_000000, ...`` (families cycled in order), labelled by family.

    Parameters
    ----------
    kinds : str or sequence of str
        Families (see the module docstring) or ``mixed``.
    n_measures, n_points, dim, seed : int
        Collection size, points per measure, dimension, seed.
    min_points : int, optional
        If given, sizes are drawn uniformly in ``[min_points, n_points]``.
    weights : {"uniform", "random"}
        ``uniform``: ``1/N``; ``random``: uniform in [0.1, 1.1), not normalised.
    noise : float
        Standard deviation of the noise added to shapes.
    spread : float
        Half-width of the box of random centres (shapes, Gaussian means; mixture means scaled
        by ``spread / 2``); 0 centres every measure at the origin.

    Yields
    ------
    Measure
        ``n_measures`` measures, deterministic in the arguments.
    """
    if n_measures < 0 or n_points < 1 or dim < 1:
        raise ValueError(f"need n_measures >= 0, n_points >= 1, dim >= 1 (got {n_measures}, {n_points}, {dim})")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if min_points is not None and not 1 <= min_points <= n_points:
        raise ValueError(f"min_points must be in [1, n_points], got {min_points}")
    if weights not in ("uniform", "random"):
        raise ValueError(f"weights must be 'uniform' or 'random', got {weights!r}")
    fams = resolve_kinds(kinds, dim)
    for i in range(n_measures):
        kind = fams[i % len(fams)]
        rng = np.random.default_rng([int(seed), i])
        n = n_points if min_points is None else int(rng.integers(min_points, n_points + 1))
        pts = sample(kind, n, dim, rng, noise, spread)
        w = None if weights == "uniform" else rng.uniform(0.1, 1.1, size=n)
        yield Measure(pts, w, f"{kind}_{i:06d}", kind)
