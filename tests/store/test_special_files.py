"""Ingest reads regular files only; odd file names and oversized files get one-line errors naming them.

FIFOs and ``/dev/zero`` are tried in a subprocess with a timeout and a memory cap, so that a
regression fails the test instead of hanging the suite or exhausting the machine.
"""
from __future__ import annotations

import hashlib
import os
import resource
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from otpipe import store

from .conftest import CliResult

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX special files")


def _snapshot(path: Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def _capped(*args, cwd=None) -> CliResult:
    """``python -m otpipe.cli ARGS`` with 60 s and 4 GiB of address space at most."""

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    env = dict(os.environ)
    env.pop("OTPIPE_DEBUG", None)
    r = subprocess.run(
        [sys.executable, "-m", "otpipe.cli", *map(str, args)], capture_output=True, text=True, timeout=60,
        preexec_fn=cap, cwd=cwd, env=env,
    )
    return CliResult(r.returncode, r.stdout, r.stderr)


def _good(d: Path, n: int = 2) -> None:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        np.save(d / f"g{k}.npy", rng.random((10, 3)).astype(np.float32))


@pytest.fixture
def existing(tmp_path, cli):
    """An existing collection that every failed ingest below must leave untouched (also with --append)."""
    _good(tmp_path / "ok")
    out = tmp_path / "have.zarr"
    assert cli("ingest", tmp_path / "ok", "--out", out).code == 0
    return out


def _special(d: Path, kind: str) -> tuple[Path, str]:
    d.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        p = d / "pipe.csv"
        os.mkfifo(p)
        return p, "not a regular file: a FIFO (named pipe)"
    if kind == "zero":
        p = d / "zero.csv"
        os.symlink("/dev/zero", p)
        return p, "not a regular file: a character device, via a symbolic link to /dev/zero"
    if kind == "socket":
        p = d / "sock.xyz"
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(p))
        s.close()
        return p, "not a regular file: a socket"
    if kind == "broken":
        p = d / "gone.npy"
        os.symlink(d / "nowhere.npy", p)
        return p, "broken symbolic link"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["fifo", "zero", "socket", "broken"])
@pytest.mark.parametrize("where", ["folder", "argument"])
def test_special_file_one_line_error(tmp_path, existing, kind, where):
    if kind == "zero" and not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    src = tmp_path / "src"
    _good(src)
    bad, msg = _special(src, kind)
    before = _snapshot(existing)
    for out, extra in ((tmp_path / "new.zarr", []), (existing, ["--append"])):
        r = _capped("ingest", src if where == "folder" else bad, "--out", out, *extra)
        assert r.code == 1, r.err
        assert len(r.err_lines) == 1 and r.err_lines[0].startswith("Error: "), r.err
        assert str(bad) in r.err and msg in r.err, r.err
        assert "no such file or directory" not in r.err or kind == "broken"
    assert not (tmp_path / "new.zarr").exists()
    assert _snapshot(existing) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_special_files_of_unknown_type_are_skipped(tmp_path, cli):
    """A FIFO or socket without an input extension is never opened: the folder ingests fine."""
    src = tmp_path / "src"
    _good(src)
    os.mkfifo(src / "control.fifo")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(src / "daemon.sock"))
    s.close()
    r = cli("ingest", src, "--out", tmp_path / "o.zarr")
    assert r.code == 0, r.err
    assert sorted(store.open(tmp_path / "o.zarr").names) == ["g0", "g1"]


def test_non_utf8_file_name_is_ingested_with_escaped_name(tmp_path, cli):
    src = tmp_path / "src"
    _good(src)
    raw = os.fsencode(src) + b"/bad\xff.csv"
    with open(raw, "w") as fh:
        fh.write("1,2,3\n4,5,6\n")
    r = cli("ingest", src, "--out", tmp_path / "o.zarr")
    assert r.code == 0, r.err
    c = store.open(tmp_path / "o.zarr")
    assert sorted(c.names) == ["bad\\xff", "g0", "g1"]  # a literal backslash: the documented escape
    np.testing.assert_array_equal(c["bad\\xff"].points, [[1, 2, 3], [4, 5, 6]])
    # a bad file with such a name: the error names it with the byte escaped, on one line
    with open(raw, "w") as fh:
        fh.write("1,2,3\n4,x,6\n")
    r = cli("ingest", src, "--out", tmp_path / "o2.zarr")
    assert r.code == 1 and len(r.err_lines) == 1
    assert f"{src}/bad\\xff.csv: cannot read as csv" in r.err, r.err
    assert not (tmp_path / "o2.zarr").exists()


