"""Random draws shared by the simulator modes (all take an explicit Generator)."""

from __future__ import annotations

import numpy as np

__all__ = [
    "balanced_labels",
    "choice_index",
    "log_uniform",
    "power_law_mags",
]


def log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` values log-uniform in [lo, hi]."""
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


def balanced_labels(rng: np.random.Generator, n: int, fraction: float) -> np.ndarray:
    """``round(fraction × n)`` mergers (1) among ``n``, shuffled (int8)."""
    lab = np.zeros(n, dtype=np.int8)
    lab[: round(fraction * n)] = 1
    return rng.permutation(lab)


def power_law_mags(
    rng: np.random.Generator, lo: float, hi: float, slope: float, n: int,
) -> np.ndarray:
    """Magnitudes in [lo, hi] with number counts ``dN/dm ∝ 10^(slope m)`` (inverse CDF)."""
    a, b = 10 ** (slope * lo), 10 ** (slope * hi)
    return np.log10(a + rng.random(n) * (b - a)) / slope


def choice_index(rng: np.random.Generator, fractions: tuple[float, ...], n: int) -> np.ndarray:
    """``n`` category indices drawn with probabilities ``fractions`` (normalised)."""
    p = np.asarray(fractions, dtype=np.float64)
    return rng.choice(len(p), size=n, p=p / p.sum()).astype(np.int8)
