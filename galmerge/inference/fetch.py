"""``galmerge fetch``: fill a cutout cache from a catalogue, without classifying.

For pipelines that separate I/O from model work: fetch every row's cutout
into a cache directory (``--out``), then ``galmerge classify --cutouts DIR``
reads it offline. Every row gets a status in a CSV status table
(``row, id, ra, dec, status, status_detail``), written atomically.

Reruns fetch nothing already cached; ``--resume`` also skips the rows that
the previous status table records as done (``ok``/``no_coverage``) without
even a cache lookup, and asks again for the others.

Torch-free.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from galmerge.conventions import ModelConvention
from galmerge.errors import GalmergeError
from galmerge.inference.cache import CutoutCache
from galmerge.inference.concurrency import ordered_map
from galmerge.inference.cutouts import NO_COVERAGE, OK, Cutout, CutoutRequest
from galmerge.inference.http import HttpSettings
from galmerge.inference.services import SERVICES, fetch_geometry, make_source

STATUS_COLUMNS = ("row", "id", "ra", "dec", "status", "status_detail")
#: Statuses a resumed fetch does not ask for again.
DONE_STATUSES = (OK, NO_COVERAGE)


@dataclass
class FetchConfig:
    """Settings of one ``galmerge fetch`` run (saved beside the status table)."""

    catalog: Path
    out: Path
    service: str = "sdss"
    status_out: Path | None = None
    model: Path | None = None
    scale: float | None = None
    pixels: int | None = None
    scale_column: str | None = None
    scale_factor: float | None = None
    release: str | None = None
    layer: str | None = None
    bands: str | None = None
    fmt: str | None = None
    hips: str | None = None
    service_url: str | None = None
    concurrency: int = 8
    max_rps: float | None = None
    timeout: float = 30.0
    retries: int = 4
    backoff: float = 1.0
    ra_column: str | None = None
    dec_column: str | None = None
    id_column: str | None = None
    chunk_rows: int = 10_000
    resume: bool = False
    overwrite: bool = False

    def status_path(self) -> Path:
        """Where the status table goes (default: in the cache directory)."""
        if self.status_out is not None:
            return Path(self.status_out)
        return Path(self.out) / f"{Path(self.catalog).name}.fetch-status.csv"


@dataclass
class FetchSummary:
    """What a fetch run did."""

    rows: int
    by_status: dict[str, int]
    stats: dict[str, int]
    seconds: float
    status_table: Path
    skipped_done: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# --- catalogue reading (minimal; classify's reader replaces it when merged) -------------------

_RA_NAMES = ("ra", "ra_deg", "raj2000", "ra_j2000", "ra1", "radeg")
_DEC_NAMES = ("dec", "dec_deg", "dej2000", "decj2000", "dec_j2000", "dec1", "dedeg", "decdeg")
_ID_NAMES = ("objid", "id", "object_id", "objectid", "dr7objid", "specobjid", "name", "source_id")


def _find(columns: list[str], wanted: str | None, names: tuple[str, ...], what: str,
          path: Path, required: bool = True) -> str | None:
    if wanted:
        if wanted in columns:
            return wanted
        raise GalmergeError(f"{path}: no column {wanted!r} for {what}",
                            hint=f"columns are {', '.join(columns[:20])}")
    lower = {c.lower(): c for c in columns}
    for n in names:
        if n in lower:
            return lower[n]
    if required:
        raise GalmergeError(f"{path}: no {what} column (looked for {', '.join(names)})",
                            hint=f"name it with --{what.split()[0].lower()}-column")
    return None


def _frames(path: Path, chunk_rows: int) -> Iterator[Any]:
    import pandas as pd

    suffix = "".join(path.suffixes[-2:]).lower() if path.name.lower().endswith(".gz") else \
        path.suffix.lower()
    if not path.is_file():
        raise GalmergeError(f"{path}: catalogue not found")
    if suffix in (".csv", ".csv.gz", ".tsv", ".txt"):
        sep = "\t" if suffix == ".tsv" else ","
        head = pd.read_csv(path, sep=sep, nrows=0)
        # Identifiers stay strings: 18-digit SDSS objids do not survive float64.
        dtypes = {c: str for c in head.columns if c.lower() in _ID_NAMES}
        yield from pd.read_csv(path, sep=sep, chunksize=chunk_rows, dtype=dtypes)
    elif suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
    elif suffix in (".fits", ".fit", ".fits.gz"):
        from astropy.table import Table

        df = Table.read(path).to_pandas()
        for i in range(0, len(df), chunk_rows):
            yield df.iloc[i:i + chunk_rows]
    else:
        raise GalmergeError(f"{path}: unsupported catalogue type {suffix!r}",
                            hint="use CSV, Parquet or FITS")


def _float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def catalog_requests(config: FetchConfig) -> Iterator[CutoutRequest]:
    """One :class:`CutoutRequest` per catalogue row, read in chunks."""
    path = Path(config.catalog)
    row = 0
    cols: tuple[str, str, str | None, str | None] | None = None
    for df in _frames(path, config.chunk_rows):
        if cols is None:
            names = [str(c) for c in df.columns]
            cols = (str(_find(names, config.ra_column, _RA_NAMES, "RA", path)),
                    str(_find(names, config.dec_column, _DEC_NAMES, "Dec", path)),
                    _find(names, config.id_column, _ID_NAMES, "id", path, required=False),
                    _find(names, config.scale_column, (), "scale", path, required=False)
                    if config.scale_column else None)
        ra_c, dec_c, id_c, sc_c = cols
        ras, decs = df[ra_c].tolist(), df[dec_c].tolist()
        ids = df[id_c].astype(str).tolist() if id_c else None
        scales = df[sc_c].tolist() if sc_c else None
        factor = config.scale_factor if config.scale_factor is not None else 1.0
        for i in range(len(df)):
            scale = None
            if scales is not None:
                s = _float(scales[i])
                scale = s * factor if s is not None else float("nan")
            yield CutoutRequest(row=row, id=ids[i] if ids else str(row), ra=_float(ras[i]),
                                dec=_float(decs[i]), scale=scale)
            row += 1


def convention_from_onnx(path: str | Path) -> ModelConvention:
    """The input convention recorded in an ONNX model's metadata."""
    p = Path(path)
    if not p.is_file():
        raise GalmergeError(f"{p}: model not found")
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types
        raise GalmergeError(f"{p}: not a readable ONNX model ({exc})") from None
    return ModelConvention.from_metadata(sess.get_modelmeta().custom_metadata_map,
                                         source=str(p))


