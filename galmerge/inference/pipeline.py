"""The classify pipeline: catalogue chunks in, part files out, one table assembled.

Three layers, so that a local run and a Dask run execute the same code:

* :func:`make_context` builds a :class:`ClassifyContext` (the ONNX session,
  the cutout source, the column map and the options) once per process.
* :func:`classify_chunk` is the unit of work: a pure function of one
  catalogue chunk (a DataFrame) and its first row number, returning the same
  rows, in order, with ``p_merger``, ``is_merger``, ``status`` and
  ``status_detail`` added. Inside a chunk, cutouts are read and prepared into
  fixed-size batches: row-by-row sources (files, services) decode on a bounded
  thread pool ahead of the model; array sources (HDF5 cubes) are read batch by
  batch. Memory is bounded by a few batches.
* :func:`classify_catalog` is the local runner: it streams chunks from
  :func:`~galmerge.inference.catalog.open_catalog`, writes chunk ``k`` as an
  idempotent part file (:func:`~galmerge.inference.writers.write_part`),
  records the run in a manifest, and assembles the output
  (:func:`~galmerge.inference.writers.assemble`). ``resume=True`` skips chunks
  whose part exists; the run metadata (date, command line) come from the
  original manifest, so a resumed run writes the same bytes as an
  uninterrupted one.

Torch-free.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.resources
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from galmerge import __version__
from galmerge.data.images import one_blas_thread
from galmerge.errors import GalmergeError, GalmergeWarning
from galmerge.inference.cache import is_cache_dir
from galmerge.inference.calibration import DARG2010_MERGER_FRACTION
from galmerge.inference.catalog import (
    Columns,
    find_columns,
    id_strings,
    parse_coordinates,
    text_values,
)
from galmerge.inference.concurrency import ordered_map
from galmerge.inference.cutouts import (
    BAD_COORDINATES,
    BAD_MODEL_OUTPUT,
    FETCH_FAILED,
    OK,
    UNREADABLE,
    Cutout,
    CutoutRequest,
    CutoutSource,
    LocalFileSource,
    WholeRunError,
    failure_status,
    model_limits,
)
from galmerge.inference.dataset_writer import (
    DATASET_FORMAT,
    check_dataset_output,
    check_dataset_spares_inputs,
    default_dataset_output,
    finish_dataset,
    is_dataset_output,
)
from galmerge.inference.engine import DEFAULT_BATCH_SIZE, OnnxClassifier, available_cpus
from galmerge.inference.fetch import FetchOptions, Prefetcher, chunk_requests, row_scales
from galmerge.inference.hats_io import HATS_FORMAT
from galmerge.inference.model_checks import invalid_scores
from galmerge.inference.partitions import (
    Partition,
    UnreadablePartition,
    input_fingerprint,
    open_input,
    partition_chunks,
    plan_partitions,
)
from galmerge.inference.paths import check_outputs_spare_inputs, file_loc_collision
from galmerge.inference.preprocess import DEFAULT_BLANK_THRESHOLD, prepare_cutout, prepare_stack
from galmerge.inference.scoring import (
    RowScores,
    Scoring,
    check_scoring_options,
    finalise_parts,
    make_scoring,
)
from galmerge.inference.services import ServiceCutoutSource, open_cached_source
from galmerge.inference.views import default_views
from galmerge.inference.writers import (
    RESULT_COLUMNS,
    AssemblyResult,
    assemble,
    check_output_columns,
    output_format,
    part_path,
    part_rows,
    write_part,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MODEL",
    "EXECUTION_FLAGS",
    "EXECUTION_OPTIONS",
    "FETCH_RESULT_KEYS",
    "MANIFEST",
    "MANIFEST_VERSION",
    "MODELS_ENV",
    "ChunkRunner",
    "ClassifyContext",
    "ClassifyOptions",
    "ClassifyRun",
    "ProgressFn",
    "RunSummary",
    "catalog_fingerprint",
    "check_output",
    "classify_catalog",
    "classify_chunk",
    "default_output",
    "make_context",
    "model_search_path",
    "resolve_model",
    "run_date",
    "run_metadata",
    "run_scoring",
    "service_source",
    "worker_spec",
]

#: File name of the shipped default model.
DEFAULT_MODEL = "deepmerge-sdss.onnx"
#: Environment variable naming a folder of models (or one .onnx file), e.g. in Docker.
MODELS_ENV = "GALMERGE_MODELS"
DEFAULT_CHUNK_SIZE = 8192
#: Fetch options that change the output (and so must match to resume).
FETCH_RESULT_KEYS = ("service", "release", "layer", "bands", "cutout_format", "hips", "scale",
                     "pixels", "scale_col", "scale_factor")
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
ProgressFn = Callable[[str, int], None]


# --- options and context ----------------------------------------------------------------

@dataclass
class ClassifyOptions:
    """Settings of a classify run (saved in the run manifest).

    Attributes:
        threshold: ``is_merger`` is ``p_merger_raw >= threshold`` (default: from
            ``target_purity``/``target_completeness``, else the model's
            ``galmerge.decision_threshold``, else 0.5).
        merger_fraction: the catalogue's merger fraction that ``p_merger`` is
            stated for (default 0.02, Darg et al. 2010a), or ``"estimate"`` (EM).
        target_purity, target_completeness: choose the threshold from the
            model's calibration curve (at most one; not with ``threshold``).
        views: views per cutout for ``p_merger_spread`` (1, 2 or 8; None: 1 for a seed
            ensemble, whose spread is over its members, else 2).
        batch_size: images per model call (fixed; the last batch is padded).
        chunk_size: catalogue rows per chunk = per part file = unit of resume.
        id_col, ra_col, dec_col, file_loc_col: explicit column names.
        cutouts: a folder of cutout files, or an HDF5 cube.
        pattern: file name pattern in ``cutouts`` (``{id}``, ``{row}``).
        format: catalogue format (default: from the extension).
        limit: classify only the first ``limit`` rows.
        device: ``auto``, ``cpu`` or ``cuda``.
        threads: ONNX Runtime intra-op threads (default: available cores).
        workers: cutout decode threads (default: available cores, at most 8).
        blank_threshold: fraction of dead pixels above which a cutout is ``blank``.
        fetch: fetch cutouts from a survey service (``classify --fetch``).
        max_pixels: largest cutout plane (height x width) decoded; larger ones are
            ``too_large`` (default: scaled to the model, see
            :meth:`~galmerge.data.limits.ImageLimits.for_model`).
    """

    threshold: float | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    chunk_size: int = DEFAULT_CHUNK_SIZE
    id_col: str | None = None
    ra_col: str | None = None
    dec_col: str | None = None
    file_loc_col: str | None = None
    cutouts: str | None = None
    pattern: str | None = None
    format: str | None = None
    limit: int | None = None
    device: str = "auto"
    threads: int | None = None
    workers: int | None = None
    blank_threshold: float = DEFAULT_BLANK_THRESHOLD
    fetch: FetchOptions | None = None
    max_pixels: int | None = None
    # --- issue 11 (calibration): prior, threshold choice, views ---
    merger_fraction: float | str = DARG2010_MERGER_FRACTION
    target_purity: float | None = None
    target_completeness: float | None = None
    views: int | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise GalmergeError(f"threshold must be in [0, 1], got {self.threshold}")
        self._check_calibration_options()
        if self.chunk_size < 1 or self.batch_size < 1:
            raise GalmergeError("chunk size and batch size must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise GalmergeError(f"--limit must be at least 1, got {self.limit}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise GalmergeError(f"--max-pixels must be at least 1, got {self.max_pixels}")

    def _check_calibration_options(self) -> None:
        self.merger_fraction = check_scoring_options(
            self.merger_fraction, threshold=self.threshold, target_purity=self.target_purity,
            target_completeness=self.target_completeness, views=self.views)

    def result_settings(self) -> dict[str, Any]:
        """The settings that change the output (must match to resume)."""
        d = asdict(self)
        for k in ("device", "threads", "workers"):
            d.pop(k)
        if self.fetch is not None:  # how politely we fetch does not change the pixels
            d["fetch"] = {k: v for k, v in d["fetch"].items() if k in FETCH_RESULT_KEYS}
        return d


@dataclass
class ClassifyContext:
    """Everything :func:`classify_chunk` needs, created once per process and reused."""

    classifier: OnnxClassifier
    source: CutoutSource
    columns: Columns
    options: ClassifyOptions
    warnings: set[str] = field(default_factory=set)
    scoring: Scoring | None = None  # issue 11: set by make_context

    @property
    def workers(self) -> int:
        """Threads reading and preparing cutouts row by row."""
        return max(1, self.options.workers or min(8, available_cpus()))

    def close(self) -> None:
        """Close the cutout source."""
        self.source.close()

    def __enter__(self) -> ClassifyContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_context(
    model: str | Path | OnnxClassifier, columns: Columns, options: ClassifyOptions, *,
    source: CutoutSource | None = None, base_dir: str | Path | None = None,
) -> ClassifyContext:
    """Build a :class:`ClassifyContext`.

    Args:
        model: an ``.onnx`` path or an open :class:`OnnxClassifier`.
        columns: from :func:`~galmerge.inference.catalog.find_columns`.
        options: run settings.
        source: any :class:`CutoutSource`; default :class:`LocalFileSource`
            reading ``file_loc`` (relative to ``base_dir``) and ``options.cutouts``.
        base_dir: the catalogue's folder.
    """
    clf = model if isinstance(model, OnnxClassifier) else OnnxClassifier(
        model, device=options.device, batch_size=options.batch_size, threads=options.threads)
    if source is None:
        source = LocalFileSource(base_dir=base_dir, cutouts=options.cutouts,
                                 pattern=options.pattern,
                                 limits=model_limits(clf.convention, options.max_pixels))
    return ClassifyContext(clf, source, columns, options, scoring=run_scoring(clf, options))


def run_scoring(clf: OnnxClassifier, options: ClassifyOptions) -> Scoring:
    """The run's prior, threshold, views and OOD ranges (issue 11) from the model and options."""
    return make_scoring(clf.metadata, clf.convention.pixel_convention,
                        threshold=options.threshold, merger_fraction=options.merger_fraction,
                        target_purity=options.target_purity,
                        target_completeness=options.target_completeness,
                        views=default_views(clf.n_members) if options.views is None
                        else options.views, members=clf.n_members, model=clf.name)


