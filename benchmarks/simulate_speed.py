"""Time `galmerge simulate` for each survey mode and print a table.

Usage (hold the CPU lock on shared machines)::

    flock /tmp/galmerge-cpu.lock python benchmarks/simulate_speed.py --n 6000 [--survey hst sdss]
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
    args = ap.parse_args()
    import os

    print(f"CPU: {_cpu_model()}, {os.cpu_count()} cores")
    print("| survey | images per file | files | wall time (s) | images/s |")
    print("|---|---|---|---|---|")
    for survey in args.survey:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = simulate(tmp, n=args.n, seed=args.seed, survey=survey)
            dt = time.perf_counter() - t0
            files = ", ".join(p.name for p in res.paths)
            print(f"| {survey} | {args.n} | {files} | {dt:.1f} | {args.n / dt:.0f} |")


if __name__ == "__main__":
    main()
