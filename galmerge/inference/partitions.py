"""Partitions: a catalogue cut into row ranges that any process can read by itself.

The client of a Dask run plans the partitions (:func:`plan_partitions`) from the
reader's :class:`~galmerge.inference.catalog.RowLayout` and sends each task only
a :class:`Partition` (part number, first row, end row, HEALPix pixel): a few
dozen bytes, whatever the catalogue's size. The worker opens the catalogue
itself (:func:`open_input`, once per process) and reads its rows
(:func:`read_partition`). The local runner reads the same partitions, so part
``k`` holds the same rows in both.

=====================  ==================================================
catalogue              partition
=====================  ==================================================
Parquet file           consecutive row groups, up to the chunk size (a
                       larger row group is cut into chunk-size pieces; each
                       piece decodes its whole row group, so write
                       survey-size Parquet with row groups of about the
                       chunk size)
Parquet dataset (dir)  the same per file; a partition never spans files
HATS catalogue (dir)   one pixel file (HEALPix order, pixel)
FITS, HDF5             ``chunk_size`` rows (byte ranges, h5py slices)
CSV, TSV               ``chunk_size`` rows, read as a byte range aligned to
                       line ends (uncompressed, no quote character, no blank
                       line: galmerge.inference.line_index)
anything else          none: rows are read front to back and sent
=====================  ==================================================

Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from galmerge.errors import GalmergeError
from galmerge.inference.catalog import CatalogReader, open_catalog
from galmerge.inference.hats_io import is_hats_dir, open_hats
from galmerge.inference.parquet_dirs import directory_fingerprint, open_parquet_dataset

__all__ = ["Partition", "UnreadablePartition", "directory_fingerprint", "input_fingerprint",
           "is_directory_input", "open_input", "partition_chunks", "plan_partitions",
           "read_partition", "read_partition_safely"]


@dataclass(frozen=True)
class Partition:
    """Rows ``start .. stop-1`` of the catalogue, classified into part file ``k``.

    Attributes:
        k: part number (order of the output).
        start: first row (global row number, as in a local run).
        stop: one past the last row.
        pixel: ``(order, pixel)`` of a HATS partition, else None.
    """

    k: int
    start: int
    stop: int
    pixel: tuple[int, int] | None = None

    @property
    def rows(self) -> int:
        """Rows in this partition."""
        return self.stop - self.start


def is_directory_input(path: str | Path) -> bool:
    """A catalogue given as a directory (HATS catalogue or Parquet dataset)."""
    return Path(path).is_dir()


def open_input(path: str | Path, fmt: str | None = None) -> CatalogReader:
    """Open a catalogue file (:func:`open_catalog`) or directory (HATS, Parquet dataset)."""
    p = Path(path)
    if not p.is_dir():
        return open_catalog(p, fmt)
    if is_hats_dir(p):
        return open_hats(p)
    return open_parquet_dataset(p)


def plan_partitions(reader: CatalogReader, chunk_size: int, limit: int | None = None
                    ) -> list[Partition] | None:
    """The partitions of ``reader`` (see the module docstring), or None without a layout."""
    layout = reader.layout
    if layout is None or reader.n_rows is None:
        return None
    n = reader.n_rows if limit is None else min(reader.n_rows, limit)
    pixels = reader.extra.get("pixels")
    if layout.blocks is None:
        return [Partition(k, s, min(s + chunk_size, n))
                for k, s in enumerate(range(0, n, chunk_size))]
    parts: list[Partition] = []
    start = pos = 0
    for b, size in enumerate(layout.blocks):
        if pos >= n:
            break
        if size > chunk_size and not layout.whole:  # a big row group: chunk_size pieces
            end = min(pos + size, n)
            parts += [Partition(len(parts) + i, s, min(s + chunk_size, end))
                      for i, s in enumerate(range(pos, end, chunk_size))]
            start = pos = end
            continue
        pos = min(pos + size, n)
        nxt = layout.blocks[b + 1] if b + 1 < len(layout.blocks) else 0
        if (layout.whole or b in layout.file_ends or pos >= n
                or pos - start + nxt > chunk_size):
            pix = tuple(pixels[b]) if pixels is not None and layout.whole else None
            if pos > start:
                parts.append(Partition(len(parts), start, pos, pix))  # type: ignore[arg-type]
            start = pos
    return parts


@dataclass(frozen=True)
class UnreadablePartition:
    """A partition whose rows cannot be read (a broken file): its rows get a status.

    Attributes:
        part: the partition.
        columns: the catalogue's columns (the rows are written with null values).
        message: what went wrong, naming the file and the rows.
    """

    part: Partition
    columns: tuple[str, ...]
    message: str

    def __len__(self) -> int:
        return self.part.rows


#: What reading a partition may raise for a reason that will not go away.
READ_ERRORS: tuple[type[BaseException], ...] = (GalmergeError, OSError, ValueError)


def read_partition(reader: CatalogReader, part: Partition) -> pd.DataFrame:
    """The rows of ``part``, exactly as the local run reads them."""
    frame = reader.read_rows(part.start, part.stop)
    if len(frame) != part.rows:
        raise GalmergeError(f"{reader.path}: rows {part.start}..{part.stop - 1} hold "
                            f"{len(frame)} rows, the catalogue's metadata says {part.rows}")
    return frame


def read_partition_safely(reader: CatalogReader, part: Partition
                          ) -> pd.DataFrame | UnreadablePartition:
    """:func:`read_partition`, or an :class:`UnreadablePartition` when the file is broken."""
    try:
        return read_partition(reader, part)
    except READ_ERRORS as exc:
        text = " ".join(str(exc).split())[:300]
        where = f"HEALPix pixel {part.pixel[0]}/{part.pixel[1]}, " if part.pixel else ""
        return UnreadablePartition(part, tuple(reader.columns),
                                   f"partition {part.k} ({where}rows {part.start}.."
                                   f"{part.stop - 1}) unreadable: {text}")


def partition_chunks(reader: CatalogReader, plan: list[Partition]
                     ) -> Iterator[tuple[int, pd.DataFrame | UnreadablePartition]]:
    """``(start_row, rows)`` for every partition of ``plan``, in order (the local runner)."""
    for part in plan:
        yield part.start, read_partition_safely(reader, part)


def input_fingerprint(path: Path, file_fingerprint: Callable[[Path], dict[str, Any]]
                      ) -> dict[str, Any]:
    """A directory's :func:`directory_fingerprint`, else ``file_fingerprint(path)``."""
    return directory_fingerprint(path) if path.is_dir() else file_fingerprint(path)
