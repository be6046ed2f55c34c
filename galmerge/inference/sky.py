"""No-sky check: does one side of an SDSS colour cutout's border hold no sky at all?

A merger model judges a galaxy against the sky around it. When the light fills the model
input up to its edge — the galaxy is far larger than its cutout (its catalogue radius is too
small, as for a large galaxy shredded by the photometric pipeline), or the field lies in a
bright star's scattered light — the model has never seen such an input, and on the
survey-like check of issue 10 such a cutout was the highest-ranked non-merger of every seed
of the sixth pass's recipe (``docs/sdss-model-selection.md``, sixth and seventh passes).

:func:`border_level` is, per (N, 3, S, S) ``sdss-colour-jpeg`` model input, the smallest
over the four sides of the median luminance (mean of R, G, B, 0-255) of a
:data:`BORDER`-px strip along that side. Sky in SDSS colour JPEGs is near 3 (the training
pool's median); :data:`NO_SKY_LEVEL` was set on the *training* part of the GZ1 pool, label
free: its values run up to 19.3 (the largest ellipticals' envelopes), then jump to 51.3 and
76.7, two fields without sky; the level is the top of that gap, so as little as possible is
set aside (a merger set aside is a merger lost). It flags 2 of those 794 galaxies, 0 of the
405 held-out ones and 2 of the 228 dev galaxies (both GZ1 non-mergers).
``classify`` writes the flag as ``no_sky`` and never calls such a row ``is_merger``; the
fix is a larger cutout (``--scale-col`` with a larger radius, or ``--scale``).
Torch-free, NumPy only.
"""

from __future__ import annotations

import numpy as np

from galmerge.conventions import SDSS_COLOUR_JPEG

__all__ = ["BORDER", "NO_SKY_LEVEL", "border_level", "no_sky_flags", "no_sky_reasons"]

#: Width in pixels of the border strip along each side of the model input.
BORDER = 3
#: Luminance (0-255) from which a side's median border pixel counts as "no sky".
NO_SKY_LEVEL = 50.0


def border_level(images: np.ndarray) -> np.ndarray:
    """(N,) the smallest over the four sides of the median luminance of the side's
    :data:`BORDER`-px strip, for (N, C, S, S) model inputs."""
    x = np.asarray(images)
    n = x.shape[0]
    sides = (x[:, :, :BORDER], x[:, :, -BORDER:], x[:, :, :, :BORDER], x[:, :, :, -BORDER:])
    lum = [s.astype(np.float32).mean(axis=1).reshape(n, -1) for s in sides]  # strips only
    return np.stack([np.median(v, axis=1) for v in lum], axis=1).min(axis=1)


def no_sky_reasons(images: np.ndarray) -> list[str]:
    """"" or why, per (N, 3, S, S) ``sdss-colour-jpeg`` model input (see the module doc)."""
    if len(images) == 0:
        return []
    level = border_level(images)
    return [f"no sky along the cutout's border (level {v:.0f} >= {NO_SKY_LEVEL:.0f}): the "
            "galaxy is larger than its cutout or lies in a bright halo; use a larger cutout "
            "(--scale, --scale-col)"
            if v >= NO_SKY_LEVEL else "" for v in level]


def no_sky_flags(images: np.ndarray, convention: str) -> tuple[np.ndarray, list[str]]:
    """(bool (N,), reasons) of :func:`no_sky_reasons` for ``sdss-colour-jpeg`` model inputs;
    nothing is flagged in any other convention (the level is set on SDSS's JPEG stretch)."""
    n = len(images)
    if convention != SDSS_COLOUR_JPEG or n == 0 or images.shape[1] != 3:
        return np.zeros(n, dtype=bool), [""] * n
    why = no_sky_reasons(images)
    return np.array([bool(w) for w in why], dtype=bool), why
