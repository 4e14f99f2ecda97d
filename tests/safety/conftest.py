"""Fixtures of the safety tests: real collections on disk, a lock holder in another process, and
in-process CLI calls that return ``(exit code, stderr)``."""
from __future__ import annotations

import contextlib
import logging
import subprocess
import sys

import pytest

from ..pipelines.conftest import make_measures

HOLD = """
import sys
from otpipe.store.locks import output_lock
with output_lock(sys.argv[1], inside=sys.argv[2] == "inside") as rec:
    print(rec["pid"], flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def held(path, inside: bool = False):
    """Another process holds the lock of ``path`` for the ``with`` block; yields its PID."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), "inside" if inside else "beside"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.strip().isdigit(), p.stderr.read()
        yield int(line)
    finally:
        p.stdin.close()
        p.wait(30)


@pytest.fixture
def cli(capsys):
    """``cli(*args) -> (exit code, stderr)``: ``otpipe ARGS`` in this process."""
    from otpipe.cli import main

    def run(*args):
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code
        finally:
            lg = logging.getLogger("otpipe")  # its handler holds this test's captured stderr
            for h in [h for h in lg.handlers if getattr(h, "_otpipe", False)]:
                lg.removeHandler(h)
        return code, capsys.readouterr().err

    return run


@pytest.fixture(scope="session")
def medium(tmp_path_factory):
    """16 measures of 60..100 points in 3-D (36 tiles of size 2), float64."""
    from otpipe import store

    p = tmp_path_factory.mktemp("coll") / "medium.zarr"
    store.create(p, make_measures(16, (60, 100), 3, seed=3), dtype="float64")
    return p


@pytest.fixture(scope="session")
def small(tmp_path_factory):
    """9 labelled measures of 15..30 points in 2-D."""
    from otpipe import store

    p = tmp_path_factory.mktemp("coll") / "small.zarr"
    store.create(p, make_measures(9, (15, 30), 2, seed=1), dtype="float64")
    return p
