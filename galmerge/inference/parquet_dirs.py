"""Directories of Parquet files read as one catalogue (a Parquet dataset; HATS pixels).

:func:`open_parquet_dataset` opens every ``*.parquet`` file under a folder (names
starting with ``_`` or ``.`` skipped, as pyarrow.dataset does) in path order;
:func:`files_reader` is the :class:`~galmerge.inference.catalog.CatalogReader`
both it and :func:`galmerge.inference.hats_io.open_hats` return: rows are read
by row group (:class:`~galmerge.inference.catalog.RowLayout`), so a worker reads
only its own partition.

Torch-free.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from galmerge.errors import GalmergeError
from galmerge.inference.catalog import (
    CatalogReader,
    RowLayout,
    _arrow_meta,
    arrow_to_frame,
    parquet_rows,
)

__all__ = ["dataset_files", "directory_fingerprint", "files_reader", "open_parquet_dataset",
           "row_groups"]


def dataset_files(folder: Path) -> list[Path]:
    """The Parquet files of a dataset directory, in path order (``_``/``.`` names skipped)."""
    files = [f for f in folder.rglob("*.parquet") if f.is_file() and not any(
        part.startswith(("_", ".")) for part in f.relative_to(folder).parts)]
    return sorted(files, key=lambda f: f.relative_to(folder).parts)


def row_groups(path: Path) -> tuple[Any, tuple[int, ...]]:
    """``(arrow schema, row counts of the row groups)`` of a Parquet file (its footer only)."""
    import pyarrow.parquet as pq

    try:
        md = pq.read_metadata(path)
    except Exception as exc:  # pyarrow raises several kinds
        raise GalmergeError(f"{path}: cannot read as Parquet ({type(exc).__name__}: {exc})",
                            hint="remove or repair the file") from None
    return md.schema.to_arrow_schema(), tuple(md.row_group(i).num_rows
                                              for i in range(md.num_row_groups))


def open_parquet_dataset(folder: Path) -> CatalogReader:
    """A directory of Parquet files as one catalogue (files in path order)."""
    files = dataset_files(folder)
    if not files:
        raise GalmergeError(f"{folder}: directory holds no Parquet files and is not a HATS "
                            "catalogue", hint="give a catalogue file, a Parquet dataset "
                                              "directory or a HATS catalogue")
    found = [row_groups(f) for f in files]
    names = list(found[0][0].names)
    for f, (schema, _) in zip(files, found, strict=True):
        if list(schema.names) != names:
            raise GalmergeError(f"{f}: columns differ from {files[0].name} ({names[:4]}...)",
                                hint="every file of a dataset must have the same columns")
    return files_reader(folder, "parquet", files, [g for _, g in found], found[0][0],
                        whole=False)


def files_reader(folder: Path, fmt: str, files: list[Path], groups: list[tuple[int, ...]],
                 schema: Any, *, whole: bool, extra: dict[str, Any] | None = None
                 ) -> CatalogReader:
    """A :class:`CatalogReader` over several Parquet files.

    Args:
        groups: each file's row-group sizes (from the footers or ``_metadata``).
        whole: each file is one partition (HATS pixels); else its row groups are
            the blocks partitions are made of (never spanning two files).
    """
    import pyarrow as pa

    sizes = [int(sum(g)) for g in groups]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    readers = [parquet_rows(f, g) for f, g in zip(files, groups, strict=True)]

    def read(lo: int, hi: int) -> pd.DataFrame:
        i = int(np.searchsorted(starts, lo, side="right")) - 1
        while sizes[i] == 0:  # empty files hold no rows
            i += 1
        return readers[i](lo - int(starts[i]), hi - int(starts[i]))

    def gen(chunk_size: int) -> Iterator[pd.DataFrame]:
        import pyarrow.parquet as pq

        for f, size in zip(files, sizes, strict=True):
            if size == 0:
                continue
            if whole:
                yield arrow_to_frame(pq.read_table(f))
                continue
            for batch in pq.ParquetFile(f).iter_batches(batch_size=chunk_size):
                yield arrow_to_frame(pa.Table.from_batches([batch]))

    if whole:
        blocks, ends = tuple(sizes), frozenset(range(len(sizes)))
    else:
        blocks = tuple(b for g in groups for b in g)
        ends = frozenset(int(e) - 1 for e in np.cumsum([len(g) for g in groups]))
    layout = RowLayout(read, blocks=blocks, file_ends=ends, whole=whole)
    return CatalogReader(folder, fmt, list(schema.names), int(sum(sizes)), _impl=gen,
                         note=f"{len(files)} Parquet files read by row group",
                         meta=_arrow_meta(schema), layout=layout, extra=dict(extra or {}))


def directory_fingerprint(folder: Path) -> dict[str, object]:
    """Identity of a directory catalogue: its Parquet files' names, sizes and footers."""
    import pyarrow.parquet as pq

    h = hashlib.sha256()
    size = 0
    for f in dataset_files(folder):
        st = f.stat()
        size += st.st_size
        h.update(f"{f.relative_to(folder)}\0{st.st_size}\0".encode())
        try:
            h.update(str(pq.read_metadata(f).num_rows).encode())
        except Exception:  # an unreadable file still has a name and size
            h.update(b"unreadable")
    return {"size": size, "sha256_files": h.hexdigest()}
