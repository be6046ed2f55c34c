"""Faint merger debris as point clouds: tidal tails, shells, bridges, lopsided halos.

Each generator returns ``(px, py, w)`` arrays of shape (k, P) (positions in
pixels, non-negative weights). They are splatted with
:func:`galmerge.data.simulator.profiles.splat` and smoothed together with the
PSF. Shapes follow the classic morphology of interacting galaxies (Toomre &
Toomre 1972): two curved tails thrown out in opposite directions, a bridge
between the pair, and for coalesced remnants concentric shells on alternating
sides (Quinn 1984) and an asymmetric outer envelope. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Points",
    "bridge",
    "diffraction_spikes",
    "disc_knots",
    "halo",
    "ring",
    "shells",
    "spiral_arms",
    "tail",
]


@dataclass
class Points:
    """A batch of weighted point clouds (k images × P points)."""

    px: np.ndarray
    py: np.ndarray
    w: np.ndarray

    @staticmethod
    def concat(parts: list[Points]) -> Points:
        """Join clouds along the point axis."""
        return Points(np.concatenate([p.px for p in parts], axis=1),
                      np.concatenate([p.py for p in parts], axis=1),
                      np.concatenate([p.w for p in parts], axis=1))

    def normalised(self) -> Points:
        """Weights rescaled to sum to 1 per image (images with no weight stay 0)."""
        tot = self.w.sum(axis=1, keepdims=True)
        return Points(self.px, self.py, np.divide(self.w, tot, out=np.zeros_like(self.w),
                                                  where=tot > 0))


def _col(a: np.ndarray | float, k: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(a, dtype=np.float64), (k,))[:, None]


def tail(
    rng: np.random.Generator, k: int, npts: int, cx: np.ndarray, cy: np.ndarray,
    r0: np.ndarray, length: np.ndarray, phi0: np.ndarray, curl: np.ndarray,
    width: np.ndarray, amp: np.ndarray,
) -> Points:
    """One curved tidal tail per image.

    Points run from radius ``r0`` to ``r0 + length`` while the position angle
    turns by ``curl`` radians (a spiral arc); brightness fades outwards and the
    tail widens (Gaussian cross-section ``width`` × (0.5 + t)).
    """
    t = rng.random((k, npts))
    r = _col(r0, k) + _col(length, k) * t
    phi = _col(phi0, k) + _col(curl, k) * t
    lat = rng.standard_normal((k, npts)) * _col(width, k) * (0.5 + t)
    px = _col(cx, k) + r * np.cos(phi) - lat * np.sin(phi)
    py = _col(cy, k) + r * np.sin(phi) + lat * np.cos(phi)
    w = np.exp(-1.5 * t) * _col(amp, k)
    return Points(px, py, w)


def shells(
    rng: np.random.Generator, k: int, npts: int, cx: np.ndarray, cy: np.ndarray,
    r1: np.ndarray, psi: np.ndarray, half_open: np.ndarray, amp: np.ndarray,
    n_shells: int = 3,
) -> Points:
    """Concentric shell arcs on alternating sides of a remnant.

    Shell ``j`` has radius ``r1 × 1.45**j``, opens ±``half_open`` rad around
    ``psi + j π`` and has a sharp outer edge (light lies just inside it).
    """
    j = rng.integers(0, n_shells, size=(k, npts))
    radius = _col(r1, k) * 1.45 ** j
    ang = _col(psi, k) + j * np.pi + (2 * rng.random((k, npts)) - 1) * _col(half_open, k)
    r = radius * (1.0 - np.abs(rng.standard_normal((k, npts))) * 0.07)
    px = _col(cx, k) + r * np.cos(ang)
    py = _col(cy, k) + r * np.sin(ang)
    w = _col(amp, k) / (1.0 + j)
    return Points(px, py, w)


def bridge(
    rng: np.random.Generator, k: int, npts: int, x1: np.ndarray, y1: np.ndarray,
    x2: np.ndarray, y2: np.ndarray, bend: np.ndarray, width: np.ndarray, amp: np.ndarray,
) -> Points:
    """A curved bridge of stars between two galaxies (``bend`` = sagitta / length)."""
    t = rng.random((k, npts))
    dx, dy = _col(x2, k) - _col(x1, k), _col(y2, k) - _col(y1, k)
    sag = _col(bend, k) * 4.0 * t * (1.0 - t)
    lat = rng.standard_normal((k, npts)) * _col(width, k)
    length = np.hypot(dx, dy) + 1e-9
    nx, ny = -dy / length, dx / length
    px = _col(x1, k) + dx * t + (sag * length + lat) * nx
    py = _col(y1, k) + dy * t + (sag * length + lat) * ny
    w = np.broadcast_to(_col(amp, k), (k, npts)).copy()
    return Points(px, py, w)


def halo(
    rng: np.random.Generator, k: int, npts: int, cx: np.ndarray, cy: np.ndarray,
    offset: np.ndarray, psi: np.ndarray, sigma: np.ndarray, ellip: np.ndarray,
    amp: np.ndarray,
) -> Points:
    """A lopsided diffuse envelope: an elongated Gaussian cloud displaced by ``offset``
    pixels towards ``psi``."""
    g = rng.standard_normal((k, npts, 2))
    a = _col(sigma, k)
    b = a * (1.0 - _col(ellip, k))
    ca, sa = np.cos(_col(psi, k)), np.sin(_col(psi, k))
    u, v = g[..., 0] * a, g[..., 1] * b
    px = _col(cx, k) + _col(offset, k) * ca + u * ca - v * sa
    py = _col(cy, k) + _col(offset, k) * sa + u * sa + v * ca
    w = np.broadcast_to(_col(amp, k), (k, npts)).copy()
    return Points(px, py, w)


def _in_disc(k: int, cx: np.ndarray, cy: np.ndarray, r: np.ndarray, ang: np.ndarray,
             ellip: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image positions of disc-plane points (radius ``r``, azimuth ``ang``): the disc
    inclined (minor axis ``1 - ellip``), rotated to ``theta`` and centred on (cx, cy)."""
    u, v = r * np.cos(ang), r * np.sin(ang) * (1.0 - _col(ellip, k))
    c, s = np.cos(_col(theta, k)), np.sin(_col(theta, k))
    return _col(cx, k) + u * c - v * s, _col(cy, k) + u * s + v * c


