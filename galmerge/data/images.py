"""Reading cutout image files and bringing them to a model's size.

Torch-free: used by the training datasets and by the inference pipeline.

:func:`read_image` decodes JPEG/PNG (8-bit RGB), FITS (a multi-band cube or one
HDU per band, band names from the headers) and ``.npy`` arrays into a
:class:`RawImage`: pixels (C, H, W) plus what they are. 8-bit colour images stay
uint8 (a channel-first view of the decoded buffer, no copy); everything else is
float32. Then :func:`prepare` crops the centre *in the decoded dtype* and
resizes with exact area averaging (two small matrix products), so only the
pixels that reach the model are ever converted to float. Training datasets, the
simulator and the inference pipeline all go through :func:`prepare`, so a model
sees the same pixels in all three.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from galmerge.conventions import (
    DISPLAY_RGB8,
    FLUX_LINEAR,
    FLUX_NANOMAGGIES,
    SDSS_COLOUR_JPEG,
    SDSS_RGB_BANDS,
)
from galmerge.data.limits import (
    ImageLimits,
    ImageTooLarge,
    check_declared,
    declared_jpeg_png_size,
    open_regular,
)
from galmerge.errors import GalmergeError

__all__ = [
    "FITS_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "JPEG_EXTENSIONS",
    "NPY_EXTENSIONS",
    "RawImage",
    "blank_fraction",
    "box_weights",
    "center_crop",
    "decode_fits_bytes",
    "decode_rgb8_bytes",
    "image_suffix",
    "prepare",
    "read_image",
    "resize_area",
    "stable_message",
]

JPEG_EXTENSIONS = (".jpg", ".jpeg", ".png")
FITS_EXTENSIONS = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz")
NPY_EXTENSIONS = (".npy",)
IMAGE_EXTENSIONS = JPEG_EXTENSIONS + FITS_EXTENSIONS + NPY_EXTENSIONS


@dataclass
class RawImage:
    """Decoded pixels and their meaning.

    Attributes:
        pixels: (C, H, W): uint8 for 8-bit colour images (JPEG/PNG, as decoded;
            may be a strided view), float32 otherwise. Values are the same either
            way; convert with ``astype(np.float32)`` where float arithmetic is meant.
        kind: pixel convention of the file (see :mod:`galmerge.conventions`).
        bands: band order of the channels (empty tuple when unknown).
        source: where the pixels came from (for messages).
    """

    pixels: np.ndarray
    kind: str
    bands: tuple[str, ...]
    source: str = ""


def image_suffix(path: str | Path) -> str:
    """Lower-case suffix, keeping double suffixes such as ``.fits.gz``."""
    name = Path(path).name.lower()
    for ext in sorted(IMAGE_EXTENSIONS, key=len, reverse=True):
        if name.endswith(ext):
            return ext
    return Path(name).suffix


def read_image(path: str | Path, *, jpeg_kind: str = SDSS_COLOUR_JPEG,
               limits: ImageLimits | None = None) -> RawImage:
    """Decode one cutout file.

    Only regular files are opened (:func:`~galmerge.data.limits.open_regular`),
    and the size each format declares in its header is checked against
    ``limits`` before any pixels are allocated.

    Args:
        path: a JPEG/PNG, FITS or ``.npy`` file.
        jpeg_kind: convention assumed for 8-bit colour images; SDSS colour
            JPEGs (i, r, g) by default, :data:`DISPLAY_RGB8` for unknown origin.
        limits: the largest image accepted (default :class:`ImageLimits`).

    Raises:
        FileMissing: no such file.
        ImageTooLarge: the file or its declared image exceeds ``limits``.
        GalmergeError: unreadable, not a regular file, or malformed (message names it).
    """
    p = Path(path)
    lim = limits or ImageLimits()
    ext = image_suffix(p)
    if ext not in IMAGE_EXTENSIONS:
        raise GalmergeError(
            f"{p}: unsupported image type {ext!r}",
            hint=f"use one of {', '.join(IMAGE_EXTENSIONS)}",
        )
    with open_regular(p, lim) as fh:
        if ext in JPEG_EXTENSIONS:
            return decode_rgb8_bytes(fh.read(lim.max_bytes + 1), source=str(p), kind=jpeg_kind,
                                     limits=lim)
        if ext in FITS_EXTENSIONS:
            return _decode_fits(lambda: fh, str(p), lim)
        return _read_npy(fh, str(p), lim)


def decode_rgb8_bytes(data: bytes, *, source: str, kind: str = SDSS_COLOUR_JPEG,
                      transparent_is_nodata: bool = False,
                      limits: ImageLimits | None = None) -> RawImage:
    """Decode JPEG/PNG bytes (e.g. from a cutout service) to a RawImage.

    With ``transparent_is_nodata`` fully transparent pixels (HiPS PNGs mark "no
    data" that way) become zero in every band. The size in the header is
    checked against ``limits`` (default :class:`ImageLimits`) before decoding.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    lim = limits or ImageLimits()
    if len(data) > lim.max_bytes:
        raise ImageTooLarge(f"{source}: {len(data):,} bytes, more than the limit of "
                            f"{lim.max_bytes:,}")
    declared = declared_jpeg_png_size(data)
    if declared is not None:  # before Pillow: it allocates (or warns, or refuses) on open
        check_declared((declared[1], declared[0]), lim, source, itemsize=1)
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            check_declared((len(im.getbands()), height, width), lim, source, itemsize=1)
            im.load()
            if transparent_is_nodata:
                rgba = np.asarray(im.convert("RGBA"))
                rgb = np.where(rgba[..., 3:] > 0, rgba[..., :3], np.uint8(0))
            else:
                rgb = rgb_view(im if im.mode == "RGB" else im.convert("RGB"))
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{source}: declares more pixels than the limit of "
                            f"{lim.describe()}") from None
    except UnidentifiedImageError:
        raise GalmergeError(f"{source}: not a JPEG or PNG image") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise GalmergeError(f"{source}: not a readable JPEG/PNG image "
                            f"({stable_message(exc)})") from None
    bands = SDSS_RGB_BANDS if kind == SDSS_COLOUR_JPEG else ()
    # uint8, channel-first view of the (H, W, 3) buffer: crop before any conversion.
    return RawImage(np.moveaxis(rgb, -1, 0), kind, bands, source)


