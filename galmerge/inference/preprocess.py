"""A cutout -> the model's input: checks, convention, crop and resize.

Every cutout, from any source, goes through :func:`prepare_cutout` (one row)
or :func:`prepare_stack` (many rows of one kind at once):

1. channel count must match the model's bands, else ``unreadable``;
2. the part of the cutout the model will see must hold data: more than
   ``blank_threshold`` of it dead (exactly zero or non-finite; in any band for
   calibrated flux, in all bands for 8-bit colour) -> ``blank``;
3. :func:`galmerge.conventions.to_convention` maps the pixels to the model's
   convention (e.g. DECaLS nanomaggies -> SDSS colour via the Lupton stretch);
   no known conversion -> ``unsupported_pixels`` with the reason;
4. centre-crop (the model's ``crop_fraction``, less what the source already
   cropped) and area-resize to the model's size
   (:func:`galmerge.data.images.prepare`); remaining non-finite pixels are set to 0.

Torch-free.
"""

from __future__ import annotations

import numpy as np

from galmerge.conventions import DISPLAY_RGB8, SDSS_COLOUR_JPEG, ModelConvention, to_convention
from galmerge.data.images import blank_fraction, center_crop, prepare, resize_area
from galmerge.errors import GalmergeError
from galmerge.inference.cutouts import (
    BLANK,
    OK,
    UNREADABLE,
    UNSUPPORTED_PIXELS,
    Cutout,
    CutoutStack,
)

__all__ = [
    "DEFAULT_BLANK_THRESHOLD",
    "prepare_cutout",
    "prepare_stack",
    "remaining_crop",
]

#: A cutout is ``blank`` when more than this fraction of the model's view has no data.
DEFAULT_BLANK_THRESHOLD = 0.25
_COLOUR_KINDS = (SDSS_COLOUR_JPEG, DISPLAY_RGB8)


def remaining_crop(model_crop: float, crop_applied: float) -> float | None:
    """Crop still to apply; None when the stored cutout covers too little sky."""
    if crop_applied >= 1.0:
        return model_crop
    rest = model_crop / crop_applied
    if rest > 1.0 + 1e-9:
        return None
    return min(1.0, rest)


def prepare_cutout(
    cutout: Cutout, conv: ModelConvention, *, blank_threshold: float = DEFAULT_BLANK_THRESHOLD,
) -> tuple[str, str, np.ndarray | None]:
    """One cutout -> ``(status, detail, image (C, S, S) float32 or None)``."""
    if not cutout.ok:
        return cutout.status, cutout.detail, None
    raw = cutout.raw
    assert raw is not None
    where = raw.source or "cutout"
    px = raw.pixels
    want = len(conv.bands)
    if px.ndim != 3 or px.shape[0] != want:
        return (UNREADABLE, f"{where}: has {px.shape[0] if px.ndim == 3 else '?'} channels, "
                f"the model expects {want} ({','.join(conv.bands)})", None)
    crop = remaining_crop(conv.crop_fraction, cutout.crop_applied)
    if crop is None:
        return (UNSUPPORTED_PIXELS, f"{where}: stored cutout covers {cutout.crop_applied:g} of "
                f"the field, the model needs {conv.crop_fraction:g}", None)
    view = center_crop(px, crop)
    frac = blank_fraction(view, any_band=raw.kind not in _COLOUR_KINDS)
    if frac > blank_threshold:
        return BLANK, f"{where}: {frac:.0%} of the model's view has no data", None
    try:
        conv_px = to_convention(view, raw.kind, raw.bands, conv, where=where)
    except GalmergeError as exc:
        return UNSUPPORTED_PIXELS, exc.one_line(), None
    img = prepare(conv_px, conv.size, 1.0)
    if not np.isfinite(img).all():
        img = np.nan_to_num(img, nan=0.0, posinf=0.0, neginf=0.0)
    return OK, "", np.ascontiguousarray(img, dtype=np.float32)


