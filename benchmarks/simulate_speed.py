"""Time `galmerge simulate` for each survey mode and print a table.

Usage (hold the CPU lock on shared machines)::

    flock /tmp/galmerge-cpu.lock python benchmarks/simulate_speed.py --n 6000 [--survey hst sdss] \
        [--backgrounds ../shared/data/sdss_gz1/pool]

With ``--backgrounds`` the SDSS mode is timed a second time on real sky.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from galmerge.data.simulator import SURVEYS, simulate


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    """Run the timings and print a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--survey", nargs="+", default=list(SURVEYS), choices=SURVEYS)
    ap.add_argument("--backgrounds", default=None,
                    help="directory of real GZ1 JPEGs: also time --survey sdss on real sky")
    args = ap.parse_args()
    import os

    print(f"CPU: {_cpu_model()}, {os.cpu_count()} cores")
    print("| survey | sky | images per file | files | wall time (s) | images/s |")
    print("|---|---|---|---|---|---|")
    runs = [(s, None) for s in args.survey]
    if args.backgrounds and "sdss" in args.survey:
        runs.append(("sdss", args.backgrounds))
    for survey, bg in runs:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = simulate(tmp, n=args.n, seed=args.seed, survey=survey, backgrounds=bg)
            dt = time.perf_counter() - t0
            files = ", ".join(p.name for p in res.paths)
            sky = "real (pool corners)" if bg else ("synthetic" if survey == "sdss" else "-")
            print(f"| {survey} | {sky} | {args.n} | {files} | {dt:.1f} | {args.n / dt:.0f} |")


if __name__ == "__main__":
    main()
