"""Holm and Benjamini-Hochberg adjusted p-values against hand-computed examples (statsmodels as optional oracle)."""
from __future__ import annotations

import numpy as np
import pytest

from otpipe.tools.two_sample import benjamini_hochberg, holm

P = np.array([0.01, 0.04, 0.03, 0.005])
# sorted: 0.005, 0.01, 0.03, 0.04 (m = 4)
# Holm: 4*0.005=0.02, 3*0.01=0.03, 2*0.03=0.06, 1*0.04=0.04 -> running max 0.02, 0.03, 0.06, 0.06
HOLM = np.array([0.03, 0.06, 0.06, 0.02])
# BH: 4/1*0.005=0.02, 4/2*0.01=0.02, 4/3*0.03=0.04, 4/4*0.04=0.04 -> running min from the top: same
BH = np.array([0.02, 0.04, 0.04, 0.02])


def test_hand_computed():
    np.testing.assert_allclose(holm(P), HOLM)
    np.testing.assert_allclose(benjamini_hochberg(P), BH)


def test_second_example_with_capping_and_monotonicity():
    p = np.array([0.2, 0.5, 0.01, 0.6])
    # sorted 0.01, 0.2, 0.5, 0.6; Holm: 0.04, 0.6, 1.0, 0.6 -> 0.04, 0.6, 1, 1
    np.testing.assert_allclose(holm(p), [0.6, 1.0, 0.04, 1.0])
    # BH: 0.04, 0.4, 0.6667, 0.6 -> min from top: 0.04, 0.4, 0.6, 0.6
    np.testing.assert_allclose(benjamini_hochberg(p), [0.4, 0.6, 0.04, 0.6])


def test_nan_entries_are_not_tests_and_shape_is_kept():
    m = np.array([[np.nan, 0.01, 0.04], [0.01, np.nan, 0.03], [0.04, 0.03, np.nan]])
    m[np.tril_indices(3, -1)] = np.nan  # three tests: 0.01, 0.04, 0.03
    h = holm(m)
    assert h.shape == (3, 3) and np.isnan(h[0, 0]) and np.isnan(h[1, 0])
    np.testing.assert_allclose([h[0, 1], h[1, 2], h[0, 2]], [0.03, 0.06, 0.06])
    b = benjamini_hochberg(m)
    np.testing.assert_allclose([b[0, 1], b[1, 2], b[0, 2]], [0.03, 0.04, 0.04])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.5, 1.5])


def test_against_statsmodels():
    mt = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(0).uniform(size=57) ** 2
    np.testing.assert_allclose(holm(p), mt.multipletests(p, method="holm")[1])
    np.testing.assert_allclose(benjamini_hochberg(p), mt.multipletests(p, method="fdr_bh")[1])
