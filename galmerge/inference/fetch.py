"""Fetching cutouts for catalogues: ``galmerge fetch`` and the fetch side of ``classify``.

* :class:`FetchOptions` — which service, which cutout, how politely; builds the
  :class:`~galmerge.inference.services.ServiceCutoutSource` for a model
  (:meth:`FetchOptions.open_source`). Shared by ``galmerge fetch`` and
  ``galmerge classify --fetch``.
* :func:`fetch_catalog` — ``galmerge fetch``: fill a cutout cache from a
  catalogue without classifying (for pipelines that separate I/O from model
  work), writing a per-row status table (``row, id, ra, dec, status,
  status_detail``) atomically. Reruns fetch nothing already cached;
  ``--resume`` also skips, without a cache lookup, the rows the previous
  status table records as done (``ok``/``no_coverage``) and asks again for
  the others.
* :class:`Prefetcher` — used by the classify pipeline: while chunk ``k`` is
  classified, chunk ``k+1``'s cutouts are fetched into the cache, so the
  network stays busy across chunk boundaries (the source caps requests in
  flight at ``--concurrency`` for both together).

Torch-free.
"""

from __future__ import annotations

import csv
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from galmerge.conventions import ModelConvention
from galmerge.errors import GalmergeError
from galmerge.inference.cache import CACHE_FILE, CutoutCache
from galmerge.inference.catalog import (
    find_columns,
    open_catalog,
)
from galmerge.inference.concurrency import ordered_map
from galmerge.inference.cutouts import (
    BAD_COORDINATES,
    NO_COVERAGE,
    OK,
    Cutout,
    CutoutRequest,
)
from galmerge.inference.http import HttpSettings
from galmerge.inference.models import resolve_model
from galmerge.inference.onnx_wire import read_metadata_props
from galmerge.inference.paths import check_outputs_spare_inputs
from galmerge.inference.row_requests import row_requests, row_scales
from galmerge.inference.services import (
    SERVICES,
    ServiceCutoutSource,
    fetch_geometry,
    make_source,
    open_cached_source,
)

__all__ = [
    "CACHE_ENV",
    "DONE_STATUSES",
    "STATUS_COLUMNS",
    "FetchConfig",
    "FetchOptions",
    "FetchSummary",
    "Prefetcher",
    "catalog_requests",
    "convention_from_onnx",
    "default_cache_dir",
    "fetch_catalog",
]

STATUS_COLUMNS = ("row", "id", "ra", "dec", "status", "status_detail")
#: Statuses a resumed fetch does not ask for again.
DONE_STATUSES = (OK, NO_COVERAGE)
#: Environment variable naming the default cutout cache directory.
CACHE_ENV = "GALMERGE_CACHE"


