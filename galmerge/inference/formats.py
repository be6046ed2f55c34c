"""One table of the table formats: name, extensions, whether read and written, metadata.

:data:`TABLE_FORMATS` is the one list: :mod:`~galmerge.inference.catalog` finds a
catalogue's format from its extension here, :mod:`~galmerge.inference.writers` an
output's, and the run a default output's extension. The readers and writers
themselves live beside the code they share (:func:`~galmerge.inference.catalog.open_catalog`,
``writers._WRITERS``), keyed by these names; a test checks that the writers are
exactly the formats the table says are written. Text formats without a telling extension
(``.txt``, ``.dat``, ...) are recognised by content (:mod:`~galmerge.inference.textformats`).
Torch-free, no dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BY_NAME", "OUTPUT_EXTENSIONS", "TABLE_FORMATS", "TableFormat", "format_of_extension"]


@dataclass(frozen=True)
class TableFormat:
    """One table format.

    Attributes:
        name: the format's name (``--format``, ``catalog_format`` in the run metadata).
        extensions: file extensions that name it for a catalogue.
        output: extensions an output of this format may have (the first is the
            default); empty when galmerge does not write it.
        metadata: where column units/UCDs/descriptions and the run metadata go
            (docs/formats.md).
    """

    name: str
    extensions: tuple[str, ...]
    output: tuple[str, ...] = ()
    metadata: str = ""

    @property
    def written(self) -> bool:
        """galmerge writes outputs in this format."""
        return bool(self.output)


TABLE_FORMATS: tuple[TableFormat, ...] = (
    TableFormat("csv", (".csv",), (".csv",),
                "column metadata and run metadata in the sidecar OUT.meta.json"),
    TableFormat("tsv", (".tsv",)),
    TableFormat("ecsv", (".ecsv",), (".ecsv",),
                "the YAML header: column unit/description/ucd, run metadata under galmerge"),
    TableFormat("fits", (".fits", ".fit", ".fts"), (".fits", ".fit"),
                "TUNITn/TCOMMn/TUCDn; run metadata as HIERARCH GALMERGE cards"),
    TableFormat("votable", (".vot", ".votable", ".xml"), (".vot", ".votable", ".xml"),
                "FIELD unit/ucd and DESCRIPTION; run metadata as INFO elements"),
    TableFormat("parquet", (".parquet", ".pq"), (".parquet", ".pq"),
                "Arrow field metadata; run metadata as schema metadata galmerge"),
    TableFormat("hdf5", (".h5", ".hdf5", ".hdf"), (".h5", ".hdf5"),
                "attributes unit:/ucd:/description:NAME; run metadata as table attributes"),
    TableFormat("ipac", (".ipac",)),
    TableFormat("mrt", (".mrt",)),
)
#: Format by name.
BY_NAME = {f.name: f for f in TABLE_FORMATS}
#: Output extension -> format name.
OUTPUT_EXTENSIONS = {ext: f.name for f in TABLE_FORMATS for ext in f.output}
_CATALOG_EXTENSIONS = {ext: f.name for f in TABLE_FORMATS for ext in f.extensions}


def format_of_extension(ext: str) -> str | None:
    """The catalogue format an extension (with its dot, lower case) names, or None."""
    return _CATALOG_EXTENSIONS.get(ext)
