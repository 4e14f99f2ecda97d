"""Test hooks stay out of the shipped CLI (issue 21, item 14): ``OTPIPE_STOP_AFTER=3`` in a user's
environment used to stop ``otpipe distances`` with "Interrupted"; the stop-after-K-tasks hook is now a
module attribute that only the tests set (``tests/cli_hooks.py`` for a CLI in a subprocess)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import zarr

from tests.cli_hooks import stopping_after

ARGS = ("--tile", "2", "--n-workers", "1", "--no-progress", "-q")


def _complete(out) -> bool:
    return zarr.open_group(str(out), mode="r").attrs.get("complete") is True


def test_environment_cannot_stop_a_run(small, tmp_path):
    out = tmp_path / "d.zarr"
    env = dict(os.environ, OTPIPE_STOP_AFTER="1")
    r = subprocess.run([sys.executable, "-m", "otpipe.cli", "distances", str(small), "--out", str(out), *ARGS],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and "Interrupted" not in r.stderr, r.stderr
    assert _complete(out)
    # the tests' own hook still stops the same command (exit 130, the finished tiles kept)
    cut = tmp_path / "cut.zarr"
    argv, env = stopping_after(1, "distances", str(small), "--out", str(cut), *ARGS)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 130 and "Interrupted:" in r.stderr and "--resume" in r.stderr, r.stderr
    assert not _complete(cut)


def test_no_environment_hook_in_the_package():
    root = Path(__file__).resolve().parents[2] / "otpipe"
    hits = [str(p) for p in root.rglob("*.py") if "OTPIPE_STOP_AFTER" in p.read_text()]
    assert hits == []