def default_cache_dir() -> Path:
    """``$GALMERGE_CACHE``, else ``$XDG_CACHE_HOME/galmerge/cutouts`` (``~/.cache/...``)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "galmerge" / "cutouts"


@dataclass
class FetchOptions:
    """Which cutouts to fetch, from where, and how politely.

    Attributes:
        service: ``sdss``, ``legacy`` or ``hips``.
        release, layer, bands, cutout_format, hips: service options
            (see :mod:`galmerge.inference.services`; ``None`` = the service default).
        service_url: base URL (``None``: environment variable, else the public service).
        scale: arcsec per pixel of the fetched cutout, overriding the model's.
        pixels: width = height of the fetched cutout, overriding the model's.
        scale_col, scale_factor: per-row scale = column value x factor (Galaxy
            Zoo style; factor default: the model's ``petro_scale_factor``, else 1).
        concurrency, max_rps, timeout, retries, backoff: see :class:`HttpSettings`.
        cache: cache directory (``None``: :func:`default_cache_dir`).
        use_cache: False fetches without any cache (nothing is kept).
        offline: only read the cache (``classify --cutouts CACHE_DIR``): the
            source is rebuilt from the configuration recorded in the cache
            (``service`` may then be None: any single one recorded).
    """

    service: str | None = "sdss"
    release: str | None = None
    layer: str | None = None
    bands: str | None = None
    cutout_format: str | None = None
    hips: str | None = None
    service_url: str | None = None
    scale: float | None = None
    pixels: int | None = None
    scale_col: str | None = None
    scale_factor: float | None = None
    concurrency: int = 8
    max_rps: float | None = None
    timeout: float = 30.0
    retries: int = 4
    backoff: float = 1.0
    cache: str | None = None
    use_cache: bool = True
    offline: bool = False

    def __post_init__(self) -> None:
        if self.offline and not self.cache:
            raise GalmergeError("reading cutouts offline needs the cache directory")
        if self.service is None and not self.offline:
            raise GalmergeError("no cutout service given", hint=f"--fetch {'/'.join(SERVICES)}")
        if self.service is not None and self.service not in SERVICES:
            raise GalmergeError(f"unknown --fetch {self.service!r}",
                                hint=f"use one of {', '.join(SERVICES)}")
        if self.scale_factor is not None and not self.scale_factor > 0:
            raise GalmergeError(f"--scale-factor must be positive, got {self.scale_factor}")

    def http_settings(self) -> HttpSettings:
        """HTTP behaviour from these options."""
        return HttpSettings(concurrency=self.concurrency, max_rps=self.max_rps,
                            read_timeout=self.timeout, connect_timeout=min(10.0, self.timeout),
                            total_timeout=self.timeout,
                            max_attempts=self.retries + 1, backoff_base=self.backoff)

    def cache_dir(self) -> Path | None:
        """The cache directory to use (None without a cache)."""
        if not self.use_cache:
            return None
        return Path(self.cache) if self.cache else default_cache_dir()

    def factor(self, convention: ModelConvention | None) -> float:
        """Multiplier of :attr:`scale_col`."""
        if self.scale_factor is not None:
            return self.scale_factor
        if convention is not None and convention.petro_scale_factor is not None:
            return convention.petro_scale_factor
        return 1.0

    def open_source(self, convention: ModelConvention | None) -> ServiceCutoutSource:
        """The source for a model (its convention gives size and scale unless overridden)."""
        if self.offline:
            assert self.cache is not None
            return open_cached_source(self.cache, service=self.service)
        assert self.service is not None
        geometry = fetch_geometry(convention, scale=self.scale, pixels=self.pixels,
                                  per_row_scale=bool(self.scale_col))
        if geometry.scale is None and not self.scale_col:
            raise GalmergeError("the model scales cutouts per galaxy: give --scale-col "
                                "(e.g. petroR90_r), or --scale")
        directory = self.cache_dir()
        cache = CutoutCache(directory) if directory is not None else None
        try:
            return make_source(self.service, geometry, url=self.service_url,
                               settings=self.http_settings(), cache=cache,
                               release=self.release, layer=self.layer, bands=self.bands,
                               fmt=self.cutout_format, hips=self.hips)
        except BaseException:
            if cache is not None:
                cache.close()
            raise


# --- prefetching for the classify pipeline ---------------------------------------------------

class Prefetcher:
    """Fetches the next chunk's cutouts into the cache in the background.

    :meth:`submit` hands over a chunk's requests and returns at once; a newer
    submission replaces one that has not started (it would come too late).
    Results are not kept: they land in the source's cache, where the chunk
    itself finds them (a row being fetched by both waits for one answer).
    """

    def __init__(self, source: ServiceCutoutSource) -> None:
        self.source = source
        self._next: list[CutoutRequest] | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.submitted = 0
        self._thread = threading.Thread(target=self._run, name="galmerge-prefetch", daemon=True)
        self._thread.start()

    def submit(self, requests: list[CutoutRequest]) -> None:
        """Prefetch these requests next (replacing a submission not yet started)."""
        with self._cond:
            self._next = requests
            self.submitted += 1
            self._cond.notify()

    def _run(self) -> None:
        c = self.source.settings.concurrency
        while True:
            with self._cond:
                while self._next is None and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
                todo, self._next = self._next, None
            assert todo is not None
            gen = ordered_map(lambda r: self.source.get_safely(r, decode_cached=False), todo,
                              workers=c, window=c * self.source.prefetch,
                              name="galmerge-prefetch")
            try:
                for _ in gen:
                    if self._stop.is_set():
                        break
            except GalmergeError:
                pass  # the chunk itself meets (and reports) the same problem
            finally:
                gen.close()

    def close(self) -> None:
        """Stop prefetching (requests on the wire finish first)."""
        with self._cond:
            self._stop.set()
            self._cond.notify()
        self._thread.join()


# --- galmerge fetch ------------------------------------------------------------------------------

@dataclass
class FetchConfig:
    """Settings of one ``galmerge fetch`` run."""

    catalog: Path
    out: Path
    options: FetchOptions = field(default_factory=FetchOptions)
    model: Path | None = None
    status_out: Path | None = None
    format: str | None = None
    id_col: str | None = None
    ra_col: str | None = None
    dec_col: str | None = None
    chunk_size: int = 10_000
    limit: int | None = None
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
    config: dict[str, Any] = field(default_factory=dict)


def convention_from_onnx(path: str | Path | None) -> ModelConvention | None:
    """The input convention in an ONNX model's metadata (``None``: the default model's,
    or None when the default model is not installed).

    Only the metadata is read (:func:`~galmerge.inference.onnx_wire.read_metadata_props`),
    not the graph: no ONNX Runtime session is opened to learn a cutout's size and scale.
    """
    try:
        model = resolve_model(None if path is None else str(path))
    except GalmergeError:
        if path is None:
            return None
        raise
    return ModelConvention.from_metadata(read_metadata_props(model), source=str(model))


def _previous_done(path: Path) -> dict[int, tuple[str, str]]:
    done: dict[int, tuple[str, str]] = {}
    try:
        with path.open(newline="") as fh:
            for rec in csv.DictReader(fh):
                if rec.get("status") in DONE_STATUSES:
                    done[int(rec["row"])] = (rec["status"], rec.get("status_detail") or "")
    except (OSError, ValueError, KeyError) as exc:
        raise GalmergeError(f"{path}: not a readable fetch status table ({exc})",
                            hint="rerun with --overwrite") from None
    return done


def catalog_requests(config: FetchConfig, convention: ModelConvention | None
                     ) -> Iterator[CutoutRequest]:
    """One :class:`CutoutRequest` per catalogue row, read in chunks."""
    cat = Path(config.catalog)
    reader = open_catalog(cat, config.format)
    cols = find_columns(reader.columns, where=str(cat), id_col=config.id_col,
                        ra_col=config.ra_col, dec_col=config.dec_col, meta=reader.meta)
    if cols.ra is None:
        raise GalmergeError(f"{cat}: no coordinate columns (looked for ra/dec, RAJ2000/DEJ2000, "
                            "ra_deg, ra1/dec1, ...)", hint="name them with --ra-col/--dec-col")
    opts = config.options
    factor = opts.factor(convention)
    for start, chunk in reader.chunks(config.chunk_size, limit=config.limit):
        scales = row_scales(chunk, opts.scale_col, factor, str(cat))
        yield from row_requests(chunk, start, cols, scales=scales).requests


def fetch_catalog(config: FetchConfig, *,
                  progress: Callable[[int, Cutout], None] | None = None) -> FetchSummary:
    """Fetch every row's cutout into the cache ``config.out``; write the status table.

    Raises:
        GalmergeError: unreadable catalogue, bad options, or an existing status
            table without ``resume``/``overwrite``.
    """
    t0 = time.perf_counter()
    table = config.status_path()
    tmp = table.with_name(table.name + ".partial")
    inputs = [("catalogue", Path(config.catalog)),
              *(("cutout cache", Path(config.out) / (CACHE_FILE + sfx))
                 for sfx in ("", "-wal", "-shm"))]
    if config.model is not None:
        inputs.append(("model", Path(config.model)))
    check_outputs_spare_inputs([("status table", table), ("status table", tmp)], inputs,
                               hint="choose another --status-out")
    if table.exists() and not (config.resume or config.overwrite):
        raise GalmergeError(f"{table} exists", hint="continue with --resume, or --overwrite")
    done = _previous_done(table) if config.resume and table.exists() else {}
    convention = convention_from_onnx(config.model)
    opts = config.options
    opts.cache, opts.use_cache = str(config.out), True
    requests = catalog_requests(config, convention)
    first = next(requests, None)  # reads the header: catalogue problems surface here
    if first is None:
        raise GalmergeError(f"{config.catalog}: catalogue has no rows")
    source = opts.open_source(convention)
    counts: Counter[str] = Counter()
    table.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    c = source.settings.concurrency

    def work(req: CutoutRequest) -> tuple[CutoutRequest, Cutout]:
        if req.row in done:
            status, detail = done[req.row]
            return req, Cutout(status, detail=detail)
        if req.ra is None or req.dec is None:
            return req, Cutout(BAD_COORDINATES, detail="RA/Dec missing or not valid")
        return req, source.get_safely(req, decode_cached=False)

    def everything() -> Iterator[CutoutRequest]:
        yield first
        yield from requests

    try:
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(STATUS_COLUMNS)
            for req, cut in ordered_map(work, everything(), workers=c,
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
        if source.cache is not None:
            source.cache.close()
        tmp.unlink(missing_ok=True)
    return FetchSummary(rows=n, by_status=dict(counts), stats=source.stats(),
                        seconds=time.perf_counter() - t0, status_table=table,
                        skipped_done=len(done), config=_config_dict(config))


def _config_dict(config: FetchConfig) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        return str(v) if isinstance(v, Path) else v

    d = {k: plain(v) for k, v in asdict(config).items()}
    d["options"] = {k: plain(v) for k, v in asdict(config.options).items()}
    return d

