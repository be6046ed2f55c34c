"""Survey-size classify: rows/s and peak memory from 10^5 to 10^7 catalogue rows.

    flock /tmp/galmerge-cpu.lock python benchmarks/scale.py                # the recorded runs
    python benchmarks/scale.py --full 1e5 --sparse 1e5,1e6 --work /tmp/s  # a quick look

Two kinds of catalogue, written as CSV (objid, ra, dec, file_loc) in the work
folder, classified by `galmerge classify` in a child process (Parquet output,
default chunk size) while this script samples the resident memory of the
child's whole process tree every 50 ms:

* ``full``: every row has a cutout, so every row goes through the model. The
  cutouts come from a small store reused: an HDF5 cube of the 24 example SDSS
  JPEGs, already cropped and resized to the model's input (``store.h5#k``), so
  the cost per row is the model plus the pipeline, not JPEG decoding.
* ``sparse``: the same, but only 1 row in 100 has a cutout; the others have
  coordinates and no ``file_loc`` and come out as ``no_cutout_source``. This
  pushes all rows through the catalogue reader, the chunk pipeline, the part
  files and the assembly (duplicate-id check included) at full size, with a
  model bill that two shared cores can pay at 10^7 rows.

Prints one table; the numbers in docs/benchmarks.md (section ``scale``) come
from it.

``--dask-sizes 1e6,1e7 --dask-workers 1,2`` (issue 15) runs the sparse catalogue
written as **Parquet** (row groups of ``--dask-chunk`` rows) through a Dask
cluster started as separate processes (``dask scheduler`` + ``dask worker
--nworkers N --nthreads 1``), with a partitioned output (``--output DIR/``):
the client only plans partitions and sends addresses, each worker reads and
writes its own. Client and worker process trees are sampled separately, and the
same catalogue is classified on the single-machine path for comparison.
``--dask-format csv`` gives the Dask runs the sparse CSV instead: partitions are byte
ranges aligned to line ends (``galmerge.inference.line_index``), read by the workers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "catalogs" / "sdss_example"


@dataclass
class Result:
    kind: str
    rows: int
    classified: int
    seconds: float
    peak_rss: int
    out_bytes: int

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


def build_store(work: Path, model: Path) -> Path:
    """HDF5 cube of the example JPEGs prepared to the model's input (crop + resize done)."""
    from galmerge.data.dataset import write_dataset
    from galmerge.data.images import prepare, read_image
    from galmerge.inference.engine import OnnxClassifier

    store = work / "store.h5"
    if store.exists():
        return store
    conv = OnnxClassifier(model, device="cpu").convention
    files = sorted(EXAMPLE.glob("cutouts/*.jp*g"))
    images = np.stack([prepare(read_image(f).pixels, conv.size, conv.crop_fraction)
                       for f in files]).astype(np.float32)
    # The stored convention's crop_fraction says the crop is already applied, so the
    # pipeline neither crops nor resizes these images again.
    write_dataset(store, images, np.full(len(files), -1, dtype=np.int8), conv,
                  ids=[f.stem for f in files])
    return store


def build_catalogue(work: Path, rows: int, every: int, store_n: int) -> Path:
    """CSV of ``rows`` rows; every ``every``-th row has a cutout in the store (in blocks)."""
    path = work / f"cat-{rows}-every{every}.csv"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    rng = np.random.default_rng(rows)
    block = 1_000_000
    with tmp.open("w") as fh:
        for start in range(0, rows, block):
            n = min(block, rows - start)
            i = np.arange(start, start + n)
            loc = np.where(i % every == 0, np.char.add("store.h5#", (i % store_n).astype(str)),
                           "")
            frame = pd.DataFrame({
                "objid": 1_237_000_000_000_000_000 + i,  # SDSS-like 64-bit ids
                "ra": np.round(rng.uniform(0, 360, n), 6),
                "dec": np.round(np.degrees(np.arcsin(rng.uniform(-1, 1, n))), 6),
                "file_loc": loc,
            })
            frame.to_csv(fh, index=False, header=start == 0)
    tmp.rename(path)
    return path