def rgb_view(im: Any) -> np.ndarray:
    """(H, W, 3) uint8 pixels of a loaded PIL ``RGB`` image, without copying them.

    Pillow keeps RGB as 4 bytes per pixel (RGBX); ``np.asarray(im)`` packs them
    through ``tobytes`` (about 0.13 ms of a 0.74-ms 423-px GZ1 decode). Pillow >= 11.2
    exports its own buffer through the Arrow C data interface, so this is a strided
    view of it (the view keeps the buffer alive). Older Pillow, or an image Pillow
    holds in several blocks, falls back to ``np.asarray``.
    """
    try:
        arr = pa.array(im)
    except (TypeError, ValueError, pa.ArrowException):
        return np.asarray(im)
    width, height = im.size
    if (not pa.types.is_fixed_size_list(arr.type) or arr.type.list_size != 4
            or len(arr) != width * height or arr.offset != 0):
        return np.asarray(im)
    flat = arr.values.to_numpy(zero_copy_only=True)
    return flat.reshape(height, width, 4)[..., :3]


def stable_message(exc: BaseException, limit: int = 160) -> str:
    """An exception's message without object addresses (``at 0x7f...``), on one line."""
    import re

    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "<object>", str(exc))
    text = re.sub(r"\b0x[0-9a-fA-F]{6,}", "0x...", text)
    return " ".join(text.split())[:limit]


def _band_from_header(header: object) -> str | None:
    for key in ("FILTER", "BAND", "FILTNAME"):
        val = header.get(key) if hasattr(header, "get") else None  # type: ignore[union-attr]
        if isinstance(val, str) and val.strip():
            return val.strip()
    return None