def test_labels_from_non_utf8_directory_names(tmp_path, cli):
    src = tmp_path / "src"
    _good(Path(os.fsdecode(os.fsencode(src) + b"/caf\xe9")))
    _good(src / "plain", n=1)
    (src / "plain" / "g0.npy").rename(src / "plain" / "p0.npy")
    r = cli("ingest", src, "--out", tmp_path / "o.zarr", "--labels", "parent")
    assert r.code == 0, r.err
    c = store.open(tmp_path / "o.zarr")
    assert dict(zip(c.names, c.labels)) == {"g0": "caf\\xe9", "g1": "caf\\xe9", "p0": "plain"}


@pytest.mark.parametrize("name", ["new\nline.csv", "esc\x1b[31mred.csv", "bell\x07.csv"])
def test_control_characters_in_names_are_escaped_in_errors(tmp_path, cli, name):
    src = tmp_path / "src"
    src.mkdir()
    (src / name).write_text("1,2\n3,x\n")
    r = cli("ingest", src, "--out", tmp_path / "o.zarr")
    assert r.code == 1 and len(r.err_lines) == 1, r.err
    assert "\x1b" not in r.err and "\x07" not in r.err
    shown = name.replace("\n", "\\n").replace("\x1b", "\\x1b").replace("\x07", "\\x07")
    assert f"{src}/{shown}: cannot read as csv" in r.err, r.err


@pytest.mark.parametrize("fmt", ["npy", "npz", "csv", "png"])
def test_files_beyond_the_memory_limit_are_refused_before_reading(tmp_path, cli, monkeypatch, fmt):
    """The need is estimated from the header (npy, npz, image) or size (text) before reading."""
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    big = src / f"big.{fmt}"
    if fmt == "npy":
        np.save(big, np.zeros((20000, 3)))  # 480 kB
    elif fmt == "npz":  # a zip bomb in miniature: 4.8 MB of zeros compress to a few kB
        with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            with zf.open("points.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.zeros((200000, 3)))
        assert big.stat().st_size < 100_000
    elif fmt == "csv":
        big.write_text("1,2,3\n" * 50000)
    else:
        Image.fromarray(np.full((300, 300), 7, dtype=np.uint8), mode="L").save(big)
    monkeypatch.setenv("OTPIPE_MAX_READ_BYTES", "200000")
    r = cli("ingest", src, "--out", tmp_path / "o.zarr")
    assert r.code == 1 and len(r.err_lines) == 1, r.err
    assert str(big) in r.err and "of memory to read" in r.err and "OTPIPE_MAX_READ_BYTES" in r.err, r.err
    assert not (tmp_path / "o.zarr").exists()
    monkeypatch.setenv("OTPIPE_MAX_READ_BYTES", "1e9")
    assert cli("ingest", src, "--out", tmp_path / "o.zarr").code == 0


SHADOW = "root:$6$Sup3rS3cretHash$abcdef:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"


@pytest.mark.parametrize(
    "content,why",
    [
        (SHADOW, "has no 'label' and no 'file' (or 'path'/'name') column"),
        ("file,kind\nSup3rS3cret.npy,x\n", "has no 'label' column"),
        ("label,Sup3rS3cret\nx,y\n", "has no 'file' (or 'path'/'name') column"),
        (b"file,label\n\xffSup3rS3cret,x\n", "not UTF-8 text"),
        ("file,label\ng0.npy,Sup3r\x00S3cret\n", "the 'label' field has control characters"),
    ],
)
def test_manifest_errors_never_echo_the_file(tmp_path, cli, existing, content, why):
    _good(tmp_path / "in")
    man = tmp_path / "manifest"
    (man.write_bytes if isinstance(content, bytes) else man.write_text)(content)
    before = _snapshot(existing)
    for out, extra in ((tmp_path / "o.zarr", []), (existing, ["--append"])):
        r = cli("ingest", tmp_path / "in", "--out", out, "--manifest", man, *extra)
        assert r.code == 1 and len(r.err_lines) == 1, r.err
        assert f"{man}: not a valid manifest" in r.err and why in r.err, r.err
        assert "Sup3r" not in r.err and "S3cret" not in r.err and "daemon" not in r.err
    assert _snapshot(existing) == before and not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_manifest_must_be_a_regular_file(tmp_path, kind):
    _good(tmp_path / "in")
    man, msg = _special(tmp_path / "m", kind)
    r = _capped("ingest", tmp_path / "in", "--out", tmp_path / "o.zarr", "--manifest", man)
    assert r.code == 1 and len(r.err_lines) == 1 and str(man) in r.err and msg in r.err, r.err
    assert not (tmp_path / "o.zarr").exists()
