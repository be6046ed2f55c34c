"""Tiny synthetic source/target datasets for the training tests.

Not a galaxy simulator: a bright round blob (non-merger) or a blob with a
fainter companion (merger), three channels of different brightness; the
target domain adds sky noise and a brightness change. Written with the real
:func:`~galmerge.data.write_dataset`, read back with the real readers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from galmerge.conventions import FLUX_LINEAR, ModelConvention
from galmerge.data import write_dataset

CONVENTION = ModelConvention(pixel_convention=FLUX_LINEAR, bands=("g", "r", "i"))


def blobs(n: int, seed: int, *, noise: float, gain: float = 1.0, size: int = 75
          ) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 3, size, size) float32, labels (n,) int8), balanced-ish classes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    labels = (np.arange(n) % 2).astype(np.int8)
    rng.shuffle(labels)
    imgs = np.empty((n, 3, size, size), np.float32)
    c = size / 2
    for i in range(n):
        cx, cy = c + rng.normal(0, 1.5, 2)
        r = rng.uniform(3, 5)
        g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        if labels[i]:
            ang, d = rng.uniform(0, 2 * np.pi), rng.uniform(9, 15)
            g = g + 0.6 * np.exp(-((xx - cx - d * np.cos(ang)) ** 2
                                   + (yy - cy - d * np.sin(ang)) ** 2) / (2 * (0.7 * r) ** 2))
        for ch in range(3):
            imgs[i, ch] = gain * g * (1 + 0.4 * ch) + rng.normal(0, noise, (size, size))
    return imgs, labels


def write_pair(directory: Path, n: int = 60, *, target_labelled: bool = True, seed: int = 0,
               size: int = 75) -> tuple[Path, Path]:
    """Write ``source.h5`` (clean) and ``target.h5`` (noisy) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    conv = ModelConvention(pixel_convention=FLUX_LINEAR, bands=("g", "r", "i"), size=size)
    xs, ys = blobs(n, seed + 1, noise=0.02, size=size)
    xt, yt = blobs(n, seed + 2, noise=0.25, gain=1.5, size=size)
    if not target_labelled:
        yt = np.full(n, -1, dtype=np.int8)
    src = write_dataset(directory / "source.h5", xs, ys, conv)
    tgt = write_dataset(directory / "target.h5", xt, yt, conv)
    return src, tgt
