"""Feeding datasets to the trainer: normalisation, in-memory caching, sampling, augmentation.

Torch-free: everything here returns float32 numpy arrays.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from galmerge.conventions import Normalisation
from galmerge.data.dataset import Dataset
from galmerge.errors import GalmergeError

__all__ = [
    "ClassFractionSampler",
    "DomainSplit",
    "InfiniteSampler",
    "augment_batch",
    "compute_normalisation",
]

_STATS_CHUNK = 256


def compute_normalisation(ds: Dataset, indices: np.ndarray, chunk: int = _STATS_CHUNK
                          ) -> Normalisation:
    """Per-channel mean and std over ``indices`` (the training split), streamed in float64."""
    if len(indices) == 0:
        raise GalmergeError(f"{ds.path}: no images to compute normalisation statistics from")
    c = len(ds.convention.bands)
    total = np.zeros(c)
    total_sq = np.zeros(c)
    count = 0
    for start in range(0, len(indices), chunk):
        batch = ds.read(np.sort(indices[start:start + chunk])).astype(np.float64)
        total += batch.sum(axis=(0, 2, 3))
        total_sq += (batch ** 2).sum(axis=(0, 2, 3))
        count += batch.shape[0] * batch.shape[2] * batch.shape[3]
    mean = total / count
    var = np.maximum(total_sq / count - mean ** 2, 0.0)
    std = np.sqrt(var)
    if np.any(std <= 1e-12):
        bad = int(np.flatnonzero(std <= 1e-12)[0])
        raise GalmergeError(f"{ds.path}: channel {bad} is constant in the training split "
                            "(std 0); cannot normalise")
    return Normalisation(tuple(float(v) for v in mean), tuple(float(v) for v in std))


class DomainSplit:
    """Normalised images of one split of one domain, from RAM or read per batch.

    The split is loaded into memory (float32, normalised) when it is smaller
    than ``max_in_memory_mb``; otherwise every request reads its rows from the
    dataset file (h5py/mmap random access) and normalises them on the fly.
    """

    def __init__(self, ds: Dataset, indices: np.ndarray, norm: Normalisation, *,
                 max_in_memory_mb: float = 2048.0) -> None:
        self.ds = ds
        self.indices = np.asarray(indices, dtype=np.int64)
        self.norm = norm
        self.labels = ds.labels[self.indices].astype(np.int64)
        c, s = len(ds.convention.bands), ds.convention.size
        nbytes = len(self.indices) * c * s * s * 4
        self._cache: np.ndarray | None = None
        if nbytes <= max_in_memory_mb * 2**20:
            out = np.empty((len(self.indices), c, s, s), dtype=np.float32)
            order = np.argsort(self.indices, kind="stable")
            for start in range(0, len(order), _STATS_CHUNK):
                pos = order[start:start + _STATS_CHUNK]
                out[pos] = norm.apply(ds.read(self.indices[pos]))
            self._cache = out

    @property
    def in_memory(self) -> bool:
        """True when the split was loaded into RAM."""
        return self._cache is not None

    def __len__(self) -> int:
        return len(self.indices)

    def images(self, pos: np.ndarray) -> np.ndarray:
        """Normalised images at positions ``pos`` (0..len-1) of this split."""
        if self._cache is not None:
            return self._cache[pos]
        return self.norm.apply(self.ds.read(self.indices[pos]))

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions, images) in order, for evaluation."""
        for start in range(0, len(self), batch_size):
            pos = np.arange(start, min(start + batch_size, len(self)))
            yield pos, self.images(pos)


class InfiniteSampler:
    """Endless full-size batches of positions 0..n-1, reshuffled every pass.

    Lets the two domains be drawn together when their sizes differ (the
    smaller one simply starts its next shuffled pass sooner).
    """

    def __init__(self, n: int, batch_size: int, rng: np.random.Generator) -> None:
        if n <= 0:
            raise ValueError("cannot sample from an empty split")
        self.n, self.batch_size, self.rng = n, batch_size, rng
        self._perm = rng.permutation(n)
        self._at = 0

    def next(self) -> np.ndarray:
        """The next batch of positions."""
        out: list[np.ndarray] = []
        need = self.batch_size
        while need:
            if self._at >= self.n:
                self._perm = self.rng.permutation(self.n)
                self._at = 0
            take = self._perm[self._at:self._at + need]
            self._at += len(take)
            need -= len(take)
            out.append(take)
        return np.concatenate(out)


class ClassFractionSampler:
    """Endless batches with a fixed fraction of class 1 (mergers), each class reshuffled per pass.

    Used for the labelled source when the target's class balance differs from the
    source's: aligning feature distributions (MMD, DANN) of a 50/50 source with a
    mostly-non-merger survey would otherwise pull source mergers onto target
    non-mergers (class-prior shift). Each batch holds ``round(fraction * batch_size)``
    mergers (at least one of each class).
    """

    def __init__(self, labels: np.ndarray, batch_size: int, fraction: float,
                 rng: np.random.Generator) -> None:
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"class fraction must be in (0, 1), got {fraction}")
        pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
        if not pos.size or not neg.size:
            raise GalmergeError("--source-merger-fraction needs labelled source images of both "
                                "classes", hint="check the source labels")
        n_pos = min(batch_size - 1, max(1, round(fraction * batch_size)))
        self._pos = (pos, InfiniteSampler(pos.size, n_pos, rng))
        self._neg = (neg, InfiniteSampler(neg.size, batch_size - n_pos, rng))
        self.rng = rng

    def next(self) -> np.ndarray:
        """The next batch of positions (mergers and non-mergers shuffled together)."""
        out = np.concatenate([idx[smp.next()] for idx, smp in (self._pos, self._neg)])
        return self.rng.permutation(out)


def augment_batch(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random dihedral transform of each image: a 90-degree rotation k=0..3 and an optional flip.

    Galaxy images have no preferred orientation; these 8 transforms are exact
    (no interpolation).
    """
    k = rng.integers(0, 4, len(x))
    flip = rng.integers(0, 2, len(x))
    out = np.empty_like(x)
    for kk in range(4):
        for ff in range(2):
            sel = np.flatnonzero((k == kk) & (flip == ff))
            if sel.size == 0:
                continue
            y = np.rot90(x[sel], kk, axes=(2, 3))
            if ff:
                y = y[:, :, :, ::-1]
            out[sel] = y
    return out
