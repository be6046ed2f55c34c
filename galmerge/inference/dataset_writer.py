"""Partitioned output: the run's part files become a Parquet dataset (or a HATS catalogue).

``classify --output DIR/`` (a path ending in ``/``; an existing directory or, for a
directory catalogue, any path without a file extension other than ``.parquet``) writes
no single file: each partition's part
file — written by whichever process classified it, local or a Dask worker — is
one file of the dataset, so nothing is assembled on the client.
:func:`finish_dataset` then

1. casts the few parts whose column types differ (a column all null in one
   partition) to the unified schema, so every file has the same schema;
2. writes ``_common_metadata`` (schema + run metadata under the key
   ``galmerge``, as a single Parquet output has it) and, up to
   :data:`SUMMARY_MAX_PARTS` parts, ``_metadata`` (every part's footer: ~11 KB of
   client memory per part while it is built, so a survey-size run of more parts
   writes none and readers list the directory, as ``dask.dataframe.to_parquet``
   does by default; the run metadata says which) — or, for a HATS input, moves
   the parts to their pixel paths and writes the HATS metadata
   (:func:`galmerge.inference.hats_io.write_hats`);
3. renames the finished folder into place (a previous galmerge output there is
   replaced; anything else is refused before the run starts).

Only footers and the ``status``/``is_merger`` columns are read on the client.
Duplicate ids are not marked in a dataset (that needs every id in one place):
``duplicate_ids`` is ``null`` in its metadata. Torch-free.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from galmerge.errors import GalmergeError
from galmerge.inference.cutouts import OK, STATUSES, WholeRunError
from galmerge.inference.hats_io import HATS_FORMAT, is_hats_dir, write_hats
from galmerge.inference.paths import _inside
from galmerge.inference.writers import AssemblyResult, _cast_part, _unify

__all__ = ["DATASET_FORMAT", "check_dataset_output", "check_dataset_spares_inputs",
           "default_dataset_output", "finish_dataset", "is_dataset_output"]

#: The output ``format`` of a partitioned Parquet output.
DATASET_FORMAT = "parquet-dataset"
METADATA_FILES = ("_metadata", "_common_metadata")
#: Most parts a ``_metadata`` summary is written for (its footers cost the client
#: ~11 KB each in memory: ~11 MiB at this size, issue 15).
SUMMARY_MAX_PARTS = 1024
#: Rows per batch when the client counts the parts' statuses.
COUNT_BATCH = 65536


def is_dataset_output(output: str | Path | None, catalog: Path) -> bool:
    """Whether ``output`` names a dataset directory (see the module docstring)."""
    if output is None:
        return catalog.is_dir()
    text = str(output)
    if text.endswith(("/", os.sep)):
        return True
    dataset_like = Path(text).suffix.lower() in ("", ".parquet", ".pq", ".hats")
    # an existing folder named like a file (out.csv/) stays an error: check_output says so
    return dataset_like and (Path(text).is_dir() or catalog.is_dir())


def default_dataset_output(catalog: Path) -> Path:
    """``<catalogue>_scores`` beside a directory catalogue."""
    return catalog.with_name(catalog.name.rstrip("/") + "_scores")


def _is_galmerge_dataset(folder: Path) -> bool:
    import pyarrow.parquet as pq

    for common in (folder / "_common_metadata", folder / "dataset" / "_common_metadata"):
        if common.is_file():
            with contextlib.suppress(Exception):
                return b"galmerge" in (pq.read_schema(common).metadata or {})
    return False


def check_dataset_output(out: Path) -> None:
    """Fail early (one line) when the dataset ``out`` cannot be written or would replace data."""
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise GalmergeError(f"{out}: output folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise GalmergeError(f"{out}: output folder {parent} is not writable")
    if out.exists() and not out.is_dir():
        raise GalmergeError(f"{out}: exists and is not a directory",
                            hint="give a new directory for a partitioned output")
    if out.is_dir() and any(out.iterdir()) and not _is_galmerge_dataset(out):
        raise GalmergeError(f"{out}: directory exists and is not a galmerge output; it is "
                            "never replaced", hint="give a new or empty directory")


def check_dataset_spares_inputs(out: Path, inputs: list[tuple[str, Path]]) -> None:
    """Refuse an output directory that is, or holds, a file or folder the run reads."""
    for what, src in inputs:
        if _inside(src, out) or _inside(out, src):
            raise WholeRunError(f"{out}: the output directory would replace the {what} {src} "
                                "that this run reads", hint="choose another --output")


def _counts(parts: list[Path]) -> tuple[int, dict[str, int], int]:
    """Rows, rows per status and mergers of the parts: two columns read per part in
    batches of :data:`COUNT_BATCH` rows and counted in Arrow, so that the client's memory
    does not grow with the size of a part (issue 15)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rows, merger = 0, 0
    counts: dict[str, int] = {}
    for p in parts:
        with pq.ParquetFile(p, buffer_size=1 << 20) as f:
            for batch in f.iter_batches(batch_size=COUNT_BATCH, columns=["status", "is_merger"]):
                rows += batch.num_rows
                for item in pc.value_counts(batch.column("status")).to_pylist():
                    k = str(item["values"])
                    counts[k] = counts.get(k, 0) + int(item["counts"])
                merger += int(pc.sum(pc.fill_null(batch.column("is_merger"), False)).as_py()
                              or 0)
    ordered = {s: counts.get(s, 0) for s in (*STATUSES, *sorted(set(counts) - set(STATUSES)))
               if counts.get(s, 0) or s in STATUSES}
    return rows, ordered, merger


