"""The tiling of a pairwise run: which blocks ``(I, J)`` of the matrix each Dask task computes.

The ``N x M`` matrix is cut into square blocks of ``tile`` rows and columns; one block is one
task. A symmetric run (one collection against itself) only computes blocks ``I <= J`` (and in a
diagonal block only the pairs ``i < j``); the result store mirrors them. The self terms
``OT_eps(a_i, a_i)`` are computed once per measure, in chunks of ``tile`` measures.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Tile", "Tiling", "make_tiling", "choose_tile", "pair_seconds", "MIN_TASK_SECONDS"]

#: largest tile side chosen automatically (a tile then holds at most 65,536 pairs; its arrays ~2 MiB)
MAX_AUTO_TILE = 256
#: the same for runs on GPU workers (65,536 pairs a tile: a GPU solves thousands of small pairs per launch,
#: and a task's fixed costs, reading its measures and moving them to the GPU, are paid per tile)
MAX_AUTO_TILE_GPU = 256
#: tiles per worker the automatic choice aims at (load balance vs scheduler overhead)
TILES_PER_WORKER = 12
#: compute a task should carry by the cost model (:func:`pair_seconds`): its fixed costs (scheduling, reading
#: its measures, the client writing its block: 9 Zarr writes, 15-25 ms on 2 cores, taken from the workers' cores
#: on a local cluster) then stay around a tenth of it. Measured on 300 digits (2 workers): tiles of 44 (fixed
#: count rule, 28 tasks of ~50 ms) left the run 1.7x its compute; tiles of 77 (10 tasks) 1.2x
MIN_TASK_SECONDS = 0.15
#: the cost model never makes fewer tiles than this per worker (load balance)
MIN_TILES_PER_WORKER = 2
#: cost model: seconds per point-pair evaluation of one soft-min (the fused CPU loop on 30-60-point problems:
#: 0.96 G evaluations/s on one EPYC core, float64; float32 is slightly faster) and on a GPU (the Triton kernels'
#: large-problem rate, 1.7e12/s on an H200, counted at a tenth for small problems)
CPU_EVAL_SECONDS = 1.0e-9
GPU_EVAL_SECONDS = 6e-12
#: updates per temperature assumed for the converging mode (the fixed schedule makes one)
CONVERGING_UPDATES = 8


def pair_seconds(n_mean: float, m_mean: float, dim: int, temperatures: int, *, converging: bool = False,
                 gpu: bool = False) -> float:
    """Cost model of one pair's solve: ``2 (K + 2) n m`` soft-min evaluations plus the ``n m D`` distances.

    Parameters
    ----------
    n_mean, m_mean : float
        Mean points of the source and target measures (the total over pairs is ``sum n_i m_j``).
    dim : int
        Dimension of the points.
    temperatures : int
        Temperatures of the eps-scaling (``K``).
    converging : bool, default False
        A solve to a tolerance: :data:`CONVERGING_UPDATES` updates per temperature assumed.
    gpu : bool, default False
        GPU workers (:data:`GPU_EVAL_SECONDS` instead of :data:`CPU_EVAL_SECONDS`).

    Returns
    -------
    float
        Estimated seconds per pair (for tile sizing only: a factor of 2 either way changes little).
    """
    updates = (temperatures + 2) * (CONVERGING_UPDATES if converging else 1)
    evals = n_mean * m_mean * (2.0 * updates + dim)
    return evals * (GPU_EVAL_SECONDS if gpu else CPU_EVAL_SECONDS)


@dataclass(frozen=True)
class Tile:
    """One block of the matrix: rows ``r0:r1`` (source) and columns ``c0:c1`` (target).

    Parameters
    ----------
    index : int
        Position of the tile in the tiling.
    r0 : int
        First source row.
    r1 : int
        End (exclusive) of the source rows.
    c0 : int
        First target column.
    c1 : int
        End (exclusive) of the target columns.
    diagonal : bool, default False
        A diagonal block of a symmetric run (rows == columns): only the pairs ``i < j`` are solved.
    """

    index: int
    r0: int
    r1: int
    c0: int
    c1: int
    diagonal: bool = False  # symmetric run, rows == columns: only pairs i < j are solved

    @property
    def n_pairs(self) -> int:
        """Pairs solved in this tile."""
        n, m = self.r1 - self.r0, self.c1 - self.c0
        return n * (n - 1) // 2 if self.diagonal else n * m

    def pairs(self) -> list[tuple[int, int]]:
        """The ``(i, j)`` positions solved, row-major.

        Returns
        -------
        list of tuple of int
            ``n_pairs`` positions (``i < j`` only in a diagonal tile).
        """
        return [
            (i, j)
            for i in range(self.r0, self.r1)
            for j in range(self.c0, self.c1)
            if not self.diagonal or i < j
        ]


@dataclass(frozen=True)
class Tiling:
    """All the work of a run (see the module docstring).

    Parameters
    ----------
    n_source : int
        Measures of the source collection (rows).
    n_target : int
        Measures of the target collection (columns; ``n_source`` for a symmetric run).
    symmetric : bool
        One collection against itself: only blocks ``I <= J`` are computed.
    tile : int
        Side of the square tiles.
    tiles : tuple of Tile
        The tiles, one task each.
    self_chunks_source : tuple of tuple of int
        ``(start, end)`` ranges of source measures whose self terms one task computes.
    self_chunks_target : tuple of tuple of int
        The same for the target measures (empty for a symmetric run).
    """

    n_source: int
    n_target: int
    symmetric: bool
    tile: int
    tiles: tuple[Tile, ...]
    self_chunks_source: tuple[tuple[int, int], ...]
    self_chunks_target: tuple[tuple[int, int], ...]

    @property
    def n_pairs(self) -> int:
        """Pairs solved (``N(N-1)/2`` for a symmetric run, ``N M`` otherwise)."""
        return sum(t.n_pairs for t in self.tiles)

    @property
    def n_self(self) -> int:
        """Self terms solved (one per distinct measure)."""
        return self.n_source + (0 if self.symmetric else self.n_target)

    def summary(self, self_terms: bool = True) -> dict:
        """Counts for ``--dry-run``: pairs, tiles, solves, and the solves pair-by-pair would need.

        Parameters
        ----------
        self_terms : bool, default True
            Whether the run solves self terms (the debiased divergences do).

        Returns
        -------
        dict
            ``source``, ``target``, ``symmetric``, ``tile``, ``tiles``, ``pairs``, ``self_terms``, ``self_tasks``,
            ``solves`` and ``solves_pair_by_pair`` (three solves a pair with self terms).
        """
        solves = self.n_pairs + (self.n_self if self_terms else 0)
        return {
            "source": self.n_source,
            "target": self.n_target,
            "symmetric": self.symmetric,
            "tile": self.tile,
            "tiles": len(self.tiles),
            "pairs": self.n_pairs,
            "self_terms": self.n_self if self_terms else 0,
            "self_tasks": len(self.self_chunks_source) + len(self.self_chunks_target) if self_terms else 0,
            "solves": solves,
            "solves_pair_by_pair": 3 * self.n_pairs if self_terms else self.n_pairs,
        }


def choose_tile(n_source: int, n_target: int, symmetric: bool, n_workers: int = 1, gpu: bool = False,
                pair_cost: float | None = None) -> int:
    """Tile side: ``TILES_PER_WORKER`` tiles per worker, grown until a task carries :data:`MIN_TASK_SECONDS`.

    ``tile = ceil(sqrt(pairs / (TILES_PER_WORKER * workers)))`` balances the load; with a cost model
    (``pair_cost`` seconds a pair, :func:`pair_seconds`) the side grows to ``ceil(sqrt(MIN_TASK_SECONDS /
    pair_cost))`` so that a task's fixed costs stay small, but not beyond :data:`MIN_TILES_PER_WORKER` tiles per
    worker. At most :data:`MAX_AUTO_TILE` (:data:`MAX_AUTO_TILE_GPU` on GPU workers).

    Parameters
    ----------
    n_source : int
        Source measures.
    n_target : int
        Target measures.
    symmetric : bool
        A symmetric run (``N (N - 1) / 2`` pairs).
    n_workers : int, default 1
        Workers of the cluster.
    gpu : bool, default False
        GPU workers: at most :data:`MAX_AUTO_TILE_GPU` instead.
    pair_cost : float or None, default None
        Estimated seconds per pair; ``None``: the balance rule alone.

    Returns
    -------
    int
        The tile side, at least 1 and at most the larger collection.
    """
    pairs = max(n_source * (n_source - 1) / 2 if symmetric else n_source * n_target, 1)
    workers = max(1, n_workers)
    t = math.ceil(math.sqrt(pairs / (TILES_PER_WORKER * workers)))
    if pair_cost is not None and pair_cost > 0:
        grown = math.ceil(math.sqrt(MIN_TASK_SECONDS / pair_cost))
        balance = math.ceil(math.sqrt(pairs / (MIN_TILES_PER_WORKER * workers)))
        t = max(t, min(grown, balance))
    return int(min(MAX_AUTO_TILE_GPU if gpu else MAX_AUTO_TILE, max(1, t), max(n_source, n_target)))


def _chunks(n: int, t: int) -> tuple[tuple[int, int], ...]:
    return tuple((s, min(s + t, n)) for s in range(0, n, t))


def make_tiling(n_source: int, n_target: int | None = None, *, tile: int | None = None, n_workers: int = 1,
                gpu: bool = False, pair_cost: float | None = None) -> Tiling:
    """Cut the matrix into tiles.

    Parameters
    ----------
    n_source : int
        Source measures.
    n_target : int or None, default None
        Target measures; ``None``: a symmetric run (one collection against itself).
    tile : int or None, default None
        Tile side; ``None``: :func:`choose_tile`.
    n_workers : int, default 1
        Workers of the cluster (for the automatic tile).
    gpu : bool, default False
        GPU workers (larger automatic tiles).
    pair_cost : float or None, default None
        Estimated seconds per pair (:func:`pair_seconds`) for the automatic tile.

    Returns
    -------
    Tiling
        The tiles and the self-term chunks.

    Raises
    ------
    ValueError
        Empty collections, a symmetric run of fewer than 2 measures, or a tile size below 1.
    """
    symmetric = n_target is None
    m = n_source if symmetric else n_target
    if n_source < 1 or m < 1:
        raise ValueError(f"nothing to compute: collections of {n_source} and {m} measures")
    if symmetric and n_source < 2:
        raise ValueError("a symmetric run needs at least 2 measures")
    if tile is None:
        tile = choose_tile(n_source, m, symmetric, n_workers, gpu, pair_cost)
    elif int(tile) != tile or tile < 1:
        raise ValueError(f"tile must be a positive integer, got {tile!r}")
    tile = int(tile)
    rows, cols = _chunks(n_source, tile), _chunks(m, tile)
    tiles = []
    for bi, (r0, r1) in enumerate(rows):
        for bj, (c0, c1) in enumerate(cols):
            if symmetric and bj < bi:
                continue
            diag = symmetric and bi == bj  # (a 1x1 diagonal block solves nothing but writes S_ii = 0)
            tiles.append(Tile(len(tiles), r0, r1, c0, c1, diag))
    return Tiling(
        n_source=n_source,
        n_target=m,
        symmetric=symmetric,
        tile=tile,
        tiles=tuple(tiles),
        self_chunks_source=rows,
        self_chunks_target=() if symmetric else cols,
    )