def prepare_stack(
    stack: CutoutStack, conv: ModelConvention, *,
    blank_threshold: float = DEFAULT_BLANK_THRESHOLD,
) -> tuple[list[str], list[str], np.ndarray]:
    """Vectorised :func:`prepare_cutout` for a :class:`CutoutStack`.

    Returns per-request statuses and details, and the images (k, C, S, S) of
    the requests whose final status is ``ok``, in request order.
    """
    status = list(stack.status)
    detail = list(stack.detail)
    ok_pos = [i for i, s in enumerate(status) if s == OK]
    px = stack.pixels
    c, s = len(conv.bands), conv.size
    empty = np.empty((0, c, s, s), dtype=np.float32)

    def fail(st: str, msg: str) -> tuple[list[str], list[str], np.ndarray]:
        for i in ok_pos:
            status[i], detail[i] = st, msg
        return status, detail, empty

    if not ok_pos:
        return status, detail, empty
    if px.shape[1] != c:
        return fail(UNREADABLE, f"cutouts have {px.shape[1]} channels, the model expects {c}")
    crop = remaining_crop(conv.crop_fraction, stack.crop_applied)
    if crop is None:
        return fail(UNSUPPORTED_PIXELS, f"stored cutouts cover {stack.crop_applied:g} of the "
                    f"field, the model needs {conv.crop_fraction:g}")
    view = center_crop(px, crop)
    frac = _dead_fractions(view, any_band=stack.kind not in _COLOUR_KINDS,
                           threshold=blank_threshold)
    keep = frac <= blank_threshold
    for j in np.flatnonzero(~keep):
        i = ok_pos[j]
        status[i], detail[i] = BLANK, f"{frac[j]:.0%} of the model's view has no data"
    view = view[keep] if not keep.all() else view
    same = (stack.kind == conv.pixel_convention
            or (stack.kind == DISPLAY_RGB8 and conv.pixel_convention == SDSS_COLOUR_JPEG))
    if same and (not stack.bands or tuple(stack.bands) == tuple(conv.bands)
                 or stack.kind == DISPLAY_RGB8):
        out = view
    else:
        try:
            out = np.stack([to_convention(v, stack.kind, stack.bands, conv, where="cutout")
                            for v in view]) if len(view) else empty
        except GalmergeError as exc:
            kept = [ok_pos[j] for j in np.flatnonzero(keep)]
            for i in kept:
                status[i], detail[i] = UNSUPPORTED_PIXELS, exc.one_line()
            return status, detail, empty
    out = resize_area(out, s) if len(out) else empty
    if not np.isfinite(out).all():
        out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    return status, detail, out


def _dead_fractions(view: np.ndarray, *, any_band: bool, threshold: float) -> np.ndarray:
    """Per image, :func:`blank_fraction` of an (N, C, H, W) stack where it may exceed
    ``threshold``; an upper bound <= ``threshold`` elsewhere.

    When every value is finite (one summing pass), the fraction of pixels dead
    in all bands is at most the fraction of zeros in band 0, and the fraction
    dead in any band at most the summed fraction of zeros over the bands; only
    images whose bound exceeds ``threshold`` get the full per-pixel test.
    """
    k = view.shape[0]
    hw = view.shape[-1] * view.shape[-2]
    if k == 0:
        return np.zeros(0, dtype=np.float64)
    if np.isfinite(view.sum(dtype=np.float64)):
        if any_band:
            zeros = np.count_nonzero(view.reshape(k, -1) == 0, axis=1)
        else:
            zeros = np.count_nonzero(view[:, 0].reshape(k, hw) == 0, axis=1)
        frac = zeros / hw
        todo = np.flatnonzero(frac > threshold)
    else:
        frac = np.zeros(k, dtype=np.float64)
        todo = np.arange(k)
    for j in todo:
        frac[j] = blank_fraction(view[j], any_band=any_band)
    return frac

