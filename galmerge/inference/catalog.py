"""Catalogues in: CSV, ECSV, FITS, VOTable, Parquet, HDF5 — read in chunks.

:func:`open_catalog` returns a :class:`CatalogReader` whose :meth:`~CatalogReader.chunks`
yields ``(start_row, pandas.DataFrame)`` pieces of at most ``chunk_size`` rows,
so memory depends on the chunk size, not on the catalogue's length:

========  ==============================================================  ==========
format    how it streams                                                  extensions
========  ==============================================================  ==========
CSV       ``pandas.read_csv(chunksize=...)``; every column kept as its     .csv .txt .tsv
          original text, so ids (and everything else) are carried exactly  (+ .gz/.bz2/.xz)
          (uncompressed, no quotes or blank lines: any row range read by
          byte range, :mod:`~galmerge.inference.line_index`)
ECSV      YAML header parsed once; data rows read like CSV, converted to   .ecsv
          the header's types
FITS      rows read from the file by byte range (no memmap, so resident    .fits .fit .fts
          memory stays bounded) and decoded by astropy; tables with a
          heap (variable-length arrays) fall back to memmap slices
VOTable   **does not stream**: astropy parses the whole XML; refused       .vot .votable .xml
          above :data:`VOTABLE_MAX_BYTES` (convert big ones to Parquet
          or FITS)
Parquet   ``pyarrow`` ``iter_batches``                                     .parquet .pq
HDF5      ``h5py`` slices of a 1-D compound (table) dataset, e.g. one      .h5 .hdf5 .hdf
          written by astropy's ``Table.write(..., format='hdf5')``
========  ==============================================================  ==========

:func:`find_columns` finds the id, RA/Dec and ``file_loc`` columns by common
names (case-insensitive) or explicit names; :func:`parse_coordinates` turns a
chunk's RA/Dec (degrees or sexagesimal strings) into degrees plus a per-row
problem ("bad_coordinates"); :func:`id_strings` gives exact id strings
(64-bit integers never pass through float).

Torch-free.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import threading
import warnings
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from galmerge.errors import GalmergeError
from galmerge.inference import textformats as tf
from galmerge.inference.coordinates import (
    DESIGNATION_COLUMNS,
    designation_degrees,
    looks_like_designations,
    sexagesimal_degrees,
)
from galmerge.inference.formats import format_of_extension
from galmerge.inference.line_index import LineIndex, build_line_index, data_start, skip_lines
from galmerge.inference.tablemeta import ColumnMeta, TableMeta, astropy_meta, safe_names

__all__ = [
    "COORD_COLUMNS",
    "FILE_LOC_COLUMNS",
    "FORMATS",
    "ID_COLUMNS",
    "SENTINELS",
    "VOTABLE_MAX_BYTES",
    "CatalogReader",
    "Columns",
    "arrow_to_frame",
    "coordinate_pair",
    "detect_format",
    "find_columns",
    "id_strings",
    "open_catalog",
    "parse_coordinates",
    "read_catalog",
    "table_to_frame",
    "text_values",
]

FORMATS = ("csv", "tsv", "ecsv", "fits", "votable", "parquet", "hdf5",
           *tf.ASTROPY_TEXT_FORMATS)
_ALIASES = {"vot": "votable", "xml": "votable", "h5": "hdf5", "pq": "parquet", "fit": "fits",
            "tab": "tsv", "ascii": "whitespace", "basic": "whitespace", "sex": "sextractor",
            "fixed": "fixed_width", "fwf": "fixed_width"}
_COMPRESSION = (".gz", ".bz2", ".xz")
#: VOTable cannot be streamed (astropy parses the whole XML); bigger files are refused.
VOTABLE_MAX_BYTES = 512 * 1024 * 1024

#: Candidate id columns, in order of preference (case-insensitive).
ID_COLUMNS = ("objid", "objID", "id_str", "id", "dr7objid", "dr8objid", "object1", "object_id",
              "objectid", "source_id", "sourceid", "galaxy_id", "sdss_id", "sdss id", "iauname",
              "name", "designation", "number")
#: Candidate (RA, Dec) column pairs, in order of preference (case-insensitive).
COORD_COLUMNS = (("ra", "dec"), ("raj2000", "dej2000"), ("raj2000", "decj2000"),
                 ("_raj2000", "_dej2000"), ("ra_deg", "dec_deg"), ("radeg", "decdeg"),
                 ("ra_j2000", "dec_j2000"), ("ra_icrs", "de_icrs"), ("ra_icrs", "dec_icrs"),
                 ("ra1", "dec1"), ("ra_1", "dec_1"), ("alpha", "delta"),
                 ("radeg", "dedeg"), ("alpha_j2000", "delta_j2000"))
#: UCDs that mark the main id and position columns (VOTable/ECSV), found before names.
ID_UCD, RA_UCD, DEC_UCD = "meta.id;meta.main", "pos.eq.ra;meta.main", "pos.eq.dec;meta.main"
#: Names of the columns derived from IAU designations when a table has no RA/Dec.
DERIVED_RA, DERIVED_DEC = "ra_from_name", "dec_from_name"
#: Candidate per-row cutout path columns (Zoobot's ``file_loc`` first).
FILE_LOC_COLUMNS = ("file_loc", "file_path", "filepath", "filename", "local_path")
#: Values that catalogues use for "no value" in numeric coordinate columns.
SENTINELS = (-9999.0, -999.0, -99.0, 9999.0, 99999.0, -99999.0)


def detect_format(path: str | Path, fmt: str | None = None) -> str:
    """Catalogue format from ``fmt``, a telling extension, or else the file's content.

    Raises:
        GalmergeError: unknown ``fmt``, or content no reader accepts (the
            message names the formats tried).
    """
    if fmt:
        f = fmt.lower().lstrip(".").replace("-", "_")
        f = _ALIASES.get(f, f)
        if f not in FORMATS:
            raise GalmergeError(f"unknown catalogue format {fmt!r}",
                                hint=f"use one of {', '.join(FORMATS)}")
        return f
    name = Path(path).name.lower()
    for comp in _COMPRESSION:
        if name.endswith(comp):
            name = name[: -len(comp)]
            break
    # An extension of the format table names the format; any other (``.txt``, ``.dat``,
    # ``.tbl``, none) is recognised by content.
    named = format_of_extension(Path(name).suffix)
    return named if named is not None else tf.sniff(Path(path))


@dataclass(frozen=True)
class Columns:
    """Which catalogue columns hold the id, coordinates and cutout paths."""

    id: str
    ra: str | None = None
    dec: str | None = None
    file_loc: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        """Plain-JSON form."""
        return {"id": self.id, "ra": self.ra, "dec": self.dec, "file_loc": self.file_loc}


def _pick(names: Sequence[str], candidates: Sequence[str]) -> str | None:
    lower: dict[str, str] = {}
    for n in names:
        lower.setdefault(n.lower(), n)
    for c in candidates:
        if c.lower() in lower:
            return lower[c.lower()]
    return None


def _explicit(names: Sequence[str], want: str, what: str, where: str) -> str:
    if want in names:
        return want
    lower = {n.lower(): n for n in names}
    if want.lower() in lower:
        return lower[want.lower()]
    raise GalmergeError(f"{where}: no column {want!r} for {what}",
                        hint=f"columns are: {', '.join(list(names)[:30])}")


def _by_ucd(names: Sequence[str], meta: TableMeta | None, ucd: str) -> str | None:
    if meta is None:
        return None
    return next((n for n in names if (meta.get(n).ucd or "").lower() == ucd), None)


def coordinate_pair(names: Sequence[str], meta: TableMeta | None = None
                    ) -> tuple[str | None, str | None]:
    """The RA/Dec columns by UCD, else by the common names; ``(None, None)`` if none."""
    ra, dec = _by_ucd(names, meta, RA_UCD), _by_ucd(names, meta, DEC_UCD)
    if ra and dec:
        return ra, dec
    for a, b in COORD_COLUMNS:
        pa, pb = _pick(names, (a,)), _pick(names, (b,))
        if pa and pb:
            return pa, pb
    return None, None


def find_columns(
    names: Sequence[str], *, where: str, id_col: str | None = None, ra_col: str | None = None,
    dec_col: str | None = None, file_loc_col: str | None = None,
    meta: TableMeta | None = None,
) -> Columns:
    """Find the id / RA / Dec / file_loc columns.

    Explicit names win; then UCDs (``meta.id;meta.main``, ``pos.eq.ra;meta.main``,
    ``pos.eq.dec;meta.main`` in ``meta``, e.g. from a VOTable or ECSV); then the
    common names of :data:`ID_COLUMNS` and :data:`COORD_COLUMNS`.

    Raises:
        GalmergeError: no id column, only one of RA/Dec, or an explicit name
            that is not in the catalogue.
    """
    cid = (_explicit(names, id_col, "--id-col", where) if id_col
           else _by_ucd(names, meta, ID_UCD) or _pick(names, ID_COLUMNS))
    if cid is None:
        raise GalmergeError(
            f"{where}: no id column (looked for {', '.join(ID_COLUMNS)})",
            hint="name it with --id-col")
    ra: str | None
    dec: str | None
    if ra_col or dec_col:
        if not (ra_col and dec_col):
            raise GalmergeError("give both --ra-col and --dec-col")
        ra = _explicit(names, ra_col, "--ra-col", where)
        dec = _explicit(names, dec_col, "--dec-col", where)
    else:
        ra, dec = coordinate_pair(names, meta)
    floc = (_explicit(names, file_loc_col, "--file-loc-col", where) if file_loc_col
            else _pick(names, FILE_LOC_COLUMNS))
    return Columns(id=cid, ra=ra, dec=dec, file_loc=floc)


# --- per-chunk column helpers -------------------------------------------------------

def id_strings(col: pd.Series) -> tuple[np.ndarray, bool]:
    """Exact id strings of a column, and whether it was floating point.

    Integers (numpy or nullable) are formatted from their int64 values, text is
    kept as is (stripped); missing ids become ``""``. Floating-point ids are
    formatted with ``repr``; above 2**53 they were already inexact in the file
    (the caller warns).
    """
    if pd.api.types.is_integer_dtype(col.dtype):
        if isinstance(col.dtype, pd.api.extensions.ExtensionDtype):
            out = col.astype(object).map(lambda v: "" if v is pd.NA else str(int(v)))
            return np.asarray(out, dtype=object), False
        return col.to_numpy().astype(str).astype(object), False
    if pd.api.types.is_float_dtype(col.dtype):
        vals = col.to_numpy(dtype=np.float64, na_value=np.nan)
        out = np.array(["" if not np.isfinite(v) else
                        (str(int(v)) if v == int(v) else repr(float(v))) for v in vals],
                       dtype=object)
        return out, True
    if isinstance(col.dtype, pd.StringDtype):  # text (CSV): vectorised
        return col.fillna("").str.strip().to_numpy(dtype=object), False
    vals = col.to_numpy(dtype=object)
    out = np.array(["" if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA
                    else (v.decode() if isinstance(v, bytes) else str(v)).strip()
                    for v in vals], dtype=object)
    return out, False


def text_values(col: pd.Series) -> np.ndarray:
    """A column as stripped strings (``""`` for missing), e.g. ``file_loc``."""
    return id_strings(col)[0]


def parse_coordinates(ra: pd.Series, dec: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RA/Dec in degrees and a per-row problem (``""`` when fine).

    Accepts numbers (degrees), numeric strings, or sexagesimal strings (RA in
    hours ``12:30:49.4`` / ``12h30m49.4s``, Dec in degrees ``+12:23:28``),
    parsed with astropy. Problems: missing, NaN, unparseable, the sentinels
    of :data:`SENTINELS`, RA outside [0, 360) or Dec outside [-90, 90].
    """
    n = len(ra)
    ra_deg, ra_bad = _to_degrees(ra, hours=True)
    dec_deg, dec_bad = _to_degrees(dec, hours=False)
    problem = np.full(n, "", dtype=object)
    for i in range(n):
        msg = ra_bad[i] or dec_bad[i]
        if msg:
            problem[i] = msg
    ok = problem == ""
    sent = ok & (np.isin(ra_deg, SENTINELS) | np.isin(dec_deg, SENTINELS))
    for j in np.flatnonzero(sent):
        problem[j] = f"sentinel value (ra={ra_deg[j]:g}, dec={dec_deg[j]:g})"
    ok = problem == ""
    out_ra = ok & ~((ra_deg >= 0.0) & (ra_deg < 360.0))
    for j in np.flatnonzero(out_ra):
        problem[j] = f"RA {ra_deg[j]:g} outside [0, 360)"
    ok = problem == ""
    out_dec = ok & ~((dec_deg >= -90.0) & (dec_deg <= 90.0))
    for j in np.flatnonzero(out_dec):
        problem[j] = f"Dec {dec_deg[j]:g} outside [-90, 90]"
    bad = problem != ""
    ra_deg = np.where(bad, np.nan, ra_deg)
    dec_deg = np.where(bad, np.nan, dec_deg)
    return ra_deg, dec_deg, problem


