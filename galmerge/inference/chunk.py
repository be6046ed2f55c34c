"""The unit of work: one catalogue chunk in, the same rows with results out.

:func:`classify_chunk` is a pure function of one chunk (a DataFrame), its first
row number and a :class:`~galmerge.inference.context.ClassifyContext`; it returns
the same rows, in order, with ``p_merger``, ``is_merger``, ``status`` and
``status_detail`` added. Inside a chunk, cutouts are read and prepared into
fixed-size batches: row-by-row sources (files, services) decode on a bounded
thread pool ahead of the model; array sources (HDF5 cubes) are read batch by
batch. Memory is bounded by a few batches. The local runner and the Dask runner
both call it. Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from galmerge.data.images import one_blas_thread
from galmerge.inference.concurrency import ordered_map
from galmerge.inference.context import ClassifyContext, ProgressFn
from galmerge.inference.cutouts import (
    BAD_COORDINATES,
    BAD_MODEL_OUTPUT,
    OK,
    UNREADABLE,
    Cutout,
    CutoutRequest,
    WholeRunError,
    failure_status,
)
from galmerge.inference.model_checks import invalid_scores
from galmerge.inference.partitions import UnreadablePartition
from galmerge.inference.preprocess import prepare_cutout, prepare_stack
from galmerge.inference.row_requests import RowRequests, row_requests, row_scales
from galmerge.inference.scoring import RowScores
from galmerge.inference.writers import RESULT_COLUMNS

__all__ = ["chunk_requests", "classify_chunk", "classify_rows"]


def classify_chunk(chunk: pd.DataFrame, start_row: int, ctx: ClassifyContext, *,
                   progress: ProgressFn | None = None,
                   requests: RowRequests | None = None) -> pd.DataFrame:
    """Classify one catalogue chunk; returns every row, in order, with results.

    Args:
        chunk: catalogue rows (any dtypes; text columns from CSV are fine).
        start_row: global row number of the chunk's first row (cutout lookup
            by row, duplicate reporting, messages).
        ctx: from :func:`make_context`.
        progress: called as ``progress("rows", n)`` as rows finish.
        requests: the chunk's :func:`chunk_requests`, when already built (the local
            runner builds them once, for its prefetch and for the chunk).

    Returns:
        ``chunk``'s columns (an input column named like a result column is
        renamed ``<name>_input``) plus ``p_merger`` (float32, prior-shifted; NaN
        when not classified), ``p_merger_raw``, ``p_merger_spread``, ``is_merger``
        and ``ood`` (nullable boolean, null when not classified), ``status`` and
        ``status_detail`` (see docs/output-columns.md).
    """
    n = len(chunk)
    rows = requests if requests is not None else chunk_requests(chunk, start_row, ctx)
    if rows.id_is_float:
        ctx.warnings.add(f"id column {ctx.columns.id!r} is floating point: ids above 2**53 "
                         "were already rounded in the catalogue")
    p = RowScores.empty(n)
    status = np.full(n, "", dtype=object)
    detail = np.full(n, "", dtype=object)
    problem = rows.problem
    todo: list[CutoutRequest] = []
    positions: list[int] = []
    # What the source says of every row without a file_loc, when it can say it in bulk:
    # at survey scale most rows may have no cutout, and asking for each costs ~25 us.
    blanket = ctx.source.without_location()
    for i, req in enumerate(rows.requests):
        if problem is not None and problem[i] != "" and not (ctx.options.cutouts or req.file_loc):
            status[i], detail[i] = BAD_COORDINATES, problem[i]  # nowhere else to look
            continue
        if blanket is not None and not req.file_loc:
            status[i], detail[i] = blanket
            continue
        todo.append(req)
        positions.append(i)
    if todo:
        _run_requests(todo, np.asarray(positions), ctx, p, status, detail, progress)
    if problem is not None:
        for j in np.flatnonzero((problem != "") & (status != BAD_COORDINATES)):
            note = f"coordinates ignored: {problem[j]}"
            detail[j] = note if not detail[j] else f"{detail[j]}; {note}"
    if progress is not None and n - len(todo):
        progress("rows", n - len(todo))
    return _result_frame(chunk, p, status, detail, ctx)


def classify_rows(rows: pd.DataFrame | UnreadablePartition, start_row: int,
                  ctx: ClassifyContext, *, progress: ProgressFn | None = None,
                  requests: RowRequests | None = None) -> pd.DataFrame:
    """:func:`classify_chunk`; the rows of an unreadable partition get status ``unreadable``.

    Those rows keep the catalogue's columns (null: they could not be read) and the
    message naming the file and rows, so the output still has one row per input row.
    """
    if not isinstance(rows, UnreadablePartition):
        return classify_chunk(rows, start_row, ctx, progress=progress, requests=requests)
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
    batch = ctx.scoring.score_batch(clf.run_batch_members, imgs)
    raw = batch.raw
    bad = invalid_scores(raw)
    if bad.any():  # not a probability: the row gets a status, the run says why
        for i, v in zip(rows[bad], raw[bad], strict=True):
            status[i], detail[i] = BAD_MODEL_OUTPUT, f"model returned {v!r}, " \
                "not a probability in [0, 1]"
        ctx.warnings.add(f"model {clf.name} returned values that are not probabilities "
                         f"(NaN, or outside [0, 1]): those rows are {BAD_MODEL_OUTPUT}")
        batch.raw = np.where(bad, np.float32(np.nan), raw)
    p.store(rows, batch)


def _result_frame(chunk: pd.DataFrame, p: RowScores, status: np.ndarray, detail: np.ndarray,
                  ctx: ClassifyContext) -> pd.DataFrame:
    out = chunk.copy(deep=False)
    clash = [c for c in RESULT_COLUMNS if c in out.columns]
    if clash:
        out = out.rename(columns={c: f"{c}_input" for c in clash})
        ctx.warnings.add(f"input columns {', '.join(clash)} renamed with suffix _input")
    classified = status == OK
    assert ctx.scoring is not None
    p_adj, is_m = ctx.scoring.columns(p.raw, classified, p.aside)
    out["p_merger"] = p_adj
    out["p_merger_raw"] = p.raw
    out["p_merger_spread"] = p.spread
    out["is_merger"] = is_m
    ood = pd.array(p.ood, dtype="boolean")
    ood[~classified] = pd.NA
    out["ood"] = ood
    star = pd.array(p.star, dtype="boolean")
    star[~classified] = pd.NA
    out["bright_star"] = star
    nosky = pd.array(p.nosky, dtype="boolean")
    nosky[~classified] = pd.NA
    out["no_sky"] = nosky
    notes = [(p.ood, "out of distribution: ", p.ood_reason), (p.star, "", p.star_reason),
             (p.nosky, "", p.nosky_reason)]
    for flag, prefix, reason in notes:
        for j in np.flatnonzero(flag & classified):
            note = prefix + reason[j]
            detail[j] = note if not detail[j] else f"{detail[j]}; {note}"
    out["status"] = pd.array(status.astype(str), dtype=object)
    out["status_detail"] = pd.array(detail.astype(str), dtype=object)
    return out


def chunk_requests(chunk: pd.DataFrame, start_row: int, ctx: ClassifyContext) -> RowRequests:
    """The cutout requests of ``chunk``'s rows (with ``--fetch --scale-col``, per-row scales)."""
    fo = ctx.options.fetch
    scales = None
    if fo is not None and fo.scale_col:
        scales = row_scales(chunk, fo.scale_col, fo.factor(ctx.classifier.convention),
                            "catalogue")
    return row_requests(chunk, start_row, ctx.columns, scales=scales)
