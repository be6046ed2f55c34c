"""Run `galmerge classify` on a Dask cluster: the same partitions, the same part files.

The local runner (:mod:`galmerge.inference.local`, under
:func:`galmerge.inference.run.classify_catalog`) reads
catalogue partitions (or chunks) and writes partition ``k`` as part file ``k``;
it then assembles the parts in order (or finishes a partitioned output).
:class:`DaskRunner` replaces only the middle step. Where the catalogue can be
read by row range (Parquet files and datasets, HATS pixels, FITS, HDF5: see
:mod:`galmerge.inference.partitions`) a task carries only the partition's
*address* (:class:`~galmerge.inference.partitions.Partition`): the worker opens
the catalogue itself, reads its rows, classifies them with the same
:func:`~galmerge.inference.chunk.classify_rows` and writes the part file, so
the client reads no rows and its memory and network stay flat. Other formats
(CSV, VOTable, compressed files) are read on the client and each chunk travels
with its task, as before. Either way the output is identical to a local run, in
content and order, and

* a worker that dies mid-run loses nothing: the scheduler still holds the task
  (its address or chunk travels with it) and reruns it on another worker; the part writer
  is atomic (temporary file + rename) and idempotent, so a chunk written twice
  is written identically and never half;
* each worker process opens the ONNX model once: a
  :class:`~distributed.WorkerPlugin` holds one classify context (ONNX Runtime
  session, cutout source, decode threads) per worker and run, and closes it
  when the run ends;
* GPU workers are chosen with Dask resources (``resources={"GPU": 1}``; start
  workers with ``--resources GPU=1``);
* memory on the client stays bounded: at most a few chunks per worker thread
  are in flight.

Workers must see the same paths as the client (catalogue folder, cutouts,
model, output folder): a shared filesystem, or the same container image with
the same mounts. Torch-free.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import pandas as pd

from galmerge.errors import GalmergeError
from galmerge.inference.chunk import classify_chunk, classify_rows
from galmerge.inference.context import ContextSpec, ProgressFn, make_context, service_source
from galmerge.inference.cutouts import LocalFileSource
from galmerge.inference.engine import OnnxClassifier, available_cpus
from galmerge.inference.partitions import Partition, open_input, read_partition_safely
from galmerge.inference.writers import write_part

__all__ = [
    "ChunkTask",
    "ClassifyContextPlugin",
    "DaskRunner",
    "classify_part",
    "classify_partition",
    "plugin_name",
]

try:  # the plugin must be a WorkerPlugin for Client.register_plugin; Dask is optional
    from distributed import WorkerPlugin
except ImportError:  # pragma: no cover - without the dask extra, DaskRunner says so
    WorkerPlugin = object  # type: ignore[misc, assignment]

#: A chunk to classify: (part number k, first row number, rows), or a partition's address.
ChunkTask = tuple[int, int, pd.DataFrame] | Partition


class ClassifyContextPlugin(WorkerPlugin):  # type: ignore[misc, valid-type]
    """Dask worker plugin: one classify context per worker process, built on first use.

    Registered under ``galmerge-classify-<run_id>``; removing the plugin at the
    end of the run closes the context (and its ONNX Runtime session).
    """

    idempotent = False

    def __init__(self, spec: ContextSpec) -> None:
        self.spec = spec
        self.ctx: Any = None
        self.own_cache: Any = None
        self.threads = 1
        self._reader: Any = None

    def setup(self, worker: Any) -> None:
        """Remember how many task threads this worker runs (for ORT's thread count)."""
        self.threads = max(1, int(getattr(worker.state, "nthreads", 1) or 1))

    def teardown(self, worker: Any) -> None:
        """Close the context when the plugin is removed or the worker stops."""
        if self.ctx is not None:
            self.ctx.close()
            self.ctx = None
        if self.own_cache is not None:
            self.own_cache.close()
            self.own_cache = None

    def context(self) -> Any:
        """The worker's classify context (ONNX session opened once, then reused)."""
        if self.ctx is None:
            spec, opts = self.spec, self.spec.options
            if opts.threads is None:
                # Worker processes share the machine: ORT threads = this worker's share.
                opts = replace(opts, threads=self.threads)
            if opts.cutouts:
                opts = replace(opts, cutouts=spec.path(opts.cutouts))
            clf = OnnxClassifier(spec.path(spec.model), device=opts.device,
                                 batch_size=opts.batch_size, threads=opts.threads)
            source = spec.source
            if source is None:
                source = service_source(opts, clf.convention)  # --fetch, or a fetch cache
                self.own_cache = getattr(source, "cache", None)
            if source is None:
                source = LocalFileSource(base_dir=spec.path(spec.base_dir),
                                         cutouts=opts.cutouts, pattern=opts.pattern)
            self.ctx = make_context(clf, spec.columns, opts, source=source)
        return self.ctx


    def reader(self) -> Any:
        """The catalogue opened on this worker (once; only its metadata is read)."""
        if self._reader is None:
            self._reader = open_input(self.spec.path(self.spec.catalog),
                                      self.spec.options.format)
        return self._reader


def plugin_name(run_id: str) -> str:
    """Name of a run's worker plugin."""
    return f"galmerge-classify-{run_id}"


def classify_part(run_id: str, k: int, start: int, chunk: pd.DataFrame, work: str
                  ) -> tuple[int, int, list[str]]:
    """The Dask task: classify one chunk on this worker and write part file ``k``.

    Returns ``(k, rows written, warnings)``. Idempotent: rerunning it (after a
    worker died) rewrites the same part atomically.
    """
    from distributed import get_worker


    plugin = cast(ClassifyContextPlugin, get_worker().plugins[plugin_name(run_id)])
    ctx = plugin.context()
    frame = classify_chunk(chunk, start, ctx)
    write_part(frame, Path(work), k)
    return k, len(frame), sorted(ctx.warnings)


def classify_partition(run_id: str, part: Partition, work: str) -> tuple[int, int, list[str]]:
    """The Dask task for an address: read partition ``part`` here, classify, write its part.

    A partition whose file cannot be read (a reason that will not go away) gives
    its rows the status ``unreadable`` instead of failing the run. Idempotent.
    """
    from distributed import get_worker


    plugin = cast(ClassifyContextPlugin, get_worker().plugins[plugin_name(run_id)])
    ctx = plugin.context()
    rows = read_partition_safely(plugin.reader(), part)
    frame = classify_rows(rows, part.start, ctx)
    write_part(frame, Path(work), part.k)
    return part.k, len(frame), sorted(ctx.warnings)


def _parse_resources(text: str | None) -> dict[str, float]:
    """``"GPU=1,MEM=4"`` -> ``{"GPU": 1.0, "MEM": 4.0}``."""
    out: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value) if sep else 1.0
        except ValueError:
            raise GalmergeError(f"--dask-resources: {item!r} is not NAME=NUMBER",
                                hint="e.g. --dask-resources GPU=1") from None
    return out


