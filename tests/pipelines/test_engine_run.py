"""The pieces of the run engine every pipeline shares: the Ctrl-C frame and its messages, the "already
complete" path, the temporary store of a run without ``out``; and pairwise on them (a run without ``out``
leaves nothing behind, a Ctrl-C names the tiles saved)."""
from __future__ import annotations

import logging
import tempfile

import pytest

from otpipe.engine import interrupt
from otpipe.engine import run as _run
from otpipe.engine.interrupt import Interrupted, interruptible, saved_message


def test_interruptible_names_what_is_saved(tmp_path):
    out = tmp_path / "r.zarr"
    with pytest.raises(Interrupted) as e:
        with interruptible(out, what="tiles", first="tile", saved=lambda: (3, 10)):
            raise KeyboardInterrupt
    msg = str(e.value)
    assert msg.startswith(f"3 of 10 tiles are saved in {out}; continue with ") and msg == saved_message(out, 3, 10, "tiles")
    with pytest.raises(Interrupted, match=r"^nothing was saved yet \(interrupted before the first tile of .*r\.zarr\)$"):
        with interruptible(out, what="tiles", first="tile", saved=lambda: None):
            raise KeyboardInterrupt
    with pytest.raises(Interrupted, match=r"^the finished work is saved in .*r\.zarr; continue with"):
        with interruptible(out, what="tiles", saved=lambda: (0, None)):
            raise KeyboardInterrupt


def test_interruptible_passes_an_inner_interrupt_and_keeps_nothing_without_out(tmp_path):
    with pytest.raises(Interrupted, match="^inner$"):
        with interruptible(tmp_path, what="tests", saved=lambda: (1, 2)):
            raise Interrupted("inner")
    with pytest.raises(KeyboardInterrupt) as e:
        with interruptible(None, what="tests", saved=lambda: (1, 2)):
            raise KeyboardInterrupt
    assert type(e.value) is KeyboardInterrupt
    with interruptible(tmp_path, what="tests", saved=lambda: (1, 2)) as g:  # no interrupt: the guard, nothing raised
        assert isinstance(g, interrupt.Guard)


def test_already_complete(tmp_path, caplog):
    log = logging.getLogger("otpipe.test")
    with caplog.at_level(logging.INFO, logger="otpipe.test"):
        assert not _run.already_complete(tmp_path, None, log)
        assert not _run.already_complete(tmp_path, {"complete": False}, log)
        assert _run.already_complete(tmp_path, {"complete": True}, log)
    assert [r.getMessage() for r in caplog.records] == [f"{tmp_path} is already complete: nothing to compute"]


def test_temporary_store(tmp_path):
    with _run.temporary_store(tmp_path / "x.zarr", prefix="otpipe-test-", name="r.zarr") as p:
        assert p == tmp_path / "x.zarr" and not _run.is_temporary(p)
    with _run.temporary_store(None, prefix="otpipe-test-", name="r.zarr") as p:
        assert p.name == "r.zarr" and p.parent.name.startswith("otpipe-test-") and p.parent.is_dir()
        assert _run.is_temporary(p)
        p.mkdir()
        (p / "data").write_text("x")
    assert not p.parent.exists() and not _run.is_temporary(p)
    with pytest.raises(RuntimeError):  # removed on an error too
        with _run.temporary_store(None, prefix="otpipe-test-", name="r.zarr") as q:
            raise RuntimeError
    assert not q.parent.exists()


def test_pairwise_without_out_leaves_no_store(client, small, tmp_path, monkeypatch):
    from otpipe.pipelines.pairwise import pairwise

    # a temporary folder of this test's own (another process's runs in the shared /tmp would count otherwise)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.warns(Warning, match="Sinkhorn solves of this run"):
        ds = pairwise(small, client=client, tile=4, progress=False)
    assert ds.divergence.shape == (11, 11) and float(ds.divergence[0, 1]) > 0  # loaded: readable after cleanup
    assert not list(tmp_path.glob("otpipe-pairwise-*"))


def test_pairwise_ctrl_c_message_and_already_complete(client, small, tmp_path, monkeypatch, caplog):
    from otpipe.pipelines.pairwise import pairwise

    out = tmp_path / "cut.zarr"
    monkeypatch.setattr(interrupt, "STOP_AFTER", 5)  # the 3 self-term chunks, then 2 of the 6 tiles
    with pytest.raises(Interrupted, match=r"^2 of 6 tiles are saved in .*cut\.zarr; continue with the same call and "
                                          r"resume=True"):
        pairwise(small, client=client, out=out, tile=4, progress=False)
    monkeypatch.setattr(interrupt, "STOP_AFTER", None)
    with pytest.warns(Warning):
        pairwise(small, client=client, out=out, tile=4, progress=False, resume=True)
    with caplog.at_level(logging.INFO, logger="otpipe.pairwise"):
        ds = pairwise(small, client=client, out=out, tile=4, progress=False, resume=True)
    assert ds.attrs["tiles_computed"] == 0 and ds.attrs["tiles_resumed"] == 6
    assert f"{out} is already complete: nothing to compute" in caplog.text
