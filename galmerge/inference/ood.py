"""Out-of-distribution flag: is this model input unlike the images the model was trained on?

:func:`image_statistics` measures a few cheap statistics of each prepared
model input (N, C, S, S), in the model's pixel convention:

* ``mean`` and ``std`` of all pixels (level and contrast: a blank or saturated
  tile, another stretch or convention, a 0-1 image given to a 0-255 model);
* ``plateau``: the fraction of pixels at the image's maximum (saturation,
  clipping, flat tiles);
* ``smoothness``: the correlation of horizontally adjacent pixels (real images
  are smoothed by the PSF: about 0.8-1; pure noise about 0);
* ``colour_k``: each band's mean over the mean of all bands (another survey's
  colours, a swapped band order).

:func:`ood_flags` marks an image out of distribution when any statistic is
outside the ranges the model records (``galmerge.ood_ranges``, fitted at
export on training images with :func:`fit_ood_ranges`), or -- for every
model, ranges or not -- when it fails the generic checks: flat (no contrast),
more than :data:`GENERIC_PLATEAU` of the pixels at the maximum, smoothness
below :data:`GENERIC_SMOOTHNESS`, or (8-bit conventions) values outside
0-255 or all below :data:`GENERIC_8BIT_MAX`.

Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from galmerge.conventions import DISPLAY_RGB8, SDSS_COLOUR_JPEG
from galmerge.errors import GalmergeError

__all__ = ["GENERIC_PLATEAU", "GENERIC_SMOOTHNESS", "OodRanges", "fit_ood_ranges",
           "image_statistics", "ood_flags", "statistic_names"]

#: Generic check: more than this fraction of the pixels at the image maximum -> saturated.
GENERIC_PLATEAU = 0.05
#: Generic check: adjacent-pixel correlation below this -> noise, not a sky image.
GENERIC_SMOOTHNESS = 0.2
#: Generic check (8-bit conventions): an image whose maximum is below this is on a 0-1 scale.
GENERIC_8BIT_MAX = 2.0
_EIGHT_BIT = (SDSS_COLOUR_JPEG, DISPLAY_RGB8)
#: Images per block of :func:`image_statistics` (16 x 3 x 75 x 75 float32 = 1 MB).
_BLOCK = 16


def statistic_names(channels: int) -> list[str]:
    """Names of :func:`image_statistics` columns for ``channels`` bands."""
    return ["mean", "std", "plateau", "smoothness", *[f"colour_{k}" for k in range(channels)]]


def image_statistics(images: np.ndarray) -> np.ndarray:
    """(N, K) float64 statistics of (N, C, S, S) images (see the module doc); NaN where
    undefined (smoothness of a flat image).

    Computed :data:`_BLOCK` images at a time, so that the few passes over the pixels
    stay in the CPU cache, with float32 pairwise sums (relative error about 1e-7,
    against the 0.1-span margins of the ranges): 3-4x cheaper than whole-batch
    float64 temporaries (issue 13: 44 ms -> ~12 ms of one core per batch of 256).
    """
    x = np.ascontiguousarray(images, dtype=np.float32)
    n, c = x.shape[:2]
    out = np.empty((n, 4 + c), dtype=np.float64)
    for start in range(0, n, _BLOCK):
        out[start:start + _BLOCK] = _block_statistics(x[start:start + _BLOCK])
    return out


def _block_statistics(x: np.ndarray) -> np.ndarray:
    """:func:`image_statistics` of a few contiguous (n, C, H, W) float32 images."""
    n, c, h, w = x.shape
    m = c * h * w
    flat = x.reshape(n, m)
    band = x.reshape(n, c, h * w).sum(axis=2).astype(np.float64) / (h * w)
    mean = band.mean(axis=1)
    d = flat - mean.astype(np.float32)[:, None]
    tmp = np.empty_like(d)
    den = np.multiply(d, d, out=tmp).sum(axis=1).astype(np.float64)
    # Horizontal neighbours: all consecutive pairs of the flat image, less the pairs
    # that straddle the end of one row and the start of the next.
    num = np.multiply(d[:, 1:], d[:, :-1], out=tmp[:, :-1]).sum(axis=1).astype(np.float64)
    rows = d.reshape(n, c * h, w)
    num -= (rows[:, :-1, -1] * rows[:, 1:, 0]).sum(axis=1, dtype=np.float64)
    top = flat.max(axis=1)
    tol = 1e-6 * np.maximum(1.0, np.abs(top))
    plateau = np.count_nonzero(flat >= (top - tol)[:, None], axis=1) / m
    with np.errstate(invalid="ignore", divide="ignore"):
        smooth = np.where(den > 0, num / den, np.nan)
        colour = band / band.mean(axis=1, keepdims=True)
    return np.column_stack([mean, np.sqrt(den / m), plateau, smooth, colour])


@dataclass
class OodRanges:
    """Accepted [low, high] per statistic (from training images), stored in the model."""

    names: list[str]
    low: list[float]
    high: list[float]
    source: str = ""

    def __post_init__(self) -> None:
        if not (len(self.names) == len(self.low) == len(self.high)):
            raise GalmergeError("ood ranges: names, low and high differ in length")

    def to_dict(self) -> dict[str, Any]:
        """The ``galmerge.ood_ranges`` JSON object."""
        return {"source": self.source,
                "ranges": {k: [lo, hi] for k, lo, hi in zip(self.names, self.low, self.high,
                                                           strict=True)}}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "ood ranges") -> OodRanges:
        """From the ``galmerge.ood_ranges`` JSON object."""
        try:
            r = d["ranges"]
            names = list(r)
            return cls(names, [float(r[k][0]) for k in names], [float(r[k][1]) for k in names],
                       str(d.get("source", "")))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise GalmergeError(f"{where}: malformed ({type(exc).__name__}: {exc})",
                                hint='expected {"source": ..., "ranges": {"mean": [lo, hi], ...}}'
                                ) from None


def fit_ood_ranges(images: np.ndarray, *, quantile: float = 0.001, margin: float = 0.1,
                   source: str = "") -> OodRanges:
    """Ranges from training images (model convention): the ``quantile`` and
    ``1 - quantile`` of each statistic, widened by ``margin`` x their span.

    The lead tunes ``quantile``/``margin`` so that at most 2 % of real dev + pool
    images are flagged (issue 11).
    """
    stats = image_statistics(images)
    names = statistic_names(images.shape[1])
    lo = np.nanquantile(stats, quantile, axis=0)
    hi = np.nanquantile(stats, 1.0 - quantile, axis=0)
    pad = margin * (hi - lo)
    return OodRanges(names, [float(v) for v in lo - pad], [float(v) for v in hi + pad], source)


def _generic(stats: np.ndarray, images: np.ndarray, convention: str) -> list[list[str]]:
    n = stats.shape[0]
    reasons: list[list[str]] = [[] for _ in range(n)]
    mean, std, plateau, smooth = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]
    flat = ~(std > 1e-6 * np.maximum(1.0, np.abs(mean)))
    for i in np.flatnonzero(flat):
        reasons[i].append("flat image (no contrast)")
    for i in np.flatnonzero(~flat & (plateau > GENERIC_PLATEAU)):
        reasons[i].append(f"{plateau[i]:.0%} of pixels at the maximum (saturated)")
    for i in np.flatnonzero(~flat & (smooth < GENERIC_SMOOTHNESS)):
        reasons[i].append(f"adjacent-pixel correlation {smooth[i]:.2f} (noise, not sky)")
    if convention in _EIGHT_BIT:
        flat_px = images.reshape(n, -1)
        top, bottom = flat_px.max(axis=1), flat_px.min(axis=1)
        for i in np.flatnonzero(~flat & ((top > 255.5) | (bottom < -0.5))):
            reasons[i].append(f"values {bottom[i]:.3g}..{top[i]:.3g} outside 0-255")
        for i in np.flatnonzero(~flat & (top < GENERIC_8BIT_MAX)):
            reasons[i].append(f"maximum {top[i]:.3g}: a 0-1 image, the model expects 0-255")
    return reasons


def ood_flags(images: np.ndarray, convention: str, ranges: OodRanges | None = None
              ) -> tuple[np.ndarray, list[str]]:
    """Flag (N, C, S, S) model inputs unlike the training data.

    Returns:
        (bool array (N,), reasons: "" or "; "-joined reasons per image).
    """
    if len(images) == 0:
        return np.zeros(0, dtype=bool), []
    stats = image_statistics(images)
    reasons = _generic(stats, images, convention)
    if ranges is not None:
        names = statistic_names(images.shape[1])
        for k, name in enumerate(names):
            if name not in ranges.names:
                continue
            j = ranges.names.index(name)
            lo, hi = ranges.low[j], ranges.high[j]
            v = stats[:, k]
            for i in np.flatnonzero(np.isfinite(v) & ((v < lo) | (v > hi))):
                reasons[i].append(f"{name} {v[i]:.3g} outside the training range "
                                  f"[{lo:.3g}, {hi:.3g}]")
    text = ["; ".join(r) for r in reasons]
    return np.array([bool(t) for t in text], dtype=bool), text