def decode_fits_bytes(data: bytes, *, source: str,
                      limits: ImageLimits | None = None) -> RawImage:
    """Decode FITS bytes (e.g. a Legacy Surveys ``fits-cutout`` body) to a RawImage.

    Same rules as :func:`read_image` for FITS files; ``source`` names the input
    in error messages.
    """
    import io

    return _decode_fits(lambda: io.BytesIO(data), source, limits or ImageLimits())


def _fits_image_hdus(hdul: Any, p: str, limits: ImageLimits) -> list[Any]:
    """The HDUs holding 2-d or 3-d images, their declared sizes checked before any read."""
    out = []
    for h in hdul:
        if not getattr(h, "is_image", False):
            continue
        hdr = h.header
        naxis = int(hdr.get("NAXIS", 0) or 0)
        if naxis < 2:
            continue
        shape = tuple(int(hdr.get(f"NAXIS{i}", 0) or 0) for i in range(naxis, 0, -1))
        itemsize = abs(int(hdr.get("BITPIX", 8) or 8)) // 8
        check_declared(shape, limits, p, itemsize=max(itemsize, 4))
        out.append(h)
    return out


def _decode_fits(opener: Callable[[], Any], p: str, limits: ImageLimits) -> RawImage:
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(opener(), memmap=False) as hdul:
                hdul.verify("silentfix")
                image_hdus = [h for h in _fits_image_hdus(hdul, p, limits)
                              if h.data is not None and np.ndim(h.data) >= 2]
                if not image_hdus:
                    raise GalmergeError(f"{p}: FITS file holds no image data")
                first = image_hdus[0]
                if first.data.ndim == 3:
                    data = np.asarray(first.data, dtype=np.float32)
                    h = first.header
                    bands = _cube_bands(h, data.shape[0])
                else:
                    planes = [h for h in image_hdus if h.data.ndim == 2]
                    data = np.stack([np.asarray(h.data, dtype=np.float32) for h in planes])
                    names = [_band_from_header(h.header) for h in planes]
                    bands = tuple(n for n in names if n) if all(names) else ()
                    h = first.header
                survey = str(h.get("SURVEY", "")).strip().upper()
                bunit = str(h.get("BUNIT", "")).strip().lower()
    except GalmergeError:
        raise
    except (OSError, ValueError, TypeError, IndexError, EOFError, KeyError) as exc:
        raise GalmergeError(
            f"{p}: not a readable FITS file ({type(exc).__name__}: {stable_message(exc)})",
            hint="the file may be truncated; download it again",
        ) from None
    if data.ndim != 3:
        raise GalmergeError(f"{p}: expected a (bands, H, W) image, got shape {data.shape}")
    kind = FLUX_NANOMAGGIES if ("nanomaggie" in bunit or survey in {"DECALS", "LEGACY",
                                "LEGACYSURVEY", "DES", "BASS", "MZLS"}) else FLUX_LINEAR
    return RawImage(np.ascontiguousarray(data), kind, bands, p)


def _cube_bands(header: object, n: int) -> tuple[str, ...]:
    get = header.get  # type: ignore[attr-defined]
    names = [get(f"BAND{i}") for i in range(n)]
    if all(isinstance(b, str) and b.strip() for b in names):
        return tuple(b.strip() for b in names)
    bands = get("BANDS")
    if isinstance(bands, str) and len(bands.strip()) == n:
        return tuple(bands.strip())
    return ()


