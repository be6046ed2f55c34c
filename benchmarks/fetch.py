"""Fetch throughput against the local fake SDSS service with 100 ms latency per request.

Measures cutouts/s of ``SdssCutoutSource.get_many`` (HTTP, JPEG decode, cache
write) at several concurrencies, each on fresh sky positions and a fresh cache,
then the same rows again from the filled cache. The fake server runs in its own
process (``python -m tests.fake_services``) so that it does not share the
client's GIL. Targets (issue 5): >= 80 % of concurrency / latency, and a cached
rerun >= 20x faster than the first run.

Run under the CPU lock::

    flock /tmp/galmerge-cpu.lock python benchmarks/fetch.py
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from galmerge.inference.cache import CutoutCache  # noqa: E402
from galmerge.inference.concurrency import ordered_map  # noqa: E402
from galmerge.inference.cutouts import OK, CutoutRequest  # noqa: E402
from galmerge.inference.http import HttpSettings  # noqa: E402
from galmerge.inference.services import Geometry, SdssCutoutSource  # noqa: E402


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fake_services", "--latency",
                             str(latency)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"fake server did not start: {line!r}")
    return proc, line.split()[1]


def run(url: str, cache_dir: Path, rows: list[CutoutRequest], concurrency: int,
        *, decode: bool = True) -> float:
    """Seconds to get every row (all must be ok).

    ``decode=True`` is ``get_many`` (pixels for the model: what classify does);
    ``decode=False`` is what ``galmerge fetch`` does per row (``ensure``).
    """
    with CutoutCache(cache_dir) as cache:
        src = SdssCutoutSource(Geometry(64, 0.4), url=url + "/{release}/SkyServerWS/ImgCutout/"
                               "getjpeg", cache=cache,
                               settings=HttpSettings(concurrency=concurrency))
        t0 = time.perf_counter()
        if decode:
            statuses = [c.status for c in src.get_many(rows)]
        else:
            statuses = [c.status for c in ordered_map(
                lambda r: src.get_safely(r, decode_cached=False), rows,
                workers=concurrency, window=4 * concurrency)]
        dt = time.perf_counter() - t0
        src.close()
    bad = [s for s in statuses if s != OK]
    if bad:
        raise RuntimeError(f"{len(bad)} rows not ok: {bad[:3]}")
    return dt


def run_classify(url: str, cache_dir: Path, rows: list[CutoutRequest], concurrency: int,
                 chunk_size: int, *, tag: str = "") -> float:
    """Seconds for ``classify --fetch sdss`` over ``rows`` (shipped model, cache ``cache_dir``)."""
    import pandas as pd

    from galmerge.inference.fetch import FetchOptions
    from galmerge.inference.pipeline import ClassifyOptions, classify_catalog

    cat = cache_dir.parent / f"{cache_dir.name}{tag}.csv"
    pd.DataFrame({"objid": [r.id for r in rows], "ra": [r.ra for r in rows],
                  "dec": [r.dec for r in rows]}).to_csv(cat, index=False)
    opts = ClassifyOptions(chunk_size=chunk_size, fetch=FetchOptions(
        service="sdss", service_url=url + "/{release}/SkyServerWS/ImgCutout/getjpeg",
        scale=0.4, pixels=64, concurrency=concurrency, cache=str(cache_dir)))
    t0 = time.perf_counter()
    summary = classify_catalog(cat, output=cache_dir.parent / f"{cache_dir.name}{tag}_out.csv",
                               options=opts)
    dt = time.perf_counter() - t0
    if summary.status_counts.get(OK) != len(rows):
        raise RuntimeError(f"classify: {summary.status_counts}")
    return dt


def rerun_lines(url: str, tmp: Path, concurrencies: list[int], n: int) -> list[str]:
    """``classify --fetch`` first run vs cached rerun, start-up (a cached 10-row run) taken off."""
    out = ["", f"Cached rerun of `classify --fetch sdss` ({n:,} rows, shipped model, whole "
               "command in-process; start-up = a cached 10-row run, taken off both):", "",
           "| concurrency | first run (s) | cached rerun (s) | cached 10 rows (s) | "
           "speed-up, start-up off | target ≥ 20× |", "|---:|---:|---:|---:|---:|---|"]
    for c in concurrencies:
        rows = [CutoutRequest(i, str(i), 200.0 + c + i * 0.003, -5.0 + (i % 50) * 0.01)
                for i in range(n)]
        cache_dir = tmp / f"rerun{c}"
        first = run_classify(url, cache_dir, rows, c, 8192, tag="-first")
        again = min(run_classify(url, cache_dir, rows, c, 8192, tag=f"-again{k}")
                    for k in range(2))
        small = min(run_classify(url, cache_dir, rows[:10], c, 8192, tag=f"-small{k}")
                    for k in range(2))
        speedup = (first - small) / max(again - small, 1e-9)
        out.append(f"| {c} | {first:.2f} | {again:.2f} | {small:.2f} | {speedup:.0f}× | "
                   f"{'met' if speedup >= 20 else 'MISSED'} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--seconds", type=float, default=4.0,
                    help="about how long each first (uncached) run should take")
    ap.add_argument("--rerun-rows", type=int, default=2000,
                    help="rows of the classify --fetch cached-rerun table (0: skip it)")
    ap.add_argument("--rerun-only", action="store_true", help="only the cached-rerun table")
    args = ap.parse_args()
    proc, url = start_server(args.latency)
    rerun: list[str] = []
    lines = []
    classify_lines: list[tuple[int, int, int, float, float, float]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if args.rerun_rows:
                rerun = rerun_lines(url, Path(tmp), [c for c in args.concurrency if c > 1],
                                    args.rerun_rows)
            for k, c in enumerate([] if args.rerun_only else args.concurrency):
                n = max(20, int(args.seconds * c / args.latency))
                rows = [CutoutRequest(i, str(i), 10.0 + k * 20 + i * 0.003, 5.0 + (i % 50) * 0.01)
                        for i in range(n)]
                cache_dir = Path(tmp) / f"c{c}"
                first = run(url, cache_dir, rows, c)
                cached = run(url, cache_dir, rows, c)
                lookup = run(url, cache_dir, rows, c, decode=False)
                rate = n / first
                ideal = c / args.latency
                lines.append((c, n, rate, ideal, rate / ideal, n / cached, first / cached,
                              n / lookup, first / lookup))
                if c > 1:
                    for chunk in (8192, max(16, n // 8)):
                        crow = [CutoutRequest(i, str(i), r.ra + 100.0 + chunk * 1e-5, r.dec)
                                for i, r in enumerate(rows)]
                        dt = run_classify(url, Path(tmp) / f"k{c}-{chunk}", crow, c, chunk)
                        classify_lines.append((c, n, chunk, n / dt, rate, n / dt / rate))
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=10)
    print(f"machine: {cpu_model()}, {platform.machine()}, python {platform.python_version()}")
    print(f"fake SDSS server: {args.latency * 1000:.0f} ms latency per request, 64x64 JPEG, "
          "own process")
    print()
    print("| concurrency | rows | first run cutouts/s | ideal c / latency | efficiency | "
          "cached rerun, decoded (classify) | speed-up | cached rerun, lookup only (fetch) | "
          "speed-up |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c, n, rate, ideal, eff, cached_rate, speedup, lookup_rate, lookup_speedup in lines:
        print(f"| {c} | {n} | {rate:.1f} | {ideal:.0f} | {eff:.0%} | {cached_rate:.0f}/s | "
              f"{speedup:.0f}x | {lookup_rate:.0f}/s | {lookup_speedup:.0f}x |")
    print()
    print("classify --fetch sdss (shipped model, 64 px at 0.4\"/px, fresh rows and cache), "
          "end to end:")
    print()
    print("| concurrency | rows | chunk size | rows/s | fetch-only cutouts/s | ratio |")
    print("|---:|---:|---:|---:|---:|---:|")
    for c, n, chunk, crate, frate, ratio in classify_lines:
        print(f"| {c} | {n} | {chunk} | {crate:.1f} | {frate:.1f} | {ratio:.0%} |")
    print("\n".join(rerun))

if __name__ == "__main__":
    main()
