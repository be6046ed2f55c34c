"""Part files, and the final catalogue assembled from them in every output format.

Each classified chunk ``k`` is written as ``part-{k:06d}.parquet`` in the run's
work folder (atomically: temp file + rename, so a part either exists whole or
not at all; a re-run of a chunk overwrites it identically). The final table is
then assembled by streaming the parts in order, in two passes with memory
bounded by one part:

1. scan: row counts, status counts, duplicate ids (64-bit hashes of the id
   strings, hash-partitioned into bucket files on disk and checked one bucket
   at a time, so memory does not grow with the catalogue), the unified column
   types (text columns of a CSV input get int64/float64/string types for typed
   outputs), string widths;
2. write: each part, cast to the unified schema, appended to the output
   (temp file + rename at the end).

Output formats (by extension) and where the run metadata goes:

=========  ===================  ===============================================
format     extensions           run metadata
=========  ===================  ===============================================
CSV        .csv                 sidecar ``OUT.meta.json`` (the CSV stays plain)
Parquet    .parquet .pq         schema metadata key ``galmerge`` (JSON)
FITS       .fits .fit           ``HIERARCH GALMERGE ...`` cards in the table header
ECSV       .ecsv                table ``meta: galmerge:`` in the YAML header
VOTable    .vot .votable .xml   ``INFO`` elements (``galmerge_run`` = JSON)
HDF5       .h5 .hdf5            attributes of the ``table`` dataset
=========  ===================  ===============================================

Torch-free.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import pandas as pd

from galmerge import __version__
from galmerge.errors import GalmergeError
from galmerge.inference.catalog import arrow_to_frame
from galmerge.inference.cutouts import OK, STATUSES
from galmerge.inference.formats import OUTPUT_EXTENSIONS
from galmerge.inference.tablemeta import (
    RESULT_COLUMNS,
    ColumnMeta,
    TableMeta,
    arrow_field_metadata,
    astropy_yaml,
    fits_column_cards,
    has_xml_bad,
    result_column_meta,
    votable_field_attrs,
    xml_safe,
)

__all__ = [
    "FITS_MAX_COLUMNS",
    "INT_NULL",
    "OUTPUT_FORMATS",
    "PART_GLOB",
    "AssemblyResult",
    "ScanResult",
    "TextState",
    "assemble",
    "check_output_columns",
    "output_format",
    "part_path",
    "part_rows",
    "scan_parts",
    "write_part",
]

#: Output extension -> format (from the one format table).
OUTPUT_FORMATS = OUTPUT_EXTENSIONS
PART_GLOB = "part-*.parquet"
#: FITS/HDF5 stand-in for a missing integer (FITS ``TNULLn``).
INT_NULL = np.iinfo(np.int64).min
#: A FITS table's column limit (TFIELDS <= 999).
FITS_MAX_COLUMNS = 999


def output_format(path: str | Path) -> str:
    """Output format from the file extension."""
    ext = Path(path).suffix.lower()
    if ext not in OUTPUT_FORMATS:
        raise GalmergeError(f"{path}: unknown output extension {ext or '(none)'!r}",
                            hint="use .csv, .parquet, .fits, .ecsv, .vot or .h5")
    return OUTPUT_FORMATS[ext]


def check_output_columns(out: str | Path, fmt: str, n_columns: int) -> None:
    """Refuse (one line) an output the format cannot hold: FITS tables stop at 999 columns."""
    if fmt == "fits" and n_columns > FITS_MAX_COLUMNS:
        raise GalmergeError(f"{out}: a FITS table holds at most {FITS_MAX_COLUMNS} columns, "
                            f"this one would have {n_columns}",
                            hint="write .parquet, .vot, .ecsv or .h5 instead")


def part_path(work_dir: Path, k: int) -> Path:
    """Path of chunk ``k``'s part file."""
    return work_dir / f"part-{k:06d}.parquet"


