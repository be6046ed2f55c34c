"""Vectorised building blocks of the galaxy simulator: light profiles, tidal
debris, PSFs and FFT convolution.

Every function works on a *batch*: parameters are 1-d arrays of length ``k``
(one value per image) and images are float32 ``(k, H, W)``. Sérsic profiles
come from astropy's modelling (:class:`astropy.modeling.models.Sersic2D`,
whose ``evaluate`` broadcasts over arrays); faint structures (tidal tails,
shells, bridges, spiral arms) are point clouds splatted onto the pixel grid and
smoothed in Fourier space together with the PSF. Torch-free.
"""

from __future__ import annotations

import numpy as np

from galmerge.errors import GalmergeError

__all__ = [
    "CORE_RADIUS_PX",
    "frequencies",
    "gaussian_transfer",
    "grid",
    "irfft_cropped",
    "moffat_kernel",
    "noise_spectrum",
    "padded_shape",
    "rfft_padded",
    "sdss_psf_transfer",
    "sersic_images",
    "sersic_total",
    "sources_spectrum",
    "splat",
]

#: Radius (pixels) at which a Sérsic cusp is capped: stands in for integrating
#: the profile over the central pixel, so the peak does not depend on where
#: inside a pixel the centre falls.
CORE_RADIUS_PX = 0.35


def _special() -> tuple[object, object]:
    try:
        from scipy.special import gamma, gammaincinv
    except ImportError:  # pragma: no cover - scipy is in the `train` extra
        raise GalmergeError(
            "the simulator needs scipy (astropy's Sersic profiles use it)",
            hint="pip install 'galmerge[train]'",
        ) from None
    return gamma, gammaincinv


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y, x)`` of a ``size``×``size`` image, each (1, size, size)."""
    ax = np.arange(size, dtype=np.float32)
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    return yy[None], xx[None]


def sersic_total(r_eff: np.ndarray, n: np.ndarray, ellip: np.ndarray) -> np.ndarray:
    """Total flux of a Sérsic profile of unit amplitude at ``r_eff`` (Graham & Driver 2005, eq. 4).

    ``L = 2π n q r_eff² e^{b_n} b_n^{-2n} Γ(2n)`` with axis ratio ``q = 1 - ellip``.
    """
    gamma, gammaincinv = _special()
    n64 = np.asarray(n, dtype=np.float64)
    bn = gammaincinv(2.0 * n64, 0.5)  # type: ignore[operator]
    q = 1.0 - np.asarray(ellip, dtype=np.float64)
    r = np.asarray(r_eff, dtype=np.float64)
    return 2 * np.pi * n64 * q * r ** 2 * np.exp(bn) * bn ** (-2 * n64) * gamma(2 * n64)  # type: ignore[operator]


def sersic_images(
    size: int, x0: np.ndarray, y0: np.ndarray, flux: np.ndarray, r_eff: np.ndarray,
    n: np.ndarray, ellip: np.ndarray, theta: np.ndarray,
) -> np.ndarray:
    """Render one Sérsic galaxy per image: float32 (k, size, size), total flux ``flux``.

    Positions and ``r_eff`` in pixels; ``theta`` in radians; the flux is the
    analytic total (light falling outside the frame is lost, as in a real cutout).
    """
    from astropy.modeling.models import Sersic1D, Sersic2D

    f32 = np.float32
    col = [np.asarray(a, dtype=f32)[:, None, None] for a in (x0, y0, r_eff, n, ellip, theta)]
    x0c, y0c, rc, nc, ec, tc = col
    yy, xx = grid(size)
    img = Sersic2D.evaluate(xx, yy, f32(1.0), rc, nc, x0c, y0c, ec, tc)
    cap = Sersic1D.evaluate(f32(CORE_RADIUS_PX), f32(1.0), rc, nc)
    np.minimum(img, cap, out=img)
    scale = np.asarray(flux, dtype=np.float64) / sersic_total(r_eff, n, ellip)
    img *= scale.astype(f32)[:, None, None]
    return img.astype(f32, copy=False)


def splat(size: int, px: np.ndarray, py: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Deposit weighted points onto pixel grids with bilinear (cloud-in-cell) weights.

    Args:
        px, py, w: (k, P) point positions (pixels) and fluxes; points outside
            the frame are dropped.

    Returns:
        float32 (k, size, size).
    """
    k = px.shape[0]
    fx, fy = np.floor(px), np.floor(py)
    dx, dy = px - fx, py - fy
    ix, iy = fx.astype(np.int64), fy.astype(np.int64)
    base = (np.arange(k, dtype=np.int64) * size * size)[:, None]
    out = np.zeros(k * size * size, dtype=np.float64)
    for ox, oy, wt in ((0, 0, (1 - dx) * (1 - dy)), (1, 0, dx * (1 - dy)),
                       (0, 1, (1 - dx) * dy), (1, 1, dx * dy)):
        jx, jy = ix + ox, iy + oy
        ok = (jx >= 0) & (jx < size) & (jy >= 0) & (jy < size)
        idx = (base + jy * size + jx)[ok]
        out += np.bincount(idx, weights=(w * wt)[ok], minlength=k * size * size)
    return out.reshape(k, size, size).astype(np.float32)


