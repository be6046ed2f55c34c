"""Text tables as astronomers publish them: compression, line ends, format by content.

* :func:`open_binary` opens a file through gzip/bz2/xz when its first bytes say
  so (whatever the extension), :func:`text_lines` yields its lines with any line
  end (LF, CR LF, CR, CR CR LF) and without blank lines.
* :func:`sniff` names the format of a file from its content: the binary formats
  by their magic bytes, ECSV by its first line, and text tables by their shape
  (IPAC ``|`` headers, a CDS/MRT byte-by-byte description or a VizieR ``ReadMe``
  beside the data file, SExtractor ``#   1 NAME`` headers, tabs, commas, a
  fixed-width header rule, a ``#`` commented header, or whitespace columns).
  Each guess is checked by parsing the first lines with astropy; a table no
  reader accepts gets one line naming what was tried.
* :func:`open_text_table` reads the text formats other than CSV/TSV/ECSV (which
  :mod:`galmerge.inference.catalog` streams with pandas) **in chunks through
  astropy's own readers**: the header lines are kept and each chunk is the
  header plus the next data lines, so memory is one chunk whatever the file's
  size. Untyped formats (whitespace, commented header, fixed width, SExtractor)
  keep every value as its original text (ids exact; the output infers types);
  typed ones (IPAC, CDS/MRT) keep the types they declare.

Torch-free.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from galmerge.errors import GalmergeError
from galmerge.inference.tablemeta import TableMeta, astropy_meta

__all__ = ["ASTROPY_TEXT_FORMATS", "TEXT_FORMATS", "TextLayout", "compression", "head_lines",
           "open_binary", "readme_for", "sniff", "text_lines"]

#: Text formats read through astropy in chunks (name -> astropy format).
ASTROPY_TEXT_FORMATS = {
    "whitespace": "basic", "commented_header": "commented_header",
    "fixed_width": "fixed_width", "fixed_width_two_line": "fixed_width_two_line",
    "ipac": "ipac", "cds": "cds", "mrt": "mrt", "sextractor": "sextractor"}
#: Every text format galmerge reads (CSV/TSV/ECSV stream through pandas).
TEXT_FORMATS = ("csv", "tsv", "ecsv", *ASTROPY_TEXT_FORMATS)
#: Formats whose header declares column types (kept); the others are read as text.
TYPED_FORMATS = ("ipac", "cds", "mrt")
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"))
_BINARY_MAGIC = ((b"SIMPLE  =", "fits"), (b"PAR1", "parquet"), (b"\x89HDF\r\n\x1a\n", "hdf5"))
_HEAD_LINES = 200
_SELF_EVIDENT = ("csv", "tsv", "ipac", "cds", "mrt", "sextractor")
_RULE = re.compile(r"^[\s\-=+|]*[-=][\s\-=+|]*$")
_LINE_END = re.compile(r"\r\r\n|\r\n|\r|\n")


def compression(path: Path) -> str | None:
    """``gzip``, ``bz2`` or ``xz`` when the file's first bytes say so, else None."""
    with path.open("rb") as f:
        start = f.read(6)
    return next((name for magic, name in _MAGIC if start.startswith(magic)), None)