# --- the unit of work ---------------------------------------------------------------------

def classify_chunk(chunk: pd.DataFrame, start_row: int, ctx: ClassifyContext, *,
                   progress: ProgressFn | None = None) -> pd.DataFrame:
    """Classify one catalogue chunk; returns every row, in order, with results.

    Args:
        chunk: catalogue rows (any dtypes; text columns from CSV are fine).
        start_row: global row number of the chunk's first row (cutout lookup
            by row, duplicate reporting, messages).
        ctx: from :func:`make_context`.
        progress: called as ``progress("rows", n)`` as rows finish.

    Returns:
        ``chunk``'s columns (an input column named like a result column is
        renamed ``<name>_input``) plus ``p_merger`` (float32, prior-shifted; NaN
        when not classified), ``p_merger_raw``, ``p_merger_spread``, ``is_merger``
        and ``ood`` (nullable boolean, null when not classified), ``status`` and
        ``status_detail`` (see docs/output-columns.md).
    """
    n = len(chunk)
    cols, opts = ctx.columns, ctx.options
    ids, id_is_float = id_strings(chunk[cols.id])
    if id_is_float:
        ctx.warnings.add(f"id column {cols.id!r} is floating point: ids above 2**53 were "
                         "already rounded in the catalogue")
    p = RowScores.empty(n)
    status = np.full(n, "", dtype=object)
    detail = np.full(n, "", dtype=object)
    ra = dec = None
    problem = None
    if cols.ra and cols.dec:
        ra, dec, problem = parse_coordinates(chunk[cols.ra], chunk[cols.dec])
    scales = None
    if opts.fetch is not None and opts.fetch.scale_col:
        scales = row_scales(chunk, opts.fetch.scale_col,
                            opts.fetch.factor(ctx.classifier.convention), "catalogue")
    floc = text_values(chunk[cols.file_loc]) if cols.file_loc else None
    has_local = np.full(n, bool(opts.cutouts), dtype=bool)
    if floc is not None:
        has_local |= floc != ""
    requests: list[CutoutRequest] = []
    positions: list[int] = []
    for i in range(n):
        bad = problem is not None and problem[i] != ""
        if bad and not has_local[i]:
            status[i], detail[i] = BAD_COORDINATES, problem[i]  # type: ignore[index]
            continue
        requests.append(CutoutRequest(
            row=start_row + i, id=ids[i],
            ra=None if ra is None or bad else float(ra[i]),
            dec=None if dec is None or bad else float(dec[i]),
            file_loc=(floc[i] or None) if floc is not None else None,
            scale=None if scales is None else float(scales[i])))
        positions.append(i)
    if requests:
        _run_requests(requests, np.asarray(positions), ctx, p, status, detail, progress)
    if problem is not None:
        for j in np.flatnonzero((problem != "") & (status != BAD_COORDINATES)):
            note = f"coordinates ignored: {problem[j]}"
            detail[j] = note if not detail[j] else f"{detail[j]}; {note}"
    if progress is not None and n - len(requests):
        progress("rows", n - len(requests))
    return _result_frame(chunk, p, status, detail, ctx)


