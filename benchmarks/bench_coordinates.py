"""Sexagesimal RA/Dec parsing: one astropy Angle call per chunk vs one per row.

Prints a table; ratios are measured in one run on the same strings.
Usage: python benchmarks/bench_coordinates.py [N]
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import pandas as pd
from astropy import units as u
from astropy.coordinates import Angle

from galmerge.inference.catalog import parse_coordinates


def per_row(ra: list[str], dec: list[str]) -> np.ndarray:
    """The previous way: one Angle per value."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([[Angle(r, unit=u.hourangle).deg, Angle(d, unit=u.deg).deg]
                         for r, d in zip(ra, dec, strict=True)])


def main(n: int) -> None:
    rng = np.random.default_rng(0)
    ra_deg, dec_deg = rng.uniform(0, 360, n), rng.uniform(-89, 89, n)
    ra = [Angle(v, u.deg).to_string(unit=u.hourangle, sep=":", precision=2) for v in ra_deg]
    dec = [Angle(v, u.deg).to_string(unit=u.deg, sep=":", precision=1, alwayssign=True)
           for v in dec_deg]
    t0 = time.perf_counter()
    old = per_row(ra, dec)
    t_old = time.perf_counter() - t0
    t0 = time.perf_counter()
    r, d, problem = parse_coordinates(pd.Series(ra, dtype=object), pd.Series(dec, dtype=object))
    t_new = time.perf_counter() - t0
    assert (problem == "").all() and np.allclose(r, old[:, 0]) and np.allclose(d, old[:, 1])
    print(f"{'method':<28}{'rows':>8}{'us/row':>10}")
    print(f"{'one Angle per row':<28}{n:>8}{1e6 * t_old / n:>10.1f}")
    print(f"{'parse_coordinates (array)':<28}{n:>8}{1e6 * t_new / n:>10.1f}")
    print(f"speed-up {t_old / t_new:.1f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
