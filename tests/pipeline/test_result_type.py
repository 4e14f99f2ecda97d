"""One reader of the result-store type tags: every tag written so far maps to one type."""
from __future__ import annotations

import json

import pytest

from otpipe.engine.result import TAGS, result_type, stored_attrs


@pytest.mark.parametrize(
    "attrs, kind",
    [
        ({"format": "otpipe.pairwise", "complete": True}, "pairwise"),
        ({"kind": "otpipe.tools.two_sample"}, "two_sample"),
        ({"otpipe_result": "complexity"}, "complexity"),
        ({"otpipe_result": "barycenter", "complete": False}, "barycenter"),
        ({"format": "otpipe.collection"}, "collection"),
        ({"format": "otpipe.collection", "barycenter": {"a": {}}}, "barycenters"),
        ({"format": "something else"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_result_type(attrs, kind):
    assert result_type(attrs) == kind


def test_tags_are_the_attributes_written():
    assert TAGS["pairwise"] == ("format", "otpipe.pairwise")
    assert TAGS["two_sample"] == ("kind", "otpipe.tools.two_sample")
    assert TAGS["complexity"] == ("otpipe_result", "complexity")


def test_stored_attrs(tmp_path):
    assert stored_attrs(tmp_path / "none") is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "zarr.json").write_text("{not json")
    assert stored_attrs(tmp_path / "bad") is None
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "zarr.json").write_text(json.dumps({"attributes": {"otpipe_result": "complexity"}}))
    assert result_type(stored_attrs(tmp_path / "ok")) == "complexity"
