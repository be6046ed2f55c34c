"""Bright-star check: is a saturated star near the centre of an SDSS colour cutout?

A star bright enough to saturate the SDSS colour JPEG beside (or instead of) the target
galaxy looks to a merger model like a second bright core: on the survey-like check of
issue 10 such cutouts were the highest-ranked non-mergers of every model, at p ~ 1, and
simulated stars did not teach the models otherwise (``docs/sdss-model-selection.md``, E4).
:func:`bright_star_reasons` finds them in prepared model inputs (N, 3, S, S) of the
``sdss-colour-jpeg`` convention (R, G, B = i, r, g, 0-255) by one label-free signature, a
**saturated blue-white core**: at the brightest region within :data:`CENTRAL_RADIUS` x S
of the centre, the g-band (blue) channel is at least :data:`SATURATED` and :data:`BLUER`
above the i-band (red) one. The cores of galaxies are red (g - r > 0.3 for every galaxy
population, so blue < red at any exposure), and a galaxy core saturated in every channel
(255, 255, 255) is not bluer than red; stars on the stellar locus with g - r < ~1.2 are.

The thresholds were set by looking at the images of the training part of the GZ1 pool
(label-free; ``docs/sdss-model-selection.md``, issue 10 fourth pass): they flag 4 of its 794
galaxies (0.5 %), every flagged cutout holding a bright star. Missed by design: red stars
(g - r > 1.2, the core red even when saturated). A ray statistic for diffraction spikes was
tried as a second signature and caught no star the colour did not (not kept).
``classify`` writes the flag as ``bright_star`` and never calls such a row ``is_merger``.
Torch-free, NumPy only; about 30 µs per 75-px input.
"""

from __future__ import annotations

import numpy as np

from galmerge.conventions import SDSS_COLOUR_JPEG

__all__ = ["BLUER", "CENTRAL_RADIUS", "SATURATED", "bright_star_flags", "bright_star_reasons",
           "core_position"]

#: The star is looked for within this fraction of the image size of the centre.
CENTRAL_RADIUS = 0.35
#: 8-bit value from which the blue channel counts as saturated.
SATURATED = 245.0
#: How much the blue channel of a saturated star's core exceeds the red one, at least.
BLUER = 5.0
_PLATEAU = 4  # px: the core is the centroid of the near-peak pixels this close to the peak


def core_position(lum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) of each (N, H, W) image's brightest region within the central disc: the
    centroid of the pixels >= 95 % of the peak within 4 px of it (the middle of a
    saturated plateau)."""
    n, h, w = lum.shape
    yy, xx = np.mgrid[:h, :w]
    central = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 <= (CENTRAL_RADIUS * h) ** 2
    j = np.where(central.ravel(), lum.reshape(n, -1), -np.inf).argmax(axis=1)
    py, px = j // w, j % w
    dy, dx = (v.ravel() for v in np.mgrid[-_PLATEAU:_PLATEAU + 1, -_PLATEAU:_PLATEAU + 1])
    disc = dy ** 2 + dx ** 2 <= _PLATEAU ** 2
    ys = np.clip(py[:, None] + dy[disc], 0, h - 1)
    xs = np.clip(px[:, None] + dx[disc], 0, w - 1)
    v = lum[np.arange(n)[:, None], ys, xs]
    wgt = v * (v >= 0.95 * lum[np.arange(n), py, px][:, None])
    total = np.maximum(wgt.sum(axis=1), 1e-9)
    return (wgt * ys).sum(axis=1) / total, (wgt * xs).sum(axis=1) / total


def bright_star_reasons(images: np.ndarray) -> list[str]:
    """"" or why, per (N, 3, S, S) ``sdss-colour-jpeg`` model input (see the module doc)."""
    x = np.asarray(images, dtype=np.float32)
    n, _, h, w = x.shape
    if n == 0:
        return []
    cy, cx = core_position(x[:, 0] + x[:, 1] + x[:, 2])
    yi = np.clip(np.rint(cy).astype(np.intp), 0, h - 1)
    xi = np.clip(np.rint(cx).astype(np.intp), 0, w - 1)
    core = x[np.arange(n), :, yi, xi]  # (n, 3): R, G, B = i, r, g
    star = (core[:, 2] >= SATURATED) & (core[:, 2] >= core[:, 0] + BLUER)
    return ["a saturated blue-white core near the centre (a bright star)" if s else ""
            for s in star]


def bright_star_flags(images: np.ndarray, convention: str) -> tuple[np.ndarray, list[str]]:
    """(bool (N,), reasons) of :func:`bright_star_reasons` for ``sdss-colour-jpeg`` model
    inputs; nothing is flagged in any other convention (the signature is SDSS's)."""
    n = len(images)
    if convention != SDSS_COLOUR_JPEG or n == 0 or images.shape[1] != 3:
        return np.zeros(n, dtype=bool), [""] * n
    why = bright_star_reasons(images)
    return np.array([bool(w) for w in why], dtype=bool), why
