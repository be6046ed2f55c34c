"""Pixel conventions: what the numbers in a model's input mean.

A model knows only the convention it was trained on. Every cutout source
returns pixels together with *what they are* (a :class:`RawImage` from
:mod:`galmerge.data.images`), and :func:`to_convention` is the one place that
maps a known kind of pixels to a model's convention, so that training,
export and inference cannot drift apart.

The convention travels with each dataset file (HDF5 attributes), each
checkpoint, and each ONNX model (``metadata_props``, see
:meth:`ModelConvention.to_metadata`). This module imports neither torch nor
ONNX Runtime.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from galmerge.errors import GalmergeError
from galmerge.serial import from_plain, to_plain

__all__ = [
    "DISPLAY_RGB8",
    "FLUX_LINEAR",
    "FLUX_NANOMAGGIES",
    "KNOWN_CONVENTIONS",
    "MAX_MODEL_SIZE",
    "METADATA_PREFIX",
    "SDSS_COLOUR_JPEG",
    "SDSS_RGB_BANDS",
    "ModelConvention",
    "Normalisation",
    "sdss_lupton_rgb",
    "to_convention",
]

# --- convention names -------------------------------------------------------

#: Linear flux in arbitrary but consistent units (the simulator's pristine and
#: noisy domains, the paper's Illustris arrays). No stretch.
FLUX_LINEAR = "flux-linear"
#: SDSS ImgCutout colour JPEG: 8-bit RGB = (i, r, g), Lupton et al. (2004)
#: asinh stretch, JPEG-compressed; stored as float32 in [0, 255].
SDSS_COLOUR_JPEG = "sdss-colour-jpeg"
#: Calibrated flux in nanomaggies (Legacy Surveys FITS cutouts; zero point 22.5).
FLUX_NANOMAGGIES = "flux-nanomaggies"
#: 8-bit display RGB of unknown origin (a PNG/JPEG that is not known to be SDSS).
DISPLAY_RGB8 = "display-rgb8"

KNOWN_CONVENTIONS = (FLUX_LINEAR, SDSS_COLOUR_JPEG, FLUX_NANOMAGGIES, DISPLAY_RGB8)

#: Channel order of SDSS colour images (R, G, B) = (i, r, g).
SDSS_RGB_BANDS = ("i", "r", "g")

METADATA_PREFIX = "galmerge."
#: Largest model input (pixels across) galmerge accepts: a batch of 256 such images
#: is 12 GB of float32 already.
MAX_MODEL_SIZE = 1024


@dataclass(frozen=True)
class Normalisation:
    """Per-channel standardisation ``(x - mean) / std`` of one domain."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise ValueError("mean and std must have one value per channel")
        if any(not np.isfinite(s) or s <= 0 for s in self.std):
            raise ValueError(f"std must be positive and finite, got {self.std}")

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Standardise an (N, C, H, W) float array; returns a new float32 array."""
        mean = np.asarray(self.mean, dtype=np.float32)[None, :, None, None]
        std = np.asarray(self.std, dtype=np.float32)[None, :, None, None]
        return ((images - mean) / std).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, list[float]]:
        """Plain-JSON form."""
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalisation:
        """Inverse of :meth:`to_dict`."""
        return from_plain(cls, data)

    @classmethod
    def identity(cls, channels: int = 3) -> Normalisation:
        """No-op normalisation."""
        return cls((0.0,) * channels, (1.0,) * channels)


@dataclass(frozen=True)
class ModelConvention:
    """Everything a model needs to know about its input pixels.

    Attributes:
        pixel_convention: one of :data:`KNOWN_CONVENTIONS`.
        bands: channel order, e.g. ``("i", "r", "g")`` for SDSS colour JPEGs.
        size: model input height = width in pixels (75 for DeepMerge).
        crop_fraction: central fraction of a stored cutout that the model sees
            (1.0 = the whole cutout). Applied to every cutout, local or fetched,
            before resizing to ``size``.
        pixel_scale_arcsec: arcsec per *model* pixel, when the training images
            had a fixed scale (``None`` for simulations without a sky scale).
            The stored cutout then spans ``size * pixel_scale_arcsec /
            crop_fraction`` arcsec, so fetchers request ``size / crop_fraction``
            pixels at ``pixel_scale_arcsec`` arcsec per pixel
            (:func:`galmerge.inference.services.fetch_geometry`).
        petro_scale_factor: when set, cutouts were scaled per galaxy: arcsec
            per *stored-cutout* pixel = factor * Petrosian radius (Galaxy Zoo
            style); fetchers may use it with a Petrosian-radius column.
        stretch: human-readable description of the display stretch, if any.
        class_names: names of the output classes; index 1 is "merger".
    """

    pixel_convention: str
    bands: tuple[str, ...]
    size: int = 75
    crop_fraction: float = 1.0
    pixel_scale_arcsec: float | None = None
    petro_scale_factor: float | None = None
    stretch: str = "none"
    class_names: tuple[str, ...] = ("non-merger", "merger")
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pixel_convention not in KNOWN_CONVENTIONS:
            raise GalmergeError(
                f"unknown pixel convention {self.pixel_convention!r}",
                hint=f"use one of {', '.join(KNOWN_CONVENTIONS)}",
            )
        if not 0.0 < self.crop_fraction <= 1.0:
            raise GalmergeError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")
        if not 8 <= self.size <= MAX_MODEL_SIZE:
            raise GalmergeError(f"cutout size must be 8 to {MAX_MODEL_SIZE} pixels, "
                                f"got {self.size}")

    # -- serialisation -------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (lists instead of tuples)."""
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConvention:
        """Inverse of :meth:`to_dict`; ignores unknown keys."""
        return from_plain(cls, {"bands": (), **data})

    def to_metadata(self) -> dict[str, str]:
        """String key/values for ONNX ``metadata_props`` (prefixed ``galmerge.``)."""
        out = {
            "pixel_convention": self.pixel_convention,
            "bands": ",".join(self.bands),
            "size": str(self.size),
            "crop_fraction": repr(float(self.crop_fraction)),
            "pixel_scale_arcsec": "" if self.pixel_scale_arcsec is None else repr(
                float(self.pixel_scale_arcsec)),
            "petro_scale_factor": "" if self.petro_scale_factor is None else repr(
                float(self.petro_scale_factor)),
            "stretch": self.stretch,
            "class_names": ",".join(self.class_names),
            "convention_extra": json.dumps(self.extra, sort_keys=True),
        }
        return {METADATA_PREFIX + k: v for k, v in out.items()}

    @classmethod
    def from_metadata(cls, meta: dict[str, str], *, source: str = "model") -> ModelConvention:
        """Read a convention back from ONNX ``metadata_props``.

        Raises :class:`GalmergeError` naming ``source`` when a key is missing.
        """
        def get(key: str) -> str:
            full = METADATA_PREFIX + key
            if full not in meta:
                raise GalmergeError(
                    f"{source}: metadata key {full!r} is missing",
                    hint="export it with `galmerge export`, which records the input convention",
                )
            return meta[full]

        def bad(key: str, value: str, want: str) -> GalmergeError:
            return GalmergeError(f"{source}: metadata {METADATA_PREFIX + key} = {value[:40]!r} "
                                 f"is not {want}",
                                 hint="export the model with `galmerge export`")

        def opt_float(key: str) -> float | None:
            v = meta.get(METADATA_PREFIX + key, "")
            if v in ("", "None"):
                return None
            try:
                x = float(v)
            except ValueError:
                raise bad(key, v, "a number") from None
            if not (math.isfinite(x) and x > 0):
                raise bad(key, v, "a positive number")
            return x

        pixel_convention, band_text = get("pixel_convention"), get("bands")
        size_text = get("size").strip()
        if not size_text.isdigit():
            raise bad("size", size_text, "a whole number of pixels")
        crop_text = meta.get(METADATA_PREFIX + "crop_fraction", "1.0")
        try:
            crop = float(crop_text)
        except ValueError:
            raise bad("crop_fraction", crop_text, "a number in (0, 1]") from None
        extra_text = meta.get(METADATA_PREFIX + "convention_extra", "{}") or "{}"
        try:
            extra = json.loads(extra_text)
        except ValueError:
            extra = None
        if not isinstance(extra, dict):
            raise bad("convention_extra", extra_text, "a JSON object")
        px = extra.get("cutout_pixels")
        if px is not None and not (str(px).isdigit() and 0 < int(px) <= 16 * MAX_MODEL_SIZE):
            raise bad("convention_extra", extra_text, "valid (cutout_pixels must be a "
                      "positive whole number)")
        try:
            return cls(
                pixel_convention=pixel_convention,
                bands=tuple(b for b in band_text.split(",") if b),
                size=int(size_text),
                crop_fraction=crop,
                pixel_scale_arcsec=opt_float("pixel_scale_arcsec"),
                petro_scale_factor=opt_float("petro_scale_factor"),
                stretch=meta.get(METADATA_PREFIX + "stretch", "none"),
                class_names=tuple(meta.get(METADATA_PREFIX + "class_names",
                                           "non-merger,merger").split(",")),
                extra=extra,
            )
        except GalmergeError as exc:
            raise GalmergeError(f"{source}: {exc.message}", hint=exc.hint) from None