def _unified_schema(parts: list[Path]) -> Any:
    """One schema for every part; parts that differ are cast to it (rewritten atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = [pq.read_schema(p).remove_metadata() for p in parts]
    names = list(schemas[0].names)
    types = {n: [s.field(n).type for s in schemas if n in s.names] for n in names}
    schema = pa.schema([pa.field(n, _unify(types[n])) for n in names])
    for p, s in zip(parts, schemas, strict=True):
        if not s.equals(schema):
            tmp = p.with_name(f".{p.name}.{os.getpid()}.cast")
            pq.write_table(_cast_part(pq.read_table(p), schema), tmp, compression="zstd")
            os.replace(tmp, p)
    return schema


def _write_dataset_metadata(folder: Path, parts: list[Path], schema: Any,
                            meta: dict[str, Any]) -> None:
    """``_common_metadata`` (schema + run metadata) and, up to :data:`SUMMARY_MAX_PARTS`
    parts, ``_metadata`` (every footer).

    The footers are appended one by one to a single summary (what
    ``pyarrow.parquet.write_metadata`` does with a ``metadata_collector``, without holding
    every part's metadata object at once: ~30 KB each in memory, issue 15)."""
    import pyarrow.parquet as pq

    summary_file = len(parts) <= SUMMARY_MAX_PARTS
    meta = {**meta, "summary_file": "_metadata" if summary_file else
            f"none: {len(parts)} parts > {SUMMARY_MAX_PARTS} (list the directory)"}
    full = schema.with_metadata({"galmerge": json.dumps(meta, sort_keys=True)})
    pq.write_metadata(full, folder / "_common_metadata")
    if not summary_file:
        return
    summary = pq.read_metadata(folder / "_common_metadata")
    for p in parts:
        md = pq.read_metadata(p)
        md.set_file_path(p.relative_to(folder).as_posix())
        summary.append_row_groups(md)
    summary.write_metadata_file(folder / "_metadata")


def _replace_folder(built: Path, out: Path) -> None:
    """Rename ``built`` to ``out``; a previous galmerge output at ``out`` goes."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(built, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def finish_dataset(work: Path, parts: list[Path], out: Path, meta: dict[str, Any], *,
                   input_format: str, pixels: list[tuple[int, int]] | None,
                   source: Path, keep: tuple[str, ...] = ("lock", "manifest.json")
                   ) -> AssemblyResult:
    """Turn the work folder's ``parts`` into the dataset ``out`` (see the module docstring).

    Everything in ``work`` besides the parts and ``keep`` is removed first.
    """
    rows, counts, merger = _counts(parts)
    meta = {**meta, "rows": rows, "status_counts": counts, "classified": counts.get(OK, 0),
            "mergers_at_threshold": merger, "duplicate_ids": None}
    names = {p.name for p in parts} | set(keep)
    for child in work.iterdir():
        if child.name not in names:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    schema = _unified_schema(parts)
    hats = input_format == HATS_FORMAT and pixels is not None and is_hats_dir(source)
    if hats:
        write_hats(work, parts, pixels or [], source, meta, name=out.name)
    else:
        _write_dataset_metadata(work, parts, schema, meta)
    for name in keep:
        (work / name).unlink(missing_ok=True)
    _replace_folder(work, out)
    return AssemblyResult(path=out, format=HATS_FORMAT if hats else DATASET_FORMAT,
                          n_rows=rows, status_counts=counts, n_classified=counts.get(OK, 0),
                          n_merger=merger, n_duplicate_ids=0)
