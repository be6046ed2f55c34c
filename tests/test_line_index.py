"""CSV rows read by byte range (galmerge.inference.line_index, issue 15) are exactly the
rows the streaming reader gives, and tables where a row need not be a line have no index."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from galmerge.inference import line_index
from galmerge.inference.catalog import open_catalog


def _table(n: int, *, crlf: bool = False, final_newline: bool = True, comments: int = 0,
           trailing: bool = False, short_every: int = 0) -> bytes:
    end = "\r\n" if crlf else "\n"
    lines = [f"# comment {i}" for i in range(comments)] + ["objid,ra,dec,note"]
    for i in range(n):
        row = f"{10**17 + i},{i * 0.5:.6f},-{i % 90}.25,n{i}"
        if short_every and i % short_every == 3:
            row = f"{10**17 + i},{i * 0.5:.6f}"  # a short row: missing fields become ""
        lines.append(row + ("," if trailing else ""))
    text = end.join(lines) + (end if final_newline else "")
    return text.encode()


CASES = {
    "plain": {}, "crlf": {"crlf": True}, "no final newline": {"final_newline": False},
    "comment lines": {"comments": 3}, "trailing delimiter": {"trailing": True},
    "short rows": {"short_every": 5},
}


@pytest.mark.parametrize("case", CASES)
def test_byte_range_rows_are_the_streamed_rows(tmp_path: Path, case: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(line_index, "ROWS_PER_MARK", 7)  # many marks in a small file
    path = tmp_path / "cat.csv"
    path.write_bytes(_table(50, **CASES[case]))
    reader = open_catalog(path)
    assert reader.layout is not None and reader.n_rows == 50
    streamed = pd.concat([f for _, f in reader.chunks(9)], ignore_index=True)
    assert len(streamed) == 50
    for lo, hi in [(0, 50), (0, 1), (6, 7), (7, 8), (3, 19), (14, 21), (49, 50), (40, 60)]:
        got = reader.read_rows(lo, hi)
        pd.testing.assert_frame_equal(got, streamed.iloc[lo:hi].reset_index(drop=True))


def test_marks_and_byte_ranges_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                       ) -> None:
    monkeypatch.setattr(line_index, "ROWS_PER_MARK", 2)
    path = tmp_path / "t.csv"
    path.write_bytes(b"a,b\n1,2\n3,4\n5,6\n7,8\n9,0\n")
    start = line_index.data_start(path, 1)
    idx = line_index.build_line_index(path, start)
    assert start == 4 and idx is not None and idx.n_rows == 5
    assert idx.marks.tolist() == [4, 12, 20] and idx.end == 24
    assert idx.byte_range(1, 3) == (4, 20, 1)   # rows 0-3 read, the first dropped
    assert idx.byte_range(4, 9) == (20, 24, 0)  # clipped to the table
    assert idx.byte_range(5, 6) == (24, 24, 0)  # nothing left


@pytest.mark.parametrize("text", [
    b'a,b\n1,"x, y"\n2,3\n',          # a quoted field may hold a line end
    b"a,b\n1,2\n\n3,4\n",              # a blank line is skipped by pandas, not a row
    b"a,b\n1,2\r\n\r\n3,4\r\n",        # the same with CRLF
    b"a,b\n1,2\r3,4\n",                # a bare CR ends a line for pandas
    b"a,b\n1,2\n  \t\n3,4\n",          # pandas skips a whitespace-only line too
    b"a,b\n\n1,2\n",                  # a blank line right after the header
])
def test_no_index_where_a_row_need_not_be_a_line(tmp_path: Path, text: bytes) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(text)
    reader = open_catalog(path)
    assert reader.layout is None  # read front to back, as before
    assert len(pd.concat([f for _, f in reader.chunks(10)])) >= 1


def test_a_whitespace_tail_is_no_row(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"a,b\n1,2\n3,4\n  ")  # pandas skips the last, blank "line"
    reader = open_catalog(path)
    assert reader.layout is not None and reader.n_rows == 2
    assert reader.read_rows(0, 5)["a"].tolist() == ["1", "3"]


def test_compressed_csv_has_no_index(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(_table(20)))
    reader = open_catalog(path)
    assert reader.layout is None and reader.n_rows is None
    assert sum(len(f) for _, f in reader.chunks(7)) == 20
