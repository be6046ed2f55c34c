"""The local runner: a run's chunks classified in order, in this process.

:func:`run_locally` sits where the Dask runner (:mod:`galmerge.inference.distributed`)
sits: above the chunk function (:func:`~galmerge.inference.chunk.classify_rows`),
below the run (:func:`~galmerge.inference.run.classify_catalog`), which hands it the
chunks and a part writer. With a survey service and a cache, the next chunk's
cutouts are fetched into the cache while this one is classified
(:class:`~galmerge.inference.fetch.Prefetcher`). Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd

from galmerge.inference.chunk import chunk_requests, classify_rows
from galmerge.inference.context import ClassifyContext, ProgressFn
from galmerge.inference.fetch import Prefetcher
from galmerge.inference.partitions import UnreadablePartition
from galmerge.inference.services import ServiceCutoutSource

__all__ = ["LocalChunk", "run_locally"]

#: ``(k, start_row, rows, done)``: part number, first row, the rows (or an unreadable
#: partition), and whether a resumed run already holds its part.
LocalChunk = tuple[int, int, pd.DataFrame | UnreadablePartition, bool]


def run_locally(chunks: Iterable[LocalChunk], ctx: ClassifyContext,
                write_part: Callable[[int, pd.DataFrame], Any], *,
                progress: ProgressFn | None = None) -> None:
    """Classify every chunk not ``done`` with ``ctx`` and hand each result to ``write_part``."""
    source = ctx.source
    prefetcher = None
    if isinstance(source, ServiceCutoutSource) and source.cache is not None \
            and not source.offline:
        prefetcher = Prefetcher(source)
    try:
        items = iter(chunks)
        upcoming = next(items, None)
        planned = None  # the upcoming chunk's requests: built once, for prefetch and chunk
        while upcoming is not None:
            k, start, chunk, done = upcoming
            upcoming = next(items, None)
            requests, planned = planned, None
            if done:
                if progress is not None:
                    progress("rows", len(chunk))
                continue
            if prefetcher is not None and upcoming is not None and not upcoming[3] \
                    and isinstance(upcoming[2], pd.DataFrame):
                # The next chunk's cutouts stream into the cache while this one runs.
                planned = chunk_requests(upcoming[2], upcoming[1], ctx)
                prefetcher.submit(planned.fetchable())
            write_part(k, classify_rows(chunk, start, ctx, progress=progress,
                                        requests=requests))
    finally:
        if prefetcher is not None:
            prefetcher.close()