def classify_rows(rows: pd.DataFrame | UnreadablePartition, start_row: int,
                  ctx: ClassifyContext, *, progress: ProgressFn | None = None) -> pd.DataFrame:
    """:func:`classify_chunk`; the rows of an unreadable partition get status ``unreadable``.

    Those rows keep the catalogue's columns (null: they could not be read) and the
    message naming the file and rows, so the output still has one row per input row.
    """
    if not isinstance(rows, UnreadablePartition):
        return classify_chunk(rows, start_row, ctx, progress=progress)
    n = len(rows)
    chunk = pd.DataFrame({c: pd.Series([None] * n, dtype=object) for c in rows.columns})
    if progress is not None:
        progress("rows", n)
    return _result_frame(chunk, RowScores.empty(n), np.full(n, UNREADABLE, dtype=object),
                         np.full(n, rows.message, dtype=object), ctx)


def _batches(requests: list[CutoutRequest], ctx: ClassifyContext,
             record: Callable[[int, str, str], None]) -> Iterator[tuple[list[int], np.ndarray,
                                                                        int]]:
    """Yield ``(request indices classified, images, rows covered)`` batches.

    Uses the source's array fast path (:meth:`CutoutSource.get_stack`) batch by
    batch while it answers, else per-row cutouts decoded on the context's thread
    pool (bounded window, in order). Statuses go to ``record``.
    """
    clf, opts, source = ctx.classifier, ctx.options, ctx.source
    conv = clf.convention
    bs = clf.batch_size
    start = 0
    while start < len(requests):  # array fast path, batch by batch
        part = requests[start:start + bs]
        try:
            stack = source.get_stack(part)
        except WholeRunError:
            raise
        except Exception as exc:  # e.g. a damaged HDF5 chunk: these rows only
            st, de = failure_status(exc, source.error_status)
            for j in range(len(part)):
                record(start + j, st, de)
            yield [], np.empty((0,), dtype=np.float32), len(part)
            start += len(part)
            continue
        if stack is None:
            break
        sts, des, imgs = prepare_stack(stack, conv, blank_threshold=opts.blank_threshold)
        ok = []
        for j, (st, de) in enumerate(zip(sts, des, strict=True)):
            record(start + j, st, de)
            if st == OK:
                ok.append(start + j)
        yield ok, imgs, len(part)
        start += len(part)
    rest = requests[start:]
    if not rest:
        return

    def prep(c: Cutout) -> tuple[str, str, np.ndarray | None]:
        return prepare_cutout(c, conv, blank_threshold=opts.blank_threshold)

    def firewall(fn: Callable[[Any], tuple[str, str, np.ndarray | None]]
                 ) -> Callable[[Any], tuple[str, str, np.ndarray | None]]:
        # Whatever one row raises while read, fetched, decoded or prepared stays that row's.
        def guarded(item: Any) -> tuple[str, str, np.ndarray | None]:
            try:
                return fn(item)
            except WholeRunError:
                raise
            except Exception as exc:
                return (*failure_status(exc, source.error_status), None)
        return guarded

    # Decoding runs ahead on worker threads (bounded window) while this thread
    # runs the model on earlier batches.
    workers = ctx.workers
    if getattr(source, "thread_safe", False):
        results = ordered_map(firewall(lambda r: prep(source.get(r))), rest, workers=workers,
                              window=4 * workers, name="galmerge-decode")
    else:
        results = ordered_map(firewall(prep), source.get_many(rest), workers=workers,
                              window=4 * workers, name="galmerge-decode")
    buf = np.empty((bs, len(conv.bands), conv.size, conv.size), dtype=np.float32)
    buf_pos: list[int] = []
    rows_pending = 0
    for j, (st, de, img) in enumerate(results, start=start):
        record(j, st, de)
        rows_pending += 1
        if img is not None:
            buf[len(buf_pos)] = img
            buf_pos.append(j)
            if len(buf_pos) == bs:
                yield buf_pos, buf.copy(), rows_pending
                buf_pos, rows_pending = [], 0
    if buf_pos or rows_pending:
        yield buf_pos, buf[:len(buf_pos)].copy(), rows_pending