def write_part(frame: pd.DataFrame, work_dir: str | Path, k: int) -> Path:
    """Write chunk ``k``'s classified rows as a part file (atomic, idempotent)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    work = Path(work_dir)
    dest = part_path(work, k)
    tmp = work / f".{dest.name}.{os.getpid()}.tmp"
    table = pa.Table.from_pandas(frame, preserve_index=False)
    # pandas >= 3 gives large_string for str columns: one string type everywhere.
    schema = pa.schema([pa.field(f.name, pa.string() if pa.types.is_large_string(f.type)
                                 else f.type) for f in table.schema])
    table = table.cast(schema)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise GalmergeError(f"{dest}: cannot write part file ({exc.strerror})") from None
    return dest


def part_rows(path: Path) -> int | None:
    """Rows of a part file, or None when it is not a readable part."""
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:  # any unreadable part is recomputed
        return None


# --- pass 1: scan -------------------------------------------------------------------

@dataclass
class ScanResult:
    """What pass 1 learns from the parts."""

    n_rows: int
    part_rows: list[int]
    status_counts: dict[str, int]
    n_merger: int
    schema: Any  # pyarrow.Schema of the output
    str_widths: dict[str, int]
    non_ascii: set[str]
    duplicate_rows: np.ndarray  # global row numbers of repeated ids (sorted)
    duplicate_first: np.ndarray  # the first row with the same id, aligned
    text_types: dict[str, str] = field(default_factory=dict)


def _unify(types: list[Any]) -> Any:
    """One Arrow type for a column whose parts differ; never one that loses integers."""
    import pyarrow as pa

    types = [t for t in types if not pa.types.is_null(t)]
    if not types:
        return pa.string()
    first = types[0]
    if all(t == first for t in types):
        return first
    if all(pa.types.is_unsigned_integer(t) for t in types):
        return pa.uint64()
    if all(pa.types.is_integer(t) for t in types):
        # int64 holds every signed and uint8..uint32 value; uint64 beside signed: text
        return pa.string() if pa.uint64() in types else pa.int64()
    if all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in types):
        return pa.string() if any(t in (pa.int64(), pa.uint64()) for t in types) \
            else pa.float64()
    return pa.string()


_INT_TEXT = r"0|-?[1-9]\d*"  # integers whose text round-trips (no '+', no leading zeros)


@dataclass
class TextState:
    """What the text values of a column seen so far fit: ``int`` (with its range),
    ``float`` or ``str`` (see :func:`_infer_text`)."""

    kind: str = "int"
    lo: int = 0
    hi: int = 0
    seen: bool = False
    big_int: bool = False  # an integer of more than 15 digits: float would round it

    def arrow_type(self) -> Any:
        """int64, uint64, float64 or string: the narrowest type that keeps every value."""
        import pyarrow as pa

        if self.kind == "int":
            if -2**63 <= self.lo and self.hi < 2**63:
                return pa.int64()
            if self.lo >= 0 and self.hi < 2**64:
                return pa.uint64()
            return pa.string()
        if self.kind == "float":
            return pa.string() if self.big_int else pa.float64()
        return pa.string()


def _infer_text(values: pd.Series, state: TextState) -> TextState:
    """Narrow ``state`` by one part's text values: int -> float -> str.

    Integers stay integers only where the text is exactly what an integer
    column would write back (``007`` and ``+5`` stay text); a column of
    integers mixed with decimals becomes float only if no integer in it has
    more than 15 digits (float64 would round it), else it stays text.
    """
    nonempty = values[values != ""]
    if not len(nonempty) or state.kind == "str":
        return state
    is_int = nonempty.str.fullmatch(_INT_TEXT)
    ints = nonempty[is_int]
    if len(ints):
        state.big_int |= bool((ints.str.len() > 15).any())
        vals = [int(v) for v in ints]
        lo, hi = min(vals), max(vals)
        state.lo, state.hi = (min(state.lo, lo), max(state.hi, hi)) if state.seen else (lo, hi)
        state.seen = True
    if state.kind == "int" and not is_int.all():
        state.kind = "float"
    if state.kind == "float" and pd.to_numeric(nonempty, errors="coerce").isna().any():
        state.kind = "str"
    return state


class _IdBuckets:
    """(id hash, row) pairs hash-partitioned into bucket files, for the duplicate-id check.

    Pass 1 appends each part's pairs to ``n_buckets`` files by the top bits of the
    hash; :meth:`duplicates` then sorts one bucket at a time. Equal ids share a
    bucket, so memory is one bucket (rows / n_buckets x 16 bytes plus the sort),
    not one catalogue. Rows arrive in increasing order, so a stable sort by hash
    keeps the first occurrence of an id first.
    """

    DTYPE = np.dtype([("h", "<u8"), ("r", "<i8")])
    BITS = 6

    def __init__(self, folder: Path) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="id-buckets-", dir=folder))
        self._files = [open(self._dir / f"{i:03d}.bin", "wb") for i in range(1 << self.BITS)]

    def add(self, hashes: np.ndarray, rows: np.ndarray) -> None:
        """Append the pairs of one part (rows increasing)."""
        pairs = np.empty(len(hashes), dtype=self.DTYPE)
        pairs["h"], pairs["r"] = hashes, rows
        bucket = (pairs["h"] >> np.uint64(64 - self.BITS)).astype(np.intp)
        order = np.argsort(bucket, kind="stable")
        bounds = np.searchsorted(bucket[order], np.arange(len(self._files) + 1))
        for i, f in enumerate(self._files):
            if bounds[i + 1] > bounds[i]:
                pairs[order[bounds[i]:bounds[i + 1]]].tofile(f)

    def duplicates(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows whose id occurred before, and the first row with that id (sorted by row)."""
        for f in self._files:
            f.close()
        dup_rows, dup_first = [], []
        for i in range(len(self._files)):
            pairs = np.fromfile(self._dir / f"{i:03d}.bin", dtype=self.DTYPE)
            if len(pairs) < 2:
                continue
            order = np.argsort(pairs["h"], kind="stable")
            sh, rows = pairs["h"][order], pairs["r"][order]
            dup = np.zeros(len(sh), dtype=bool)
            dup[1:] = sh[1:] == sh[:-1]
            if dup.any():
                run_id = np.cumsum(~dup) - 1
                first = rows[~dup][run_id]
                dup_rows.append(rows[dup])
                dup_first.append(first[dup])
        if not dup_rows:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        r, f0 = np.concatenate(dup_rows), np.concatenate(dup_first)
        srt = np.argsort(r)
        return r[srt].astype(np.int64), f0[srt].astype(np.int64)

    def close(self) -> None:
        """Remove the bucket files."""
        for f in self._files:
            f.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def scan_parts(paths: list[Path], *, id_col: str, text_columns: bool, typed_output: bool,
               keep_text: set[str], string_widths: bool = True) -> ScanResult:
    """Pass 1 over the part files (see the module docstring).

    ``string_widths`` measures string columns (byte widths, non-ASCII) for the
    fixed-width formats; CSV and Parquet do not need it.
    """
    if not paths:
        raise GalmergeError("no part files to assemble")
    buckets = _IdBuckets(paths[0].parent)
    try:
        return _scan(paths, buckets, id_col=id_col, text_columns=text_columns,
                     typed_output=typed_output, keep_text=keep_text,
                     string_widths=string_widths)
    finally:
        buckets.close()