def tree_rss(proc: psutil.Process) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def classify(catalogue: Path, out: Path, python: str, extra: list[str]) -> tuple[float, int]:
    """Run `galmerge classify` in a child process; (seconds, peak RSS of its tree)."""
    if out.exists():
        out.unlink()
    cmd = [python, "-m", "galmerge", "classify", "--catalog", str(catalogue), "--output",
           str(out), "--quiet", *extra]
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    proc = psutil.Process(child.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, tree_rss(proc))
            except psutil.Error:
                pass
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = child.communicate()
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"classify failed ({child.returncode}):\n{output[-2000:]}")
    return seconds, peak


def run(kind: str, rows: int, args: argparse.Namespace, work: Path, store: Path) -> Result:
    every = 1 if kind == "full" else args.every
    cat = build_catalogue(work, rows, every, store_n=24)
    out = work / f"out-{kind}-{rows}.parquet"
    seconds, peak = classify(cat, out, args.python, args.classify_args)
    with_cutout = -(-rows // every)
    counts = pd.read_parquet(out, columns=["status"])["status"].value_counts().to_dict()
    assert sum(counts.values()) == rows, counts
    # One of the 24 example cutouts is (correctly) `blank` and never reaches the model.
    assert counts.get("ok", 0) + counts.get("blank", 0) == with_cutout, counts
    result = Result(kind, rows, counts.get("ok", 0), seconds, peak, out.stat().st_size)
    print(f"  {kind:<6} {rows:>10,} rows  {seconds:8.1f} s  {result.rows_per_s:10,.0f} rows/s  "
          f"peak RSS {peak / 2**20:7.0f} MiB  statuses {counts}", flush=True)
    if not args.keep:
        out.unlink()
    return result


def build_parquet(work: Path, rows: int, every: int, store_n: int, group: int) -> Path:
    """The sparse catalogue as Parquet with row groups of ``group`` rows (written in blocks)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = work / f"cat-{rows}-every{every}-rg{group}.parquet"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    rng = np.random.default_rng(rows)
    block = max(group, 1_000_000 // group * group)
    writer = None
    for start in range(0, rows, block):
        i = np.arange(start, min(rows, start + block))
        loc = np.where(i % every == 0, np.char.add("store.h5#", (i % store_n).astype(str)), "")
        table = pa.table({"objid": 1_237_000_000_000_000_000 + i,
                          "ra": np.round(rng.uniform(0, 360, len(i)), 6),
                          "dec": np.round(np.degrees(np.arcsin(rng.uniform(-1, 1, len(i)))), 6),
                          "file_loc": loc})
        writer = writer or pq.ParquetWriter(tmp, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=group)
    assert writer is not None
    writer.close()
    tmp.rename(path)
    return path


class Sampler:
    """Peak resident memory of process trees, sampled every 50 ms in a thread."""

    def __init__(self, procs: dict[str, psutil.Process]) -> None:
        self.procs, self.peak = procs, dict.fromkeys(procs, 0)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            for name, proc in self.procs.items():
                with contextlib.suppress(psutil.Error):
                    self.peak[name] = max(self.peak[name], tree_rss(proc))
            self.done.wait(0.05)

    def stop(self) -> dict[str, int]:
        self.done.set()
        self.thread.join()
        return self.peak


def dask_run(cat: Path, rows: int, n_workers: int | None, args: argparse.Namespace,
             work: Path) -> str:
    """Classify ``cat`` into a dataset; on ``n_workers`` Dask workers (None: no Dask)."""
    out = work / f"out-dask{n_workers}-{rows}"
    shutil.rmtree(out, ignore_errors=True)
    py = args.python
    started: list[subprocess.Popen[str]] = []
    procs: dict[str, psutil.Process] = {}
    extra = ["--chunk-size", str(args.dask_chunk)]
    if n_workers:
        port = 8786 + 10 * n_workers
        started.append(subprocess.Popen([py, "-m", "distributed.cli.dask_scheduler", "--host",
                                         "127.0.0.1", "--port", str(port),
                                         "--dashboard-address", ":0"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        started.append(subprocess.Popen([py, "-m", "distributed.cli.dask_worker",
                                         f"tcp://127.0.0.1:{port}", "--nworkers",
                                         str(n_workers), "--nthreads", "1", "--no-dashboard"],
                                        cwd=ROOT, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
        procs["workers"] = psutil.Process(started[-1].pid)
        extra += ["--dask", f"tcp://127.0.0.1:{port}"]
        from distributed import Client

        time.sleep(2)  # the scheduler's port opens
        with Client(f"tcp://127.0.0.1:{port}", timeout=120) as c:
            c.wait_for_workers(n_workers, timeout=300)
    t0 = time.perf_counter()
    client = subprocess.Popen([py, "-m", "galmerge", "classify", "--catalog", str(cat),
                               "--output", f"{out}/", "--quiet", *extra], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs["client"] = psutil.Process(client.pid)
    sampler = Sampler(procs)
    output, _ = client.communicate()
    seconds = time.perf_counter() - t0
    peak = sampler.stop()
    for p in reversed(started):
        p.terminate()
        p.wait(timeout=60)
    if client.returncode != 0:
        raise SystemExit(f"classify failed ({client.returncode}):\n{output[-2000:]}")
    shutil.rmtree(out, ignore_errors=True)
    where = f"Dask, {n_workers} worker{'s' * (n_workers > 1)}" if n_workers else "single machine"
    return (f"| {where} | {rows:,} | {seconds:,.0f} s | {rows / seconds:,.0f} | "
            f"{peak['client'] / 2**20:,.0f} MiB | "
            f"{peak.get('workers', 0) / 2**20:,.0f} MiB |")


def sizes(text: str) -> list[int]:
    return [int(float(v)) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", default="1e5,1e6", help="row counts, every row classified")
    parser.add_argument("--sparse", default="1e5,1e6,1e7",
                        help="row counts, 1 row in --every classified")
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--work", default=os.environ.get("TMPDIR", "/tmp") + "/galmerge-scale")
    parser.add_argument("--model", default=str(ROOT / "models" / "deepmerge-sdss.onnx"))
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--keep", action="store_true", help="keep the output files")
    parser.add_argument("--dask-sizes", default="", help="row counts for the Dask runs")
    parser.add_argument("--dask-workers", default="1,2", help="worker counts for the Dask runs")
    parser.add_argument("--dask-chunk", type=int, default=65536,
                        help="row group = partition size of the Dask runs' Parquet catalogue")
    parser.add_argument("--dask-format", choices=("parquet", "csv"), default="parquet",
                        help="the Dask runs' catalogue: Parquet, or CSV (byte-range partitions)")
    parser.add_argument("--no-local", action="store_true",
                        help="Dask runs only (no single-machine run beside them)")
    parser.add_argument("classify_args", nargs="*",
                        help="extra classify options after --, e.g. -- --chunk-size 4096")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    store = build_store(work, Path(args.model))
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), platform.processor())
    print(f"machine: {os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} "
          f"GiB; python {platform.python_version()}; extra classify args {args.classify_args}")
    results = [run("full", n, args, work, store) for n in sizes(args.full)]
    results += [run("sparse", n, args, work, store) for n in sizes(args.sparse)]
    print("\n| catalogue | rows | rows through the model | wall time | rows/s | peak RSS "
          "(process tree) | output |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        label = "every row has a cutout" if r.kind == "full" else f"1 row in {args.every} has one"
        print(f"| {label} | {r.rows:,} | {r.classified:,} | {r.seconds:,.0f} s | "
              f"{r.rows_per_s:,.0f} | {r.peak_rss / 2**20:,.0f} MiB | "
              f"{r.out_bytes / 2**20:,.0f} MiB |")
    if sizes(args.dask_sizes):
        lines = []
        for n in sizes(args.dask_sizes):
            cat = (build_parquet(work, n, args.every, 24, args.dask_chunk)
                   if args.dask_format == "parquet" else
                   build_catalogue(work, n, args.every, 24))
            for w in [*(() if args.no_local else (None,)), *sizes(args.dask_workers)]:
                lines.append(dask_run(cat, n, w, args, work))
                print(lines[-1], flush=True)
        print("\n| path | rows | wall time | rows/s | client peak RSS | workers' peak RSS |")
        print("|---|---:|---:|---:|---:|---:|")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
