"""The tile plan covers every pair exactly once."""
from __future__ import annotations

import pytest

from otpipe.engine.tiling import choose_tile, make_tiling


@pytest.mark.parametrize("n,tile", [(2, 1), (7, 3), (10, 10), (13, 4), (64, None)])
def test_symmetric_cover(n, tile):
    pl = make_tiling(n, tile=tile)
    seen = [p for t in pl.tiles for p in t.pairs()]
    assert sorted(seen) == [(i, j) for i in range(n) for j in range(i + 1, n)]
    assert pl.n_pairs == n * (n - 1) // 2
    # every diagonal entry is covered by a diagonal block (written as 0)
    cov = {(i, i) for t in pl.tiles if t.diagonal for i in range(t.r0, t.r1)}
    assert cov == {(i, i) for i in range(n)}


@pytest.mark.parametrize("n,m,tile", [(1, 1, 1), (5, 9, 2), (12, 3, 5)])
def test_cross_cover(n, m, tile):
    pl = make_tiling(n, m, tile=tile)
    seen = sorted(p for t in pl.tiles for p in t.pairs())
    assert seen == [(i, j) for i in range(n) for j in range(m)]
    assert pl.summary()["self_terms"] == n + m


def test_auto_tile_and_errors():
    assert choose_tile(200, 200, True, 2) == 29  # ceil(sqrt(19900 / 24))
    assert choose_tile(10_000, 10_000, True, 4) == 64
    with pytest.raises(ValueError, match="tile"):
        make_tiling(5, tile=0)
    with pytest.raises(ValueError, match="at least 2"):
        make_tiling(1)
