"""The classify run: catalogue in, a runner over its chunks, the scored catalogue out.

:func:`classify_catalog` plans the run (:class:`ClassifyRun`: catalogue, columns,
output, model, manifest, work folder), hands the chunks to a runner — the local
one (:func:`~galmerge.inference.local.run_locally`) or another such as
:class:`~galmerge.inference.distributed.DaskRunner`, which write the same part
files — and assembles the output (:func:`~galmerge.inference.writers.assemble`).
``resume=True`` skips chunks whose part exists; the run metadata (date, command
line) come from the original manifest (:mod:`galmerge.inference.resume`), so a
resumed run writes the same bytes as an uninterrupted one. Torch-free.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from galmerge import __version__
from galmerge.errors import GalmergeError, GalmergeWarning
from galmerge.inference.cache import CACHE_FILE
from galmerge.inference.catalog import Columns, find_columns, text_values
from galmerge.inference.context import (
    ClassifyContext,
    ContextSpec,
    ProgressFn,
    make_context,
    new_run_id,
    run_scoring,
    service_source,
)
from galmerge.inference.cutouts import CutoutSource, LocalFileSource, WholeRunError
from galmerge.inference.dataset_writer import (
    DATASET_FORMAT,
    check_dataset_output,
    check_dataset_spares_inputs,
    default_dataset_output,
    finish_dataset,
    is_dataset_output,
)
from galmerge.inference.engine import OnnxClassifier
from galmerge.inference.formats import BY_NAME, OUTPUT_EXTENSIONS
from galmerge.inference.hats_io import HATS_FORMAT
from galmerge.inference.local import LocalChunk, run_locally
from galmerge.inference.models import resolve_model
from galmerge.inference.options import ClassifyOptions
from galmerge.inference.partitions import (
    Partition,
    input_fingerprint,
    open_input,
    partition_chunks,
    plan_partitions,
)
from galmerge.inference.paths import check_outputs_spare_inputs, file_loc_collision
from galmerge.inference.resume import (
    MANIFEST_VERSION,
    catalog_fingerprint,
    empty_work_dir,
    locked,
    normalised_command,
    part_reusable,
    prepare_work_dir,
    run_date,
    run_metadata,
)
from galmerge.inference.scoring import finalise_parts
from galmerge.inference.writers import (
    RESULT_COLUMNS,
    AssemblyResult,
    assemble,
    check_output_columns,
    output_format,
    part_path,
    write_part,
)

__all__ = [
    "ChunkRunner",
    "ClassifyRun",
    "RunSummary",
    "check_output",
    "classify_catalog",
    "default_output",
    "worker_spec",
]

#: Runs the pending chunks (rows, or a partition's address) into part files:
#: ``runner(spec, chunks, work, progress)`` returns warnings (see
#: :class:`~galmerge.inference.distributed.DaskRunner`).
ChunkRunner = Callable[[Any, Iterator["tuple[int, int, pd.DataFrame] | Partition"], Path,
                        "ProgressFn | None"], list[str]]


def _pending(run: ClassifyRun, progress: ProgressFn | None
             ) -> Iterator[tuple[int, int, pd.DataFrame] | Partition]:
    """What a runner must classify: partitions (addresses; workers read their own rows)
    where the catalogue has them, else chunks; reused (resumed) ones only count as progress."""
    if run.plan is not None:
        for part in run.plan:
            if run.resuming and part_reusable(part_path(run.work, part.k), part.rows):
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
    return ContextSpec(run_id=new_run_id(), model=str(model_path), columns=columns,
                       options=options, base_dir=str(catalog.parent), cwd=os.getcwd(),
                       source=source, catalog=str(catalog))


def default_output(catalog: str | Path, fmt: str) -> Path:
    """``<catalogue stem>_scores.<ext>`` beside the catalogue (same format)."""
    cat = Path(catalog)
    name = cat.name
    for comp in (".gz", ".bz2", ".xz", ".zip", ".zst"):
        if name.lower().endswith(comp):
            name = name[: -len(comp)]
    stem, ext = os.path.splitext(name)
    if fmt in ("votable", "hdf5"):  # one spelling for these, whatever the input's
        ext = BY_NAME[fmt].output[0]
    elif ext.lower() not in OUTPUT_EXTENSIONS:
        ext = "." + fmt
    if ext.lower() in (".txt", ".tsv"):
        ext = ".csv"
    return cat.with_name(f"{stem}_scores{ext}")


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
            "command": normalised_command(command),
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
        self._lock.enter_context(locked(self.work))
        try:
            self.manifest, self.resuming = prepare_work_dir(self.work, self.manifest,
                                                             self.resume)
        except BaseException:
            if [c.name for c in self.work.iterdir()] == ["lock"]:  # nothing of ours to keep
                empty_work_dir(self.work)
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

    def chunks(self) -> Iterator[LocalChunk]:
        """Every chunk as ``(k, start_row, frame, done)``; ``done`` when resumed from a part."""
        self.n_chunks = 0
        pieces = (partition_chunks(self.reader, self.plan) if self.plan is not None else
                  self.reader.chunks(self.options.chunk_size, limit=self.options.limit))
        for k, (start, frame) in enumerate(pieces):
            self.n_chunks = k + 1
            done = self.resuming and part_reusable(part_path(self.work, k), len(frame))
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
        empty_work_dir(self.work)
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
    try:
        with run:
            if runner is None:
                run_locally(run.chunks(), ctx, run.write_part, progress=progress)
            else:  # e.g. Dask: the same chunks and part files, elsewhere
                spec = worker_spec(run.classifier.path, run.columns, run.options, run.catalog,
                                   source)
                ctx.warnings.update(runner(spec, _pending(run, progress), run.work.resolve(),
                                           progress))
            asm = run.finish(progress=(lambda n: progress("assemble", n)) if progress else None)
    finally:
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


def _summary(asm: AssemblyResult, clf: OnnxClassifier, seconds: float, resumed: int,
             warnings: list[str], meta: dict[str, Any]) -> RunSummary:
    return RunSummary(output=asm.path, format=asm.format, rows=asm.n_rows,
                      status_counts=asm.status_counts, classified=asm.n_classified,
                      mergers=asm.n_merger, duplicate_ids=asm.n_duplicate_ids, seconds=seconds,
                      model=clf.describe(), resumed_chunks=resumed, warnings=warnings,
                      sidecar=asm.sidecar, metadata=meta)
