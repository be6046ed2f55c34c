"""Where a text table's rows start: any row range of a CSV read by seeking (issue 15).

:func:`build_line_index` scans an uncompressed text table once, 1 MiB at a time, and
keeps the byte offset of every :data:`ROWS_PER_MARK`-th row: 24,000 integers for 10^8
rows, whatever the file's size. :meth:`LineIndex.byte_range` then turns rows
``lo .. hi-1`` into a byte range aligned to line ends, so that a Dask worker reads its
own partition of a CSV catalogue with one seek and one read of about its own size
(at most ``ROWS_PER_MARK - 1`` rows more).

A row is a line only when no field can hold a line end and no line is blank, so there
is no index (None: the table is read front to back) when the data hold a quote
character, a blank or whitespace-only line (pandas skips those) or a bare CR line end. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

__all__ = ["ROWS_PER_MARK", "LineIndex", "build_line_index", "data_start", "skip_lines"]

#: Rows between two recorded offsets.
ROWS_PER_MARK = 4096
_BLOCK = 1 << 20  # 1 MiB read at a time (and a 4 MiB int32 running count)
_NL = 10
_BLANK = np.array([9, 10, 13, 32], dtype=np.uint8)  # tab, LF, CR, space


@dataclass(frozen=True)
class LineIndex:
    """Byte offsets of a text table's rows.

    Attributes:
        marks: int64 offset of row ``j * ROWS_PER_MARK`` for every j (``marks[0]`` is
            the first data row).
        end: offset one past the last row (the file's size).
        n_rows: data rows.
    """

    marks: np.ndarray
    end: int
    n_rows: int

    def byte_range(self, lo: int, hi: int) -> tuple[int, int, int]:
        """(first byte, end byte, rows to drop at the front) that hold rows ``lo .. hi-1``."""
        lo, hi = max(0, lo), min(hi, self.n_rows)
        if lo >= hi:
            return self.end, self.end, 0
        first = lo // ROWS_PER_MARK
        stop = -(-hi // ROWS_PER_MARK)
        end = int(self.marks[stop]) if stop < len(self.marks) else self.end
        return int(self.marks[first]), end, lo - first * ROWS_PER_MARK


def skip_lines(fh: IO[bytes], lines: int) -> None:
    """Move ``fh`` just past its next ``lines`` non-blank lines (comments and the header)."""
    done = 0
    while done < lines:
        line = fh.readline()
        if not line:
            break
        if line.strip():
            done += 1


def data_start(path: Path, lines: int) -> int:
    """Offset just after the first ``lines`` non-blank lines of an uncompressed file."""
    with path.open("rb") as fh:
        skip_lines(fh, lines)
        return fh.tell()


def build_line_index(path: Path, start: int) -> LineIndex | None:
    """The :class:`LineIndex` of the rows from byte ``start`` on, or None when a row need
    not be a line (see the module doc)."""
    marks = [start]
    newlines = crs = crlfs = 0
    last = b"\n"  # the byte before the block: ``start`` follows a line end
    open_line = False  # the line running into the block has a non-blank byte
    pos = start
    with path.open("rb") as fh:
        fh.seek(start)
        for block in iter(lambda: fh.read(_BLOCK), b""):
            if b'"' in block:
                return None  # a quoted field may hold a line end
            crs += block.count(b"\r")
            crlfs += (last + block).count(b"\r\n")
            a = np.frombuffer(block, dtype=np.uint8)
            nl = np.flatnonzero(a == _NL)
            filled = np.cumsum(~np.isin(a, _BLANK), dtype=np.int32)  # non-blank bytes so far
            if nl.size:
                per_line = np.diff(np.r_[0, filled[nl]])  # non-blank bytes of each line
                if (per_line[0] == 0 and not open_line) or (per_line[1:] == 0).any():
                    return None  # pandas skips a blank (or whitespace-only) line
                open_line = bool(filled[-1] > filled[nl[-1]])
            else:
                open_line = open_line or bool(filled[-1] > 0)
            # row j * ROWS_PER_MARK starts after line end number j * ROWS_PER_MARK (1-based)
            first = -(newlines + 1) % ROWS_PER_MARK
            marks.extend((pos + nl[first::ROWS_PER_MARK] + 1).tolist())
            newlines += nl.size
            last = block[-1:]
            pos += len(block)
    if crs != crlfs:
        return None  # a bare CR ends a line for pandas but not here
    while marks and marks[-1] >= pos:
        marks.pop()  # a mark at the end of the file starts no row
    return LineIndex(np.asarray(marks, dtype=np.int64), pos, newlines + int(open_line))
