"""The tile plan covers every pair exactly once."""
from __future__ import annotations

import math

import pytest

from otpipe.engine import tiling
from otpipe.engine.tiling import choose_tile, make_tiling, pair_seconds


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
    assert choose_tile(10_000, 10_000, True, 4) == min(tiling.MAX_AUTO_TILE, math.ceil(math.sqrt(10_000 * 9_999 / 2 / 48)))
    assert choose_tile(100_000, 100_000, True, 4) == tiling.MAX_AUTO_TILE
    with pytest.raises(ValueError, match="tile"):
        make_tiling(5, tile=0)
    with pytest.raises(ValueError, match="at least 2"):
        make_tiling(1)


def test_cost_model_grows_cheap_tiles_until_a_task_carries_its_fixed_costs():
    # 300 small measures on 2 workers: the balance rule alone gives tiles of 44 (28 tasks of ~50 ms)
    cheap = pair_seconds(32, 32, 2, 10)
    assert choose_tile(300, 300, True, 2) == 44
    t = choose_tile(300, 300, True, 2, pair_cost=cheap)
    assert t == math.ceil(math.sqrt(tiling.MIN_TASK_SECONDS / cheap)) and 44 < t < 300
    assert t * t * cheap >= tiling.MIN_TASK_SECONDS
    # never fewer than MIN_TILES_PER_WORKER tiles per worker, however cheap the pairs
    tiny = choose_tile(300, 300, True, 2, pair_cost=1e-12)
    assert tiny == math.ceil(math.sqrt(300 * 299 / 2 / (tiling.MIN_TILES_PER_WORKER * 2)))
    # expensive pairs keep the balance rule
    assert choose_tile(300, 300, True, 2, pair_cost=10.0) == 44
    # the model grows with points, dimension, temperatures and the converging mode
    assert pair_seconds(64, 32, 2, 10) > cheap and pair_seconds(32, 32, 50, 10) > cheap
    assert pair_seconds(32, 32, 2, 20) > cheap and pair_seconds(32, 32, 2, 10, converging=True) > cheap
    assert pair_seconds(32, 32, 2, 10, gpu=True) < cheap