def _read_npy(fh: Any, p: str, limits: ImageLimits) -> RawImage:
    """A ``.npy`` array from an open file: the header is checked before the data are read."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else \
            fmt.read_array_header_2_0
        shape, _, dtype = read_header(fh)
        if dtype.hasobject:
            raise GalmergeError(f"{p}: array holds Python objects, not numbers")
        check_declared(tuple(shape), limits, p, itemsize=dtype.itemsize)
        need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        have = os.fstat(fh.fileno()).st_size - fh.tell()
        if have < need:
            raise GalmergeError(f"{p}: truncated .npy array ({have:,} of {need:,} bytes)")
        fh.seek(0)
        arr = np.load(fh, allow_pickle=False)
    except GalmergeError:
        raise
    except (OSError, ValueError, EOFError, TypeError, SyntaxError) as exc:
        raise GalmergeError(f"{p}: not a readable .npy array ({stable_message(exc)})") from None
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise GalmergeError(f"{p}: expected a (C, H, W) or (H, W, C) array, got {arr.shape}")
    if arr.shape[0] > 4 and arr.shape[-1] <= 4:
        arr = np.moveaxis(arr, -1, 0)
    if not np.issubdtype(arr.dtype, np.number):
        raise GalmergeError(f"{p}: array dtype {arr.dtype} is not numeric")
    kind = DISPLAY_RGB8 if arr.dtype == np.uint8 else FLUX_LINEAR
    return RawImage(np.ascontiguousarray(arr.astype(np.float32)), kind, (), str(p))


def center_crop(pixels: np.ndarray, fraction: float) -> np.ndarray:
    """Central ``fraction`` of the last two axes of (C, H, W) or (N, C, H, W) pixels (a view)."""
    if fraction >= 1.0:
        return pixels
    h, w = pixels.shape[-2:]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return pixels[..., y0:y0 + ch, x0:x0 + cw]


def resize_area(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize (C, H, W) or (N, C, H, W) pixels (any real dtype) to float32 ``size`` x ``size``
    by area averaging.

    Each output pixel is the mean of the input pixels whose centres fall inside
    it (flux-conserving up to a constant), which is what an astronomer expects
    from shrinking a cutout; the numbers are those of PIL's ``BOX`` filter on
    float planes (to float32 rounding). Computed as ``Wy @ X @ Wx.T`` with the
    small averaging matrices of :func:`box_weights`, each product taken only over
    the band of inputs a block of outputs averages (:func:`box_bands`): a 212 -> 75 px
    colour cutout is about 6 MFLOP instead of 27 for the dense products. The
    products run on one BLAS thread (:data:`_ONE_BLAS_THREAD`): the callers already
    run one resize per core.
    """
    h, w = pixels.shape[-2:]
    x = np.ascontiguousarray(pixels, dtype=np.float32)
    if h == size and w == size:
        return x
    lead = x.shape[:-2]
    cols = np.empty((*lead, h, size), dtype=np.float32)
    out = np.empty((*lead, size, size), dtype=np.float32)
    rows_in = x.reshape(-1, w)  # every row of every plane: one product per band block
    with _ONE_BLAS_THREAD:
        flat_cols = cols.reshape(-1, size)
        for o0, o1, i0, i1, wb in box_bands(w, size):
            flat_cols[:, o0:o1] = rows_in[:, i0:i1] @ wb.T
        for o0, o1, i0, i1, wb in box_bands(h, size):
            out[..., o0:o1, :] = wb @ cols[..., i0:i1, :]
    return out


#: Outputs per block of :func:`box_bands`.
_BAND_OUTPUTS = 16


@lru_cache(maxsize=64)
def box_bands(n_in: int, n_out: int) -> tuple[tuple[int, int, int, int, np.ndarray], ...]:
    """:func:`box_weights` cut into blocks of :data:`_BAND_OUTPUTS` outputs:
    ``(out_lo, out_hi, in_lo, in_hi, weights[out_lo:out_hi, in_lo:in_hi])``, where the
    input range holds every non-zero weight of those outputs (the matrix is banded)."""
    wt = box_weights(n_in, n_out)
    out = []
    for o0 in range(0, n_out, _BAND_OUTPUTS):
        o1 = min(n_out, o0 + _BAND_OUTPUTS)
        used = np.flatnonzero(wt[o0:o1].any(axis=0))
        i0, i1 = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 1)
        block = np.ascontiguousarray(wt[o0:o1, i0:i1])
        block.flags.writeable = False
        out.append((o0, o1, i0, i1, block))
    return tuple(out)


