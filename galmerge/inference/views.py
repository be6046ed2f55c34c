"""Per-row uncertainty: the spread of the model's score over symmetric views of the cutout.

A galaxy's class does not change when its image is flipped or rotated by 90
degrees (the dihedral group D4: eight views). :func:`score_views` scores the
identity view -- the row's ``p_merger_raw``, so that calibration curves and
thresholds measured on plain images stay valid -- and ``n_views - 1`` more,
and returns the standard deviation (``ddof=0``) of the raw score over all
views as ``p_merger_spread``:

* ``n_views=2`` (default): identity and the left-right mirror image; costs
  2x the model-only time (the spread of two views is half their difference);
* ``n_views=8``: all eight D4 views; costs 8x (opt-in, ``--views 8``).

Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["DEFAULT_VIEWS", "VIEW_CHOICES", "apply_view", "score_views"]

DEFAULT_VIEWS = 2
VIEW_CHOICES = (2, 8)
#: D4 views as (number of 90-degree rotations, mirrored); the default pair first.
_D4 = ((0, False), (0, True), (1, False), (2, False), (3, False), (1, True), (2, True),
       (3, True))


def apply_view(images: np.ndarray, view: int) -> np.ndarray:
    """View ``view`` (0..7) of (N, C, S, S) images, C-contiguous float32."""
    rot, mirror = _D4[view]
    x = images[..., ::-1] if mirror else images
    if rot:
        x = np.rot90(x, k=rot, axes=(-2, -1))
    return np.ascontiguousarray(x, dtype=np.float32)


def score_views(run_batch: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                n_views: int = DEFAULT_VIEWS) -> tuple[np.ndarray, np.ndarray]:
    """``(raw score of the identity view, spread over n_views views)``, float32 (N,)."""
    if n_views not in VIEW_CHOICES:
        raise ValueError(f"n_views must be one of {VIEW_CHOICES}, got {n_views}")
    p0 = np.asarray(run_batch(images), dtype=np.float32)
    scores = [p0.astype(np.float64)]
    for v in range(1, n_views):
        scores.append(np.asarray(run_batch(apply_view(images, v)), dtype=np.float64))
    spread = np.std(np.stack(scores), axis=0).astype(np.float32)
    return p0, spread
