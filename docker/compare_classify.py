"""Compare two `galmerge classify` outputs: same rows, order, columns and statuses; p within tol.

    python docker/compare_classify.py HOST.csv CONTAINER.csv [--tol 1e-6]

Exit 0 when they agree, 1 with a one-line reason otherwise. Used by
docker/build-and-smoke.sh (in-container run vs host run) and
benchmarks/gpu_check.sh (CUDA run vs CPU run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

PROBABILITY = "p_merger"


def read_table(path: Path) -> pd.DataFrame:
    """Read a classify output by extension (CSV or Parquet), ids kept as strings."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def compare(a: pd.DataFrame, b: pd.DataFrame, tol: float) -> tuple[bool, str]:
    """(agree, one-line summary)."""
    if list(a.columns) != list(b.columns):
        return False, f"columns differ: {list(a.columns)} vs {list(b.columns)}"
    if len(a) != len(b):
        return False, f"row counts differ: {len(a)} vs {len(b)}"
    if PROBABILITY not in a.columns:
        return False, f"no {PROBABILITY} column"
    pa = pd.to_numeric(a[PROBABILITY], errors="coerce").to_numpy(dtype=np.float64)
    pb = pd.to_numeric(b[PROBABILITY], errors="coerce").to_numpy(dtype=np.float64)
    if not np.array_equal(np.isnan(pa), np.isnan(pb)):
        return False, "different rows have a probability (NaN pattern differs)"
    both = ~np.isnan(pa)
    worst = float(np.max(np.abs(pa[both] - pb[both]))) if both.any() else 0.0
    if worst > tol:
        row = int(np.nanargmax(np.abs(pa - pb)))
        return False, f"max |dp| = {worst:.3g} > {tol:g} (row {row})"
    for col in a.columns:
        if col == PROBABILITY:
            continue
        sa, sb = a[col].astype(str).to_numpy(), b[col].astype(str).to_numpy()
        diff = np.flatnonzero(sa != sb)
        if diff.size:
            return False, (f"column {col!r} differs in {diff.size} rows (first: row {diff[0]}: "
                           f"{sa[diff[0]]!r} vs {sb[diff[0]]!r})")
    statuses = a["status"].value_counts().to_dict() if "status" in a.columns else {}
    return True, (f"{len(a)} rows agree (statuses {statuses}); {int(both.sum())} probabilities, "
                  f"max |dp| = {worst:.3g} <= {tol:g}")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path)
    parser.add_argument("candidate", type=Path)
    parser.add_argument("--tol", type=float, default=1e-6)
    args = parser.parse_args(argv)
    ok, message = compare(read_table(args.reference), read_table(args.candidate), args.tol)
    print(("agree: " if ok else "DISAGREE: ") + message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