@dataclass
class DaskRunner:
    """Run classify's chunks as Dask tasks (see the module docstring).

    Attributes:
        address: scheduler address (``tcp://host:8786``); ``None`` starts a
            ``LocalCluster`` of ``n_workers`` processes on this machine.
        n_workers: workers of the local cluster (default: available cores).
        resources: per-task resources, e.g. ``{"GPU": 1}``; only workers that
            declare them (``dask worker --resources GPU=1``) run the tasks.
        in_flight: chunks submitted ahead per worker thread (bounds memory).
        client: an existing :class:`distributed.Client` to use instead.
    """

    address: str | None = None
    n_workers: int | None = None
    resources: dict[str, float] = field(default_factory=dict)
    in_flight: int = 2
    client: Any = None

    @classmethod
    def from_cli(cls, address: str | None, n_workers: int | None,
                 resources: str | None) -> DaskRunner:
        """Build from the ``--dask``, ``--dask-workers`` and ``--dask-resources`` options."""
        if address and n_workers:
            raise GalmergeError("give --dask ADDRESS or --dask-workers N, not both")
        if n_workers is not None and n_workers < 1:
            raise GalmergeError(f"--dask-workers must be at least 1, got {n_workers}")
        return cls(address=address, n_workers=n_workers, resources=_parse_resources(resources))

    @contextlib.contextmanager
    def _client(self) -> Iterator[Any]:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise GalmergeError("Dask is not installed",
                                hint="pip install 'galmerge[dask]'") from None
        if self.client is not None:
            yield self.client
            return
        if self.address:
            try:
                client = Client(self.address)  # timeout: distributed.comm.timeouts.connect
            except (OSError, TimeoutError) as exc:
                raise GalmergeError(f"cannot reach the Dask scheduler at {self.address}: {exc}",
                                    hint="start it with `dask scheduler` and workers with "
                                         "`dask worker ADDRESS`") from None
            with client:
                yield client
            return
        n = self.n_workers or available_cpus()
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                          dashboard_address=None, host="127.0.0.1",
                          resources=self.resources or None) as cluster, Client(cluster) as client:
            yield client

    def __call__(self, spec: ContextSpec, tasks: Iterator[ChunkTask], work: Path,
                 progress: ProgressFn | None = None) -> list[str]:
        """Classify every chunk of ``tasks`` into part files in ``work``; returns warnings."""
        from distributed import as_completed

        warnings: set[str] = set()
        with self._client() as client:
            workers = client.scheduler_info(n_workers=-1)["workers"]
            if not workers:
                raise GalmergeError(f"the Dask cluster at {self.address} has no workers")
            for name, amount in self.resources.items():
                if not any(w.get("resources", {}).get(name, 0) >= amount
                           for w in workers.values()):
                    raise GalmergeError(
                        f"no Dask worker offers the resource {name}={amount:g}",
                        hint=f"start workers with `dask worker ... --resources {name}={amount:g}`")
            slots = sum(int(w.get("nthreads", 1)) for w in workers.values())
            window = max(2, self.in_flight * slots)
            name = plugin_name(spec.run_id)
            client.register_plugin(ClassifyContextPlugin(spec), name=name)
            try:
                pending = as_completed()
                submitted = 0
                for task in tasks:
                    pending.add(self._submit(client, spec.run_id, task, work))
                    submitted += 1
                    while pending.count() >= window:
                        self._collect(next(pending), warnings, progress)
                for future in pending:
                    self._collect(future, warnings, progress)
            finally:
                with contextlib.suppress(Exception):
                    client.unregister_worker_plugin(name)
        return sorted(warnings)

    def _submit(self, client: Any, run_id: str, task: ChunkTask, work: Path) -> Any:
        """One task: a partition's address, or a chunk with its rows."""
        fn: Callable[..., Any]
        args: tuple[Any, ...]
        if isinstance(task, Partition):
            fn, args, k = classify_partition, (run_id, task, str(work)), task.k
        else:
            k, start, chunk = task
            fn, args = classify_part, (run_id, k, start, chunk, str(work))
        return client.submit(fn, *args, key=f"galmerge-part-{run_id}-{k:06d}",
                             resources=self.resources or None, pure=False)

    @staticmethod
    def _collect(future: Any, warnings: set[str], progress: ProgressFn | None) -> None:
        try:
            _, n, warn = future.result()
        except GalmergeError:
            raise
        except Exception as exc:
            from distributed import KilledWorker

            if isinstance(exc, KilledWorker):
                raise GalmergeError(
                    f"Dask gave up on a chunk after its workers died repeatedly ({exc})",
                    hint="check the workers' memory and logs; rerun with --resume to keep "
                         "the finished chunks") from None
            raise
        finally:
            future.release()
        warnings.update(warn)
        if progress is not None:
            progress("rows", n)