# --- conversions ------------------------------------------------------------

def sdss_lupton_rgb(
    flux: np.ndarray, bands: tuple[str, ...], *, q: float = 8.0, stretch: float = 0.6,
    scales: dict[str, float] | None = None,
) -> np.ndarray:
    """Render calibrated flux (C, H, W) as an SDSS-style colour image.

    Uses astropy's :func:`~astropy.visualization.make_lupton_rgb` (Lupton et al.
    2004 asinh stretch) with R, G, B = the reddest to bluest of the given bands
    (i/z -> R, r -> G, g -> B), returning float32 (3, H, W) in [0, 255].
    """
    from astropy.visualization import make_lupton_rgb

    order = _rgb_band_order(bands)
    scales = scales or {}
    chans = [np.nan_to_num(flux[i].astype(np.float64)) * scales.get(bands[i], 1.0)
             for i in order]
    rgb = make_lupton_rgb(chans[0], chans[1], chans[2], Q=q, stretch=stretch)
    return np.ascontiguousarray(np.moveaxis(rgb, -1, 0).astype(np.float32))


def _rgb_band_order(bands: tuple[str, ...]) -> list[int]:
    """Indices of (red, green, blue) among ``bands`` (reddest band first)."""
    wavelength = {"u": 355, "g": 477, "r": 623, "i": 763, "z": 913, "y": 1004}
    if len(bands) != 3 or any(b not in wavelength for b in bands):
        raise GalmergeError(
            f"cannot make a colour image from bands {bands!r}",
            hint="a colour stretch needs three of u, g, r, i, z, y",
        )
    return sorted(range(3), key=lambda i: -wavelength[bands[i]])