def _scan(paths: list[Path], buckets: _IdBuckets, *, id_col: str, text_columns: bool,
          typed_output: bool, keep_text: set[str], string_widths: bool) -> ScanResult:
    import pyarrow as pa
    import pyarrow.parquet as pq

    counts: dict[str, int] = {}
    n_merger = 0
    rows: list[int] = []
    types: dict[str, list[Any]] = {}
    names: list[str] = []
    widths: dict[str, int] = {}
    non_ascii: set[str] = set()
    text_state: dict[str, TextState] = {}
    offset = 0
    for path in paths:
        table = pq.read_table(path)
        rows.append(table.num_rows)
        for name in table.schema.names:
            if name not in types:
                types[name] = []
                names.append(name)
            types[name].append(table.schema.field(name).type)
        st = table.column("status").to_pandas()
        for k, v in st.value_counts().items():
            counts[str(k)] = counts.get(str(k), 0) + int(v)
        im = table.column("is_merger").to_pandas()
        n_merger += int((im == True).sum())  # noqa: E712 - nullable booleans
        ids = table.column(id_col).to_pandas().astype(object).fillna("").astype(str).to_numpy(
            dtype=object)
        valid = ids != ""
        buckets.add(pd.util.hash_array(ids[valid]), np.flatnonzero(valid) + offset)
        offset += table.num_rows
        for name in table.schema.names:
            t = table.schema.field(name).type
            if pa.types.is_string(t) or pa.types.is_large_string(t):
                infer = text_columns and typed_output and name not in keep_text
                if not (infer or string_widths):
                    continue
                col = table.column(name).to_pandas().fillna("").astype(str)
                if infer:
                    text_state[name] = _infer_text(col, text_state.get(name, TextState()))
                if string_widths and len(col):
                    w = int(col.str.len().max())
                    if not col.map(str.isascii).all() or col.map(has_xml_bad).any():
                        non_ascii.add(name)
                        w = max(len(v.encode("utf-8")) for v in col)
                    widths[name] = max(widths.get(name, 1), w)
    fields = [pa.field(name, text_state[name].arrow_type() if name in text_state
                       else _unify(types[name])) for name in names]
    schema = pa.schema(fields)
    dup_rows, dup_first = buckets.duplicates()
    return ScanResult(
        n_rows=int(sum(rows)), part_rows=rows,
        status_counts={s: counts.get(s, 0) for s in (*STATUSES, *sorted(set(counts) -
                                                                          set(STATUSES)))
                       if counts.get(s, 0) or s in STATUSES},
        n_merger=n_merger, schema=schema, str_widths=widths, non_ascii=non_ascii,
        duplicate_rows=dup_rows, duplicate_first=dup_first,
        text_types={k: str(v.arrow_type()) for k, v in text_state.items()})


