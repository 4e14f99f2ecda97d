"""Calibration under the null: rejection rate at alpha = 0.05 over 200 repetitions in [0.02, 0.08].

Both samples are 20 points of one 2-D Gaussian; 99 permutations (p-values on the grid k/100, so
P(p <= 0.05) = 0.05 exactly under exchangeability). Seeds fixed in advance (not tuned).
"""
from __future__ import annotations

import numpy as np
import pytest

from otpipe.tools.two_sample import two_sample_test

REPS, N, D, ALPHA = 200, 20, 2, 0.05
PARAMS = {"energy": {}, "mmd": {}, "sinkhorn": {"blur": 0.5}}


@pytest.mark.parametrize("statistic", ["energy", "mmd", "sinkhorn"])
def test_null_rejection_rate(statistic):
    rng = np.random.default_rng(20240607)
    p = np.empty(REPS)
    for r in range(REPS):
        x, y = rng.normal(size=(N, D)), rng.normal(size=(N, D))
        p[r] = two_sample_test(x, y, statistic=statistic, n_permutations=99, seed=r, **PARAMS[statistic]).pvalue
    rate = float(np.mean(p <= ALPHA))
    print(f"{statistic}: null rejection rate {rate:.3f} over {REPS} repetitions")
    assert 0.02 <= rate <= 0.08
    # and the p-values look uniform: mean near 1/2 (sd of the mean of U(0,1) over 200: 0.02)
    assert abs(p.mean() - 0.5) < 0.1
