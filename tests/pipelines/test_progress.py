"""Progress on stderr: plain lines every 5% (or 30 s) in logs, a tqdm bar on a terminal; the
distances command's stderr in a log has no carriage-return frames."""
from __future__ import annotations

import io

import pytest

from otpipe.cli import main
from otpipe.engine.progress import Progress, human_seconds


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_every_five_percent_without_carriage_returns():
    buf = io.StringIO()
    bar = Progress(200, desc="two-sample", unit="test", stream=buf, every_seconds=1e9, min_seconds=0)
    for _ in range(200):
        bar.update(1)
    bar.close()
    text = buf.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert len(lines) == 20  # one line per 5%: 10 of 200, 20 of 200, ..., 200 of 200
    assert lines[0].startswith("otpipe: two-sample: 10/200 tests (5%)")
    assert lines[-1].startswith("otpipe: two-sample: 200/200 tests (100%)") and "ETA" not in lines[-1]
    assert all("ETA" in ln for ln in lines[:-1])


def test_plain_lines_also_every_few_seconds_and_resumed_counts():
    buf = io.StringIO()
    bar = Progress(1000, desc="complexity", unit="cell", initial=400, stream=buf, every_seconds=0.0, min_seconds=0)
    bar.set_postfix("tiles 1/2")
    bar.update(1)
    bar.update(1)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and all(ln.endswith("tiles 1/2") for ln in lines)
    assert lines[0].startswith("otpipe: complexity: 401/1000 cells (40%)")
    assert lines[1].startswith("otpipe: complexity: 402/1000 cells (40%)")


def test_terminal_gets_a_bar_and_disabled_writes_nothing():
    term = _Terminal()
    with Progress(10, desc="distances", unit="pair", stream=term) as bar:
        bar.update(10)
    assert "\r" in term.getvalue() and "10/10" in term.getvalue()
    quiet = io.StringIO()
    with Progress(10, desc="distances", stream=quiet, enabled=False) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""


def test_at_most_one_line_a_second_plus_the_last():
    buf = io.StringIO()
    bar = Progress(50, desc="complexity", unit="cell", stream=buf)  # 50 fast cells: 2% each
    for _ in range(50):
        bar.update(1)
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("otpipe: complexity: 3/50 cells (6%)")  # the first 5% step
    assert lines[-1].startswith("otpipe: complexity: 50/50 cells (100%)") and len(lines) == 2


@pytest.mark.parametrize("s, text", [(4.2, "4.2 s"), (42, "42 s"), (185, "3 min 5 s"), (7500, "2 h 5 min"),
                                     (3 * 86400, "3.0 days")])
def test_human_seconds(s, text):
    assert human_seconds(s) == text


def test_distances_in_a_log_file_has_plain_progress_lines(client, small, tmp_path, capsys):
    out = tmp_path / "r.zarr"
    main(["distances", str(small), "--out", str(out), "--tile", "2", "--scheduler", client.scheduler.address])
    err = capsys.readouterr().err  # not a terminal: plain lines
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("otpipe: distances: ")]
    assert 1 <= len(lines) <= 21 and lines[-1].startswith("otpipe: distances: 55/55 pairs (100%)")
