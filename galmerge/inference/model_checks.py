"""What a model must promise before galmerge trusts its numbers.

A galmerge model file is input like any other: it may come from elsewhere,
be edited, or be exported from a broken training run. Checked once at load
(:func:`check_output_shape`) and on every batch (:func:`check_batch_output`,
:func:`invalid_scores`):

* the ``p_merger`` output is one number per image ((N,) or (N, 1)), otherwise
  the whole run stops with one line (every row would be wrong);
* every score is a finite probability in [0, 1]; a row whose score is not
  gets the status ``bad_model_output`` and the run says how many.

Metadata types and ranges (``size``, ``crop_fraction``, ``convention_extra``)
are checked where they are read, in
:meth:`galmerge.conventions.ModelConvention.from_metadata`.

Torch-free.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from galmerge.errors import GalmergeError

__all__ = ["check_batch_output", "check_output_shape", "invalid_scores"]


def check_output_shape(shape: list[Any] | None, where: str) -> None:
    """Refuse a declared ``p_merger`` shape that is not (N,) or (N, 1).

    Symbolic or unknown dimensions (or an unknown rank) pass; they are checked per batch.
    """
    if shape is None:
        return
    shape = list(shape)
    fixed = [d for d in shape[1:] if isinstance(d, int)]
    if len(shape) == 0 or len(shape) > 2 or (len(shape) == 2 and fixed and fixed != [1]):
        raise GalmergeError(f"{where}: output 'p_merger' has shape {shape}, expected one "
                            "probability per image (N,) or (N, 1)",
                            hint="export the model with `galmerge export`")


def check_batch_output(p: Any, n: int, where: str) -> np.ndarray:
    """The model's output for a batch of ``n`` images as float32 (n,), or a one-line error."""
    arr = np.asarray(p)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != n:
        raise GalmergeError(f"{where}: the model returned shape {tuple(arr.shape)} for a batch "
                            f"of {n} images, expected ({n},)",
                            hint="export the model with `galmerge export`")
    if arr.dtype.kind not in "fiub":
        raise GalmergeError(f"{where}: the model returned {arr.dtype} values, not numbers")
    return arr.astype(np.float32, copy=False)


def invalid_scores(p: np.ndarray) -> np.ndarray:
    """Mask of scores that are not probabilities: NaN, infinite, below 0 or above 1."""
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(p) | (p < 0.0) | (p > 1.0)
