"""The output lock itself: one holder, named when refused; a killed holder's lock taken over with a
warning (dead PID on this host, no heartbeat from another host); never someone else's file."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from otpipe.store.locks import LockedError, lock_path, output_lock

from .conftest import held


def test_lock_file_beside_the_output_holds_a_record_and_goes_away(tmp_path):
    out = tmp_path / "r.zarr"
    with output_lock(out) as rec:
        f = tmp_path / "r.zarr.lock"
        assert lock_path(out) == f and f.is_file()
        stored = json.loads(f.read_text())
        assert stored == rec
        assert (stored["host"], stored["pid"]) == (socket.gethostname(), os.getpid())
        assert stored["path"] == str(out.resolve()) and stored["started"] and stored["command"]
        with output_lock(out):  # re-entrant in the same thread (a command, then the function it calls)
            pass
        assert f.is_file()
    assert not f.exists()
    assert lock_path(tmp_path, inside=True) == tmp_path / ".otpipe.lock"
    with output_lock(tmp_path / "new" / "folder" / "r.zarr"):  # an output in a folder still to be made
        assert (tmp_path / "new" / "folder" / "r.zarr.lock").is_file()


def test_second_process_is_refused_with_the_holder_named(tmp_path):
    out = tmp_path / "r.zarr"
    with held(out) as pid:
        with pytest.raises(LockedError) as e:
            with output_lock(out):
                pass
        msg = str(e.value)
        assert "\n" not in msg and f"pid {pid} on {socket.gethostname()}" in msg
        assert "started" in msg and "command" in msg and str(out) in msg
    with output_lock(out):  # released: free again
        pass


def test_another_thread_is_refused(tmp_path):
    out = tmp_path / "r.zarr"
    box = {}

    def other():
        try:
            with output_lock(out):
                box["got"] = True
        except LockedError as exc:
            box["err"] = str(exc)

    with output_lock(out):
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert "got" not in box and "another thread" in box["err"]


def test_lock_of_a_killed_process_is_taken_over_with_a_warning(tmp_path, caplog):
    out = tmp_path / "r.zarr"
    p = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom otpipe.store.locks import output_lock\n"
                          "with output_lock(sys.argv[1]):\n    print('in', flush=True); time.sleep(600)", str(out)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "in"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert json.loads(lock_path(out).read_text())["pid"] == p.pid  # left behind
    with caplog.at_level(logging.WARNING, logger="otpipe.lock"):
        with output_lock(out) as rec:
            assert rec["pid"] == os.getpid()
    warn = [r.getMessage() for r in caplog.records if "taking over" in r.getMessage()]
    assert len(warn) == 1 and f"pid {p.pid}" in warn[0] and "no longer running" in warn[0]


def _foreign_record(path, age: float) -> None:
    f = lock_path(path)
    f.write_text(json.dumps({"otpipe_lock": 1, "host": "elsewhere.cluster", "pid": 4242, "command": "otpipe distances",
                             "started": "2025-01-01T00:00:00+00:00", "token": "t"}))
    t = time.time() - age
    os.utime(f, (t, t))


def test_other_host_with_a_fresh_heartbeat_is_refused(tmp_path):
    out = tmp_path / "r.zarr"
    _foreign_record(out, age=5)
    with pytest.raises(LockedError, match="pid 4242 on elsewhere.cluster"):
        with output_lock(out):
            pass
    assert "elsewhere.cluster" in lock_path(out).read_text()  # untouched


def test_other_host_without_heartbeat_is_taken_over(tmp_path, caplog):
    out = tmp_path / "r.zarr"
    _foreign_record(out, age=3600)
    with caplog.at_level(logging.WARNING, logger="otpipe.lock"), output_lock(out):
        pass
    assert any("no heartbeat for" in r.getMessage() and "elsewhere.cluster" in r.getMessage() for r in caplog.records)


def test_heartbeat_keeps_a_long_run_fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("OTPIPE_LOCK_STALE_SECONDS", "1")  # heartbeat every 0.2 s
    out = tmp_path / "r.zarr"
    with output_lock(out):
        f = lock_path(out)
        os.utime(f, (0, 0))
        time.sleep(0.6)
        assert time.time() - f.stat().st_mtime < 1


def test_a_file_that_is_not_an_otpipe_lock_is_left_alone(tmp_path):
    out = tmp_path / "r.zarr"
    lock_path(out).write_text("my notes\n")
    with pytest.raises(LockedError, match="not an otpipe lock file"):
        with output_lock(out):
            pass
    assert lock_path(out).read_text() == "my notes\n"


def test_replacing_the_output_keeps_the_lock(tmp_path):
    """--overwrite renames/deletes OUT: the lock beside it stays held."""
    import shutil

    out = tmp_path / "r.zarr"
    out.mkdir()
    with output_lock(out):
        shutil.rmtree(out)
        out.mkdir()
        _assert_refused_elsewhere(out)


def _assert_refused_elsewhere(path) -> None:
    r = subprocess.run([sys.executable, "-c", "import sys\nfrom otpipe.store.locks import output_lock\n"
                        "with output_lock(sys.argv[1]): pass", str(path)], capture_output=True, text=True)
    assert r.returncode != 0 and "being written by another otpipe run" in r.stderr, r.stderr