def _cast_part(table: Any, schema: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    cols = []
    for f in schema:
        col = table.column(f.name) if f.name in table.schema.names else pa.nulls(
            table.num_rows, f.type)
        if col.type != f.type:
            if (pa.types.is_string(col.type) and not pa.types.is_string(f.type)):
                col = pc.if_else(pc.equal(col, ""), pa.scalar(None, col.type), col)
            col = col.cast(f.type) if not pa.types.is_string(f.type) else pc.cast(
                col, pa.string())
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=schema)


def _mark_duplicates(table: Any, start: int, scan: ScanResult) -> Any:
    import pyarrow as pa

    lo = np.searchsorted(scan.duplicate_rows, start)
    hi = np.searchsorted(scan.duplicate_rows, start + table.num_rows)
    if lo == hi:
        return table
    detail = table.column("status_detail").to_pylist()
    for row, first in zip(scan.duplicate_rows[lo:hi], scan.duplicate_first[lo:hi], strict=True):
        i = int(row) - start
        note = f"duplicate id (first at row {int(first)})"
        detail[i] = note if not detail[i] else f"{detail[i]}; {note}"
    idx = table.schema.get_field_index("status_detail")
    return table.set_column(idx, "status_detail", pa.array(detail, type=pa.string()))


# --- format writers ----------------------------------------------------------------

