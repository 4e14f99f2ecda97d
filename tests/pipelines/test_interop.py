"""Results read as plain NumPy and xarray objects: string coordinates as ``<U`` from otpipe's readers
(scikit-learn takes them; the stores keep Zarr v3's variable-length strings, which ``xr.open_zarr`` itself returns
as NumPy's StringDType), consolidated stores (``xr.open_zarr`` without a warning), no checkpoint internals,
``otpipe info`` describes them."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import xarray as xr

from otpipe.cli import main
from otpipe.pipelines.pairwise import pairwise
from otpipe.pipelines.two_sample import many_two_sample_tests


def test_distance_matrix_feeds_scikit_learn(client, small, tmp_path):
    pytest.importorskip("sklearn")
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    out = tmp_path / "d.zarr"
    ds = pairwise(small, client=client, out=out, tol=1e-3, blur=0.5, progress=False)
    y = ds.source_label.values
    assert y.dtype.kind == "U" and ds.source.values.dtype.kind == "U"
    assert list(y.astype(str)) == [f"fam{i % 3}" for i in range(11)]
    D = np.maximum(ds.divergence.values, 0.0)
    scores = cross_val_score(KNeighborsClassifier(n_neighbors=1, metric="precomputed"), D, ds.source_label.values, cv=3)
    assert np.all(np.isfinite(scores))
    assert not {"tile_done", "self_done_source", "self_done_target"} & set(ds.variables)


def test_two_sample_store_is_consolidated_and_has_plain_strings(client, small, tmp_path):
    out = tmp_path / "t.zarr"
    many_two_sample_tests(small, client=client, out=out, statistic="energy", n_permutations=19, by="label",
                          progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unconsolidated store warns on xr.open_zarr
        raw = xr.open_zarr(out)
    assert set(raw.source.values.tolist()) == {"fam0", "fam1", "fam2"}
    from otpipe.pipelines.two_sample import open_result

    assert open_result(out).source.values.dtype.kind == "U"


def test_info_describes_a_result_store(client, small, tmp_path, capsys):
    out = tmp_path / "d.zarr"
    pairwise(small, client=client, out=out, tile=4, blur=0.5, tol=1e-3, progress=False)
    capsys.readouterr()
    main(["info", str(out)])
    text = capsys.readouterr().out
    assert text.startswith(f"result      {out}  (distances)") and "divergence" in text and "11 x 11" in text
    assert "tile_done" not in text
    main(["info", str(out), "--json"])
    d = json.loads(capsys.readouterr().out)
    assert d["type"] == "distances" and d["complete"] is True and d["arrays"]["divergence"]["shape"] == [11, 11]
    assert d["parameters"]["tol"] == 1e-3
