"""The compiled-kernel cache loads only libraries this user built there (issue 21, item 13).

A planted library is a real shared object whose constructor writes a marker file: ``dlopen`` would
run it. Before, a ``softmin-<key>.so`` planted in a cache folder writable by others was loaded (the
constructor ran). Cases: a world- or group-writable cache folder, a folder or library owned by
another user (root only: ``chown``), a library that does not match the sha256 its build recorded, a
library without a recorded hash, a symbolic link, a group-writable library.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import warnings

import pytest

from otpipe.geometry.backends import _libcache

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

NAME = "softmin-0123456789abcdef0123.so"
PLANTED = """
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen(MARKER, "w");
    if (f) { fputs("the planted constructor ran\\n", f); fclose(f); }
}
int answer(void) { return -1; }
"""
GOOD = "int answer(void) { return 42; }\n"


def _cc(source: str, out, *defines: str) -> None:
    src = f"{out}.c"
    with open(src, "w") as fh:
        fh.write(source)
    subprocess.run(["gcc", "-shared", "-fPIC", *defines, src, "-o", str(out)], check=True, capture_output=True)
    os.unlink(src)


class Builder:
    """``build(path)`` for :func:`_libcache.load`: the good library, counting its builds."""

    def __init__(self):
        self.calls = 0

    def __call__(self, out: str) -> None:
        self.calls += 1
        _cc(GOOD, out)


def _plant(tmp_path, folder, *, sidecar: bool = True, link: bool = False):
    """A library whose constructor writes ``tmp_path/MARKER``, as ``folder/NAME`` (with a matching sidecar)."""
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.so" if link else folder / NAME
    _cc(PLANTED, evil, f'-DMARKER="{marker}"')
    if link:
        os.symlink(evil, folder / NAME)
    if sidecar:
        digest = hashlib.sha256(evil.read_bytes()).hexdigest()
        (folder / (NAME + ".sha256")).write_text(f"{digest}  {NAME}\n")
    return marker


def _answer(lib: ctypes.CDLL) -> int:
    lib.answer.restype = ctypes.c_int
    return lib.answer()


def _private(tmp_path, mode=0o700):
    d = tmp_path / "cache"
    d.mkdir()
    os.chmod(d, mode)
    return d


def test_first_load_builds_records_the_hash_and_reuses_it(tmp_path):
    d = tmp_path / "new" / "cpu"
    b = Builder()
    assert _answer(_libcache.load(d, NAME, b)) == 42 and b.calls == 1
    lib, side = d / NAME, d / (NAME + ".sha256")
    assert side.read_text().split()[0] == hashlib.sha256(lib.read_bytes()).hexdigest()
    for p in (d, lib, side):
        assert os.stat(p).st_mode & 0o022 == 0 and os.stat(p).st_uid == os.geteuid()
    assert os.stat(d).st_mode & 0o777 == 0o700  # created private
    assert _answer(_libcache.load(d, NAME, b)) == 42 and b.calls == 1  # verified and reused, not rebuilt
    assert not [p for p in os.listdir(d) if p.startswith(".otpipe-build-")]  # no build folder left


@pytest.mark.parametrize("mode, why", [(0o777, "writable by every user"), (0o1777, "writable by every user"),
                                       (0o775, "writable by its group")])
def test_cache_folder_writable_by_others_is_not_used(tmp_path, mode, why):
    d = _private(tmp_path, mode)
    marker = _plant(tmp_path, d)  # with a sidecar that matches it: writable by others means anything goes
    before = sorted(os.listdir(d))
    b = Builder()
    with pytest.warns(RuntimeWarning, match=f"kernel cache {d} is {why}.*private temporary folder"):
        lib = _libcache.load(d, NAME, b)
    assert not marker.exists()
    assert _answer(lib) == 42 and b.calls == 1  # built privately
    assert sorted(os.listdir(d)) == before  # nothing written there (no lock, no library)


def test_library_that_does_not_match_its_recorded_hash_is_rebuilt(tmp_path):
    d = _private(tmp_path)
    b = Builder()
    _libcache.load(d, NAME, b)
    marker = _plant(tmp_path, d, sidecar=False)  # the library replaced, its recorded hash kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lib = _libcache.load(d, NAME, b)
    assert not marker.exists() and _answer(lib) == 42 and b.calls == 2
    assert (d / (NAME + ".sha256")).read_text().split()[0] == hashlib.sha256((d / NAME).read_bytes()).hexdigest()


@pytest.mark.parametrize("how", ["no recorded hash", "symbolic link", "group-writable library", "world-writable sidecar"])
def test_untrusted_library_files_are_rebuilt_not_loaded(tmp_path, how):
    d = _private(tmp_path)
    marker = _plant(tmp_path, d, sidecar=how != "no recorded hash", link=how == "symbolic link")
    if how == "group-writable library":
        os.chmod(d / NAME, 0o775)
    if how == "world-writable sidecar":
        os.chmod(d / (NAME + ".sha256"), 0o666)
    b = Builder()
    lib = _libcache.load(d, NAME, b)
    assert not marker.exists() and _answer(lib) == 42 and b.calls == 1
    assert not os.path.islink(d / NAME) and os.stat(d / NAME).st_mode & 0o022 == 0
    if how == "symbolic link":
        assert (tmp_path / "evil.so").exists()  # the link was replaced, its target left alone


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another user needs root")
@pytest.mark.parametrize("what", ["library", "folder"])
def test_files_of_another_user_are_not_loaded(tmp_path, what):
    d = _private(tmp_path, 0o755)
    marker = _plant(tmp_path, d)
    os.chown(d / NAME if what == "library" else d, 54321, 54321)
    b = Builder()
    if what == "folder":
        with pytest.warns(RuntimeWarning, match="owned by another user \\(uid 54321\\)"):
            lib = _libcache.load(d, NAME, b)
    else:
        lib = _libcache.load(d, NAME, b)
        assert os.stat(d / NAME).st_uid == os.geteuid()  # replaced by this user's build
    assert not marker.exists() and _answer(lib) == 42 and b.calls == 1


def test_cpu_backend_never_loads_a_planted_kernel(tmp_path, monkeypatch, capfd):
    """The issue's case end to end: OTPIPE_CACHE_DIR writable by every user, ``softmin-<key>.so`` planted."""
    from otpipe.geometry.backends import cpu

    cxx = cpu._compiler()
    if cxx is None:
        pytest.skip("no C++ compiler")
    # a quick build of the real kernels (the cache key follows the flags; -O0: seconds instead of ~15 s)
    monkeypatch.setattr(cpu, "_FLAGS", ("-O0", "-fopenmp", "-fPIC", "-shared", "-std=c++17"))
    shared = tmp_path / "shared"
    (shared / "cpu").mkdir(parents=True)
    os.chmod(shared, 0o777)
    os.chmod(shared / "cpu", 0o777)
    monkeypatch.setenv("OTPIPE_CACHE_DIR", str(shared))
    target = cpu._library_path(cxx)
    assert target.parent == shared / "cpu"
    marker = tmp_path / "MARKER"
    _cc(PLANTED, target, f'-DMARKER="{marker}"')
    (target.parent / (target.name + ".sha256")).write_text(hashlib.sha256(target.read_bytes()).hexdigest() + "\n")
    for k, v in (("_lib", None), ("_tried", False), ("_error", None)):
        monkeypatch.setattr(cpu, k, v)
    with pytest.warns(RuntimeWarning, match="writable by every user"):
        assert cpu.available(), cpu.build_error()
    assert not marker.exists()
    assert sorted(os.listdir(shared / "cpu")) == sorted([target.name, target.name + ".sha256"])
    # the build said so, in one line (a first run on a machine waits for it)
    err = capfd.readouterr().err
    assert err.count("otpipe: compiling the CPU kernels for this machine (once") == 1


