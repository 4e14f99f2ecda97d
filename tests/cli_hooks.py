"""Tests-only hooks for the ``otpipe`` CLI run in a subprocess (the shipped CLI reads none of them).

``python -c "from tests.cli_hooks import main; main()" K ARGS...`` runs ``otpipe ARGS...`` with
:data:`otpipe.engine.interrupt.STOP_AFTER` set to ``K``: a Ctrl-C after the ``K``-th task, as the
in-process tests get with ``monkeypatch.setattr(interrupt, "STOP_AFTER", K)``. :func:`stopping_after`
builds that command line and the environment that lets the subprocess import this module.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["main", "stopping_after"]

_ROOT = Path(__file__).resolve().parents[1]


def stopping_after(k: int, *args: str) -> tuple[list[str], dict]:
    """``(argv, env)`` of a subprocess that runs ``otpipe ARGS...`` and stops after ``k`` tasks."""
    argv = [sys.executable, "-c", "from tests.cli_hooks import main; main()", str(k), *map(str, args)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return argv, env


def main() -> None:
    from otpipe.cli import main as otpipe_main
    from otpipe.engine import interrupt

    interrupt.STOP_AFTER = int(sys.argv[1])
    sys.argv = ["otpipe", *sys.argv[2:]]  # as the console script sees them (the resume hint repeats them)
    otpipe_main(sys.argv[1:])
