"""Column metadata (units, UCDs, descriptions) carried from the input table to every output.

A catalogue's columns keep what the astronomer put in: :class:`ColumnMeta`
holds one column's unit, UCD, description and display format, in astropy's
conventions (``Column.unit``, ``Column.description``, ``Column.format`` and
``Column.meta["ucd"]``, which is where astropy's VOTable reader puts a
FIELD's ucd and its writer looks for it). :class:`TableMeta` is the whole
table's: per-column metadata plus the table's own ``meta`` (e.g. an ECSV
header's keywords).

The result columns that ``classify`` adds are described here too
(:func:`result_column_meta`), and :func:`safe_names` is the one place that
decides how input names that collide (duplicates, or names of result
columns such as ``status``) are renamed.

Torch-free.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

__all__ = ["COLUMN_DESCRIPTIONS", "RESULT_COLUMNS", "ColumnMeta", "TableMeta",
           "arrow_field_metadata", "astropy_meta", "astropy_yaml", "fits_column_cards",
           "has_xml_bad", "result_column_meta",
           "safe_names", "votable_field_attrs", "xml_safe"]

#: Columns added to every row by ``classify``.
RESULT_COLUMNS = ("p_merger", "p_merger_raw", "p_merger_spread", "is_merger", "ood",
                  "bright_star", "no_sky", "status", "status_detail")
#: What the score columns mean (issue 11); also recorded in the run metadata.
COLUMN_DESCRIPTIONS = {
    "p_merger": "probability that the galaxy is a merger at the run's merger fraction "
                "(prior_used): the raw score through the model's score map "
                "(probability_calibration, Platt 1999), then shifted by Bayes' rule "
                "(Saerens et al. 2002 eq. 2.4) from the map's reference fraction",
    "p_merger_raw": "the model's softmax score (balanced-training prior), identity view",
    "p_merger_spread": "std (ddof 0) of the raw score over the views, and the members of a "
                       "seed ensemble (views_description)",
    "is_merger": "p_merger_raw >= the run's threshold (threshold, threshold_rule), and "
                 "neither bright_star nor no_sky",
    "ood": "true when the model input is unlike the training images (reason in status_detail)",
    "bright_star": "true when a saturated star sits near the centre of the cutout (reason in "
                   "status_detail; SDSS colour JPEGs only): never is_merger; rank merger "
                   "candidates by p_merger among rows with bright_star and no_sky false",
    "no_sky": "true when one side of the cutout's border holds no sky (the galaxy is larger "
              "than its cutout, or lies in a bright halo; SDSS colour JPEGs only): never "
              "is_merger; a larger cutout is the fix",
}
STATUS_DOC = "docs/statuses.md"


@dataclass(frozen=True)
class ColumnMeta:
    """What a table says about one column (all optional)."""

    unit: str | None = None
    ucd: str | None = None
    description: str | None = None
    format: str | None = None

    def is_empty(self) -> bool:
        """True when nothing is known."""
        return not (self.unit or self.ucd or self.description or self.format)

    def to_dict(self) -> dict[str, str]:
        """The known fields only (plain JSON)."""
        return {k: v for k, v in (("unit", self.unit), ("ucd", self.ucd),
                                  ("description", self.description),
                                  ("format", self.format)) if v}

    def apply_to(self, col: Any) -> None:
        """Set these fields on an astropy ``Column`` (astropy's own attributes)."""
        if self.unit:
            try:
                col.unit = self.unit
            except ValueError:  # a unit astropy cannot parse: keep it as words
                col.meta["unit"] = self.unit
        if self.description:
            col.description = self.description
        if self.format:
            try:
                col.format = self.format
            except ValueError:
                pass
        if self.ucd:
            col.meta["ucd"] = self.ucd


@dataclass
class TableMeta:
    """Per-column metadata and the table's own keywords."""

    columns: dict[str, ColumnMeta] = field(default_factory=dict)
    table: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> ColumnMeta:
        """The metadata of column ``name`` (empty when unknown)."""
        return self.columns.get(name, ColumnMeta())

    def renamed(self, mapping: dict[str, str]) -> TableMeta:
        """The same metadata under renamed columns (``old -> new``)."""
        return TableMeta({mapping.get(k, k): v for k, v in self.columns.items()},
                         dict(self.table))

    def with_columns(self, extra: dict[str, ColumnMeta]) -> TableMeta:
        """A copy with more (or replaced) columns."""
        return TableMeta({**self.columns, **extra}, dict(self.table))

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (sidecars, manifests)."""
        return {"columns": {k: v.to_dict() for k, v in self.columns.items() if not v.is_empty()},
                "table": json.loads(json.dumps(self.table, default=str))}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    s = str(value).strip()
    return s or None


def astropy_meta(table: Any) -> TableMeta:
    """The metadata of an astropy ``Table`` (units, UCDs, descriptions, formats, meta)."""
    cols = {}
    for name in table.colnames:
        col = table[name]
        meta = getattr(col, "meta", None) or {}
        unit = col.unit.to_string() if getattr(col, "unit", None) is not None else None
        cols[name] = ColumnMeta(unit=_text(unit) or _text(meta.get("unit")),
                                ucd=_text(meta.get("ucd")),
                                description=_text(getattr(col, "description", None)),
                                format=_text(getattr(col, "format", None))
                                if isinstance(getattr(col, "format", None), str) else None)
    table_meta = {str(k): v for k, v in dict(table.meta or {}).items()
                  if isinstance(k, str) and _plain(v)}
    return TableMeta({k: v for k, v in cols.items() if not v.is_empty()}, table_meta)


def _plain(value: Any) -> bool:
    """A value that serialises to JSON/YAML/FITS cards without surprises."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def result_column_meta(model: str, threshold: float | None) -> dict[str, ColumnMeta]:
    """Descriptions and UCDs of the columns ``classify`` adds."""
    cut = f"{threshold:g}" if threshold is not None else "the threshold"
    return {
        "p_merger": ColumnMeta(ucd="stat.probability",
                               description=f"{COLUMN_DESCRIPTIONS['p_merger']}; model {model}; "
                                           f"NaN when the row was not classified (see status)"),
        "p_merger_raw": ColumnMeta(ucd="stat.probability",
                                   description=COLUMN_DESCRIPTIONS["p_merger_raw"]),
        "p_merger_spread": ColumnMeta(ucd="stat.stdev",
                                      description=COLUMN_DESCRIPTIONS["p_merger_spread"]),
        "is_merger": ColumnMeta(ucd="meta.code",
                                description=f"p_merger_raw >= {cut}, and neither bright_star "
                                            "nor no_sky; null when not classified (False in "
                                            "FITS/HDF5: select status == 'ok')"),
        "ood": ColumnMeta(ucd="meta.code.qual", description=COLUMN_DESCRIPTIONS["ood"]),
        "bright_star": ColumnMeta(ucd="src.class.starGalaxy",
                                  description=COLUMN_DESCRIPTIONS["bright_star"]),
        "no_sky": ColumnMeta(ucd="meta.code.qual", description=COLUMN_DESCRIPTIONS["no_sky"]),
        "status": ColumnMeta(ucd="meta.code.status",
                             description=f"row status: ok or why not classified "
                                         f"(see {STATUS_DOC})"),
        "status_detail": ColumnMeta(ucd="meta.note",
                                    description=f"the status in words, and notes on classified "
                                                f"rows (see {STATUS_DOC})"),
    }


def safe_names(names: Sequence[str], reserved: Sequence[str] = RESULT_COLUMNS
               ) -> tuple[list[str], dict[int, str], list[str]]:
    """Input column names made unique and clear of the result columns.

    A name equal (case-insensitively: FITS and VOTable readers ignore case) to
    a result column becomes ``<name>_input``; an exactly repeated name becomes
    ``<name>_2``, ``<name>_3``... Either way the new name is one no other
    column has (case-insensitively).

    Returns:
        the new names (in order), ``{position: new name}`` for the renamed
        ones, and one warning line per renaming.
    """
    taken = {n.lower() for n in names} | {r.lower() for r in reserved}
    seen: set[str] = set()
    reserved_l = {r.lower() for r in reserved}
    out: list[str] = []
    renamed: dict[int, str] = {}
    notes: list[str] = []
    for i, name in enumerate(names):
        low = name.lower()
        if low in reserved_l or name in seen:
            stem, k = (f"{name}_input", 1) if low in reserved_l else (name, 2)
            new = stem if low in reserved_l else f"{stem}_{k}"
            while new.lower() in taken:
                k += 1
                new = f"{stem}_{k}"
            taken.add(new.lower())
            why = "is the name of a result column" if low in reserved_l else "is repeated"
            notes.append(f"input column {name!r} (position {i + 1}) {why}: renamed {new!r}")
            renamed[i] = new
            name = new
        seen.add(name)
        out.append(name)
    return out, renamed, notes


# --- metadata in each output format's own place ---------------------------------------------

_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """``text`` with the characters XML 1.0 cannot hold (NUL, other C0 controls)
    replaced by U+FFFD, so the VOTable stays well-formed."""
    return _XML_BAD.sub("\ufffd", text)


def has_xml_bad(text: str) -> bool:
    """True when :func:`xml_safe` would change ``text``."""
    return _XML_BAD.search(text) is not None


def votable_field_attrs(cm: ColumnMeta) -> tuple[str, str]:
    """A VOTable FIELD's ``unit``/``ucd`` attributes and its ``DESCRIPTION`` element."""
    attrs = "".join(f" {k}={quoteattr(xml_safe(v))}" for k, v in (("unit", cm.unit),
                                                                   ("ucd", cm.ucd)) if v)
    desc = (f"<DESCRIPTION>{escape(xml_safe(cm.description))}</DESCRIPTION>"
            if cm.description else "")
    return attrs, desc


def fits_column_cards(i: int, cm: ColumnMeta) -> list[tuple[str, str, str]]:
    """``(keyword, value, comment)`` cards for column ``i``: TUNIT, TCOMM, TUCD.

    TUNITn is FITS standard; TCOMMn and TUCDn are the conventions TOPCAT/STILTS
    read and write for a column's description and UCD.
    """
    out = []
    for key, value, what in ((f"TUNIT{i}", cm.unit, "physical unit"),
                             (f"TCOMM{i}", cm.description, "description"),
                             (f"TUCD{i}", cm.ucd, "UCD")):
        if value:
            text = value.encode("ascii", "replace").decode("ascii")
            out.append((key, text, what if len(text) + len(what) < 60 else ""))
    return out


def arrow_field_metadata(cm: ColumnMeta) -> dict[bytes, bytes]:
    """A Parquet/Arrow field's metadata: ``unit``, ``ucd``, ``description``, ``format``."""
    return {k.encode(): v.encode("utf-8") for k, v in cm.to_dict().items()}


def astropy_yaml(table: Any, columns: dict[str, ColumnMeta], meta: dict[str, Any]) -> list[str]:
    """astropy's YAML table header (``get_yaml_from_table``) for a zero-row ``table``
    with ``columns`` applied: what astropy writes into Parquet (``table_meta_yaml``)
    and HDF5 (``<path>.__table_column_meta__``), so ``Table.read`` gets units back."""
    from astropy.table import meta as table_meta

    head = table[:0].copy()
    for name in head.colnames:
        if name in columns:
            columns[name].apply_to(head[name])
    head.meta.update(meta)
    return list(table_meta.get_yaml_from_table(head))