def frequencies(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Squared-frequency helpers for ``rfft2`` of ``shape``: ``(fy, fx)`` in cycles/pixel."""
    fy = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    return fy, fx


def gaussian_transfer(shape: tuple[int, int], sigma: np.ndarray) -> np.ndarray:
    """Fourier transfer function of unit Gaussians of width ``sigma`` (k,) px: (k, H, W//2+1)."""
    fy, fx = frequencies(shape)
    s = np.asarray(sigma, dtype=np.float32)[:, None, None]
    return np.exp(-2.0 * np.pi ** 2 * s ** 2 * (fy ** 2 + fx ** 2)[None]).astype(np.float32)


def moffat_kernel(shape: tuple[int, int], fwhm: float, beta: float) -> np.ndarray:
    """A centred, unit-sum circular Moffat PSF on a ``shape`` grid, origin at pixel (0, 0)
    (wrapped), ready for ``rfft2``."""
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    yy = np.fft.fftfreq(shape[0]) * shape[0]
    xx = np.fft.fftfreq(shape[1]) * shape[1]
    r2 = yy[:, None] ** 2 + xx[None, :] ** 2
    k = (1.0 + r2 / alpha ** 2) ** (-beta)
    return (k / k.sum()).astype(np.float64)


def padded_shape(size: int, pad: int) -> tuple[int, int]:
    """FFT size for a ``size`` image with ``pad`` pixels of zero padding, rounded to a
    number with only small prime factors (fast FFTs)."""
    m = size + pad
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return (m, m)
        m += 1


def rfft_padded(images: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``rfft2`` of (..., H, W) images zero-padded to ``shape``."""
    return np.fft.rfft2(images, s=shape)


def irfft_cropped(spec: np.ndarray, shape: tuple[int, int], size: int) -> np.ndarray:
    """Inverse of :func:`rfft_padded`, cropped back to ``size``×``size`` float32."""
    out = np.fft.irfft2(spec, s=shape)
    return np.ascontiguousarray(out[..., :size, :size], dtype=np.float32)


# --- sources, PSFs and noise rendered directly in Fourier space ----------------------

POINT, EXPONENTIAL = 0, 1


def _freq_sq_elliptical(
    fy: np.ndarray, fx: np.ndarray, a: np.ndarray, q: np.ndarray, theta: np.ndarray,
) -> np.ndarray:
    """``(a f_major)² + (a q f_minor)²`` on the rfft grid for (k, M) ellipses: (k, M, H, W')."""
    c = np.cos(theta)[..., None, None].astype(np.float32)
    s = np.sin(theta)[..., None, None].astype(np.float32)
    a4 = a[..., None, None].astype(np.float32)
    b4 = (a * q)[..., None, None].astype(np.float32)
    f_maj = fx * c + fy * s
    f_min = -fx * s + fy * c
    return (a4 * f_maj) ** 2 + (b4 * f_min) ** 2


def sources_spectrum(
    shape: tuple[int, int], x: np.ndarray, y: np.ndarray, flux: np.ndarray, kind: np.ndarray,
    scale: np.ndarray, q: np.ndarray, theta: np.ndarray,
) -> np.ndarray:
    """Fourier transform (``rfft2`` convention) of compact sources, before the PSF.

    Args:
        x, y, kind, scale, q, theta: (k, M) per-source position (pixels), kind
            (:data:`POINT` or :data:`EXPONENTIAL`), exponential scale length
            (pixels), axis ratio and position angle (radians).
        flux: (k, M, C) flux per band (zero = absent).

    Returns:
        complex64 (k, C, H, W//2+1). An exponential disc's transform is
        ``(1 + (2π h f)²)^(-3/2)`` (Freeman 1970), a point source's is 1.
    """
    fy, fx = frequencies(shape)
    k, m_src = x.shape
    out = np.zeros((k, flux.shape[-1], shape[0], shape[1] // 2 + 1), dtype=np.complex64)
    for m in range(m_src):  # one source slot at a time keeps memory at one (k, H, W') grid
        f2 = _freq_sq_elliptical(fy, fx, scale[:, m], q[:, m], theta[:, m])
        env = np.where((kind[:, m] == EXPONENTIAL)[:, None, None],
                       (1.0 + (2 * np.pi) ** 2 * f2) ** -1.5, 1.0).astype(np.float32)
        ph_x = np.exp(-2j * np.pi * fx[0][None, :] * x[:, m, None]).astype(np.complex64)
        ph_y = np.exp(-2j * np.pi * fy[:, 0][None, :] * y[:, m, None]).astype(np.complex64)
        each = env * ph_y[:, :, None] * ph_x[:, None, :]  # (k, H, W')
        out += flux[:, m, :, None, None].astype(np.complex64) * each[:, None]
    return out


def sdss_psf_transfer(
    shape: tuple[int, int], fwhm: np.ndarray, *, second_weight: float = 0.1,
    wing_weight: float = 0.04, wing_scale: float = 1.0,
) -> np.ndarray:
    """Transfer function of an SDSS-like PSF for (k, C) FWHMs (pixels): (k, C, H, W//2+1).

    A double Gaussian (core σ and 2σ with ``second_weight`` of the light) plus an
    exponential wing of scale ``wing_scale`` × FWHM holding ``wing_weight`` —
    the shape the SDSS photometric pipeline fits (Lupton et al. 2001), without
    diffraction spikes (SDSS has none).
    """
    fy, fx = frequencies(shape)
    f2 = (fy ** 2 + fx ** 2)[None, None]
    sig = (np.asarray(fwhm, dtype=np.float32) / 2.3548)[..., None, None]
    core = np.exp(-2 * np.pi ** 2 * sig ** 2 * f2)
    second = np.exp(-2 * np.pi ** 2 * (2 * sig) ** 2 * f2)
    h = wing_scale * sig * 2.3548
    wing = (1.0 + (2 * np.pi) ** 2 * h ** 2 * f2) ** -1.5
    w0 = 1.0 - second_weight - wing_weight
    return (w0 * core + second_weight * second + wing_weight * wing).astype(np.float32)


def noise_spectrum(
    rng: np.random.Generator, shape: tuple[int, int], std: np.ndarray, grain: np.ndarray,
) -> np.ndarray:
    """Fourier transform of correlated Gaussian noise with per-pixel std ``std`` (k, C).

    White noise is smoothed by a Gaussian of ``grain`` (k,) pixels (the
    resampling of coarser native pixels) and rescaled so the real-space
    per-pixel standard deviation is ``std``. Generated directly in Fourier
    space (complex normal coefficients), which saves one FFT per band.
    """
    k, c = std.shape
    h, w = shape
    wr = w // 2 + 1
    fy, fx = frequencies(shape)
    g = np.asarray(grain, dtype=np.float32)[:, None, None]
    filt = np.exp(-2 * np.pi ** 2 * g ** 2 * (fy ** 2 + fx ** 2)[None])  # (k, H, W')
    # Variance of irfft2(Z * filt) for E|Z|² = H·W: columns 1..W/2-1 stand for two
    # conjugate coefficients; the DC and Nyquist columns keep only their real part.
    colw = np.full(wr, 2.0, dtype=np.float32)
    colw[0] = 0.5
    if w % 2 == 0:
        colw[-1] = 0.5
    var = (filt ** 2 * colw).sum(axis=(1, 2)) / (h * w)
    amp = (np.asarray(std, dtype=np.float32) / np.sqrt(var)[:, None])[..., None, None]
    z = rng.standard_normal((k, c, h, wr, 2), dtype=np.float32)
    zc = (z[..., 0] + 1j * z[..., 1]) * np.float32(np.sqrt(h * w / 2.0))
    return (zc * (amp * filt[:, None])).astype(np.complex64)
