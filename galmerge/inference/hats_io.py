"""HATS catalogues in and out: HEALPix-partitioned Parquet, read and written with ``hats``.

A HATS catalogue is a directory: ``properties`` (the table's keywords),
``partition_info.csv`` (the pixels), ``dataset/Norder=K/Dir=D/Npix=N.parquet``
(one file per pixel) and ``dataset/_metadata`` / ``_common_metadata``.

* :func:`open_hats` reads one as a catalogue whose partitions are its pixels
  (in HEALPix order), so a classify run keeps the input's partitioning;
* :func:`write_hats` turns a finished run's part files (one per pixel) into a
  HATS catalogue with the same pixels and the result columns added: the pixel
  files, ``_metadata``/``_common_metadata`` (``hats``), ``partition_info.csv``
  and ``properties`` (the input's, renamed, with the new row count), so
  ``lsdb.read_hats`` opens it and can cross-match it with the input.

``hats`` is imported when a HATS catalogue is met (``galmerge[dask]``). Torch-free.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from galmerge.errors import GalmergeError
from galmerge.inference.catalog import CatalogReader
from galmerge.inference.parquet_dirs import files_reader

__all__ = ["HATS_FORMAT", "hats_module", "is_hats_dir", "open_hats", "pixel_file", "write_hats"]

#: The ``format`` of a :class:`CatalogReader` over a HATS catalogue.
HATS_FORMAT = "hats"
PROPERTIES = ("properties", "hats.properties")
#: Sky maps of the input that stay true for the output (the same rows per pixel).
SKY_MAPS = ("point_map.fits", "skymap.fits")


def hats_module() -> Any:
    """The ``hats`` package, or a one-line error naming the extra to install."""
    try:
        import hats
    except ImportError:
        raise GalmergeError("HATS catalogues need the hats package",
                            hint="pip install 'galmerge[dask]'") from None
    return hats


def is_hats_dir(path: Path) -> bool:
    """A directory with a HATS ``properties`` file."""
    return path.is_dir() and any((path / name).is_file() for name in PROPERTIES)


def pixel_file(base: Path, order: int, pixel: int) -> Path:
    """``base/dataset/Norder=K/Dir=D/Npix=N.parquet`` (the HATS layout)."""
    return (base / "dataset" / f"Norder={order}" / f"Dir={pixel // 10000 * 10000}"
            / f"Npix={pixel}.parquet")


def open_hats(path: Path) -> CatalogReader:
    """A HATS catalogue as a :class:`CatalogReader` whose partitions are its pixels."""
    hats = hats_module()
    try:
        cat = hats.read_hats(path)
        pixels = [(int(p.order), int(p.pixel)) for p in cat.get_healpix_pixels()]
        schema = cat.schema
    except Exception as exc:  # hats raises many kinds for a broken catalogue
        raise GalmergeError(f"{path}: cannot read as a HATS catalogue "
                            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})",
                            hint="check properties and partition_info.csv") from None
    if not pixels:
        raise GalmergeError(f"{path}: HATS catalogue has no pixels")
    files = [pixel_file(path, o, p) for o, p in pixels]
    groups = _pixel_row_groups(path, files)
    if schema is None:
        raise GalmergeError(f"{path}: HATS catalogue has no dataset/_common_metadata",
                            hint="rewrite its metadata with hats.io.write_parquet_metadata")
    return files_reader(path, HATS_FORMAT, files, groups, schema, whole=True,
                        extra={"pixels": pixels, "ra": cat.catalog_info.ra_column,
                               "dec": cat.catalog_info.dec_column})


def _pixel_row_groups(base: Path, files: list[Path]) -> list[tuple[int, ...]]:
    """Row-group sizes of each pixel file, from ``dataset/_metadata`` (no file is opened).

    Without ``_metadata`` each file's footer is read; a file whose footer cannot be
    read counts no rows here (its rows are unknown).
    """
    import pyarrow.parquet as pq

    found: dict[str, list[int]] = {}
    meta = base / "dataset" / "_metadata"
    if meta.is_file():
        md = pq.read_metadata(meta)
        for i in range(md.num_row_groups):
            rg = md.row_group(i)
            found.setdefault(rg.column(0).file_path, []).append(rg.num_rows)
    out = []
    for f in files:
        rel = f.relative_to(base / "dataset").as_posix()
        if rel in found:
            out.append(tuple(found[rel]))
            continue
        try:
            md = pq.read_metadata(f)
        except Exception as exc:
            raise GalmergeError(f"{f}: HATS pixel file unreadable and not in "
                                f"dataset/_metadata ({type(exc).__name__})",
                                hint="repair the file or rewrite the catalogue's metadata") \
                from None
        out.append(tuple(md.row_group(i).num_rows for i in range(md.num_row_groups)))
    return out


def write_hats(folder: Path, parts: list[Path], pixels: list[tuple[int, int]],
               source: Path, meta: dict[str, Any], *, name: str) -> None:
    """Make ``folder`` (holding ``parts``, one per pixel) a HATS catalogue.

    Args:
        folder: the output being built (renamed into place by the caller).
        parts: part files in pixel order; moved to their pixel paths.
        pixels: ``(order, pixel)`` of each part.
        source: the input HATS catalogue (its properties and sky maps are kept).
        meta: run metadata, stored under the key ``galmerge`` of ``_common_metadata``.
        name: the catalogue's name (``obs_collection`` in ``properties``).
    """
    hats = hats_module()
    from hats.catalog import PartitionInfo, TableProperties
    from hats.pixel_math import HealpixPixel

    for part, (order, pixel) in zip(parts, pixels, strict=True):
        dest = pixel_file(folder, order, pixel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, dest)
    rows = hats.io.write_parquet_metadata(folder)
    _add_run_metadata(folder / "dataset" / "_common_metadata", meta)
    PartitionInfo([HealpixPixel(o, p) for o, p in pixels]).write_to_file(catalog_path=folder)
    props = TableProperties.read_from_dir(source)
    props.copy_and_update(catalog_name=name, total_rows=int(rows)).to_properties_file(folder)
    for sky in SKY_MAPS:
        if (source / sky).is_file():
            shutil.copyfile(source / sky, folder / sky)


def _add_run_metadata(common: Path, meta: dict[str, Any]) -> None:
    """Rewrite ``_common_metadata`` with the run metadata in its schema's key-value pairs."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(common)
    md = dict(schema.metadata or {})
    md[b"galmerge"] = json.dumps(meta, sort_keys=True).encode()
    pq.write_metadata(schema.with_metadata(md), common)