def open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed when it is gzip/bz2/xz (by content)."""
    kind = compression(path)
    if kind == "gzip":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if kind == "bz2":
        return bz2.open(path, "rb")  # type: ignore[return-value]
    if kind == "xz":
        return lzma.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def text_lines(path: Path) -> Iterator[str]:
    """The file's non-blank lines, any line end removed (CR CR LF included)."""
    with open_binary(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        pending = ""
        for block in iter(lambda: text.read(1 << 20), ""):
            parts = _LINE_END.split(pending + block)
            pending = parts.pop()
            if pending.endswith("\r"):  # a CR that may be the start of CR LF / CR CR LF
                parts.append(pending[:-1])
                pending = "\r"
            for line in parts:
                if line.strip():
                    yield line
        if pending.strip():
            yield pending.rstrip("\r")


def head_lines(path: Path, n: int = _HEAD_LINES) -> list[str]:
    """The first ``n`` non-blank lines."""
    out = []
    for line in text_lines(path):
        out.append(line)
        if len(out) >= n:
            break
    return out


def readme_for(path: Path) -> Path | None:
    """A VizieR ``ReadMe`` beside ``path`` that describes it (byte-by-byte), else None."""
    name = path.name.removesuffix(".gz")
    for cand in ("ReadMe", "README", "readme", "ReadMe.txt"):
        readme = path.with_name(cand)
        if readme.is_file() and readme != path:
            try:
                text = readme.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            if re.search(rf"Byte-by-byte Description of file:.*\b{re.escape(name)}", text):
                return readme
    return None


def sniff_binary(path: Path) -> str | None:
    """Binary formats (and VOTable/ECSV) from the first decompressed bytes."""
    with open_binary(path) as f:
        start = f.read(512)
    for magic, fmt in _BINARY_MAGIC:
        if start.startswith(magic):
            return fmt
    text = start.decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    if text.startswith("# %ECSV"):
        return "ecsv"
    if text.startswith("<?xml") or text.startswith("<VOTABLE"):
        return "votable"
    return None


def _candidates(lines: list[str], path: Path) -> list[str]:
    """Text formats in the order the content suggests them (best first)."""
    first = lines[0]
    comments = [ln for ln in lines if ln.lstrip().startswith("#")]
    body = [ln for ln in lines if not ln.lstrip().startswith("#")]
    order: list[str] = []
    if readme_for(path):
        order.append("cds")
    if any("Byte-by-byte Description" in ln for ln in lines[:60]):
        order.append("mrt")
    if first.startswith("\\") or (first.startswith("|") and body
                                  and not body[-1].lstrip().startswith("|")):
        order.append("ipac")
    if re.match(r"^#\s+1\s+\S+", first):
        order.append("sextractor")
    if body and "\t" in body[0]:
        order.append("tsv")
    if body and "," in body[0] and all(ln.count(",") >= body[0].count(",")
                                       for ln in body[1:6]):
        order.append("csv")
    if len(body) > 1 and _RULE.match(body[1]) and not _RULE.match(body[0]):
        order.append("fixed_width_two_line" if "|" not in body[0] else "fixed_width")
    if body and body[0].lstrip().startswith("|"):
        order.append("fixed_width")
    if comments and body and lines[0].lstrip().startswith("#"):
        order.append("commented_header")
    order += ["whitespace", "fixed_width"]
    return list(dict.fromkeys(order))


def sniff(path: Path) -> str:
    """The format of ``path`` from its content (see the module docstring).

    Raises:
        GalmergeError: no reader accepts the first lines; names what was tried.
    """
    binary = sniff_binary(path)
    if binary:
        return binary
    lines = head_lines(path)
    if not lines:
        raise GalmergeError(f"{path}: catalogue file has no text lines")
    if any("\x00" in ln for ln in lines):
        raise GalmergeError(f"{path}: binary file of no known table format (tried FITS, "
                            "Parquet, HDF5, VOTable, ECSV magic bytes)", hint="pass --format")
    tried = []
    for fmt in _candidates(lines, path):
        tried.append(fmt)
        # formats that announce themselves are trusted (their reader then names any
        # fault); the others must parse their first lines
        if fmt in _SELF_EVIDENT or _parses(fmt, lines, path):
            return fmt
    raise GalmergeError(f"{path}: cannot tell the table format (tried {', '.join(tried)} on "
                        "its first lines)", hint="pass --format")


def _parses(fmt: str, lines: list[str], path: Path) -> bool:
    try:
        layout = layout_for(fmt, lines, path)
        table = layout.read(layout.data_lines(lines)[:20])
    except Exception:  # any astropy reader error means: not this format
        return False
    return len(table) > 0 and (len(table.colnames) > 1 or fmt in ("cds", "mrt", "ipac"))


# --- the chunked astropy reader ------------------------------------------------------

def _str_converters() -> dict[str, Any]:
    from astropy.io import ascii

    return {"*": [ascii.convert_numpy(str)]}


@dataclass
class TextLayout:
    """How a text table splits into header lines and data lines for astropy."""

    format: str
    header: list[str]
    kwargs: dict[str, Any] = field(default_factory=dict)
    readme: Path | None = None
    table_name: str | None = None

    @property
    def typed(self) -> bool:
        """The format declares column types (kept) rather than text."""
        return self.format in TYPED_FORMATS

    def data_lines(self, lines: list[str]) -> list[str]:
        """``lines`` (non-blank lines from the top of the file) minus the header."""
        return lines[len(self.header):]

    def read(self, data: list[str]) -> Any:
        """An astropy Table of the header plus ``data`` lines."""
        from astropy.io import ascii

        kw = dict(self.kwargs)
        if not self.typed:
            kw["converters"] = _str_converters()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.format == "cds":
                reader = ascii.get_reader(ascii.Cds, readme=str(self.readme))
                reader.data.table_name = self.table_name
                return reader.read(list(data))
            return ascii.read(self.header + list(data), format=ASTROPY_TEXT_FORMATS[self.format],
                              guess=False, fast_reader=False, **kw)


def layout_for(fmt: str, lines: list[str], path: Path) -> TextLayout:
    """The :class:`TextLayout` of a file whose first non-blank lines are ``lines``."""
    if fmt == "cds":
        readme = readme_for(path)
        if readme is None:
            raise GalmergeError(f"{path}: no VizieR ReadMe beside the file describes it",
                                hint="put the ReadMe in the same folder")
        return TextLayout("cds", [], readme=readme, table_name=path.name.removesuffix(".gz"))
    if fmt == "ipac":
        return TextLayout("ipac", _leading(lines, ("\\", "|")))
    if fmt == "sextractor":
        return TextLayout("sextractor", _leading(lines, ("#",)))
    if fmt == "commented_header":
        head = _leading(lines, ("#",))
        return TextLayout(fmt, head, {"header_start": len(head) - 1, "data_start": 0})
    if fmt == "mrt":
        rules = [i for i, ln in enumerate(lines) if re.fullmatch(r"-{10,}\s*", ln)]
        if not rules:
            raise GalmergeError(f"{path}: MRT table without a '-----' line ending its header")
        return TextLayout("mrt", lines[:rules[-1] + 1])
    if fmt == "fixed_width_two_line":
        return TextLayout(fmt, lines[:2])
    if fmt == "fixed_width":
        if len(lines) > 1 and _RULE.match(lines[1]):
            return TextLayout(fmt, lines[:2], {"header_start": 0, "position_line": 1,
                                               "data_start": 2})
        return TextLayout(fmt, lines[:1], {"delimiter": " " if "|" not in lines[0] else "|"})
    if fmt == "whitespace":
        head = _leading(lines, ("#",))
        return TextLayout(fmt, lines[:len(head) + 1])
    raise GalmergeError(f"{path}: {fmt} is not a chunked text format")


def _leading(lines: list[str], prefixes: tuple[str, ...]) -> list[str]:
    out = []
    for ln in lines:
        if not ln.lstrip().startswith(prefixes):
            break
        out.append(ln)
    return out


@dataclass
class TextTable:
    """An opened text table: names, metadata, an estimate of its rows and a chunk source."""

    columns: list[str]
    meta: TableMeta
    typed: bool
    note: str
    header_lines: int
    chunks: Callable[[int], Iterator[Any]]  # chunk_size -> astropy Tables


def open_text_table(path: Path, fmt: str) -> TextTable:
    """Open ``path`` (format ``fmt``, one of :data:`ASTROPY_TEXT_FORMATS`) for chunked reading.

    Raises:
        GalmergeError: the first lines do not parse as ``fmt`` (one line).
    """
    lines = head_lines(path)
    if not lines:
        raise GalmergeError(f"{path}: catalogue file has no text lines")
    layout = layout_for(fmt, lines, path)
    try:
        sample = layout.read(layout.data_lines(lines)[:20])
    except Exception as exc:  # astropy raises many kinds for a table that is not this format
        text = " ".join(str(exc).split())[:200]
        raise GalmergeError(f"{path}: cannot read as {fmt} ({type(exc).__name__}: {text})",
                            hint="check the file, or pass another --format") from None

    def chunks(chunk_size: int) -> Iterator[Any]:
        it = text_lines(path)
        for _ in range(len(layout.header)):
            next(it, None)
        batch: list[str] = []
        for line in it:
            batch.append(line)
            if len(batch) >= chunk_size:
                yield _read_chunk(layout, batch, path)
                batch = []
        if batch:
            yield _read_chunk(layout, batch, path)

    return TextTable(columns=list(sample.colnames), meta=astropy_meta(sample),
                     typed=layout.typed, header_lines=len(layout.header),
                     note=f"astropy {ASTROPY_TEXT_FORMATS[fmt]} reader, in chunks of lines",
                     chunks=chunks)


def _read_chunk(layout: TextLayout, batch: list[str], path: Path) -> Any:
    try:
        return layout.read(batch)
    except Exception as exc:  # a bad line somewhere in this chunk
        text = " ".join(str(exc).split())[:200]
        raise GalmergeError(f"{path}: cannot read as {layout.format} ({type(exc).__name__}: "
                            f"{text})", hint="check the file near the named line") from None
