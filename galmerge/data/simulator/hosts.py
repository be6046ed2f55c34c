"""Real host galaxies for the SDSS-like simulator (``simulate --survey sdss --hosts DIR``).

The non-merger class of a survey holds what a simulator renders badly: big ellipticals with
extended envelopes, bright stars with halos beside galaxies, chance projections, rings, bars,
grand-design arms, dust lanes.  Lens finders solve the same problem by painting simulated
signal onto real survey cutouts (Petrillo et al. 2019, MNRAS 484, 3879; He et al. 2020,
MNRAS 497, 556).  Here the hosts are real unlabelled SDSS GZ1 cutouts (the pool galaxies
held in training, never the held-out part, see :mod:`galmerge.data.holdout`): every host
scene goes through one processing chain whatever its class — the JPEG crop mapped back to
flux, the simulated light of the *other* galaxy (merger partner with tidal debris, a chance
projection, or nothing) added, stretched again, JPEG-compressed and resized — so that the
pasting itself is no tell.

This module holds the bank of host crops and their flux scale; the compositing lives in
:mod:`galmerge.data.simulator.sdss`, next to the stretch it inverts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from galmerge.data.images import JPEG_EXTENSIONS, image_suffix, read_image
from galmerge.errors import GalmergeError

__all__ = ["HostBank", "aperture_flux", "load_hosts", "pick_hosts"]


@dataclass
class HostBank:
    """Central crops of real GZ1 JPEGs.

    Attributes:
        crops: uint8 (H, 3, c, c) R, G, B central crops (``c = crop_px``, 212 for GZ1).
        ids: the file stems (SDSS objIDs), in the order of ``crops``.
        digest: SHA-256 of the crops (recorded in provenance).
    """

    crops: np.ndarray
    ids: list[str]
    digest: str


def load_hosts(directory: str | Path, frame_px: int, crop_px: int) -> HostBank:
    """Read every ``frame_px``-square JPEG in ``directory`` (sorted by name) and keep its
    central ``crop_px`` square.

    Raises:
        GalmergeError: no directory, or no JPEG of the right size in it.
    """
    d = Path(directory)
    if not d.is_dir():
        raise GalmergeError(f"{d}: host directory not found",
                            hint="give a directory of real 423-px SDSS GZ1 JPEGs (--hosts)")
    files = sorted(p for p in d.iterdir() if p.is_file() and image_suffix(p) in JPEG_EXTENSIONS)
    lo = (frame_px - crop_px) // 2
    crops, ids = [], []
    for f in files:
        x = read_image(f).pixels
        if x.shape != (3, frame_px, frame_px):
            continue
        crops.append(np.asarray(x[:, lo:lo + crop_px, lo:lo + crop_px]).astype(np.uint8))
        ids.append(f.stem)
    if not crops:
        raise GalmergeError(f"{d}: no {frame_px}x{frame_px} JPEG among {len(files)} file(s)",
                            hint="hosts must be SDSS GZ1 colour cutouts")
    arr = np.stack(crops)
    return HostBank(arr, ids, hashlib.sha256(arr.tobytes()).hexdigest())


def pick_hosts(bank: HostBank, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``k`` random hosts, each in one of its eight flips/90° rotations.

    Returns:
        float32 (k, 3, c, c) R, G, B pixel values and the host indices (k,).
    """
    idx = rng.integers(0, len(bank.crops), k)
    rot = rng.integers(0, 4, k)
    flip = rng.random(k) < 0.5
    out = np.empty((k, *bank.crops.shape[1:]), dtype=np.float32)
    for i in range(k):
        x = np.rot90(bank.crops[idx[i]], int(rot[i]), axes=(1, 2))
        out[i] = x[:, :, ::-1] if flip[i] else x
    return out, idx


def aperture_flux(flux: np.ndarray, radius_px: float) -> np.ndarray:
    """Sky-subtracted flux of (k, C, H, W) images inside a centred circle: (k, C).

    The sky is the median of the outermost 8-pixel frame of each band.
    """
    h, w = flux.shape[-2:]
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
    inside = r <= radius_px
    border = np.ones((h, w), dtype=bool)
    border[8:-8, 8:-8] = False
    sky = np.median(flux[:, :, border], axis=-1)
    return (flux[:, :, inside] - sky[:, :, None]).sum(axis=-1)
