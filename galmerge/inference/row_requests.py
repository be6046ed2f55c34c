"""One builder of cutout requests: a catalogue chunk's rows -> :class:`CutoutRequest` s.

``galmerge fetch``, the classify chunk function and its prefetcher all ask for a
row's cutout with the request :func:`row_requests` builds: id (exact string),
coordinates (parsed once per chunk; unusable ones become ``None`` with the reason
kept), ``file_loc`` and the per-row scale of ``--scale-col``. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from galmerge.errors import GalmergeError
from galmerge.inference.catalog import Columns, id_strings, parse_coordinates, text_values
from galmerge.inference.status import CutoutRequest

__all__ = ["RowRequests", "row_requests", "row_scales"]


@dataclass
class RowRequests:
    """One request per row of a chunk, in order, and what was wrong with its coordinates.

    Attributes:
        requests: one :class:`CutoutRequest` per row (``ra``/``dec`` None where unusable).
        problem: per row, why its coordinates are unusable (``""``: they are fine);
            None when the catalogue has no coordinate columns.
        id_is_float: the id column is floating point (ids above 2**53 already rounded).
    """

    requests: list[CutoutRequest]
    problem: np.ndarray | None
    id_is_float: bool

    def fetchable(self) -> list[CutoutRequest]:
        """The requests a survey service can answer (those with coordinates)."""
        return [r for r in self.requests if r.ra is not None]


def row_scales(chunk: pd.DataFrame, column: str | None, factor: float,
               where: str) -> np.ndarray | None:
    """Per-row cutout scales (arcsec/px) = ``column`` x ``factor``; NaN where unusable."""
    if not column:
        return None
    if column not in chunk.columns:
        lower = {str(c).lower(): c for c in chunk.columns}
        if column.lower() not in lower:
            raise GalmergeError(f"{where}: no column {column!r} for --scale-col",
                                hint=f"columns are: {', '.join(map(str, chunk.columns[:30]))}")
        column = lower[column.lower()]
    vals = pd.to_numeric(chunk[column], errors="coerce").to_numpy(dtype=np.float64,
                                                                  na_value=np.nan)
    out = vals * factor
    out[~(np.isfinite(out) & (out > 0))] = np.nan
    return out


def row_requests(chunk: pd.DataFrame, start_row: int, cols: Columns, *,
                 scales: np.ndarray | None = None) -> RowRequests:
    """The requests for every row of ``chunk`` (its first row is ``start_row``)."""
    n = len(chunk)
    ids, id_is_float = id_strings(chunk[cols.id])
    ra = dec = problem = None
    if cols.ra and cols.dec:
        ra, dec, problem = parse_coordinates(chunk[cols.ra], chunk[cols.dec])
    floc = text_values(chunk[cols.file_loc]) if cols.file_loc else None
    requests = []
    for i in range(n):
        bad = ra is None or (problem is not None and problem[i] != "")
        requests.append(CutoutRequest(
            row=start_row + i, id=ids[i],
            ra=None if bad else float(ra[i]),  # type: ignore[index]
            dec=None if bad else float(dec[i]),  # type: ignore[index]
            file_loc=(floc[i] or None) if floc is not None else None,
            scale=None if scales is None else float(scales[i])))
    return RowRequests(requests, problem, id_is_float)