def to_convention(
    pixels: np.ndarray, kind: str, bands: tuple[str, ...], target: ModelConvention,
    *, where: str = "image",
) -> np.ndarray:
    """Convert pixels of a known ``kind`` to the ``target`` model convention.

    Args:
        pixels: float array (C, H, W).
        kind: the pixels' own convention (one of :data:`KNOWN_CONVENTIONS`).
        bands: the pixels' band order (may be empty when unknown).
        target: the model's convention.
        where: names the input in error messages (file name, row id).

    Returns:
        float32 (C, H, W) in the target convention, channels in the target's
        band order. Size is unchanged (resizing is :mod:`galmerge.data.images`).

    Raises:
        GalmergeError: when no conversion is known.
    """
    want = target.pixel_convention
    if kind == want or (kind == DISPLAY_RGB8 and want == SDSS_COLOUR_JPEG):
        # An 8-bit colour image is taken to be in the model's colour convention:
        # the caller asked for this model on these cutouts.
        return _reorder(pixels, bands, target.bands, where=where, lenient=kind == DISPLAY_RGB8)
    if kind == FLUX_NANOMAGGIES and want == SDSS_COLOUR_JPEG:
        # Known conversion: render calibrated flux with the SDSS colour stretch.
        return sdss_lupton_rgb(pixels, bands)
    raise GalmergeError(
        f"{where}: pixels are {kind!r} but the model expects {want!r}, and no conversion is known",
        hint="supply cutouts in the model's convention or use a model trained on this kind",
    )


def _reorder(
    pixels: np.ndarray, have: tuple[str, ...], want: tuple[str, ...], *, where: str,
    lenient: bool,
) -> np.ndarray:
    if pixels.ndim != 3 or pixels.shape[0] != len(want):
        raise GalmergeError(
            f"{where}: has {pixels.shape[0] if pixels.ndim == 3 else '?'} channels, "
            f"the model expects {len(want)} ({','.join(want)})"
        )
    if not have or tuple(have) == tuple(want) or lenient:
        # Contiguous (C, H, W): astype keeps a decoded JPEG's interleaved layout, and the
        # resize would copy it again (issue 13).
        return np.ascontiguousarray(pixels, dtype=np.float32)
    if sorted(have) != sorted(want):
        raise GalmergeError(
            f"{where}: bands {','.join(have)} do not match the model's {','.join(want)}"
        )
    order = [list(have).index(b) for b in want]
    return np.ascontiguousarray(pixels[order].astype(np.float32, copy=False))