# --- the run ------------------------------------------------------------------------------------

def http_settings(config: FetchConfig) -> HttpSettings:
    """HTTP settings from the run's options."""
    return HttpSettings(concurrency=config.concurrency, max_rps=config.max_rps,
                        read_timeout=config.timeout, connect_timeout=min(10.0, config.timeout),
                        max_attempts=config.retries + 1, backoff_base=config.backoff)


def build_source(config: FetchConfig, cache: CutoutCache) -> Any:
    """The service source a run uses (geometry from --model or --scale/--pixels)."""
    if config.service not in SERVICES:
        raise GalmergeError(f"unknown --fetch {config.service!r}",
                            hint=f"use one of {', '.join(SERVICES)}")
    conv = convention_from_onnx(config.model) if config.model else None
    geometry = fetch_geometry(conv, scale=config.scale, pixels=config.pixels,
                              per_row_scale=bool(config.scale_column))
    if geometry.scale is None and not config.scale_column:
        raise GalmergeError("the model scales cutouts per galaxy: give --scale-column "
                            "(e.g. petroR90_r)")
    if config.scale_column and config.scale_factor is None and conv is not None \
            and conv.petro_scale_factor is not None:
        config.scale_factor = conv.petro_scale_factor
    return make_source(config.service, geometry, url=config.service_url,
                       settings=http_settings(config), cache=cache, release=config.release,
                       layer=config.layer, bands=config.bands, fmt=config.fmt, hips=config.hips)


def _previous_done(path: Path) -> dict[int, tuple[str, str]]:
    done: dict[int, tuple[str, str]] = {}
    with path.open(newline="") as fh:
        for rec in csv.DictReader(fh):
            if rec.get("status") in DONE_STATUSES:
                done[int(rec["row"])] = (rec["status"], rec.get("status_detail", ""))
    return done


def fetch_catalog(config: FetchConfig, *,
                  progress: Callable[[int, Cutout], None] | None = None) -> FetchSummary:
    """Fetch every row's cutout into the cache ``config.out``; write the status table.

    Raises:
        GalmergeError: unreadable catalogue, bad options, or an existing status
            table without ``resume``/``overwrite``.
    """
    t0 = time.perf_counter()
    table = config.status_path()
    if table.exists() and not (config.resume or config.overwrite):
        raise GalmergeError(f"{table} exists", hint="continue with --resume, or --overwrite")
    done = _previous_done(table) if config.resume and table.exists() else {}
    cache = CutoutCache(config.out)
    source = build_source(config, cache)
    counts: Counter[str] = Counter()
    tmp = table.with_name(table.name + ".partial")
    table.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    c = source.settings.concurrency

    def work(req: CutoutRequest) -> tuple[CutoutRequest, Cutout]:
        if req.row in done:
            status, detail = done[req.row]
            return req, Cutout(status, detail=detail)
        return req, source.get_safely(req, decode_cached=False)

    try:
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(STATUS_COLUMNS)
            for req, cut in ordered_map(work, catalog_requests(config), workers=c,
                                        window=c * source.prefetch, name="galmerge-fetch"):
                if progress is not None and req.row not in done:
                    progress(req.row, cut)
                counts[cut.status] += 1
                n += 1
                w.writerow((req.row, req.id, "" if req.ra is None else repr(req.ra),
                            "" if req.dec is None else repr(req.dec), cut.status, cut.detail))
        os.replace(tmp, table)
    finally:
        source.close()
        cache.close()
        if tmp.exists():
            tmp.unlink()
    return FetchSummary(rows=n, by_status=dict(counts), stats=source.stats(),
                        seconds=time.perf_counter() - t0, status_table=table,
                        skipped_done=len(done), extra={"config": _config_dict(config)})


def _config_dict(config: FetchConfig) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