def _run_requests(requests: list[CutoutRequest], positions: np.ndarray, ctx: ClassifyContext,
                  p: RowScores, status: np.ndarray, detail: np.ndarray,
                  progress: ProgressFn | None) -> None:
    """Cutout batches -> model, in this thread.

    Reading runs ahead of the model only where it pays: row-by-row sources
    decode on a bounded thread pool while the model runs; array sources
    (:meth:`CutoutSource.get_stack`) are read between model calls, because on a
    machine whose cores ONNX Runtime already fills a reader thread only slows
    the model's threads down (measured on 2 cores).
    """

    def record(j: int, st: str, de: str) -> None:
        i = positions[j]
        status[i], detail[i] = st, de

    with one_blas_thread():  # once per chunk, not per cutout
        for ok, imgs, nrows in _batches(requests, ctx, record):
            _score_into(ok, imgs, positions, ctx, p, status, detail)
            if progress is not None:
                progress("rows", nrows)


def _score_into(ok: list[int], imgs: np.ndarray, positions: np.ndarray, ctx: ClassifyContext,
                p: RowScores, status: np.ndarray, detail: np.ndarray) -> None:
    """Score one batch and store its rows' results (bad model output -> row status)."""
    clf = ctx.classifier
    if not len(ok):
        return
    rows = positions[np.asarray(ok)]
    assert ctx.scoring is not None
    raw, spread, ood, reason = ctx.scoring.score_batch(clf.run_batch_members, imgs)
    bad = invalid_scores(raw)
    if bad.any():  # not a probability: the row gets a status, the run says why
        for i, v in zip(rows[bad], raw[bad], strict=True):
            status[i], detail[i] = BAD_MODEL_OUTPUT, f"model returned {v!r}, " \
                "not a probability in [0, 1]"
        ctx.warnings.add(f"model {clf.name} returned values that are not probabilities "
                         f"(NaN, or outside [0, 1]): those rows are {BAD_MODEL_OUTPUT}")
        raw = np.where(bad, np.float32(np.nan), raw)
    p.raw[rows], p.spread[rows], p.ood[rows], p.ood_reason[rows] = raw, spread, ood, reason


def _result_frame(chunk: pd.DataFrame, p: RowScores, status: np.ndarray, detail: np.ndarray,
                  ctx: ClassifyContext) -> pd.DataFrame:
    out = chunk.copy(deep=False)
    clash = [c for c in RESULT_COLUMNS if c in out.columns]
    if clash:
        out = out.rename(columns={c: f"{c}_input" for c in clash})
        ctx.warnings.add(f"input columns {', '.join(clash)} renamed with suffix _input")
    classified = status == OK
    assert ctx.scoring is not None
    p_adj, is_m = ctx.scoring.columns(p.raw, classified)
    out["p_merger"] = p_adj
    out["p_merger_raw"] = p.raw
    out["p_merger_spread"] = p.spread
    out["is_merger"] = is_m
    ood = pd.array(p.ood, dtype="boolean")
    ood[~classified] = pd.NA
    out["ood"] = ood
    for j in np.flatnonzero(p.ood & classified):
        note = f"out of distribution: {p.ood_reason[j]}"
        detail[j] = note if not detail[j] else f"{detail[j]}; {note}"
    out["status"] = pd.array(status.astype(str), dtype=object)
    out["status_detail"] = pd.array(detail.astype(str), dtype=object)
    return out


# --- running chunks elsewhere (Dask) -------------------------------------------------------

#: Runs the pending chunks into part files: ``runner(spec, chunks, work, progress)``
#: returns warnings (see :class:`~galmerge.inference.distributed.DaskRunner`).
ChunkRunner = Callable[[Any, Iterator[tuple[int, int, pd.DataFrame]], Path,
                        "ProgressFn | None"], list[str]]


def service_source(options: ClassifyOptions, convention: Any) -> CutoutSource | None:
    """The cutout source that options name other than local files: ``--fetch`` (a survey
    service), or ``--cutouts`` pointing at a cache filled by `galmerge fetch`; else None."""
    if options.fetch is not None:
        return options.fetch.open_source(convention)
    if options.cutouts and is_cache_dir(options.cutouts):
        return open_cached_source(options.cutouts)
    return None


def _pending(run: ClassifyRun, progress: ProgressFn | None
             ) -> Iterator[tuple[int, int, pd.DataFrame] | Partition]:
    """What a runner must classify: partitions (addresses; workers read their own rows)
    where the catalogue has them, else chunks; reused (resumed) ones only count as progress."""
    if run.plan is not None:
        for part in run.plan:
            if run.resuming and _part_reusable(part_path(run.work, part.k), part.rows):
                run.reused += 1
                if progress is not None:
                    progress("rows", part.rows)
                continue
            yield part
        run.n_chunks = len(run.plan)
        return
    for k, start, chunk, done in run.chunks():
        if done:
            if progress is not None:
                progress("rows", len(chunk))
            continue
        yield k, start, chunk


def worker_spec(model_path: Path, columns: Columns, options: ClassifyOptions, catalog: Path,
                source: CutoutSource | None) -> Any:
    """What a worker process needs to rebuild this run's classify context."""
    from galmerge.inference.distributed import ContextSpec, new_run_id

    return ContextSpec(run_id=new_run_id(), model=str(model_path), columns=columns,
                       options=options, base_dir=str(catalog.parent), cwd=os.getcwd(),
                       source=source, catalog=str(catalog))


# --- model location -------------------------------------------------------------------------

def model_search_path() -> list[Path]:
    """Folders searched for a model given by name (and for the default model).

    1. ``$GALMERGE_MODELS`` (a folder, e.g. ``/opt/galmerge/models`` in Docker);
    2. the package's own ``galmerge/models/`` (package data, read with
       :mod:`importlib.resources`: a checkout and an installed wheel alike);
    3. ``<prefix>/share/galmerge/models`` (where earlier installs put them).
    """
    paths = []
    env = os.environ.get(MODELS_ENV)
    if env:
        paths.append(Path(env))
    paths.append(Path(str(importlib.resources.files("galmerge") / "models")))
    paths.append(Path(sys.prefix) / "share" / "galmerge" / "models")
    return paths


