"""Bad input: one clear ValueError before any work."""
from __future__ import annotations

import numpy as np
import pytest

from otpipe.tools.two_sample import two_sample_test

rng = np.random.default_rng(0)
X, Y = rng.normal(size=(10, 2)), rng.normal(size=(12, 2))


@pytest.mark.parametrize(
    "x, y, kw, match",
    [
        (X, rng.normal(size=(12, 3)), {}, "same dimension"),
        (X[:1], Y, {}, "at least 2 points"),
        (X, Y[:1], {}, "at least 2 points"),
        (X, np.zeros((0, 2)), {}, "at least 2 points"),
        (X, Y, {"statistic": "wasserstein"}, "unknown statistic"),
        (X, Y, {"n_permutations": 0}, "n_permutations"),
        (X, Y, {"n_permutations": 2.5}, "n_permutations"),
        (X, Y, {"seed": -1}, "seed"),
        (X, Y, {"seed": None}, "seed"),
        (X, Y, {"statistic": "mmd", "sigma": -1.0}, "sigma"),
        (X, Y, {"statistic": "mmd", "sigma": "silverman"}, "sigma"),
        (X, Y, {"statistic": "mmd", "blur": 0.1}, "unknown parameter"),
        (X, Y, {"statistic": "sinkhorn", "blur": -0.1}, "blur"),
        (X, Y, {"statistic": "energy", "sigma": 1.0}, "unknown parameter"),
        (np.full((5, 2), np.nan), Y, {}, "NaN"),
        (np.zeros((2, 2, 2)), Y, {}, r"shape \(n, D\)"),
    ],
)
def test_bad_input_is_a_clear_error(x, y, kw, match):
    with pytest.raises(ValueError, match=match):
        two_sample_test(x, y, **{"n_permutations": 9, **kw})


def test_cli_without_out_plans_and_runs_in_memory(tmp_path, capsys):
    """``otpipe two-sample A B`` without --out: --dry-run prints the plan; a run keeps the result in memory."""
    from otpipe import store
    from otpipe.cli import main

    for name, shift in (("a", 0.0), ("b", 3.0)):
        store.create(tmp_path / f"{name}.zarr", [store.Measure(rng.normal(size=(12, 2)) + shift, None, f"m{k}", None)
                                                 for k in range(3)])
    a, b = str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")
    main(["two-sample", a, b, "--by", "collection", "--dry-run", "--statistic", "energy"])
    assert "plan: 1 test(s)" in capsys.readouterr().out
    main(["two-sample", a, b, "--by", "collection", "--statistic", "energy", "--n-permutations", "19",
          "--no-progress", "--n-workers", "1"])
    out = capsys.readouterr().out
    assert "1 test(s)" in out and "not stored (pass --out to keep it)" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr", "b.zarr"]
