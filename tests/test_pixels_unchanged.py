"""The fast preprocessing feeds the model the same numbers as the implementation before it.

Issue 13 replaced "decode to float32, transpose, crop, PIL BOX resize per band" by "crop the
decoded uint8, then two small matrix products". The old implementation lives on here only, as
the reference (:func:`_reference_decode_rgb8`, :func:`_reference_prepare`), and every path that
makes model inputs is compared with it within 1e-4: real Galaxy Zoo 1 JPEGs (inference and the
training dataset), real DECaLS FITS cubes (converted to the SDSS colour convention), and the
simulator's images (its JPEG round trip, and its linear-flux HST cubes cropped and resized both
ways).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from galmerge.conventions import FLUX_LINEAR, ModelConvention, to_convention
from galmerge.data.dataset import open_dataset
from galmerge.data.images import box_weights, prepare, read_image
from galmerge.data.simulator import simulate
from galmerge.data.simulator.sdss import SDSSConfig, jpeg_to_model_pixels
from galmerge.export import sdss_example_convention
from galmerge.inference.cutouts import OK, Cutout, CutoutRequest, CutoutStack, LocalFileSource
from galmerge.inference.preprocess import prepare_cutout, prepare_stack

from .conftest import EXAMPLE, SHARED

TOL = 1e-4
GZ1_DEV = SHARED / "sdss_gz1" / "dev"
DECALS = SHARED / "decals_fits"


# --- the implementation before issue 13 (reference only) ----------------------------------

def _reference_decode_rgb8(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
    return np.ascontiguousarray(np.moveaxis(rgb, -1, 0))


def _reference_crop(pixels: np.ndarray, fraction: float) -> np.ndarray:
    if fraction >= 1.0:
        return pixels
    _, h, w = pixels.shape
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return pixels[:, y0:y0 + ch, x0:x0 + cw]


def _reference_resize(pixels: np.ndarray, size: int) -> np.ndarray:
    c, h, w = pixels.shape
    if h == size and w == size:
        return pixels.astype(np.float32, copy=False)
    out = np.empty((c, size, size), dtype=np.float32)
    for i in range(c):
        plane = Image.fromarray(np.ascontiguousarray(pixels[i], dtype=np.float32))
        out[i] = np.asarray(plane.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    return out


def _reference_prepare(pixels: np.ndarray, size: int, crop: float) -> np.ndarray:
    return _reference_resize(_reference_crop(pixels, crop), size)


def _reference_model_input(pixels: np.ndarray, kind: str, bands: tuple[str, ...],
                           conv: ModelConvention) -> np.ndarray:
    """The old ``prepare_cutout`` on an ok cutout: crop, convention, resize, NaN -> 0."""
    view = _reference_crop(pixels, conv.crop_fraction)
    img = _reference_resize(to_convention(view, kind, bands, conv), conv.size)
    return np.nan_to_num(img, nan=0.0, posinf=0.0, neginf=0.0)


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape and a.dtype == np.float32
    return float(np.abs(a.astype(np.float64) - b).max())


def _gz1_files(n: int) -> list[Path]:
    real = sorted(GZ1_DEV.glob("*.jpeg")) if GZ1_DEV.is_dir() else []
    files = real[:: max(1, len(real) // n)][:n] if real else sorted(
        (EXAMPLE / "cutouts").glob("*.jpeg"))
    assert files
    return files


# --- the weights themselves ---------------------------------------------------------------

@pytest.mark.parametrize("n_in", [8, 37, 60, 64, 75, 150, 211, 212, 213, 225, 423, 424])
@pytest.mark.parametrize("n_out", [32, 75, 100])
def test_box_weights_are_pils_box_filter(n_in: int, n_out: int) -> None:
    eye = np.eye(n_in, dtype=np.float32)  # resizing the identity reads off PIL's weights
    pil = np.asarray(Image.fromarray(eye).resize((n_out, n_in), Image.Resampling.BOX)).T
    np.testing.assert_allclose(box_weights(n_in, n_out), pil, atol=1e-7)


# --- real images --------------------------------------------------------------------------

def test_gz1_jpegs_give_the_same_model_inputs() -> None:
    conv = sdss_example_convention()
    files = _gz1_files(40)
    source = LocalFileSource()
    worst, compared = 0.0, 0
    for i, f in enumerate(files):
        cut = source.get(CutoutRequest(row=i, id=f.stem, file_loc=str(f)))
        assert cut.raw is not None and cut.raw.pixels.dtype == np.uint8
        st, _, img = prepare_cutout(cut, conv)
        want = _reference_model_input(_reference_decode_rgb8(f.read_bytes()), cut.raw.kind,
                                      cut.raw.bands, conv)
        if st != OK:  # the SDSS error tile: blank both ways
            continue
        assert img is not None
        compared += 1
        worst = max(worst, _max_diff(img, want))
        # the one shared function (training, simulator, export) on the same pixels
        worst = max(worst, _max_diff(prepare(cut.raw.pixels, 75, 0.5),
                                     _reference_prepare(_reference_decode_rgb8(f.read_bytes()),
                                                        75, 0.5)))
    assert compared >= len(files) - 1 and worst <= TOL, (compared, worst)


def test_training_dataset_reads_the_same_pixels() -> None:
    files = _gz1_files(12)
    with open_dataset(files[0].parent, crop_fraction=0.5) as ds:
        ids = list(ds.ids)
        idx = [ids.index(f.stem) for f in files]
        got = ds.read(idx)
    want = np.stack([_reference_prepare(_reference_decode_rgb8(f.read_bytes()), 75, 0.5)
                     for f in files])
    assert _max_diff(got, want) <= TOL


def test_decals_fits_give_the_same_model_inputs(decals_dir: Path) -> None:
    conv = sdss_example_convention()
    folder = DECALS if DECALS.is_dir() else decals_dir
    files = [f for f in sorted(folder.glob("*.fits")) if "incomplete" not in f.name]
    compared = 0
    for f in files:
        raw = read_image(f)
        st, _, img = prepare_cutout(Cutout(OK, raw), conv)
        if st != OK:  # the half-empty DR3 cutout is blank
            continue
        assert img is not None
        compared += 1
        assert _max_diff(img, _reference_model_input(raw.pixels, raw.kind, raw.bands, conv)) \
            <= TOL, f.name
    assert compared >= 3


# --- the simulator's images ---------------------------------------------------------------

def test_simulator_jpeg_round_trip_gives_the_same_pixels() -> None:
    """``jpeg_to_model_pixels`` (every simulated SDSS image) on crops of real GZ1 frames."""
    cfg = SDSSConfig()
    crops = []
    for f in _gz1_files(6):
        a = np.asarray(Image.open(f).convert("RGB"))
        crops.append(a[:cfg.crop_px, -cfg.crop_px:])
    rgb8 = np.stack(crops)
    got = jpeg_to_model_pixels(rgb8, cfg)
    want = []
    for im in rgb8:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=cfg.jpeg_quality)
        want.append(_reference_prepare(_reference_decode_rgb8(buf.getvalue()), cfg.size, 1.0))
    assert _max_diff(got, np.stack(want)) <= TOL


@pytest.mark.parametrize("size, crop", [(75, 0.8), (32, 1.0), (75, 0.5)])
def test_simulated_flux_cubes_resize_the_same(tmp_path: Path, size: int, crop: float) -> None:
    """HST-mode simulator images (linear flux): shrinking, enlarging, one row and a stack."""
    res = simulate(tmp_path, n=6, seed=3, survey="hst")
    with open_dataset(res.paths[1]) as ds:
        px = ds.read(np.arange(len(ds)))
    want = np.stack([_reference_prepare(p, size, crop) for p in px])
    scale = float(np.abs(want).max())
    got_rows = np.stack([prepare(p, size, crop) for p in px])
    assert _max_diff(got_rows, want) <= TOL * max(1.0, scale)
    conv = ModelConvention(pixel_convention=FLUX_LINEAR, bands=("g", "r", "i")[:px.shape[1]],
                           size=size, crop_fraction=crop)
    k = len(px)
    st, _, got_stack = prepare_stack(CutoutStack(px, [OK] * k, [""] * k, FLUX_LINEAR, ()), conv)
    assert st == [OK] * k
    assert _max_diff(got_stack, want) <= TOL * max(1.0, scale)
