"""Reading cutout image files and bringing them to a model's size.

Torch-free: used by the training datasets and by the inference pipeline.

:func:`read_image` decodes JPEG/PNG (8-bit RGB), FITS (a multi-band cube or one
HDU per band, band names from the headers) and ``.npy`` arrays into a
:class:`RawImage`: float32 pixels (C, H, W) plus what they are. Then
:func:`prepare` crops the centre and resizes with exact area averaging.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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

JPEG_EXTENSIONS = (".jpg", ".jpeg", ".png")
FITS_EXTENSIONS = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz")
NPY_EXTENSIONS = (".npy",)
IMAGE_EXTENSIONS = JPEG_EXTENSIONS + FITS_EXTENSIONS + NPY_EXTENSIONS


@dataclass
class RawImage:
    """Decoded pixels and their meaning.

    Attributes:
        pixels: float32 (C, H, W).
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
                rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
                rgb = rgba[..., :3] * (rgba[..., 3:] > 0)
            else:
                rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{source}: declares more pixels than the limit of "
                            f"{lim.describe()}") from None
    except UnidentifiedImageError:
        raise GalmergeError(f"{source}: not a JPEG or PNG image") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise GalmergeError(f"{source}: not a readable JPEG/PNG image "
                            f"({stable_message(exc)})") from None
    bands = SDSS_RGB_BANDS if kind == SDSS_COLOUR_JPEG else ()
    return RawImage(np.ascontiguousarray(np.moveaxis(rgb, -1, 0)), kind, bands, source)


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
    """Central ``fraction`` of a (C, H, W) image (both axes)."""
    if fraction >= 1.0:
        return pixels
    _, h, w = pixels.shape
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return pixels[:, y0:y0 + ch, x0:x0 + cw]


def resize_area(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize a (C, H, W) float image to (C, size, size) by area averaging.

    Down-sampling averages every source pixel that overlaps an output pixel
    (flux-conserving up to a constant), which is what an astronomer expects
    from shrinking a cutout; it is PIL's ``BOX`` filter on float planes.
    """
    from PIL import Image

    c, h, w = pixels.shape
    if h == size and w == size:
        return pixels.astype(np.float32, copy=False)
    out = np.empty((c, size, size), dtype=np.float32)
    for i in range(c):
        plane = Image.fromarray(np.ascontiguousarray(pixels[i], dtype=np.float32))
        out[i] = np.asarray(plane.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
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
    dead = (pixels == 0) | ~np.isfinite(pixels)
    per_pixel = dead.any(axis=0) if any_band else dead.all(axis=0)
    return float(per_pixel.mean())
