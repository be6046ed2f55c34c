"""Image decoding, cropping, area resizing and pixel conventions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from galmerge.conventions import (
    FLUX_LINEAR,
    FLUX_NANOMAGGIES,
    SDSS_COLOUR_JPEG,
    ModelConvention,
    to_convention,
)
from galmerge.data.images import blank_fraction, center_crop, read_image, resize_area
from galmerge.errors import GalmergeError

SDSS = ModelConvention(pixel_convention=SDSS_COLOUR_JPEG, bands=("i", "r", "g"))


def test_resize_area_is_exact_block_mean() -> None:
    x = np.random.default_rng(0).random((3, 150, 150)).astype(np.float32)
    got = resize_area(x, 75)
    want = x.reshape(3, 75, 2, 75, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_center_crop() -> None:
    x = np.arange(3 * 10 * 10, dtype=np.float32).reshape(3, 10, 10)
    c = center_crop(x, 0.5)
    assert c.shape == (3, 5, 5)
    assert c[0, 0, 0] == x[0, 2, 2]


def test_read_sdss_jpeg(example_dir: Path) -> None:
    path = next((example_dir / "cutouts").glob("*.jpeg"))
    raw = read_image(path)
    assert raw.kind == SDSS_COLOUR_JPEG and raw.bands == ("i", "r", "g")
    assert raw.pixels.shape == (3, 423, 423)


def test_read_decals_fits_bands_from_header(decals_dir: Path) -> None:
    raw = read_image(decals_dir / "example_a.fits")
    assert raw.kind == FLUX_NANOMAGGIES
    assert raw.bands == ("g", "r", "z")
    assert raw.pixels.shape == (3, 424, 424)


def test_half_empty_dr3_cutout_is_mostly_blank(decals_dir: Path) -> None:
    bad = blank_fraction(read_image(decals_dir / "example_bad_pix.fits").pixels, any_band=True)
    good = blank_fraction(read_image(decals_dir / "example_d.fits").pixels, any_band=True)
    assert bad > 0.4 > good


def test_truncated_fits_is_one_line_error(decals_dir: Path) -> None:
    with pytest.raises(GalmergeError) as info:
        read_image(decals_dir / "example_incomplete.fits")
    assert "example_incomplete.fits" in info.value.one_line()


def test_nanomaggies_convert_to_sdss_colour(decals_dir: Path) -> None:
    raw = read_image(decals_dir / "example_a.fits")
    rgb = to_convention(raw.pixels, raw.kind, raw.bands, SDSS)
    assert rgb.shape == (3, 424, 424)
    assert 0 <= rgb.min() and rgb.max() <= 255 and rgb.max() > 50


def test_jpeg_cannot_become_linear_flux(example_dir: Path) -> None:
    raw = read_image(next((example_dir / "cutouts").glob("*.jpeg")))
    flux_model = ModelConvention(pixel_convention=FLUX_LINEAR, bands=("i", "r", "g"))
    with pytest.raises(GalmergeError, match="no conversion is known"):
        to_convention(raw.pixels, raw.kind, raw.bands, flux_model)


def test_convention_metadata_round_trip() -> None:
    conv = ModelConvention(pixel_convention=SDSS_COLOUR_JPEG, bands=("i", "r", "g"),
                           crop_fraction=0.5, pixel_scale_arcsec=0.8, extra={"k": "v"})
    meta = conv.to_metadata()
    assert all(isinstance(v, str) for v in meta.values())
    assert ModelConvention.from_metadata(meta) == conv
    with pytest.raises(GalmergeError, match="missing"):
        ModelConvention.from_metadata({}, source="m.onnx")
