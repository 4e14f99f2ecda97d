"""Stale temporaries: the next writer of an output removes what otpipe left there, and nothing else."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

from otpipe.store.tmp import STALE_AGE, remove_stale, tmp_sibling


def _made_by_dead_process(tmp_path, target: str) -> str:
    """A temporary store made by a real process that then exited (its pid is gone)."""
    code = (
        "import sys; from otpipe.store.tmp import tmp_sibling; "
        f"p = tmp_sibling({str(tmp_path / target)!r}); p.mkdir(); (p / 'zarr.json').write_text('{{}}'); print(p)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return r.stdout.strip()


def _old(p):
    t = time.time() - STALE_AGE - 60
    for root, dirs, files in os.walk(p):
        for f in dirs + files:
            os.utime(os.path.join(root, f), (t, t))
    os.utime(p, (t, t))


def test_only_otpipe_temporaries_of_gone_processes_are_removed(tmp_path, cli):
    dead = _made_by_dead_process(tmp_path, "out.zarr")
    mine = tmp_sibling(tmp_path / "out.zarr")  # this process: alive
    mine.mkdir()
    (mine / "zarr.json").write_text("{}")
    legacy_old = tmp_path / ".out.zarr.tmp-0123456789ab"  # an earlier version's name, untouched for long
    legacy_old.mkdir()
    (legacy_old / "zarr.json").write_text("{}")
    _old(legacy_old)
    legacy_new = tmp_path / ".out.zarr.tmp-abcdef012345"  # recent: it may be a running old version's
    legacy_new.mkdir()
    (legacy_new / "zarr.json").write_text("{}")
    not_store = tmp_path / (os.path.basename(dead)[:-8] + "00000000")  # our pattern, but not a store
    not_store.mkdir()
    (not_store / "notes.txt").write_text("keep")
    other_output = _made_by_dead_process(tmp_path, "other.zarr")
    user = tmp_path / ".out.zarr.tmp-mine"
    user.mkdir()
    (user / "zarr.json").write_text("{}")
    link = tmp_path / ".out.zarr.tmp-fedcba987654"
    os.symlink(legacy_old, link)

    src = tmp_path / "in"
    src.mkdir()
    np.save(src / "a.npy", np.ones((3, 2)))
    r = cli("ingest", src, "--out", tmp_path / "out.zarr")
    assert r.code == 0, r.err
    assert not os.path.exists(dead) and not legacy_old.exists()
    for keep in (mine, legacy_new, not_store, other_output, user, link):
        assert os.path.lexists(keep), keep
    assert (not_store / "notes.txt").read_text() == "keep"
    assert remove_stale(tmp_path / "out.zarr") == []  # nothing more to remove


def test_remove_stale_returns_what_it_removed(tmp_path):
    dead = _made_by_dead_process(tmp_path, "res.zarr")
    assert remove_stale(tmp_path / "res.zarr") == [tmp_path / os.path.basename(dead)]
    name = tmp_sibling(tmp_path / "res.zarr").name
    assert name.startswith(".res.zarr.tmp-") and str(os.getpid()) in name