def resolve_model(model: str | Path | None) -> Path:
    """The model file for ``--model`` (a path, a name in the search path, or the default)."""
    env = os.environ.get(MODELS_ENV)
    if model is None and env and Path(env).is_file():
        return Path(env)
    name = DEFAULT_MODEL if model is None else str(model)
    p = Path(name)
    if model is not None and (p.exists() or p.is_absolute() or len(p.parts) > 1):
        return p
    candidates = [name] if name.endswith(".onnx") else [name + ".onnx", name]
    for folder in model_search_path():
        for cand in candidates:
            if (folder / cand).is_file():
                return folder / cand
    if model is not None:
        return p
    raise GalmergeError(
        f"default model {DEFAULT_MODEL} not found (searched "
        f"{', '.join(str(f) for f in model_search_path())})",
        hint=f"pass --model PATH.onnx or set {MODELS_ENV} to a folder holding it")


def default_output(catalog: str | Path, fmt: str) -> Path:
    """``<catalogue stem>_scores.<ext>`` beside the catalogue (same format)."""
    cat = Path(catalog)
    name = cat.name
    for comp in (".gz", ".bz2", ".xz", ".zip", ".zst"):
        if name.lower().endswith(comp):
            name = name[: -len(comp)]
    stem, ext = os.path.splitext(name)
    ext = {"votable": ".vot", "hdf5": ".h5"}.get(fmt, ext if ext.lower() in (
        ".csv", ".fits", ".fit", ".ecsv", ".parquet", ".pq", ".vot", ".xml", ".h5",
        ".hdf5") else "." + fmt)
    if ext.lower() in (".txt", ".tsv"):
        ext = ".csv"
    return cat.with_name(f"{stem}_scores{ext}")


# --- manifest and resume ------------------------------------------------------------------------

def catalog_fingerprint(path: Path) -> dict[str, Any]:
    """Size plus sha256 of the first and last 8 MiB: cheap, copy-proof identity."""
    size = path.stat().st_size
    h = hashlib.sha256()
    block = 8 << 20
    with path.open("rb") as f:
        h.update(f.read(block))
        if size > 2 * block:
            f.seek(size - block)
        h.update(f.read(block))
    return {"size": size, "sha256_head_tail": h.hexdigest()}


