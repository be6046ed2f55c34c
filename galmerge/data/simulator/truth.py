"""The per-image simulation truth both simulators store under ``extra/`` in their files."""

from __future__ import annotations

import numpy as np

__all__ = ["truth_columns"]


def truth_columns(cat: dict[str, np.ndarray], **more: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image simulation truth to store under ``extra/`` in the dataset files
    (merger stage index, mass ratio, separation, fluxes, positions, sizes)."""
    keep = ("stage", "mass_ratio", "sep", "flux", "x1", "y1", "x2", "y2", "r1", "n1", "r2",
            "n2")
    out = {k: np.asarray(cat[k]) for k in keep if k in cat}
    out.update(more)
    return {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in out.items()}