def _to_degrees(col: pd.Series, *, hours: bool) -> tuple[np.ndarray, list[str]]:
    n = len(col)
    what = "RA" if hours else "Dec"
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        vals = np.array(col.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
        bad = ["" if np.isfinite(v) else f"{what} missing or NaN" for v in vals]
        return vals, bad
    text = text_values(col)
    vals = np.array(pd.to_numeric(pd.Series(text, dtype=object), errors="coerce"),
                    dtype=np.float64)
    bad = [""] * n
    todo = np.flatnonzero(~np.isfinite(vals))
    if not len(todo):
        return vals, bad
    words = text[todo]
    missing = np.array([s == "" or s.lower() in ("nan", "null", "none", "--") for s in words],
                       dtype=bool)
    parse = todo[~missing]
    deg, not_angle = sexagesimal_degrees(text[parse].astype(str), hours=hours)
    vals[parse] = deg
    for i in todo[missing]:
        bad[i] = f"{what} missing or NaN"
    for i in parse[not_angle]:
        bad[i] = f"{what} {str(text[i])!r} is not a number or sexagesimal angle"
    return vals, bad


# --- readers ------------------------------------------------------------------------

@dataclass(frozen=True)
class RowLayout:
    """How a catalogue's rows lie on disk, for readers that can read any row range.

    A Dask worker reads its own partition through :meth:`CatalogReader.read_rows`
    (galmerge.inference.partitions plans the partitions from this layout).

    Attributes:
        read: ``read(lo, hi)`` returns the raw rows ``lo .. hi-1`` (global row numbers).
        blocks: row counts of the units a partition is made of, in order (Parquet
            row groups, the files of a dataset); None when any row range reads
            equally well (FITS byte ranges, HDF5 slices).
        file_ends: indices of the blocks that end a file: a partition never spans files.
        whole: every block is its own partition (a HATS pixel file).
    """

    read: Callable[[int, int], pd.DataFrame]
    blocks: tuple[int, ...] | None = None
    file_ends: frozenset[int] = frozenset()
    whole: bool = False


@dataclass
class CatalogReader:
    """A catalogue opened for chunked reading.

    Attributes:
        path: the file.
        format: one of :data:`FORMATS`.
        columns: column names, in file order (made unique and clear of the
            result columns by :func:`~galmerge.inference.tablemeta.safe_names`).
        n_rows: number of data rows when known (an estimate for text tables).
        text_columns: True when every column is carried as its original text
            (CSV, TSV and the untyped text formats); typed outputs infer types.
        note: how this format is read (shown with ``--verbose`` and in docs).
        meta: the columns' units, UCDs, descriptions, formats and the table's meta.
        warnings: what the reader changed (renamed columns), for the run summary.
        layout: row ranges this reader can read directly (:class:`RowLayout`), or None
            (text tables, VOTables, compressed files: read front to back).
        extra: what a reader of a directory knows besides (HATS: the pixels).
    """

    path: Path
    format: str
    columns: list[str]
    n_rows: int | None
    text_columns: bool = False
    note: str = ""
    _impl: Any = field(default=None, repr=False)
    meta: TableMeta = field(default_factory=TableMeta)
    warnings: list[str] = field(default_factory=list)
    layout: RowLayout | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    _post: Callable[[pd.DataFrame], pd.DataFrame] | None = field(default=None, repr=False)

    def _shape(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Raw rows as :meth:`chunks` gives them: the reader's column names, derived columns."""
        if self._post is not None:
            frame = frame.copy()
            frame.columns = self.columns[:len(frame.columns)]
            frame = self._post(frame)
        if len(frame.columns) == len(self.columns):
            frame.columns = self.columns
        return frame.reset_index(drop=True)

    def read_rows(self, lo: int, hi: int) -> pd.DataFrame:
        """Rows ``lo .. hi-1`` exactly as :meth:`chunks` gives them (needs a :attr:`layout`)."""
        if self.layout is None:
            raise GalmergeError(f"{self.path}: {self.format} rows cannot be read by range",
                                hint="convert the catalogue to Parquet")
        return self._shape(self.layout.read(lo, hi))

    def chunks(self, chunk_size: int, *, limit: int | None = None
               ) -> Generator[tuple[int, pd.DataFrame], None, None]:
        """Yield ``(start_row, frame)`` for consecutive chunks of at most ``chunk_size`` rows."""
        if chunk_size < 1:
            raise GalmergeError(f"chunk size must be at least 1, got {chunk_size}")
        start = 0
        for frame in self._impl(chunk_size):
            if len(frame) == 0:
                continue
            if limit is not None and start + len(frame) > limit:
                frame = frame.iloc[: max(0, limit - start)]
            frame = self._shape(frame)
            yield start, frame
            start += len(frame)
            if limit is not None and start >= limit:
                break


def open_catalog(path: str | Path, fmt: str | None = None) -> CatalogReader:
    """Open a catalogue for chunked reading (see the module docstring).

    Raises:
        GalmergeError: missing, empty or unparseable file; one line, naming it.
    """
    p = Path(path)
    if not p.exists():
        raise GalmergeError(f"{p}: catalogue not found")
    if p.is_dir():
        raise GalmergeError(f"{p}: is a directory, not a catalogue file")
    if p.stat().st_size == 0:
        raise GalmergeError(f"{p}: catalogue file is empty")
    f = detect_format(p, fmt)
    if f in tf.ASTROPY_TEXT_FORMATS:
        reader = _open_text(p, f)
    else:
        opener = {"csv": _open_csv, "tsv": _open_tsv, "ecsv": _open_ecsv, "fits": _open_fits,
                  "votable": _open_votable, "parquet": _open_parquet, "hdf5": _open_hdf5}[f]
        reader = opener(p)
    if reader.n_rows == 0:
        raise GalmergeError(f"{p}: catalogue has no rows")
    return _with_designation_coordinates(_made_safe(reader))


def _with_designation_coordinates(reader: CatalogReader) -> CatalogReader:
    """A table without RA/Dec but with IAU designations gets :data:`DERIVED_RA`/``DEC``.

    The columns are appended to every chunk (degrees, NaN where a name holds no
    J coordinates), described in the metadata, and the run summary says so.
    """
    if coordinate_pair(reader.columns, reader.meta) != (None, None):
        return reader
    if DERIVED_RA in reader.columns or DERIVED_DEC in reader.columns:
        return reader
    candidates = [c for c in (_pick(reader.columns, (n,)) for n in DESIGNATION_COLUMNS) if c]
    if not candidates:
        return reader
    gen = reader.chunks(200)
    try:
        sample = next(gen, (0, pd.DataFrame()))[1]
    finally:
        gen.close()
    source = next((c for c in candidates if c in sample.columns
                   and looks_like_designations(sample[c])), None)
    if source is None:
        return reader
    def with_coordinates(frame: pd.DataFrame) -> pd.DataFrame:
        ra, dec = designation_degrees(pd.Series(text_values(frame[source])))
        frame[DERIVED_RA], frame[DERIVED_DEC] = ra, dec
        return frame

    how = ("centre of the interval the IAU name truncates to (see "
           "galmerge.inference.coordinates)")
    reader.meta = reader.meta.with_columns({
        DERIVED_RA: ColumnMeta(unit="deg", ucd="pos.eq.ra;meta.main",
                               description=f"RA (J2000) from the designation in {source}: {how}"),
        DERIVED_DEC: ColumnMeta(unit="deg", ucd="pos.eq.dec;meta.main",
                                description=f"Dec (J2000) from the designation in {source}: "
                                            f"{how}")})
    reader.columns = [*reader.columns, DERIVED_RA, DERIVED_DEC]
    reader._post = with_coordinates
    reader.warnings.append(f"no RA/Dec columns: coordinates derived from the IAU designations in "
                           f"column {source!r} (columns {DERIVED_RA}, {DERIVED_DEC}; names "
                           "truncate, the centre of each truncated interval is used)")
    return reader


def _made_safe(reader: CatalogReader) -> CatalogReader:
    """Rename repeated columns and columns named like a result column (with a warning)."""
    names, renamed, notes = safe_names(reader.columns)
    if renamed:
        old = reader.columns
        reader.meta = reader.meta.renamed({old[i]: new for i, new in renamed.items()
                                           if old.count(old[i]) == 1})
        reader.columns = names
        reader.warnings.extend(notes)
        for note in notes:
            warnings.warn(f"{reader.path}: {note}", stacklevel=3)
    return reader


def _unparseable(p: Path, fmt: str, exc: BaseException) -> GalmergeError:
    text = " ".join(str(exc).split())[:200]
    return GalmergeError(f"{p}: cannot read as {fmt} ({type(exc).__name__}: {text})",
                         hint="check the file, or pass --format")


def _count_lines(p: Path) -> int | None:
    if tf.compression(p) is not None:
        return None
    n = 0
    last = b"\n"
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            n += block.count(b"\n") or block.count(b"\r")
            last = block[-1:]
    return n + (0 if last in (b"\n", b"\r") else 1)


def _leading_comment_lines(p: Path) -> int:
    """Lines starting with ``#`` before the header (e.g. SkyServer's ``#Table1``)."""
    n = 0
    for line in tf.head_lines(p, 10000):
        if not line.startswith("#"):
            break
        n += 1
    return n


def _pandas_text_kw(sep: str) -> dict[str, Any]:
    """pandas options that keep every field as its text, never make an index.

    ``index_col=False``: a trailing delimiter on every data row (spreadsheet
    exports) must not turn the first column into an index.
    """
    return dict(sep=sep, dtype=str, keep_default_na=False, na_filter=False,
                skipinitialspace=False, encoding="utf-8-sig", encoding_errors="replace",
                index_col=False, skip_blank_lines=True)


@contextlib.contextmanager
def _after_lines(p: Path, n: int) -> Iterator[IO[bytes]]:
    """The (decompressed) file positioned after its first ``n`` non-blank lines.

    Skipping by hand, not with pandas ``skiprows``: pandas tokenises skipped
    lines, so a quote in a comment (an ECSV ``delimiter: ","``) would swallow
    the rows after it.
    """
    with tf.open_binary(p) as fh:
        skip_lines(fh, n)
        yield fh


def _open_tsv(p: Path) -> CatalogReader:
    return _open_csv(p, sep="\t", fmt="tsv")


def _open_csv(p: Path, sep: str = ",", fmt: str = "csv") -> CatalogReader:
    skip = _leading_comment_lines(p)
    kw = _pandas_text_kw(sep)
    head = tf.head_lines(p, skip + 6)[skip:]
    # a delimiter closing every data row but not the header (spreadsheet exports): the
    # empty last field is dropped (index_col=False), quietly; any other extra field warns
    trailing = len(head) > 1 and not head[0].rstrip().endswith(sep) and all(
        ln.rstrip().endswith(sep) for ln in head[1:])
    if not head:
        raise GalmergeError(f"{p}: catalogue has no header and no rows")
    # the names as written (pandas would rename repeats itself): see _made_safe
    names = [v.strip() for v in next(csv.reader(head, delimiter=sep))]
    kw.update(header=0, names=safe_names(names)[0])  # pandas refuses repeated names
    try:
        with _after_lines(p, skip) as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            first = pd.read_csv(fh, nrows=2, **kw)
    except pd.errors.EmptyDataError:
        raise GalmergeError(f"{p}: catalogue has no header and no rows") from None
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError, OSError) as exc:
        raise _unparseable(p, fmt.upper(), exc) from None
    if len(first) == 0:
        raise GalmergeError(f"{p}: catalogue has no rows (header only)")
    index = build_line_index(p, data_start(p, skip + 1)) if tf.compression(p) is None else None
    lines = None if index is not None else _count_lines(p)

    def gen(chunk_size: int) -> Iterator[pd.DataFrame]:
        try:
            with _after_lines(p, skip) as fh, pd.read_csv(fh, chunksize=chunk_size,
                                                          **kw) as it, warnings.catch_warnings():
                if trailing:
                    warnings.simplefilter("ignore", pd.errors.ParserWarning)
                for frame in it:
                    # Short rows give NaN even with na_filter=False: keep text everywhere.
                    yield frame.fillna("")
        except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
            raise _unparseable(p, fmt.upper(), exc) from None

    n_rows = index.n_rows if index is not None else (
        None if lines is None else max(0, lines - 1 - skip))
    return CatalogReader(p, fmt, names, n_rows, text_columns=True,
                         note="streamed with pandas; columns kept as text", _impl=gen,
                         layout=None if index is None else RowLayout(
                             _csv_rows(p, index, {**kw, "header": None}, fmt, trailing)))


def _csv_rows(p: Path, index: LineIndex, kw: dict[str, Any], fmt: str, trailing: bool
              ) -> Callable[[int, int], pd.DataFrame]:
    """``read(lo, hi)``: rows ``lo .. hi-1`` of a CSV by one seek and one read (issue 15),
    parsed exactly as the streaming reader parses them."""
    def read(lo: int, hi: int) -> pd.DataFrame:
        first, end, drop = index.byte_range(lo, hi)
        with p.open("rb") as fh:
            fh.seek(first)
            data = fh.read(end - first)
        if not data:
            return pd.DataFrame({n: pd.Series(dtype=object) for n in kw["names"]})
        try:
            with warnings.catch_warnings():
                if trailing:
                    warnings.simplefilter("ignore", pd.errors.ParserWarning)
                frame = pd.read_csv(io.BytesIO(data), **kw)
        except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
            raise _unparseable(p, fmt.upper(), exc) from None
        return frame.fillna("").iloc[drop:drop + hi - lo]

    return read


def _open_text(p: Path, fmt: str) -> CatalogReader:
    table = tf.open_text_table(p, fmt)

    def gen(chunk_size: int) -> Iterator[pd.DataFrame]:
        for t in table.chunks(chunk_size):
            yield table_to_frame(t)

    lines = _count_lines(p)
    return CatalogReader(p, fmt, table.columns,
                         None if lines is None else max(0, lines - table.header_lines),
                         text_columns=not table.typed, note=table.note, _impl=gen,
                         meta=table.meta)


def _ecsv_header(p: Path) -> tuple[dict[str, Any], int]:
    """The ECSV YAML header parsed by astropy, and the lines before the data rows."""
    from astropy.table import meta as table_meta

    lines: list[str] = []
    for line in tf.text_lines(p):
        if not line.startswith("#"):
            break  # the column-name line
        lines.append(line[2:] if line.startswith("# ") else line[1:])
    if not lines or not lines[0].startswith("%ECSV"):
        raise GalmergeError(f"{p}: not an ECSV file (no '# %ECSV' first line)",
                            hint="pass --format csv for a plain CSV")
    try:
        header = table_meta.get_header_from_yaml(lines)
    except Exception as exc:  # YamlParseError and what the YAML loader raises
        raise _unparseable(p, "ECSV", exc) from None
    if not isinstance(header, dict) or "datatype" not in header:
        raise GalmergeError(f"{p}: ECSV header has no datatype list")
    return header, len(lines) + 1


def _ecsv_meta(header: dict[str, Any]) -> TableMeta:
    cols = {}
    for d in header["datatype"]:
        meta = d.get("meta") or {}
        cols[d["name"]] = ColumnMeta(unit=d.get("unit"), ucd=meta.get("ucd"),
                                     description=d.get("description"), format=d.get("format"))
    table = {str(k): v for k, v in dict(header.get("meta") or {}).items()}
    return TableMeta({k: v for k, v in cols.items() if not v.is_empty()}, table)


def _open_ecsv(p: Path) -> CatalogReader:
    header, nskip = _ecsv_header(p)
    columns = [d["name"] for d in header["datatype"]]
    dtypes = {d["name"]: ("string" if d.get("subtype") else d.get("datatype", "string"))
              for d in header["datatype"]}
    delimiter = header.get("delimiter", " ")
    if delimiter not in (" ", ","):
        raise GalmergeError(f"{p}: ECSV delimiter {delimiter!r} (ECSV allows ' ' or ',')")
    lines = _count_lines(p)
    kw = _pandas_text_kw(delimiter)
    kw.update(quotechar='"', header=None, names=columns, skipinitialspace=delimiter == " ")

    def gen(chunk_size: int) -> Iterator[pd.DataFrame]:
        try:
            with _after_lines(p, nskip) as fh, pd.read_csv(fh, chunksize=chunk_size,
                                                           **kw) as it:
                for frame in it:
                    yield _typed_from_text(frame.fillna(""), dtypes)
        except (pd.errors.ParserError, ValueError) as exc:
            raise _unparseable(p, "ECSV", exc) from None

    n = None if lines is None else max(0, lines - nskip)
    return CatalogReader(p, "ecsv", columns, n, note="YAML header parsed by astropy, rows "
                         "streamed", _impl=gen, meta=_ecsv_meta(header))


def _typed_from_text(frame: pd.DataFrame, dtypes: dict[str, str]) -> pd.DataFrame:
    """ECSV text fields as the header's types (integers exact, ``""`` = missing)."""
    out = {}
    for c, dt in dtypes.items():
        s = frame[c]
        if dt.startswith(("int", "uint")):
            mask = s == ""
            nullable = _NULLABLE_INT[dt]
            out[c] = pd.array([None if m else int(v) for v, m in zip(s, mask, strict=True)],
                              dtype=nullable) if mask.any() else s.map(int).astype(dt)
        elif dt.startswith("float"):
            out[c] = pd.to_numeric(s.replace("", "nan"), errors="coerce").astype(dt)
        elif dt == "bool":
            out[c] = pd.array([None if v == "" else v in ("True", "true", "1", "T")
                               for v in s], dtype="boolean")
        else:
            out[c] = s.astype(object)
    return pd.DataFrame(out)

def _open_fits(p: Path) -> CatalogReader:
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(p, memmap=False, lazy_load_hdus=True) as hdul:
                table_hdu = None
                for idx, hdu in enumerate(hdul):
                    if isinstance(hdu, fits.BinTableHDU | fits.TableHDU):
                        table_hdu = idx
                        header = hdu.header.copy()
                        info = hdu.fileinfo()
                        break
                if table_hdu is None:
                    raise GalmergeError(f"{p}: FITS file has no table extension",
                                        hint="a catalogue is a binary or ASCII table HDU")
    except GalmergeError:
        raise
    except (OSError, ValueError, TypeError, IndexError, EOFError) as exc:
        raise _unparseable(p, "FITS", exc) from None
    n = int(header.get("NAXIS2", 0))
    names = [str(header.get(f"TTYPE{i}", f"col{i}"))
             for i in range(1, int(header["TFIELDS"]) + 1)]
    meta = _fits_meta(header, names)
    if tf.compression(p) is not None:  # .fits.gz: astropy decompresses the whole table
        return CatalogReader(p, "fits", names, n, note="compressed: decompressed whole",
                             _impl=_fits_memmap_chunks(p, table_hdu), meta=meta)
    layout = RowLayout(_fits_memmap_rows(p, table_hdu))
    rowlen = int(header["NAXIS1"])
    data_loc = int(info["datLoc"])
    size = p.stat().st_size
    if data_loc + rowlen * n > size:
        raise GalmergeError(f"{p}: FITS table is truncated ({size} bytes, table needs "
                            f"{data_loc + rowlen * n})", hint="download the file again")
    heap = int(header.get("PCOUNT", 0)) > 0
    if heap:
        gen = _fits_memmap_chunks(p, table_hdu)
        note = "memmap slices (table has a heap)"
    else:
        gen = _fits_byte_chunks(p, header, data_loc, rowlen, n)
        note = "rows read by byte range"
        layout = RowLayout(_fits_byte_rows(p, header, data_loc, rowlen))
    return CatalogReader(p, "fits", names, n, note=note, _impl=gen, meta=meta, layout=layout)


def _fits_meta(header: Any, names: list[str]) -> TableMeta:
    """TUNITn, TCOMMn (description), TUCDn and TDISPn of a FITS table header."""
    cols = {}
    for i, name in enumerate(names, start=1):
        cm = ColumnMeta(unit=_card(header, f"TUNIT{i}"), ucd=_card(header, f"TUCD{i}"),
                        description=_card(header, f"TCOMM{i}"),
                        format=None)
        if not cm.is_empty():
            cols[name] = cm
    return TableMeta(cols, {})


def _card(header: Any, key: str) -> str | None:
    value = header.get(key)
    return str(value).strip() or None if value is not None else None


def _fits_rows_from(fh: IO[bytes], header: Any, data_loc: int, rowlen: int, start: int,
                    k: int) -> pd.DataFrame:
    """Rows ``start .. start+k-1`` of a FITS table, read from ``fh`` by byte range."""
    from astropy.io import fits
    from astropy.table import Table

    fh.seek(data_loc + start * rowlen)
    data = fh.read(k * rowlen)
    h = header.copy()
    h["NAXIS2"] = k
    blob = h.tostring().encode("ascii") + data + b"\0" * ((-len(data)) % 2880)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # uint=True: TZERO-offset (unsigned) integers stay exact, never float
        kind = (fits.BinTableHDU if header.get("XTENSION", "").strip() ==
                "BINTABLE" else fits.TableHDU)
        table = Table.read(kind.fromstring(blob, uint=True))
    return table_to_frame(table)


def _fits_byte_chunks(p: Path, header: Any, data_loc: int, rowlen: int, n: int) -> Any:
    def gen(chunk_size: int) -> Iterator[pd.DataFrame]:
        with p.open("rb") as fh:
            for start in range(0, n, chunk_size):
                yield _fits_rows_from(fh, header, data_loc, rowlen, start,
                                      min(chunk_size, n - start))

    return gen


def _fits_byte_rows(p: Path, header: Any, data_loc: int, rowlen: int
                    ) -> Callable[[int, int], pd.DataFrame]:
    def read(lo: int, hi: int) -> pd.DataFrame:
        with p.open("rb") as fh:
            return _fits_rows_from(fh, header, data_loc, rowlen, lo, hi - lo)

    return read


def _fits_memmap_rows(p: Path, index: int) -> Callable[[int, int], pd.DataFrame]:
    from astropy.table import Table

    def read(lo: int, hi: int) -> pd.DataFrame:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = Table.read(p, hdu=index, memmap=True)
        return table_to_frame(table[lo:hi])

    return read


def _fits_memmap_chunks(p: Path, index: int) -> Any:
    from astropy.table import Table

    def gen(chunk_size: int) -> Iterator[pd.DataFrame]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = Table.read(p, hdu=index, memmap=tf.compression(p) is None)
        for start in range(0, len(table), chunk_size):
            yield table_to_frame(table[start:start + chunk_size])

    return gen


_NULLABLE_INT = {"int8": "Int8", "int16": "Int16", "int32": "Int32", "int64": "Int64",
                 "uint8": "UInt8", "uint16": "UInt16", "uint32": "UInt32", "uint64": "UInt64"}


def table_to_frame(table: Any) -> pd.DataFrame:
    """An astropy Table as a DataFrame with stable, exact dtypes.

    Integers stay int64 (nullable ``Int64`` where masked), booleans
    ``boolean``, bytes are decoded to str, big-endian data is made native, and
    multi-dimensional cells become JSON strings.
    """
    cols: dict[str, Any] = {}
    for name in table.colnames:
        col = table[name]
        mask = getattr(col, "mask", None)
        data = np.asarray(col)
        if data.ndim > 1:
            cols[name] = [json.dumps(np.asarray(v).tolist()) for v in data]
            continue
        kind = data.dtype.kind
        has_mask = mask is not None and np.any(mask)
        if kind in "SU":
            vals = data.astype(str) if kind == "U" else np.char.decode(data, "utf-8", "replace")
            vals = np.char.rstrip(vals).astype(object)
            if has_mask:
                vals[np.asarray(mask)] = ""
            cols[name] = vals
        elif kind in "iu":
            arr = data.astype(data.dtype.newbyteorder("="))
            if has_mask:
                nullable = pd.array(arr, dtype=_NULLABLE_INT[arr.dtype.name])
                nullable[np.asarray(mask)] = pd.NA
                cols[name] = nullable
            else:
                cols[name] = arr
        elif kind == "b":
            if has_mask:
                b = pd.array(data.astype(bool), dtype="boolean")
                b[np.asarray(mask)] = pd.NA
                cols[name] = b
            else:
                cols[name] = data.astype(bool)
        elif kind == "f":
            arr = data.astype(data.dtype.newbyteorder("="))
            if has_mask:
                arr = np.where(np.asarray(mask), np.nan, arr)
            cols[name] = arr
        elif kind == "O":
            cols[name] = np.array(["" if v is None else (v.decode() if isinstance(v, bytes)
                                                         else str(v)) for v in data],
                                  dtype=object)
        else:
            cols[name] = data.astype(str).astype(object)
    return pd.DataFrame(cols)


def _open_votable(p: Path) -> CatalogReader:
    size = p.stat().st_size
    if size > VOTABLE_MAX_BYTES:
        raise GalmergeError(
            f"{p}: VOTable of {size / 2**20:.0f} MiB; VOTables are parsed whole and galmerge "
            f"refuses more than {VOTABLE_MAX_BYTES / 2**20:.0f} MiB",
            hint="convert it to Parquet or FITS (e.g. with TOPCAT/STILTS) and classify that")
    from astropy.io.votable import parse_single_table

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = parse_single_table(str(p)).to_table()
    except Exception as exc:  # the XML parser raises many kinds
        raise _unparseable(p, "VOTable", exc) from None

    def gen(chunk_size: int) -> Iterator[pd.DataFrame]:
        for start in range(0, len(table), chunk_size):
            yield table_to_frame(table[start:start + chunk_size])

    return CatalogReader(p, "votable", list(table.colnames), len(table),
                         note=f"parsed whole (not streamable; limit "
                              f"{VOTABLE_MAX_BYTES // 2**20} MiB)", _impl=gen,
                         meta=astropy_meta(table))


def arrow_to_frame(table: Any) -> pd.DataFrame:
    """A pyarrow Table as a DataFrame with nullable ints/bools (no int->float)."""
    import pyarrow as pa

    def mapper(t: Any) -> Any:
        if pa.types.is_integer(t):
            return {8: pd.Int8Dtype(), 16: pd.Int16Dtype(), 32: pd.Int32Dtype(),
                    64: pd.Int64Dtype()}[t.bit_width] if pa.types.is_signed_integer(t) else {
                8: pd.UInt8Dtype(), 16: pd.UInt16Dtype(), 32: pd.UInt32Dtype(),
                64: pd.UInt64Dtype()}[t.bit_width]
        if pa.types.is_boolean(t):
            return pd.BooleanDtype()
        return None

    frame = table.to_pandas(types_mapper=mapper)
    for c in frame.columns:
        if frame[c].dtype == object:
            vals = frame[c].to_numpy()
            if any(isinstance(v, list | np.ndarray | dict) for v in vals[:50]):
                frame[c] = [json.dumps(np.asarray(v).tolist()) if v is not None else ""
                            for v in vals]
    return frame


def _open_parquet(p: Path) -> CatalogReader:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise _unparseable(p, "Parquet", exc) from None
    names = list(pf.schema_arrow.names)

    def gen(chunk_size: int) -> Iterator[pd.DataFrame]:
        try:
            for batch in pf.iter_batches(batch_size=chunk_size):
                yield arrow_to_frame(pa.Table.from_batches([batch]))
        except (pa.ArrowInvalid, OSError) as exc:
            raise _unparseable(p, "Parquet", exc) from None

    md = pf.metadata
    blocks = tuple(md.row_group(i).num_rows for i in range(md.num_row_groups))
    layout = RowLayout(parquet_rows(p, blocks), blocks=blocks)
    return CatalogReader(p, "parquet", names, pf.metadata.num_rows,
                         note="streamed with pyarrow iter_batches", _impl=gen,
                         meta=_arrow_meta(pf.schema_arrow), layout=layout)


def parquet_rows(p: Path, blocks: tuple[int, ...]) -> Callable[[int, int], pd.DataFrame]:
    """``read(lo, hi)``: rows of one Parquet file, reading only the row groups that hold them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ends = np.cumsum(blocks)
    last_read: dict[tuple[int, int], Any] = {}  # the row groups read last (pieces of one)
    lock = threading.Lock()

    def read(lo: int, hi: int) -> pd.DataFrame:
        first = int(np.searchsorted(ends, lo, side="right"))
        last = int(np.searchsorted(ends, hi - 1, side="right"))
        offset = int(ends[first - 1]) if first else 0
        with lock:
            table = last_read.get((first, last))
            if table is None:
                try:
                    table = pq.ParquetFile(p).read_row_groups(list(range(first, last + 1)))
                except (pa.ArrowInvalid, OSError) as exc:
                    raise _unparseable(p, "Parquet", exc) from None
                last_read.clear()
                last_read[(first, last)] = table
        return arrow_to_frame(table.slice(lo - offset, hi - lo))

    return read


def _arrow_meta(schema: Any) -> TableMeta:
    """Column metadata of a Parquet file: astropy's ``table_meta_yaml``, else field metadata."""
    md = {k.decode(): v.decode("utf-8", "replace") for k, v in (schema.metadata or {}).items()}
    if "table_meta_yaml" in md:
        meta = _yaml_meta(md["table_meta_yaml"].split("\n"))
        if meta is not None:
            return meta
    cols = {}
    for f in schema:
        fm = {k.decode(): v.decode("utf-8", "replace") for k, v in (f.metadata or {}).items()}
        cm = ColumnMeta(unit=fm.get("unit"), ucd=fm.get("ucd"),
                        description=fm.get("description"), format=fm.get("format"))
        if not cm.is_empty():
            cols[f.name] = cm
    return TableMeta(cols, {})


def _yaml_meta(lines: list[str]) -> TableMeta | None:
    """Metadata from an astropy YAML table header (Parquet/HDF5 ``serialize_meta``)."""
    from astropy.table import meta as table_meta

    try:
        header = table_meta.get_header_from_yaml(lines)
    except Exception:  # a foreign or broken header: metadata is optional
        return None
    if not isinstance(header, dict) or "datatype" not in header:
        return None
    return _ecsv_meta(header)


def _find_h5_table(h5: Any) -> list[str]:
    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        import h5py

        if isinstance(obj, h5py.Dataset) and obj.dtype.names and obj.ndim == 1:
            found.append(name)

    h5.visititems(visit)
    return found


def _open_hdf5(p: Path) -> CatalogReader:
    import h5py

    try:
        h5 = h5py.File(p, "r")
    except OSError as exc:
        raise _unparseable(p, "HDF5", exc) from None
    with h5:
        tables = _find_h5_table(h5)
        if not tables:
            hint = ("this is an image dataset: pass it as --cutouts with a catalogue of ids"
                    if "images" in h5 else "write the catalogue with astropy "
                    "Table.write(path, format='hdf5', path='table')")
            raise GalmergeError(f"{p}: no table (1-D compound dataset) in the HDF5 file",
                                hint=hint)
        path = next((t for t in tables if t.split("/")[-1] in ("table", "data", "catalog",
                                                               "catalogue")), tables[0])
        ds = h5[path]
        names = list(ds.dtype.names)
        n = int(ds.shape[0])
        yaml = h5.get(path + ".__table_column_meta__")
        meta = (_yaml_meta([b.decode("utf-8", "replace") for b in yaml[()]])
                if yaml is not None else None)

    def gen(chunk_size: int) -> Iterator[pd.DataFrame]:
        from astropy.table import Table

        with h5py.File(p, "r") as f:
            d = f[path]
            for start in range(0, n, chunk_size):
                yield table_to_frame(Table(d[start:start + chunk_size]))

    def read(lo: int, hi: int) -> pd.DataFrame:
        from astropy.table import Table

        with h5py.File(p, "r") as f:
            return table_to_frame(Table(f[path][lo:hi]))

    return CatalogReader(p, "hdf5", names, n, note=f"h5py slices of {path!r}", _impl=gen,
                         meta=meta or TableMeta(), layout=RowLayout(read))


def read_catalog(path: str | Path, fmt: str | None = None) -> pd.DataFrame:
    """Read a whole (small) catalogue into one DataFrame (tests, notebooks)."""
    reader = open_catalog(path, fmt)
    frames = [f for _, f in reader.chunks(1 << 20)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