class _Writer:
    """Streams parts into one output file (temp file, renamed by :func:`assemble`)."""

    def __init__(self, tmp: Path, scan: ScanResult, meta: dict[str, Any],
                 table_meta: TableMeta | None = None) -> None:
        self.tmp = tmp
        self.scan = scan
        self.meta = meta
        #: every output column's unit/UCD/description (input columns and results)
        self.table_meta = table_meta or TableMeta()
        self.colmeta = self.table_meta.columns

    def write(self, table: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def _frame(table: Any) -> pd.DataFrame:
    return arrow_to_frame(table)


def _astropy_table(table: Any) -> Any:
    """A part (pyarrow) as an astropy Table (nullable columns masked)."""
    from astropy.table import Table

    return Table.from_pandas(_frame(table))


class _CsvWriter(_Writer):
    def __init__(self, tmp: Path, scan: ScanResult, meta: dict[str, Any],
                 table_meta: TableMeta | None = None) -> None:
        super().__init__(tmp, scan, meta, table_meta)
        self.fh = tmp.open("w", encoding="utf-8", newline="")
        self.fh.write(",".join(_csv_field(n) for n in scan.schema.names) + "\n")

    def write(self, table: Any) -> None:
        _frame(table).to_csv(self.fh, header=False, index=False, lineterminator="\n")

    def close(self) -> None:
        self.fh.close()


def _csv_field(name: str) -> str:
    return f'"{name.replace(chr(34), chr(34) * 2)}"' if any(c in name for c in ',"\n') else name


class _ParquetWriter(_Writer):
    def __init__(self, tmp: Path, scan: ScanResult, meta: dict[str, Any],
                 table_meta: TableMeta | None = None) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(tmp, scan, meta, table_meta)
        fields = [f.with_metadata(arrow_field_metadata(self.colmeta[f.name]))
                  if f.name in self.colmeta else f for f in scan.schema]
        md = {"galmerge": json.dumps(meta, sort_keys=True)}
        # astropy's own keys: string widths and the YAML header with units and UCDs
        md.update({f"table::len::{n}": str(w) for n, w in scan.str_widths.items()})
        empty = pa.schema(fields).empty_table()
        md["table_meta_yaml"] = "\n".join(astropy_yaml(
            _astropy_table(empty), self.colmeta, self.table_meta.table))
        schema = pa.schema(fields, metadata=md)
        self.schema = schema
        self.w = pq.ParquetWriter(tmp, schema, compression="zstd")

    def write(self, table: Any) -> None:
        self.w.write_table(table.replace_schema_metadata(self.schema.metadata))

    def close(self) -> None:
        self.w.close()


def _numpy_columns(table: Any, scan: ScanResult, *, for_fits: bool) -> np.ndarray:
    """A part as a numpy structured array with fixed widths; nulls filled.

    Missing integers become the type's minimum (declared as ``TNULLn`` in FITS,
    listed in the ``null_values`` attribute in HDF5); missing booleans False.
    """
    import pyarrow as pa

    arrays = []
    dtypes = []
    for f in scan.schema:
        col = table.column(f.name)
        t = f.type
        if pa.types.is_boolean(t):
            arr = np.asarray(col.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
            dt: Any = bool
        elif pa.types.is_integer(t):
            np_t = np.dtype(t.to_pandas_dtype())
            fill = int(np.iinfo(np_t).min)
            arr = np.asarray(col.fill_null(fill).to_numpy(zero_copy_only=False), dtype=np_t)
            dt = np_t
        elif pa.types.is_floating(t):
            np_t = np.dtype(t.to_pandas_dtype())
            arr = np.asarray(col.fill_null(np.nan).to_numpy(zero_copy_only=False), dtype=np_t)
            dt = np_t
        else:
            width = max(1, scan.str_widths.get(f.name, 1))
            vals = col.cast(pa.string()).fill_null("").to_pylist()
            if for_fits:
                enc = [v.encode("ascii", "replace") for v in vals]
            else:
                enc = [v.encode("utf-8") for v in vals]
            arr = np.array(enc, dtype=f"S{width}")
            dt = f"S{width}"
        arrays.append(arr)
        dtypes.append((f.name, dt))
    rec = np.empty(table.num_rows, dtype=dtypes)
    for (name, _), arr in zip(dtypes, arrays, strict=True):
        rec[name] = arr
    return rec


class _FitsWriter(_Writer):
    def __init__(self, tmp: Path, scan: ScanResult, meta: dict[str, Any],
                 table_meta: TableMeta | None = None) -> None:
        super().__init__(tmp, scan, meta, table_meta)
        self.fh = tmp.open("wb")
        self.header: Any = None
        self.nullable_ints = _int_columns(scan)
        self.written = 0
        self.rowlen = 0

    def _start(self, rec: np.ndarray) -> None:
        from astropy.io import fits

        hdu = fits.BinTableHDU(data=rec[:0], name="SCORES")
        h = hdu.header
        h["NAXIS2"] = self.scan.n_rows
        for i, name in enumerate(rec.dtype.names or (), start=1):
            if name in self.nullable_ints and rec.dtype[name].kind == "i":
                h[f"TNULL{i}"] = int(np.iinfo(rec.dtype[name]).min)
            for key, value, what in fits_column_cards(i, self.colmeta.get(name, ColumnMeta())):
                h[key] = (value, what)
        primary = fits.PrimaryHDU()
        for hdr in (primary.header, h):
            _fits_provenance(hdr, self.meta)
        for key, value in _flat_meta(self.meta).items():
            h["HIERARCH GALMERGE " + key.upper()] = value
        primary.header["COMMENT"] = "galmerge classify output; the table is in extension 1"
        self.fh.write(primary.header.tostring().encode("ascii"))
        self.fh.write(h.tostring().encode("ascii"))
        self.rowlen = int(h["NAXIS1"])
        self.header = h

    def write(self, table: Any) -> None:
        from astropy.io import fits

        rec = _numpy_columns(table, self.scan, for_fits=True)
        if self.header is None:
            self._start(rec)
        hdu = fits.BinTableHDU(data=rec)
        buf = io.BytesIO()
        hdu.writeto(buf)
        raw = buf.getvalue()
        head = len(fits.PrimaryHDU().header.tostring()) + len(hdu.header.tostring())
        n = len(rec) * self.rowlen
        if int(hdu.header["NAXIS1"]) != self.rowlen:
            raise RuntimeError("FITS row layout changed between parts")
        self.fh.write(raw[head:head + n])
        self.written += n

    def close(self) -> None:
        self.fh.write(b"\0" * ((-self.written) % 2880))
        self.fh.close()


def _fits_provenance(header: Any, meta: dict[str, Any]) -> None:
    """DATE (of the run, so a resumed run writes the same bytes), ORIGIN, CREATOR."""
    date = str(meta.get("date", "")).removesuffix("Z")
    if date:
        header["DATE"] = (date, "UTC date the classify run started")
    header["ORIGIN"] = ("galmerge", "organisation or software that made the file")
    header["CREATOR"] = (f"galmerge {meta.get('galmerge_version', __version__)}",
                         "software that wrote the file")


def _flat_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Run metadata as FITS-card-sized scalars (nested keys joined by spaces)."""
    out: dict[str, Any] = {}

    def put(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                put(f"{prefix} {k}".strip(), v)
        elif isinstance(value, list | tuple):
            out[prefix] = " ".join(str(v) for v in value)
        elif value is None:
            out[prefix] = ""
        elif isinstance(value, bool | int | float):
            out[prefix] = value
        else:
            out[prefix] = str(value)

    put("", meta)
    return {k.replace("_", " ").removeprefix("galmerge "): v for k, v in out.items()}


class _EcsvWriter(_Writer):
    def __init__(self, tmp: Path, scan: ScanResult, meta: dict[str, Any],
                 table_meta: TableMeta | None = None) -> None:
        super().__init__(tmp, scan, meta, table_meta)
        self.fh = tmp.open("w", encoding="utf-8", newline="")
        self.started = False

    def _table(self, table: Any) -> Any:
        from astropy.table import Table

        return Table.from_pandas(_frame(table))

    def write(self, table: Any) -> None:
        t = self._table(table)
        buf = io.StringIO()
        if not self.started:
            head = t[:0].copy()
            for name in head.colnames:
                if name in self.colmeta:
                    self.colmeta[name].apply_to(head[name])
            head.meta.update(self.table_meta.table)
            head.meta["galmerge"] = self.meta
            head.write(buf, format="ascii.ecsv")
            self.fh.write(buf.getvalue())
            buf = io.StringIO()
            self.started = True
        t.write(buf, format="ascii.ecsv")
        lines = buf.getvalue().splitlines(keepends=True)
        k = 0
        while k < len(lines) and lines[k].startswith("#"):
            k += 1
        self.fh.writelines(lines[k + 1:])

    def close(self) -> None:
        self.fh.close()


_VOT_TYPES = {"int8": "short", "int16": "short", "int32": "int", "int64": "long",
              "uint8": "unsignedByte", "uint16": "int", "uint32": "long", "uint64": "long",
              "float": "float", "double": "double", "halffloat": "float", "bool": "boolean"}


class _VotableWriter(_Writer):
    def __init__(self, tmp: Path, scan: ScanResult, meta: dict[str, Any],
                 table_meta: TableMeta | None = None) -> None:
        import pyarrow as pa

        super().__init__(tmp, scan, meta, table_meta)
        self.fh = tmp.open("w", encoding="utf-8", newline="\n")
        w = self.fh.write
        w('<?xml version="1.0" encoding="utf-8"?>\n')
        w('<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n')
        w(' <RESOURCE type="results">\n')
        for k, v in _flat_meta(meta).items():
            name = "galmerge_" + k.replace(" ", "_")
            w(f'  <INFO name={quoteattr(name)} value={quoteattr(xml_safe(str(v)))}/>\n')
        run = xml_safe(json.dumps(meta, sort_keys=True))
        w(f'  <INFO name="galmerge_run" value={quoteattr(run)}/>\n')
        w('  <TABLE name="scores">\n')
        for f in scan.schema:
            t = f.type
            attrs, desc = votable_field_attrs(self.colmeta.get(f.name, ColumnMeta()))
            name = quoteattr(xml_safe(f.name))
            if pa.types.is_string(t) or t == pa.uint64():  # no unsigned long in VOTable
                dt = "unicodeChar" if f.name in scan.non_ascii else "char"
                w(f'   <FIELD name={name} datatype="{dt}" arraysize="*"{attrs}>{desc}</FIELD>\n')
            else:
                w(f'   <FIELD name={name} datatype="{_VOT_TYPES[str(t)]}"{attrs}>{desc}'
                  '</FIELD>\n')
        w("   <DATA>\n    <TABLEDATA>\n")

    def write(self, table: Any) -> None:
        import pyarrow as pa

        cols = []
        for f in self.scan.schema:
            col = table.column(f.name)
            t = f.type
            if pa.types.is_boolean(t):
                s = pd.Series(col.to_pylist(), dtype=object).map(
                    {True: "T", False: "F", None: ""})
            elif pa.types.is_floating(t):
                arr = col.fill_null(np.nan).to_numpy(zero_copy_only=False)
                s = pd.Series([_vot_float(v) for v in arr], dtype=object)
            elif pa.types.is_integer(t):
                s = pd.Series(["" if v is None else str(v) for v in col.to_pylist()],
                              dtype=object)
            else:
                s = pd.Series([escape(xml_safe(v)) if v is not None else ""
                               for v in col.cast(pa.string()).to_pylist()], dtype=object)
            cols.append(s)
        if not cols:
            return
        rows = "    <TR><TD>" + cols[0]
        for s in cols[1:]:
            rows = rows + "</TD><TD>" + s
        self.fh.write("".join((rows + "</TD></TR>\n").tolist()))

    def close(self) -> None:
        self.fh.write("    </TABLEDATA>\n   </DATA>\n  </TABLE>\n </RESOURCE>\n</VOTABLE>\n")
        self.fh.close()


def _vot_float(v: np.floating) -> str:
    """Shortest round-trip text of a float32/float64 value; NaN/Inf spelled for VOTable."""
    if np.isnan(v):
        return "NaN"
    if not np.isfinite(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(v) if isinstance(v, np.float32) else repr(float(v))


class _Hdf5Writer(_Writer):
    def __init__(self, tmp: Path, scan: ScanResult, meta: dict[str, Any],
                 table_meta: TableMeta | None = None) -> None:
        import h5py

        super().__init__(tmp, scan, meta, table_meta)
        self.h5 = h5py.File(tmp, "w", track_order=False)
        self.ds: Any = None
        self.pos = 0
        self.nullable_ints = _int_columns(scan)

    def write(self, table: Any) -> None:
        rec = _numpy_columns(table, self.scan, for_fits=False)
        if self.ds is None:
            self.ds = self.h5.create_dataset("table", shape=(self.scan.n_rows,), dtype=rec.dtype,
                                             track_times=False)
            self.ds.attrs["galmerge_run"] = json.dumps(self.meta, sort_keys=True)
            for k, v in _flat_meta(self.meta).items():
                self.ds.attrs["galmerge " + k] = v
            nulls = {n: int(np.iinfo(rec.dtype[n]).min) for n in self.nullable_ints
                     if n in (rec.dtype.names or ()) and rec.dtype[n].kind == "i"}
            self.ds.attrs["null_values"] = json.dumps(nulls, sort_keys=True)
            self._column_meta(table)
        self.ds[self.pos:self.pos + len(rec)] = rec
        self.pos += len(rec)

    def _column_meta(self, table: Any) -> None:
        """Units/UCDs/descriptions as attributes (``unit:NAME`` ...) and as astropy's own
        YAML header (``table.__table_column_meta__``), which ``Table.read`` applies."""
        import pyarrow as pa

        for name, cm in self.colmeta.items():
            for k, v in cm.to_dict().items():
                self.ds.attrs[f"{k}:{name}"] = v
        fixed = pa.table([c.cast(pa.string()) if c.type == pa.string() else c
                          for c in table.slice(0, 0).columns], names=table.column_names)
        lines = astropy_yaml(_astropy_table(fixed), self.colmeta, self.table_meta.table)
        self.h5.create_dataset("table.__table_column_meta__",
                               data=[ln.encode("utf-8") for ln in lines], track_times=False)

    def close(self) -> None:
        self.h5.close()


def _int_columns(scan: ScanResult) -> set[str]:
    """Integer columns: their missing values need a stand-in (:data:`INT_NULL` style)."""
    return {f.name for f in scan.schema if str(f.type).startswith(("int", "uint"))}


_WRITERS: dict[str, type[_Writer]] = {
    "csv": _CsvWriter, "parquet": _ParquetWriter, "fits": _FitsWriter, "ecsv": _EcsvWriter,
    "votable": _VotableWriter, "hdf5": _Hdf5Writer}


# --- assembly ----------------------------------------------------------------------------

@dataclass
class AssemblyResult:
    """What :func:`assemble` wrote."""

    path: Path
    format: str
    n_rows: int
    status_counts: dict[str, int]
    n_classified: int
    n_merger: int
    n_duplicate_ids: int
    sidecar: Path | None = None


def assemble(parts: list[Path], out: str | Path, *, meta: dict[str, Any], id_col: str,
             text_columns: bool, fmt: str | None = None,
             keep_text: set[str] | None = None,
             progress: Callable[[int], None] | None = None,
             table_meta: TableMeta | None = None) -> AssemblyResult:
    """Stream ``parts`` (in order) into the output file ``out`` (atomic).

    Args:
        parts: part files in chunk order.
        out: output path; its extension picks the format unless ``fmt`` is given.
        meta: run metadata; ``status_counts``, ``rows`` and ``duplicate_ids`` are
            filled in from the parts.
        id_col: the id column (for duplicate detection; kept as text).
        text_columns: the input columns are text (CSV input): typed outputs get
            int64/float64 columns where every value fits.
        keep_text: columns that stay text regardless (id, file_loc).
        progress: called with the rows written per part.
        table_meta: the input's column metadata (units, UCDs, descriptions) and
            table keywords, written where each format keeps them; the result
            columns are described from ``meta`` (model, threshold).
    """
    import pyarrow.parquet as pq

    out = Path(out)
    fmt = fmt or output_format(out)
    keep = {id_col, *RESULT_COLUMNS, *(keep_text or set())}
    scan = scan_parts(parts, id_col=id_col, text_columns=text_columns,
                      typed_output=fmt != "csv", keep_text=keep,
                      string_widths=fmt in ("fits", "hdf5", "votable", "parquet"))
    meta = dict(meta)
    meta["rows"] = scan.n_rows
    meta["status_counts"] = scan.status_counts
    meta["classified"] = scan.status_counts.get(OK, 0)
    meta["mergers_at_threshold"] = scan.n_merger
    meta["duplicate_ids"] = len(scan.duplicate_rows)
    check_output_columns(out, fmt, len(scan.schema))
    full_meta = (table_meta or TableMeta()).with_columns(
        result_column_meta(str(meta.get("model", "?")), meta.get("threshold")))
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        writer = _WRITERS[fmt](tmp, scan, meta, full_meta)
        start = 0
        for path in parts:
            table = _cast_part(pq.read_table(path), scan.schema)
            table = _mark_duplicates(table, start, scan)
            writer.write(table)
            start += table.num_rows
            if progress is not None:
                progress(table.num_rows)
        writer.close()
        sidecar = None
        if fmt == "csv":
            sidecar = out.with_name(out.name + ".meta.json")
            side_tmp = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
            side = {**meta, "column_meta": full_meta.to_json()["columns"]}
            side_tmp.write_text(json.dumps(side, indent=2, sort_keys=True) + "\n")
            os.replace(side_tmp, sidecar)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise GalmergeError(f"{out}: cannot write output ({exc.strerror or exc})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return AssemblyResult(path=out, format=fmt, n_rows=scan.n_rows,
                          status_counts=scan.status_counts,
                          n_classified=scan.status_counts.get(OK, 0), n_merger=scan.n_merger,
                          n_duplicate_ids=len(scan.duplicate_rows), sidecar=sidecar)
