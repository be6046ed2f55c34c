"""Small image measurements shared by the simulator tests."""

from __future__ import annotations

import numpy as np


def count_peaks(img: np.ndarray, rel: float) -> int:
    """Strict 8-neighbour local maxima of a 2-d image above ``rel`` × its maximum."""
    p = np.pad(img, 1, constant_values=-np.inf)
    c = p[1:-1, 1:-1]
    is_max = np.ones_like(c, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                is_max &= c > p[1 + dy:p.shape[0] - 1 + dy, 1 + dx:p.shape[1] - 1 + dx]
    return int((is_max & (c > rel * c.max())).sum())