def test_two_libraries_in_one_process_are_each_themselves(tmp_path):
    """Loading through ``/proc/self/fd/N`` must not hand back an earlier library loaded under the same name."""
    answers = []
    for k, value in enumerate((42, 7, 13)):
        def build(out, value=value):
            _cc(f"int answer(void) {{ return {value}; }}\n", out)

        answers.append(_answer(_libcache.load(tmp_path / f"c{k}", NAME, build)))
    assert answers == [42, 7, 13]


CONCURRENT = """
import ctypes, subprocess, sys, time
from otpipe.geometry.backends import _libcache

def build(out):
    with open(sys.argv[2], "a") as fh:
        fh.write("built\\n")
    time.sleep(0.5)  # a slow compiler: the others wait on the lock meanwhile
    src = out + ".c"
    open(src, "w").write("int answer(void) { return 42; }\\n")
    subprocess.run(["gcc", "-shared", "-fPIC", src, "-o", out], check=True)

lib = _libcache.load(sys.argv[1], "softmin-0123456789abcdef0123.so", build)
lib.answer.restype = ctypes.c_int
print(lib.answer())
"""


def test_concurrent_processes_build_once(tmp_path):
    import sys

    d, log = tmp_path / "cache", tmp_path / "builds.txt"
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(d), str(log)], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert outs == ["42"] * 3 and log.read_text() == "built\n"
