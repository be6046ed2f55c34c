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

For a seed ensemble (:mod:`galmerge.ensemble`: ``run_batch`` returns the (N, M) member
probabilities) the raw score is the members' mean and the spread is taken over every
member and view; its default is ``n_views=1``, the spread over the members alone, at the
ensemble's own cost (:func:`default_views`).

Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["DEFAULT_VIEWS", "VIEW_CHOICES", "apply_view", "default_views", "score_views"]

#: Views of a single model's default spread.
DEFAULT_VIEWS = 2
VIEW_CHOICES = (1, 2, 8)
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


def default_views(n_members: int) -> int:
    """1 for an ensemble (spread over its members), :data:`DEFAULT_VIEWS` for one model."""
    return 1 if n_members > 1 else DEFAULT_VIEWS


def _columns(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    return s[:, None] if s.ndim == 1 else s


def score_views(run_batch: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                n_views: int = DEFAULT_VIEWS) -> tuple[np.ndarray, np.ndarray]:
    """``(raw score of the identity view, spread over n_views views and the members)``,
    float32 (N,). ``run_batch`` returns (N,) scores or (N, M) member scores."""
    if n_views not in VIEW_CHOICES:
        raise ValueError(f"n_views must be one of {VIEW_CHOICES}, got {n_views}")
    first = _columns(run_batch(images))
    scores = [first] + [_columns(run_batch(apply_view(images, v))) for v in range(1, n_views)]
    spread = np.std(np.concatenate(scores, axis=1), axis=1).astype(np.float32)
    p0 = first[:, 0] if first.shape[1] == 1 else first.mean(axis=1)
    return p0.astype(np.float32), spread
