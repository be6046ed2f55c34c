"""The classify context: what the chunk function needs, built once per process.

:func:`make_context` builds a :class:`ClassifyContext` (the ONNX session, the
cutout source, the column map and the options). The client builds one for a
local run; a Dask worker builds its own from a :class:`ContextSpec` (picklable:
paths, columns, options), since sessions, files and HTTP clients do not travel
between processes. Torch-free.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from galmerge.inference.cache import is_cache_dir
from galmerge.inference.catalog import Columns
from galmerge.inference.cutouts import CutoutSource, LocalFileSource, model_limits
from galmerge.inference.engine import OnnxClassifier, available_cpus
from galmerge.inference.options import ClassifyOptions
from galmerge.inference.scoring import Scoring, make_scoring
from galmerge.inference.services import open_cached_source
from galmerge.inference.views import default_views

__all__ = [
    "ClassifyContext",
    "ContextSpec",
    "ProgressFn",
    "make_context",
    "new_run_id",
    "run_scoring",
    "service_source",
]

#: ``progress(kind, n)``: ``total`` (rows, once), ``rows`` (rows done), ``assemble``.
ProgressFn = Callable[[str, int], None]


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


def service_source(options: ClassifyOptions, convention: Any) -> CutoutSource | None:
    """The cutout source that options name other than local files: ``--fetch`` (a survey
    service), or ``--cutouts`` pointing at a cache filled by `galmerge fetch`; else None."""
    if options.fetch is not None:
        return options.fetch.open_source(convention)
    if options.cutouts and is_cache_dir(options.cutouts):
        return open_cached_source(options.cutouts)
    return None


@dataclass(frozen=True)
class ContextSpec:
    """Everything a worker needs to build the classify context of one run (picklable).

    Paths are kept as the client was given them, with the client's working
    directory: a worker in the same directory (a local cluster) uses them as
    they are, so its messages match a local run word for word; a worker
    elsewhere resolves relative paths against ``cwd``.

    Attributes:
        run_id: unique per run; names the worker plugin.
        model: the ``.onnx`` file.
        columns: the catalogue's column map.
        options: the run's :class:`~galmerge.inference.options.ClassifyOptions`.
        base_dir: the catalogue's folder (``file_loc`` is relative to it).
        cwd: the client's working directory.
        source: a cutout source to copy to each worker instead of local files
            (it must be picklable; it is closed on the worker at the end).
        catalog: the catalogue (file or directory) that workers read partitions of.
    """

    run_id: str
    model: str
    columns: Columns
    options: ClassifyOptions
    base_dir: str
    cwd: str
    source: CutoutSource | None = None
    catalog: str = ""

    def path(self, value: str) -> str:
        """``value`` as this process must open it."""
        p = Path(value)
        if p.is_absolute() or Path.cwd() == Path(self.cwd):
            return value
        return str(Path(self.cwd) / p)


def new_run_id() -> str:
    """A fresh run id (names the worker plugin and the task keys)."""
    return uuid.uuid4().hex[:12]