class _OneBlasThread:
    """Process-wide: numpy's BLAS runs on one thread while any resize is running.

    Products this small gain nothing from BLAS threads, and beside the classify
    pipeline's decoder threads and ONNX Runtime's threads, OpenBLAS's threads
    spinning for a core made decode + resize 10-20x slower on a busy 2-core
    machine (measured: 0.6 s instead of 0.03-0.07 s per cutout). The first resize to
    start sets one thread (threadpoolctl), the last to finish restores the
    previous setting, so other numpy work outside resizes keeps its threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._libs: list[Any] | None = None
        self._saved: list[int] = []

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0:
                if self._libs is None:
                    from threadpoolctl import ThreadpoolController

                    self._libs = list(ThreadpoolController().select(
                        user_api="blas").lib_controllers)
                self._saved = [lib.get_num_threads() for lib in self._libs]
                for lib in self._libs:
                    lib.set_num_threads(1)
            self._users += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._libs:
                for lib, n in zip(self._libs, self._saved, strict=True):
                    lib.set_num_threads(n)


_ONE_BLAS_THREAD = _OneBlasThread()


def one_blas_thread() -> _OneBlasThread:
    """The process's one-BLAS-thread scope, for a caller that resizes many cutouts.

    Held around a whole chunk (the classify pipeline does), it sets the BLAS
    thread count once; the resizes inside only count themselves in and out
    instead of switching threadpoolctl twice per cutout (issue 13: that per-image
    switching serialised the decoder threads). Nested uses are free.
    """
    return _ONE_BLAS_THREAD


@lru_cache(maxsize=64)
def box_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 matrix of PIL's ``BOX`` resampling along one axis (read-only).

    Output pixel ``j`` covers input coordinates ``[j, j + 1) * n_in / n_out``
    (at least one input pixel wide when enlarging); it averages, with equal
    weights, the input pixels ``i`` whose centre ``i + 0.5`` lies in that
    interval (half-open the way PIL's filter is). The arithmetic follows
    Pillow's ``precompute_coeffs`` so that the selected pixels are the same.
    """
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    w = np.zeros((n_out, n_in), dtype=np.float64)
    for j in range(n_out):
        centre = (j + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        for i in range(lo, hi):
            u = (i - centre + 0.5) * (1.0 / filterscale)
            if -0.5 < u <= 0.5:
                w[j, i] = 1.0
        total = w[j].sum()
        if total > 0:
            w[j] /= total
    out = w.astype(np.float32)
    out.flags.writeable = False
    return out


def prepare(pixels: np.ndarray, size: int, crop_fraction: float = 1.0) -> np.ndarray:
    """Centre-crop then area-resize a (C, H, W) image to (C, size, size)."""
    return resize_area(center_crop(pixels, crop_fraction), size)


def blank_fraction(pixels: np.ndarray, *, any_band: bool = False) -> float:
    """Fraction of pixels with no data: exactly zero or non-finite.

    With ``any_band=False`` a pixel counts when it is dead in every channel (the
    right test for 8-bit colour images, whose dark sky is often (0, 0, 0) in a
    few pixels); with ``any_band=True`` when dead in any channel (the right test
    for calibrated flux, where an exact zero means "no data", e.g. a DR3 cutout
    with g and r missing over most of its area).
    """
    integer = np.issubdtype(pixels.dtype, np.integer)
    combine = np.logical_or if any_band else np.logical_and
    per_pixel = None
    for band in pixels:  # plane by plane: a decoded JPEG is interleaved, axis 0 has stride 1
        dead = band == 0
        if not integer:
            dead |= ~np.isfinite(band)
        per_pixel = dead if per_pixel is None else combine(per_pixel, dead, out=per_pixel)
    if per_pixel is None or per_pixel.size == 0:
        return float("nan")  # no pixels: as the mean of nothing was before
    return float(np.count_nonzero(per_pixel) / per_pixel.size)