def run_date() -> str:
    """Now in UTC (ISO 8601), or ``$SOURCE_DATE_EPOCH`` for reproducible outputs."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (_dt.datetime.fromtimestamp(int(epoch), _dt.UTC) if epoch and epoch.isdigit()
            else _dt.datetime.now(_dt.UTC))
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


#: Options that change how a run executes, not what it writes: left out of the
#: recorded command, so that a resumed or a Dask run writes the same bytes.
EXECUTION_FLAGS = ("--resume",)
EXECUTION_OPTIONS = ("--dask", "--dask-workers", "--dask-resources")


def _normalised_command(command: list[str] | None) -> list[str]:
    cmd = list(command) if command else ["(python) galmerge.inference.classify_catalog"]
    out: list[str] = []
    skip = False
    for c in cmd:
        if skip:
            skip = False
        elif c in EXECUTION_FLAGS or (c.split("=", 1)[0] in EXECUTION_OPTIONS and "=" in c):
            continue
        elif c in EXECUTION_OPTIONS:
            skip = True
        else:
            out.append(c)
    return out


def _manifest_key(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("manifest_version", "galmerge_version", "catalog", "model",
                              "settings", "columns", "output", "source")}


@contextlib.contextmanager
def _locked(work: Path) -> Iterator[None]:
    import fcntl

    work.mkdir(parents=True, exist_ok=True)
    fh = (work / "lock").open("w")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise GalmergeError(f"{work}: another galmerge classify is writing this output",
                                hint="wait for it, or choose another --output") from None
        yield
    finally:
        fh.close()


def _empty_work_dir(work: Path) -> None:
    """Remove everything in the work folder, the lock file last (its holder keeps the lock)."""
    for child in work.iterdir():
        if child.name == "lock":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    (work / "lock").unlink(missing_ok=True)


def _prepare_work_dir(work: Path, manifest: dict[str, Any], resume: bool
                      ) -> tuple[dict[str, Any], bool]:
    """Return the manifest to use (the original one when resuming) and whether resuming."""
    mpath = work / MANIFEST
    if resume and mpath.is_file():
        try:
            old = json.loads(mpath.read_text())
        except (OSError, ValueError):
            old = None
        if old is not None:
            new_key, old_key = _manifest_key(manifest), _manifest_key(old)
            if new_key != old_key:
                changed = sorted(k for k in new_key if new_key[k] != old_key.get(k))
                raise GalmergeError(
                    f"cannot resume {work}: {', '.join(changed)} changed since the interrupted "
                    "run", hint="rerun without --resume to start over")
            return old, True
    for child in work.iterdir():
        if child.name.startswith(("part-", ".part-")) or child.name == MANIFEST:
            child.unlink()
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    tmp = work / f".{MANIFEST}.tmp"
    try:
        tmp.write_text(text)
        os.replace(tmp, mpath)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise GalmergeError(f"{mpath}: cannot write the run manifest "
                            f"({exc.strerror or type(exc).__name__})",
                            hint="free some disk space, or choose another --output") from None
    # What a resumed run reads back (key order included), so both write the same bytes.
    return json.loads(text), False


# --- the local runner ---------------------------------------------------------------

@dataclass
class RunSummary:
    """What :func:`classify_catalog` did."""

    output: Path
    format: str
    rows: int
    status_counts: dict[str, int]
    classified: int
    mergers: int
    duplicate_ids: int
    seconds: float
    model: dict[str, Any]
    resumed_chunks: int = 0
    warnings: list[str] = field(default_factory=list)
    sidecar: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        """Throughput of this invocation."""
        return self.rows / self.seconds if self.seconds > 0 else float("nan")


def check_output(out: Path) -> None:
    """Fail early (one line) when ``out`` cannot be written."""
    if out.is_dir():
        raise GalmergeError(f"{out}: output path is a directory", hint="give a file name")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise GalmergeError(f"{out}: output folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise GalmergeError(f"{out}: output folder {parent} is not writable")
    if out.exists() and not os.access(out, os.W_OK):
        raise GalmergeError(f"{out}: output file exists and is not writable")


class ClassifyRun:
    """One classify run: plan, manifest, work folder, part files, assembly.

    The local runner (:func:`classify_catalog`) and a distributed runner share
    it: plan once on the driver, classify the pending chunks anywhere (each
    process builds its own context with :meth:`context`), write each chunk's
    part (:meth:`write_part`, idempotent), then :meth:`finish` assembles the
    output from the parts in order and removes the work folder::

        with ClassifyRun(catalog, output=out, options=opts, resume=True) as run:
            ctx = run.context()
            for k, start, frame in run.pending():
                run.write_part(k, classify_chunk(frame, start, ctx))
            result = run.finish()

    Args:
        catalog, model, output, options, resume, command: as :func:`classify_catalog`.
        source: a :class:`CutoutSource` to use instead of the one the options
            imply (``options.fetch`` -> a service source; ``options.cutouts`` a
            cache folder of ``galmerge fetch`` -> the cache; else local files).

    Raises:
        GalmergeError: whole-run problems, before any work is done.
    """

    def __init__(self, catalog: str | Path, *, model: str | Path | None = None,
                 output: str | Path | None = None, options: ClassifyOptions | None = None,
                 resume: bool = False, command: list[str] | None = None,
                 source: CutoutSource | None = None) -> None:
        opts = options or ClassifyOptions()
        cat = Path(catalog)
        reader = open_input(cat, opts.format)
        cols = find_columns(reader.columns, where=str(cat), id_col=opts.id_col,
                            ra_col=opts.ra_col, dec_col=opts.dec_col,
                            file_loc_col=opts.file_loc_col, meta=reader.meta)
        if opts.fetch is not None and cols.ra is None:
            raise GalmergeError(
                f"{cat}: --fetch needs coordinates, but no RA/Dec columns were found (looked "
                "for ra/dec, RAJ2000/DEJ2000, ra_deg, ra1/dec1, ...)",
                hint="name them with --ra-col/--dec-col")
        if source is None and opts.fetch is None and not cols.file_loc and not opts.cutouts:
            if cols.ra is None:
                raise GalmergeError(
                    f"{cat}: no coordinate columns (looked for ra/dec, RAJ2000/DEJ2000, ra_deg, "
                    "ra1/dec1, ...), no file_loc column and no --cutouts",
                    hint="add a file_loc column, pass --cutouts DIR, or name the coordinates "
                         "with --ra-col/--dec-col")
            raise GalmergeError(
                f"{cat}: rows have coordinates ({cols.ra}, {cols.dec}) but no file_loc column "
                "and no --cutouts, so there is nothing to read cutouts from",
                hint="pass --cutouts DIR or add a file_loc column")
        self.dataset = is_dataset_output(output, cat)
        if self.dataset:  # partitioned output: a Parquet dataset, or HATS for HATS input
            out = Path(output) if output is not None else default_dataset_output(cat)
            check_dataset_output(out)
            fmt = HATS_FORMAT if reader.format == HATS_FORMAT else DATASET_FORMAT
        else:
            out = Path(output) if output is not None else default_output(cat, reader.format)
            check_output(out)
            fmt = output_format(out)
            check_output_columns(out, fmt, len(reader.columns) + len(RESULT_COLUMNS))
        self.catalog, self.reader, self.columns, self.options = cat, reader, cols, opts
        self.output, self.format = out, fmt
        self.work = out.with_name(out.name + ".parts")
        #: partitions (row ranges any process can read), or None: chunks read in order
        self.plan = plan_partitions(reader, opts.chunk_size, opts.limit)
        model_path = resolve_model(model)
        self._check_inputs_spared(model_path)
        # A batch never spans chunks, so larger batches would only pad (and allocate).
        batch = min(opts.batch_size, opts.chunk_size, self.total_rows or opts.batch_size)
        self.classifier = OnnxClassifier(model_path, device=opts.device,
                                         batch_size=max(1, batch), threads=opts.threads)
        clf = self.classifier
        self.scoring = run_scoring(clf, opts)  # issue 11: fails early on an impossible target
        self._own_source = source is None
        self.source = source if source is not None else self.make_source()
        self.manifest: dict[str, Any] = {
            "manifest_version": MANIFEST_VERSION,
            "galmerge_version": __version__,
            "created": run_date(),
            "command": _normalised_command(command),
            "catalog": {"path": str(cat), "format": reader.format,
                        **input_fingerprint(cat, catalog_fingerprint)},
            "model": {"name": clf.name, "file": clf.path.name, "sha256": clf.sha256,
                      "placeholder": clf.placeholder},
            "settings": opts.result_settings(),
            "columns": cols.to_dict(),
            "output": {"path": str(out), "format": fmt},
            "source": self.source.name if self.source is not None else LocalFileSource.name,
        }
        self.resume = resume
        self.resuming = False
        self.n_chunks = 0
        self.reused = 0
        self._lock: contextlib.ExitStack | None = None

    def outputs(self) -> list[tuple[str, Path]]:
        """``(what, path)`` of every file this run writes besides its work folder."""
        outs = [("output", self.output)]
        if self.format == "csv":
            outs.append(("metadata sidecar", self.output.with_name(self.output.name +
                                                                   ".meta.json")))
        return outs

    def inputs(self, model_path: Path) -> list[tuple[str, Path]]:
        """``(what, path)`` of every file or folder this run reads (``file_loc`` aside)."""
        from galmerge.inference.cache import CACHE_FILE

        opts = self.options
        ins = [("catalogue", self.catalog), ("model", model_path)]
        caches = []
        if opts.cutouts:
            ins.append(("cutouts", Path(opts.cutouts)))
            caches.append(Path(opts.cutouts))
        if opts.fetch is not None and opts.fetch.cache_dir() is not None:
            caches.append(Path(str(opts.fetch.cache_dir())))
        for c in caches:
            ins += [("cutout cache", c / (CACHE_FILE + sfx)) for sfx in ("", "-wal", "-shm")]
        return ins

    def _check_inputs_spared(self, model_path: Path) -> None:
        """No output, sidecar or work folder may be a file this run reads (before any write)."""
        outs = self.outputs()
        check_outputs_spare_inputs(outs, self.inputs(model_path), work=self.work,
                                   hint="choose another --output")
        if self.dataset:
            check_dataset_spares_inputs(self.output, self.inputs(model_path))
        col = self.columns.file_loc
        if col is None:
            return
        targets = [*outs, *((f"work file {p.name}", p) for p in
                            (self.work.iterdir() if self.work.is_dir() else ()))]
        if not any(p.exists() for _, p in targets):
            return
        for _, frame in self.reader.chunks(self.options.chunk_size, limit=self.options.limit):
            hit = file_loc_collision(text_values(frame[col]), self.catalog.parent, targets)
            if hit is not None:
                raise WholeRunError(f"{hit[1]}: the {hit[0]} would replace a cutout that "
                                    f"column {col!r} of {self.catalog} names",
                                    hint="choose another --output")

    @property
    def total_rows(self) -> int | None:
        """Rows to classify (an estimate for CSV), or None when unknown."""
        n, limit = self.reader.n_rows, self.options.limit
        return n if limit is None or n is None else min(n, limit)

    def __enter__(self) -> ClassifyRun:
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(_locked(self.work))
        try:
            self.manifest, self.resuming = _prepare_work_dir(self.work, self.manifest,
                                                             self.resume)
        except BaseException:
            if [c.name for c in self.work.iterdir()] == ["lock"]:  # nothing of ours to keep
                _empty_work_dir(self.work)
                self.__exit__()
                with contextlib.suppress(OSError):
                    self.work.rmdir()
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def make_source(self) -> CutoutSource | None:
        """A fresh cutout source as the options imply (None: local files, the default).

        Each process (e.g. a Dask worker) makes its own: sources hold files,
        HTTP sessions and caches that do not travel between processes.
        """
        return service_source(self.options, self.classifier.convention)

    def context(self, source: CutoutSource | None = None) -> ClassifyContext:
        """A :class:`ClassifyContext` for this run in this process (default: the run's source)."""
        return make_context(self.classifier, self.columns, self.options,
                            source=source if source is not None else self.source,
                            base_dir=self.catalog.parent)

    def close(self) -> None:
        """Release the lock and close the cache of a source this run opened."""
        self.__exit__()
        cache = getattr(self.source, "cache", None)
        if self._own_source and cache is not None:
            cache.close()

    def chunks(self) -> Iterator[tuple[int, int, pd.DataFrame, bool]]:
        """Every chunk as ``(k, start_row, frame, done)``; ``done`` when resumed from a part."""
        self.n_chunks = 0
        pieces = (partition_chunks(self.reader, self.plan) if self.plan is not None else
                  self.reader.chunks(self.options.chunk_size, limit=self.options.limit))
        for k, (start, frame) in enumerate(pieces):
            self.n_chunks = k + 1
            done = self.resuming and _part_reusable(part_path(self.work, k), len(frame))
            if done:
                self.reused += 1
            yield k, start, frame, done

    def pending(self) -> Iterator[tuple[int, int, pd.DataFrame]]:
        """The chunks still to classify, as ``(k, start_row, frame)``."""
        for k, start, frame, done in self.chunks():
            if not done:
                yield k, start, frame

    def write_part(self, k: int, frame: pd.DataFrame) -> Path:
        """Store chunk ``k``'s result (atomic, idempotent)."""
        return write_part(frame, self.work, k)

    def metadata(self) -> dict[str, Any]:
        """Run metadata for the output (from the manifest: stable across resumes)."""
        return run_metadata(self.manifest, self.classifier, self.reader.format, self.scoring)

    def finish(self, *, n_chunks: int | None = None,
               progress: Callable[[int], None] | None = None) -> AssemblyResult:
        """Assemble the output from parts ``0 .. n_chunks-1`` and remove the work folder."""
        n = self.n_chunks if n_chunks is None else n_chunks
        if n == 0:
            raise GalmergeError(f"{self.catalog}: catalogue has no rows")
        missing = [k for k in range(n) if not part_path(self.work, k).exists()]
        if missing:
            raise GalmergeError(f"{self.work}: part files missing for chunks {missing[:5]}",
                                hint="rerun with --resume")
        if self.scoring.pending:  # --merger-fraction estimate: two passes over the parts
            self.scoring = finalise_parts([part_path(self.work, k) for k in range(n)],
                                          self.scoring, lambda f, k: self.write_part(k, f))
        if self.dataset:
            pixels = [p.pixel for p in self.plan or () if p.pixel is not None]
            result = finish_dataset(self.work, [part_path(self.work, k) for k in range(n)],
                                    self.output, self.metadata(), input_format=self.reader.format,
                                    pixels=pixels if len(pixels) == n else None,
                                    source=self.catalog)
            self.__exit__()
            return result
        result = assemble([part_path(self.work, k) for k in range(n)], self.output,
                          meta=self.metadata(), id_col=self.columns.id,
                          text_columns=self.reader.text_columns,
                          keep_text={c for c in (self.columns.file_loc,) if c},
                          progress=progress, table_meta=self.reader.meta)
        # Clean up while still holding the lock: a run that starts meanwhile cannot
        # take the folder (and lose its parts) before it is gone.
        _empty_work_dir(self.work)
        self.__exit__()
        with contextlib.suppress(OSError):
            self.work.rmdir()
        return result


def classify_catalog(
    catalog: str | Path, *, model: str | Path | None = None, output: str | Path | None = None,
    options: ClassifyOptions | None = None, resume: bool = False,
    source: CutoutSource | None = None, command: list[str] | None = None,
    progress: ProgressFn | None = None, runner: ChunkRunner | None = None,
) -> RunSummary:
    """Classify every row of a catalogue and write the scored catalogue.

    Args:
        catalog: CSV/ECSV/FITS/VOTable/Parquet/HDF5 catalogue.
        model: ``.onnx`` path or name (default: the shipped
            ``deepmerge-sdss.onnx``, see :func:`resolve_model`).
        output: output file (default :func:`default_output`); format by extension.
        options: :class:`ClassifyOptions`.
        resume: continue an interrupted run from its last completed chunk.
        source: a :class:`CutoutSource` instead of local files (fetchers).
        command: the command line to record (the CLI passes its argv).
        progress: ``progress(kind, n)`` with kinds ``total`` (rows, once;
            may be an estimate), ``rows`` (rows done), ``assemble`` (rows written).
        runner: runs the chunks elsewhere instead of in this process, e.g. a
            :class:`~galmerge.inference.distributed.DaskRunner`; it writes the
            same part files, so the output is the same.

    Raises:
        GalmergeError: whole-run problems (one line): catalogue, columns, model,
            output path, or an incompatible ``resume``.
    """
    t0 = time.perf_counter()
    run = ClassifyRun(catalog, model=model, output=output, options=options, resume=resume,
                      command=command, source=source)
    if progress is not None and run.total_rows is not None:
        progress("total", run.total_rows)
    ctx = run.context()
    prefetcher = None
    if runner is None and isinstance(ctx.source, ServiceCutoutSource) \
            and ctx.source.cache is not None and not ctx.source.offline:
        prefetcher = Prefetcher(ctx.source)
    try:
        with run:
            if runner is not None:  # e.g. Dask: the same chunks and part files, elsewhere
                spec = worker_spec(run.classifier.path, run.columns, run.options, run.catalog,
                                   source)
                ctx.warnings.update(runner(spec, _pending(run, progress), run.work.resolve(),
                                           progress))
                items: Iterator[tuple[int, int, pd.DataFrame, bool]] = iter(())
            else:
                items = run.chunks()
            upcoming = next(items, None)
            while upcoming is not None:
                k, start, chunk, done = upcoming
                upcoming = next(items, None)
                if done:
                    if progress is not None:
                        progress("rows", len(chunk))
                    continue
                if prefetcher is not None and upcoming is not None and not upcoming[3] \
                        and isinstance(upcoming[2], pd.DataFrame):
                    # The next chunk's cutouts stream into the cache while this one runs.
                    prefetcher.submit(_fetch_requests(upcoming[2], upcoming[1], ctx))
                run.write_part(k, classify_rows(chunk, start, ctx, progress=progress))
            asm = run.finish(progress=(lambda n: progress("assemble", n)) if progress else None)
    finally:
        if prefetcher is not None:
            prefetcher.close()
        ctx.close()
        run.close()
    clf = run.classifier
    notes = sorted(ctx.warnings | set(run.reader.warnings))
    if clf.placeholder:
        notes.insert(0, f"model {clf.name} is a PLACEHOLDER (untrained), not a science model: "
                        "its probabilities carry no information")
    for note in notes:  # Python warnings for library users; the summary keeps them too
        warnings.warn(note, GalmergeWarning, stacklevel=2)
    return _summary(asm, clf, time.perf_counter() - t0, run.reused, notes, run.metadata())


def _part_reusable(path: Path, n_rows: int) -> bool:
    """A finished part that a resumed run keeps: complete, and no row failed to fetch.

    Parts holding ``fetch_failed`` rows are recomputed, so a resumed run asks the
    service again for exactly those rows (the others come from the cache).
    """
    if not path.exists() or part_rows(path) != n_rows:
        return False
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        status = pq.read_table(path, columns=["status"]).column("status")
    except Exception:  # unreadable: recompute
        return False
    return not pc.any(pc.equal(status, FETCH_FAILED)).as_py()


def _fetch_requests(chunk: pd.DataFrame, start: int, ctx: ClassifyContext
                    ) -> list[CutoutRequest]:
    """The requests :func:`classify_chunk` will make for ``chunk`` (for prefetching)."""
    fo = ctx.options.fetch
    scales = None
    if fo is not None and fo.scale_col:
        scales = row_scales(chunk, fo.scale_col, fo.factor(ctx.classifier.convention),
                            "catalogue")
    return [r for r in chunk_requests(chunk, start, ctx.columns, scales=scales)
            if r.ra is not None]


def run_metadata(manifest: dict[str, Any], clf: OnnxClassifier, catalog_format: str,
                 scoring: Scoring) -> dict[str, Any]:
    """The run metadata written into the output (counts are added by the writer)."""
    return {
        "galmerge_version": manifest["galmerge_version"],
        "date": manifest["created"],
        "command": " ".join(manifest["command"]),
        "model": manifest["model"]["name"],
        "model_file": manifest["model"]["file"],
        "model_sha256": manifest["model"]["sha256"],
        "model_placeholder": manifest["model"]["placeholder"],
        "model_convention": clf.convention.pixel_convention,
        "catalog": Path(manifest["catalog"]["path"]).name,
        "catalog_format": catalog_format,
        "cutout_source": manifest["source"],
        "columns": {k: v for k, v in manifest["columns"].items() if v},
        **scoring.metadata(),
    }


def _summary(asm: AssemblyResult, clf: OnnxClassifier, seconds: float, resumed: int,
             warnings: list[str], meta: dict[str, Any]) -> RunSummary:
    return RunSummary(output=asm.path, format=asm.format, rows=asm.n_rows,
                      status_counts=asm.status_counts, classified=asm.n_classified,
                      mergers=asm.n_merger, duplicate_ids=asm.n_duplicate_ids, seconds=seconds,
                      model=clf.describe(), resumed_chunks=resumed, warnings=warnings,
                      sidecar=asm.sidecar, metadata=meta)
