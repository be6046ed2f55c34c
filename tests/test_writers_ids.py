"""The assembly's duplicate-id check, done out of core in hash buckets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from galmerge.inference.writers import scan_parts, write_part


def _parts(tmp_path: Path, ids: list[str], per_part: int) -> list[Path]:
    paths = []
    for k, start in enumerate(range(0, len(ids), per_part)):
        chunk = ids[start:start + per_part]
        frame = pd.DataFrame({
            "objid": pd.array(chunk, dtype=object),
            "p_merger": np.linspace(0, 1, len(chunk)),
            "is_merger": pd.array([False] * len(chunk), dtype="boolean"),
            "status": pd.array(["ok"] * len(chunk), dtype=object),
            "status_detail": pd.array([""] * len(chunk), dtype=object),
        })
        paths.append(write_part(frame, tmp_path, k))
    return paths


def test_duplicates_across_parts_point_at_the_first_row(tmp_path: Path) -> None:
    ids = [str(587722952231026744 + 3 * i) for i in range(5000)]
    repeats = {4100: 7, 2500: 2499, 4999: 7, 333: 12}  # row -> earlier row it repeats
    for row, first in repeats.items():
        ids[row] = ids[first]
    ids[17] = ""  # a missing id is not a duplicate of another missing id
    ids[18] = ""
    scan = scan_parts(_parts(tmp_path, ids, 700), id_col="objid", text_columns=False,
                      typed_output=True, keep_text=set(), string_widths=False)
    want = sorted(repeats.items())
    assert scan.duplicate_rows.tolist() == [r for r, _ in want]
    assert scan.duplicate_first.tolist() == [f for _, f in want]
    assert scan.n_rows == 5000
    assert not any(p.name.startswith("id-buckets-") for p in tmp_path.iterdir())


def test_no_duplicates(tmp_path: Path) -> None:
    ids = [f"g{i}" for i in range(300)]
    scan = scan_parts(_parts(tmp_path, ids, 64), id_col="objid", text_columns=False,
                      typed_output=False, keep_text=set(), string_widths=False)
    assert scan.duplicate_rows.size == 0 and scan.duplicate_first.size == 0
