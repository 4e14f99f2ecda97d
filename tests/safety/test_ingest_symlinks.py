"""Symbolic links out of the ingested folder are refused unless --follow-symlinks (issue 21, item 21).

Real links on disk, through ``otpipe.store.ingest`` and the real ``otpipe ingest`` entry point.
The file outside stands for ``/etc/passwd``: its content must never reach a store or a message.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from otpipe import store
from otpipe.store.ingest import ingest, list_sources

from ..store.conftest import run_otpipe

SECRET = "root:x:0:0:root:/root:/bin/bash"


@pytest.fixture
def tree(tmp_path):
    """``data/`` with two good files, a link inside it and a link to a file outside; ``outside/``."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "passwd").write_text(f"{SECRET}\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")
    np.savetxt(out / "far.csv", np.arange(6.0).reshape(3, 2), delimiter=",")
    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    np.savetxt(d / "a.csv", np.ones((3, 2)), delimiter=",")
    np.savetxt(d / "sub" / "b.csv", np.zeros((2, 2)) + 2, delimiter=",")
    np.savetxt(d / "sub" / "raw.dat", np.zeros((4, 2)) + 3, delimiter=",")  # not an input type itself
    os.symlink(d / "sub" / "raw.dat", d / "inside.csv")  # stays in data/: fine
    return tmp_path


def test_link_to_outside_refused_in_a_folder(tree):
    os.symlink(tree / "outside" / "passwd", tree / "data" / "notes.csv")
    r = run_otpipe("ingest", tree / "data", "--out", tree / "o.zarr")
    assert r.code == 1 and len(r.err_lines) == 1, r.err
    line = r.err_lines[0]
    assert str(tree / "data" / "notes.csv") in line and str(tree / "outside" / "passwd") in line, line
    assert "outside the folder being ingested" in line and "--follow-symlinks" in line
    assert "root:x" not in r.err and "daemon" not in r.err
    assert not (tree / "o.zarr").exists()
    r = run_otpipe("ingest", tree / "data", "--out", tree / "o.zarr", "--dry-run")  # refused before reading
    assert r.code == 1 and "--follow-symlinks" in r.err
    # with the flag the link is read: a passwd file is still no table, and only 40 characters are quoted
    r = run_otpipe("ingest", tree / "data", "--out", tree / "o.zarr", "--follow-symlinks")
    assert r.code == 1 and len(r.err_lines) == 1 and "line 2, field 1: 'daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/...'" in r.err, r.err
    assert SECRET not in r.err and "nologin" not in r.err


@pytest.mark.parametrize("how", ["file", "glob", "folder"])
def test_follow_symlinks_reads_outside_files(tree, how):
    link = tree / "data" / "far.csv"
    os.symlink(tree / "outside" / "far.csv", link)
    src = {"file": link, "glob": tree / "data" / "*.csv", "folder": tree / "data"}[how]
    with pytest.raises(ValueError, match="far.csv: symbolic link to .*outside/far.csv, outside the folder being ingested"):
        ingest([src], tree / "o.zarr")
    assert not (tree / "o.zarr").exists()
    c = ingest([src], tree / "o.zarr", follow_symlinks=True)
    np.testing.assert_array_equal(c["far"].points, np.arange(6.0).reshape(3, 2))
    r = run_otpipe("ingest", src, "--out", tree / "p.zarr", "--follow-symlinks", "-q")
    assert r.code == 0, r.err
    assert store.open(tree / "p.zarr").content_hash == c.content_hash


def test_links_inside_the_folder_are_read(tree):
    names = sorted(s.name for s in list_sources([tree / "data"]))
    assert names == ["a", "b", "inside"]
    c = ingest([tree / "data"], tree / "o.zarr")
    np.testing.assert_array_equal(c["inside"].points, np.zeros((4, 2)) + 3)