def spiral_arms(
    rng: np.random.Generator, k: int, npts: int, cx: np.ndarray, cy: np.ndarray,
    r_in: np.ndarray, r_out: np.ndarray, pitch: np.ndarray, phase: np.ndarray,
    ellip: np.ndarray, theta: np.ndarray, amp: np.ndarray, n_arms: int = 2,
) -> Points:
    """Clumpy logarithmic spiral arms in an inclined disc.

    Points follow ``r = r_in · exp(φ tan(pitch))`` out to ``r_out`` in the disc
    plane, ``n_arms`` arms evenly spaced from ``phase``, with a lateral scatter
    of 8 % of the radius; their weights are Gamma-distributed (bright
    star-forming knots). The disc is then inclined (minor axis ``1 - ellip``)
    and rotated to ``theta``.
    """
    t = rng.random((k, npts))
    arm = rng.integers(0, n_arms, size=(k, npts))
    tanp = np.tan(_col(pitch, k))
    phi_max = np.log(_col(r_out, k) / _col(r_in, k)) / tanp
    phi = t * phi_max
    r = _col(r_in, k) * np.exp(phi * tanp)
    ang = phi + _col(phase, k) + arm * (2 * np.pi / n_arms)
    r = r * (1.0 + 0.08 * rng.standard_normal((k, npts)))
    px, py = _in_disc(k, cx, cy, r, ang, ellip, theta)
    w = rng.gamma(0.6, 1.0, size=(k, npts)) * np.exp(-1.2 * t) * _col(amp, k)
    return Points(px, py, w)


def disc_knots(
    rng: np.random.Generator, k: int, npts: int, cx: np.ndarray, cy: np.ndarray,
    scale: np.ndarray, ellip: np.ndarray, theta: np.ndarray, amp: np.ndarray,
) -> Points:
    """Star-forming knots scattered over an inclined exponential disc of scale length
    ``scale`` (radii ~ Gamma(2) × scale, the radial light distribution of an exponential
    disc), with Gamma(0.6) weights so that some knots stand out: the mottled texture of
    real discs."""
    r = rng.gamma(2.0, 1.0, (k, npts)) * _col(scale, k)
    ang = rng.uniform(0, 2 * np.pi, (k, npts))
    px, py = _in_disc(k, cx, cy, r, ang, ellip, theta)
    w = rng.gamma(0.6, 1.0, (k, npts)) * _col(amp, k)
    return Points(px, py, w)


def ring(
    rng: np.random.Generator, k: int, npts: int, cx: np.ndarray, cy: np.ndarray,
    radius: np.ndarray, width: np.ndarray, ellip: np.ndarray, theta: np.ndarray,
    amp: np.ndarray,
) -> Points:
    """A clumpy ring in an inclined disc: radii ``radius`` ± ``width`` (Gaussian) in the
    disc plane, uniform azimuth, Gamma(1.5) weights; inclined (minor axis ``1 - ellip``)
    and rotated to ``theta`` like :func:`spiral_arms`."""
    r = _col(radius, k) + rng.standard_normal((k, npts)) * _col(width, k)
    ang = rng.uniform(0, 2 * np.pi, (k, npts))
    px, py = _in_disc(k, cx, cy, r, ang, ellip, theta)
    w = rng.gamma(1.5, 1.0, (k, npts)) * _col(amp, k)
    return Points(px, py, w)


def diffraction_spikes(
    rng: np.random.Generator, k: int, npts: int, cx: np.ndarray, cy: np.ndarray,
    length: np.ndarray, angle: np.ndarray, amp: np.ndarray,
) -> Points:
    """Four thin spikes (the secondary-mirror vanes) from a bright star, brightness
    falling as 1/r out to ``length`` pixels, oriented at ``angle`` + multiples of 90°."""
    t = rng.random((k, npts))
    r = 1.0 + t * (_col(length, k) - 1.0)
    ang = _col(angle, k) + rng.integers(0, 4, (k, npts)) * (np.pi / 2)
    w = _col(amp, k) / r
    return Points(_col(cx, k) + r * np.cos(ang), _col(cy, k) + r * np.sin(ang), w)
