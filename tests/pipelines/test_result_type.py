"""One type tag on every result store (``otpipe_result``), one reader of it (``result_type``), and the
stores written with the earlier tags (``format: otpipe.pairwise``, ``kind: otpipe.tools.two_sample``, a
barycenter collection without the tag) still recognised, opened and resumed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from otpipe.engine.result import LEGACY_TAGS, TAG, TYPES, result_type, stored_attrs, tag

pytestmark = pytest.mark.filterwarnings("ignore:the Sinkhorn solves")  # fixed schedule, small blur: not the point here


@pytest.mark.parametrize(
    "attrs, kind",
    [
        ({"otpipe_result": "distances", "complete": True}, "distances"),
        ({"otpipe_result": "two_sample"}, "two_sample"),
        ({"otpipe_result": "complexity"}, "complexity"),
        ({"otpipe_result": "barycenter", "complete": False}, "barycenter"),
        ({"otpipe_result": "barycenter", "format": "otpipe.collection", "barycenter": {"a": {}}}, "barycenter"),
        # written before the one tag
        ({"format": "otpipe.pairwise", "complete": True}, "distances"),
        ({"kind": "otpipe.tools.two_sample"}, "two_sample"),
        ({"format": "otpipe.collection", "barycenter": {"a": {}}}, "barycenter"),
        ({"format": "otpipe.collection"}, "collection"),
        ({"format": "something else"}, None),
        ({"otpipe_result": "pairwise"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_result_type(attrs, kind):
    assert result_type(attrs) == kind


def test_one_tag_per_type():
    assert TAG == "otpipe_result"
    assert TYPES == ("distances", "two_sample", "barycenter", "complexity")
    assert all(tag(t) == {TAG: t} for t in TYPES)
    assert LEGACY_TAGS == {"distances": ("format", "otpipe.pairwise"), "two_sample": ("kind", "otpipe.tools.two_sample")}
    with pytest.raises(ValueError, match="unknown result type 'pairwise'"):
        tag("pairwise")


def test_stored_attrs(tmp_path):
    assert stored_attrs(tmp_path / "none") is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "zarr.json").write_text("{not json")
    assert stored_attrs(tmp_path / "bad") is None
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "zarr.json").write_text(json.dumps({"attributes": {"otpipe_result": "complexity"}}))
    assert result_type(stored_attrs(tmp_path / "ok")) == "complexity"


def _retag_as_before(path: Path) -> None:
    """Rewrite a store's type tag the way otpipe wrote it before ``otpipe_result`` (``format`` /
    ``kind``) in its ``zarr.json``: a store of an earlier version."""
    doc = json.loads((path / "zarr.json").read_text())
    kind = doc["attributes"].pop(TAG)
    key, value = LEGACY_TAGS[kind]
    doc["attributes"][key] = value
    doc["attributes"]["otpipe_made"]["kind"] = {"distances": "pairwise"}.get(kind, kind)
    (path / "zarr.json").write_text(json.dumps(doc))


def test_new_distance_matrix_carries_one_tag(client, small, tmp_path):
    from otpipe.pipelines.pairwise import pairwise

    pairwise(small, client=client, out=tmp_path / "d.zarr", tile=4, progress=False)
    attrs = stored_attrs(tmp_path / "d.zarr")
    assert attrs[TAG] == "distances" and "format" not in attrs and "kind" not in attrs
    assert result_type(attrs) == "distances"


def test_store_written_with_the_old_tag_opens_resumes_and_reports(client, small, tmp_path):
    """A distance matrix tagged ``format: otpipe.pairwise`` (as otpipe wrote it before the one tag): opened by
    ``open_result``, recognised by ``--resume`` (already complete: nothing computed) and by ``--overwrite``,
    and reported as a distance matrix."""
    from otpipe.engine.result import open_result
    from otpipe.pipelines.pairwise import pairwise
    from otpipe.report import result_kind

    out = tmp_path / "old.zarr"
    ref = pairwise(small, client=client, out=out, tile=4, progress=False)
    _retag_as_before(out)
    attrs = stored_attrs(out)
    assert attrs["format"] == "otpipe.pairwise" and TAG not in attrs
    assert result_type(attrs) == "distances" and result_kind(out) == "distances"
    ds = open_result(out)
    np.testing.assert_array_equal(ds.divergence.values, ref.divergence.values)
    again = pairwise(small, client=client, out=out, tile=4, progress=False, resume=True)
    assert again.attrs["tiles_computed"] == 0
    np.testing.assert_array_equal(again.divergence.values, ref.divergence.values)
    new = pairwise(small, client=client, out=out, tile=4, progress=False, overwrite=True)  # ours: replaced
    np.testing.assert_array_equal(new.divergence.values, ref.divergence.values)
    assert stored_attrs(out)[TAG] == "distances"


def test_unfinished_store_with_the_old_tag_resumes(client, small, tmp_path):
    """An unfinished run tagged the old way resumes the missing tiles to the same matrix."""
    import zarr

    from otpipe.pipelines.pairwise import pairwise

    out = tmp_path / "cut.zarr"
    ref = pairwise(small, client=client, out=out, tile=4, progress=False)
    g = zarr.open_group(str(out), mode="r+", use_consolidated=False)
    g["tile_done"][1:] = False
    g.update_attributes({"complete": False})
    (out / "zarr.json").write_text(json.dumps({k: v for k, v in json.loads((out / "zarr.json").read_text()).items()
                                               if k != "consolidated_metadata"}))
    _retag_as_before(out)
    ds = pairwise(small, client=client, out=out, tile=4, progress=False, resume=True)
    assert ds.attrs["tiles_resumed"] == 1 and ds.attrs["tiles_computed"] == ds.attrs["n_tiles"] - 1
    np.testing.assert_array_equal(ds.divergence.values, ref.divergence.values)
