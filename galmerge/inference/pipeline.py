"""The classify pipeline's public names, from the modules that hold them.

The pipeline is a stack of small modules, each importing only from below:

* :mod:`~galmerge.inference.run` — :func:`classify_catalog`, :class:`ClassifyRun`
  (plan, output checks, assembly), :class:`RunSummary`;
* :mod:`~galmerge.inference.local` and :mod:`~galmerge.inference.distributed` — the
  two runners (in this process; as Dask tasks), writing the same part files;
* :mod:`~galmerge.inference.chunk` — :func:`classify_chunk`, the unit of work, and
  its batching;
* :mod:`~galmerge.inference.context` — :func:`make_context`, :class:`ClassifyContext`
  (built once per process);
* :mod:`~galmerge.inference.options` — :class:`ClassifyOptions`;
* :mod:`~galmerge.inference.resume` — the manifest, fingerprints, reusable parts;
* :mod:`~galmerge.inference.models` — :func:`resolve_model` (model discovery).

This module only gathers their public names, so that ``from
galmerge.inference.pipeline import classify_catalog`` (the import of earlier
releases) keeps working; ``from galmerge import classify_catalog`` is the public
API (docs/api.md). Torch-free.
"""

from __future__ import annotations

from galmerge.inference.chunk import classify_chunk
from galmerge.inference.context import (
    ClassifyContext,
    ProgressFn,
    make_context,
    run_scoring,
    service_source,
)
from galmerge.inference.models import (
    DEFAULT_MODEL,
    MODELS_ENV,
    model_search_path,
    resolve_model,
)
from galmerge.inference.options import DEFAULT_CHUNK_SIZE, FETCH_RESULT_KEYS, ClassifyOptions
from galmerge.inference.resume import (
    EXECUTION_FLAGS,
    EXECUTION_OPTIONS,
    MANIFEST,
    MANIFEST_VERSION,
    catalog_fingerprint,
    run_date,
    run_metadata,
)
from galmerge.inference.run import (
    ChunkRunner,
    ClassifyRun,
    RunSummary,
    check_output,
    classify_catalog,
    default_output,
    worker_spec,
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
