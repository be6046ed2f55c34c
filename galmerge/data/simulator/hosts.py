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

__all__ = ["HostBank", "aperture_flux", "axis_ratio", "axis_ratios", "host_weights",
           "load_hosts", "pick_hosts"]


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


def pick_hosts(bank: HostBank, k: int, rng: np.random.Generator,
               p: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``k`` random hosts, each in one of its eight flips/90° rotations.

    Args:
        p: (H,) draw probabilities (:func:`host_weights`); None = uniform (the random stream
            of the simulator before weights existed).

    Returns:
        float32 (k, 3, c, c) R, G, B pixel values and the host indices (k,).
    """
    n = len(bank.crops)
    idx = rng.integers(0, n, k) if p is None else rng.choice(n, k, p=p)
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


def _centre_component(mask: np.ndarray) -> np.ndarray:
    """The 4-connected part of the (H, W) boolean ``mask`` that holds the pixel of ``mask``
    nearest the centre (within 5 px); all False when there is none."""
    h, w = mask.shape
    cy, cx = h // 2, w // 2
    box = mask[cy - 5:cy + 6, cx - 5:cx + 6]
    comp = np.zeros_like(mask)
    if not box.any():
        return comp
    ys, xs = np.nonzero(box)
    j = int(np.argmin((ys - 5) ** 2 + (xs - 5) ** 2))
    comp[cy - 5 + ys[j], cx - 5 + xs[j]] = True
    count = 1
    while True:
        grown = comp.copy()
        grown[1:] |= comp[:-1]
        grown[:-1] |= comp[1:]
        grown[:, 1:] |= comp[:, :-1]
        grown[:, :-1] |= comp[:, 1:]
        grown &= mask
        now = int(grown.sum())
        if now == count:
            return grown
        comp, count = grown, now


def axis_ratio(crop: np.ndarray, nsigma: float = 3.0, min_pixels: int = 20) -> float:
    """Apparent axis ratio b/a of the central galaxy of one (3, c, c) R, G, B crop.

    Label-free: the pixels of the G (r-band) channel ``nsigma`` noise levels above the sky
    (median and MAD of the outermost 8-pixel frame) that connect to the centre make the
    galaxy's isophote; ``b/a = sqrt(λ_min / λ_max)`` of its flux-weighted second moments
    (a neighbour outside that isophote does not count).  1.0 when fewer than ``min_pixels``
    pixels are above the sky at the centre.
    """
    g = np.asarray(crop[1], dtype=np.float64)
    border = np.ones(g.shape, dtype=bool)
    border[8:-8, 8:-8] = False
    sky = float(np.median(g[border]))
    noise = 1.4826 * float(np.median(np.abs(g[border] - sky))) + 1.0  # +1 DN: JPEG steps
    comp = _centre_component(g > sky + nsigma * noise)
    if comp.sum() < min_pixels:
        return 1.0
    yy, xx = np.nonzero(comp)
    wgt = g[comp] - sky
    my, mx = np.average(yy, weights=wgt), np.average(xx, weights=wgt)
    cov = np.cov(np.stack([yy - my, xx - mx]), aweights=wgt, bias=True)
    lo, hi = np.linalg.eigvalsh(cov)
    return float(np.sqrt(max(lo, 0.0) / hi)) if hi > 0 else 1.0


def axis_ratios(bank: HostBank) -> np.ndarray:
    """(H,) :func:`axis_ratio` of every host in ``bank``."""
    return np.array([axis_ratio(c) for c in bank.crops])


def host_weights(q: np.ndarray, inclined_weight: float, max_q: float) -> np.ndarray:
    """(H,) draw probabilities that make the hosts with axis ratio ``q`` below ``max_q``
    (inclined and edge-on discs) ``inclined_weight`` times as likely as the others.

    Raises:
        GalmergeError: ``inclined_weight`` not positive.
    """
    if not inclined_weight > 0:
        raise GalmergeError(f"inclined_host_weight must be positive, got {inclined_weight}")
    w = np.where(np.asarray(q) < max_q, float(inclined_weight), 1.0)
    return w / w.sum()
