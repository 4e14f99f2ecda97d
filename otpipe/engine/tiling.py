"""The tiling of a pairwise run: which blocks ``(I, J)`` of the matrix each Dask task computes.

The ``N x M`` matrix is cut into square blocks of ``tile`` rows and columns; one block is one
task. A symmetric run (one collection against itself) only computes blocks ``I <= J`` (and in a
diagonal block only the pairs ``i < j``); the result store mirrors them. The self terms
``OT_eps(a_i, a_i)`` are computed once per measure, in chunks of ``tile`` measures.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Tile", "Tiling", "make_tiling", "choose_tile"]

#: largest tile side chosen automatically (a tile then holds at most 4096 pairs)
MAX_AUTO_TILE = 64
#: the same for runs on GPU workers (65,536 pairs a tile: a GPU solves thousands of small pairs per launch,
#: and a task's fixed costs, reading its measures and moving them to the GPU, are paid per tile)
MAX_AUTO_TILE_GPU = 256
#: tiles per worker the automatic choice aims at (load balance vs scheduler overhead)
TILES_PER_WORKER = 12


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


def choose_tile(n_source: int, n_target: int, symmetric: bool, n_workers: int = 1, gpu: bool = False) -> int:
    """Tile side aiming at ``TILES_PER_WORKER`` tiles per worker, at most :data:`MAX_AUTO_TILE`.

    ``tile = ceil(sqrt(pairs / (TILES_PER_WORKER * workers)))``: big enough that one task is
    far more work than its scheduling, small enough to balance load and checkpoint often.

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

    Returns
    -------
    int
        The tile side, at least 1 and at most the larger collection.
    """
    pairs = n_source * (n_source - 1) / 2 if symmetric else n_source * n_target
    t = math.ceil(math.sqrt(max(pairs, 1) / (TILES_PER_WORKER * max(1, n_workers))))
    return int(min(MAX_AUTO_TILE_GPU if gpu else MAX_AUTO_TILE, max(1, t), max(n_source, n_target)))


def _chunks(n: int, t: int) -> tuple[tuple[int, int], ...]:
    return tuple((s, min(s + t, n)) for s in range(0, n, t))


def make_tiling(n_source: int, n_target: int | None = None, *, tile: int | None = None, n_workers: int = 1,
                gpu: bool = False) -> Tiling:
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
        tile = choose_tile(n_source, m, symmetric, n_workers, gpu)
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
