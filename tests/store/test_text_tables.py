"""Text tables (csv/txt/xyz): byte-order marks, header detection, rows that do not parse (issue 21, items 2, 19, 21).

Every case is a real file written as bytes, read through ``read_file`` and through ``otpipe ingest``.
"""
from __future__ import annotations

import numpy as np
import pytest

from otpipe import store
from otpipe.store.readers import ReaderOptions, read_file

from .conftest import run_otpipe


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "data",
    [
        b"\xef\xbb\xbf1,2\r\n3,4\r\n5,6\r\n",  # Excel's "CSV UTF-8": BOM and CRLF
        b"\xef\xbb\xbf1,2\n3,4\n5,6",
        b"\xef\xbb\xbf1\t2\n3\t4\n5\t6\n",
        b"\xef\xbb\xbf# comment\n1 2\n3 4\n5 6\n",
    ],
)
def test_bom_keeps_the_first_row(tmp_path, cli, data):
    f = _write(tmp_path / "bom.csv", data)
    notes: list[str] = []
    pts, w = read_file(f, notes=notes)
    np.testing.assert_array_equal(pts, [[1, 2], [3, 4], [5, 6]])
    assert w is None and notes == []
    r = cli("ingest", f, "--out", tmp_path / "bom.zarr")
    assert r.code == 0, r.err
    assert store.open(tmp_path / "bom.zarr").n_points == 3
    assert "header" not in r.out


def test_header_is_recognised_and_reported(tmp_path, cli):
    f = _write(tmp_path / "h.csv", b"\xef\xbb\xbfx,y,w\r\n1,2,0.5\r\n3,4,1.5\r\n")
    notes: list[str] = []
    pts, w = read_file(f, options=ReaderOptions(weight_column="w"), notes=notes)
    np.testing.assert_array_equal(pts, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(w, [0.5, 1.5])
    assert notes == ["line 1 read as a header: 'x', 'y', 'w'"]
    r = cli("ingest", f, "--out", tmp_path / "h.zarr", "--weight-column", "w")
    assert r.code == 0, r.err
    assert "h.csv: line 1 read as a header: 'x', 'y', 'w'" in r.out
    c = store.open(tmp_path / "h.zarr")
    assert c.n_points == 2 and c.dim == 2
    r = cli("ingest", f, "--out", tmp_path / "j.zarr", "--json")
    assert r.code == 0 and '"notes": ["' in r.out and "read as a header" in r.out


@pytest.mark.parametrize(
    "data, where",
    [
        (b'"1,5",2\n3,4\n', "line 1, field 1: '1,5' is not a number"),  # a quoted decimal comma
        (b"NA,2\n3,4\n5,6\n", "line 1, field 1: 'NA' is a missing value"),
        (b"NA\n1\n2\n", "line 1, field 1: 'NA' is a missing value"),
        (b"x,2\n3,4\n", "line 1, field 1: 'x' is not a number"),
        (b"x,,y\n1,2,3\n", "line 1, field 2: '' is a missing value"),
        (b"1,2\nNA,4\n5,6\n", "line 2, field 1: 'NA' is a missing value"),
        (b"# c\n\n1,2\n3,4\n5,x\n", "line 5, field 2: 'x' is not a number"),
        (b"1,2\n3,4,5\n", "line 2 has 3 fields, line 1 has 2"),
        (b"x,y,z\n1,2\n3,4\n", "line 1 (the header) has 3 fields, the data lines 2"),
        (b"1_0,2\n3,4\n", "line 1, field 1: '1_0' is not a number"),
    ],
)
def test_rows_that_do_not_parse_are_refused_with_their_line(tmp_path, cli, data, where):
    f = _write(tmp_path / "bad.csv", data)
    with pytest.raises(ValueError) as e:
        read_file(f)
    assert str(e.value).startswith(f"{f}: cannot read as csv: "), e.value
    assert where in str(e.value), e.value
    r = cli("ingest", f, "--out", tmp_path / "bad.zarr")
    assert r.code == 1 and len(r.err_lines) == 1 and where in r.err, r.err
    assert not (tmp_path / "bad.zarr").exists()


def test_one_word_file_is_not_an_empty_measure(tmp_path):
    f = _write(tmp_path / "host.txt", b"buildhost-01\n")
    with pytest.raises(ValueError) as e:
        read_file(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}: cannot read as csv: no rows of numbers: line 1 ('buildhost-01')"), msg
    assert "empty measure" not in msg
    # a header and nothing else says the same; a file of comments only is an empty measure
    with pytest.raises(ValueError, match="no rows of numbers: line 2 \\('x', 'y'\\)"):
        read_file(_write(tmp_path / "h.csv", b"# c\nx,y\n"))
    with pytest.raises(ValueError, match="empty measure"):
        read_file(_write(tmp_path / "c.csv", b"# only a comment\n\n"))
    r = run_otpipe("ingest", f, "--out", tmp_path / "o.zarr")
    assert r.code == 1 and len(r.err_lines) == 1 and str(f) in r.err and "line 1" in r.err, r.err


def test_errors_quote_at_most_40_characters_of_one_field(tmp_path):
    secret = "root:x:0:0:root:/root:/bin/bash:" + "S" * 100
    f = _write(tmp_path / "p.csv", f"1 2\n{secret} tail-of-the-line\n".encode())
    with pytest.raises(ValueError) as e:
        read_file(f)
    msg = str(e.value)
    assert f"line 2, field 1: '{secret[:40]}...' is not a number" in msg, msg
    assert secret[:41] not in msg and "tail-of-the-line" not in msg
    # a header line is quoted the same way in the notes
    long = "n" * 100
    notes: list[str] = []
    read_file(_write(tmp_path / "h.csv", f"{long},y\n1,2\n".encode()), notes=notes)
    assert notes == [f"line 1 read as a header: '{'n' * 40}...', 'y'"]
    # control characters in a quoted field stay escaped (one line)
    with pytest.raises(ValueError) as e:
        read_file(_write(tmp_path / "c.csv", b"1,2\n\x1b[2J,3\n"))
    assert "\x1b" not in str(e.value) and "\\x1b[2J" in str(e.value)


def test_whitespace_and_quoted_tables_still_read(tmp_path):
    pts, _ = read_file(_write(tmp_path / "a.xyz", b"  1 2 3\n4 5 6  # c\n"))
    np.testing.assert_array_equal(pts, [[1, 2, 3], [4, 5, 6]])
    notes: list[str] = []
    pts, _ = read_file(_write(tmp_path / "q.csv", b'"x","y"\n"1","2.5"\n3,-4e2\n'), notes=notes)
    np.testing.assert_array_equal(pts, [[1, 2.5], [3, -400]])
    assert notes == ["line 1 read as a header: 'x', 'y'"]
