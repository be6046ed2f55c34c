"""Cutout preparation: the vectorised stack path agrees with the per-row path."""

from __future__ import annotations

import numpy as np
import pytest

from galmerge.conventions import (
    DISPLAY_RGB8,
    FLUX_LINEAR,
    FLUX_NANOMAGGIES,
    SDSS_COLOUR_JPEG,
    ModelConvention,
)
from galmerge.data.images import RawImage, read_image
from galmerge.export import sdss_example_convention
from galmerge.inference.cutouts import OK, Cutout, CutoutStack
from galmerge.inference.preprocess import prepare_cutout, prepare_stack, remaining_crop


def _stack_like_rows(pixels: np.ndarray, kind: str, bands: tuple[str, ...],
                     conv: ModelConvention, crop_applied: float = 1.0) -> None:
    k = len(pixels)
    stack = CutoutStack(pixels, [OK] * k, [""] * k, kind, bands, crop_applied)
    st, _, imgs = prepare_stack(stack, conv)
    rows = [prepare_cutout(Cutout(OK, RawImage(p, kind, bands), crop_applied=crop_applied),
                           conv) for p in pixels]
    assert st == [r[0] for r in rows]
    ok_rows = [r[2] for r in rows if r[0] == OK]
    assert len(imgs) == len(ok_rows)
    if ok_rows:
        assert np.allclose(imgs, np.stack(ok_rows), atol=1e-4)


@pytest.mark.parametrize("kind", [SDSS_COLOUR_JPEG, DISPLAY_RGB8])
def test_colour_stack_matches_rows_including_blanks(kind: str) -> None:
    rng = np.random.default_rng(1)
    px = rng.uniform(0, 255, (12, 3, 150, 150)).astype(np.float32)
    px[rng.random(px.shape) < 0.2] = 0  # scattered zeros: not blank
    px[2] = 0  # all black: blank
    px[5, :, 40:110, 40:110] = 0  # black where the model looks (central half): blank
    px[7, 0] = 0  # one band empty: an 8-bit colour image is still fine
    px[9, :, :20, :] = np.nan  # outside the centre: fine, set to 0 after crop
    conv = sdss_example_convention()
    _stack_like_rows(px, kind, ("i", "r", "g"), conv)
    st = prepare_stack(CutoutStack(px, [OK] * 12, [""] * 12, kind, ("i", "r", "g")), conv)[0]
    assert [i for i, s in enumerate(st) if s != OK] == [2, 5]


def test_flux_stack_counts_a_pixel_dead_in_any_band() -> None:
    rng = np.random.default_rng(2)
    px = rng.normal(0.1, 0.05, (6, 3, 75, 75)).astype(np.float32)
    px[1, 0] = 0  # one band missing everywhere: blank for calibrated flux
    px[3, :, 30:45, 30:45] = np.nan  # a small hole: not blank
    conv = ModelConvention(pixel_convention=FLUX_LINEAR, bands=("g", "r", "i"), size=75)
    _stack_like_rows(px, FLUX_LINEAR, ("g", "r", "i"), conv)
    st = prepare_stack(CutoutStack(px, [OK] * 6, [""] * 6, FLUX_LINEAR, ("g", "r", "i")),
                       conv)[0]
    assert st == [OK, "blank", OK, OK, OK, OK]


def test_stack_of_model_ready_images_is_not_cropped_again(example_dir) -> None:  # type: ignore[no-untyped-def]
    conv = sdss_example_convention()
    assert remaining_crop(0.5, 0.5) == 1.0
    assert remaining_crop(0.5, 1.0) == 0.5
    assert remaining_crop(1.0, 0.5) is None  # the stored cutout shows too little sky
    rng = np.random.default_rng(3)
    px = rng.uniform(1, 255, (4, 3, 75, 75)).astype(np.float32)
    st, _, imgs = prepare_stack(CutoutStack(px, [OK] * 4, [""] * 4, SDSS_COLOUR_JPEG,
                                            ("i", "r", "g"), crop_applied=0.5), conv)
    assert st == [OK] * 4 and np.array_equal(imgs, px)
    whole = ModelConvention(pixel_convention=SDSS_COLOUR_JPEG, bands=("i", "r", "g"), size=75)
    st, de, _ = prepare_stack(CutoutStack(px, [OK] * 4, [""] * 4, SDSS_COLOUR_JPEG,
                                          ("i", "r", "g"), crop_applied=0.5), whole)
    assert st == ["unsupported_pixels"] * 4 and "cover 0.5 of the field" in de[0]


def test_decals_nanomaggies_stack_is_converted_like_rows(decals_dir) -> None:  # type: ignore[no-untyped-def]
    raws = [read_image(decals_dir / n) for n in ("example_a.fits", "example_d.fits")]
    px = np.stack([r.pixels for r in raws])
    _stack_like_rows(px, FLUX_NANOMAGGIES, raws[0].bands, sdss_example_convention())


def test_band_mismatch_is_unreadable_and_unknown_kind_unsupported() -> None:
    conv = sdss_example_convention()
    one = Cutout(OK, RawImage(np.ones((1, 50, 50), np.float32), FLUX_LINEAR, ("r",)))
    assert prepare_cutout(one, conv)[0] == "unreadable"
    lin = Cutout(OK, RawImage(np.ones((3, 50, 50), np.float32), FLUX_LINEAR, ()))
    status, detail, img = prepare_cutout(lin, conv)
    assert status == "unsupported_pixels" and img is None and "no conversion" in detail
