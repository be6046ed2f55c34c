"""Dataset file format and readers, including bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from galmerge.conventions import FLUX_LINEAR, SDSS_COLOUR_JPEG, ModelConvention
from galmerge.data import make_split, open_dataset, write_dataset
from galmerge.data.dataset import H5Dataset
from galmerge.errors import GalmergeError

from .conftest import EXAMPLE, SHARED

CONV = ModelConvention(pixel_convention=FLUX_LINEAR, bands=("a", "b", "c"), size=75)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, 75, 75)).astype(np.float32)


def test_split_is_seeded_70_10_20() -> None:
    s = make_split(1000, seed=1)
    assert (s == "train").sum() == 700 and (s == "val").sum() == 100 and (s == "test").sum() == 200
    assert np.array_equal(s, make_split(1000, seed=1))
    assert not np.array_equal(s, make_split(1000, seed=2))


def test_h5_round_trip(tmp_path: Path) -> None:
    x = _images(20)
    y = np.array([1, 0] * 10, dtype=np.int8)
    path = write_dataset(tmp_path / "d.h5", x, y, CONV, ids=[f"g{i}" for i in range(20)],
                         provenance={"note": "test"})
    assert not (tmp_path / "d.h5.tmp").exists()
    with open_dataset(path) as ds:
        assert len(ds) == 20 and ds.is_labelled
        assert ds.convention == CONV
        assert list(ds.ids[:2]) == ["g0", "g1"]
        assert ds.provenance["note"] == "test"
        got = ds.read([5, 2, 5])
        np.testing.assert_array_equal(got, x[[5, 2, 5]])
        batches = list(ds.iter_batches(8))
        assert [len(i) for i, _ in batches] == [8, 8, 4]
        assert set(ds.split) <= {"train", "val", "test"}


def test_npy_pair_paper_names(tmp_path: Path) -> None:
    x = _images(10)
    y = np.array([0, 1] * 5)
    np.save(tmp_path / "SimSim_SOURCE_X_Illustris2_pristine.npy", x)
    np.save(tmp_path / "SimSim_SOURCE_y_Illustris2_pristine.npy", y)
    with open_dataset(tmp_path / "SimSim_SOURCE_X_Illustris2_pristine.npy") as ds:
        assert len(ds) == 10
        np.testing.assert_array_equal(ds.labels, y)
        np.testing.assert_array_equal(ds.read([3]), x[[3]])


def test_unlabelled_npy_is_fine(tmp_path: Path) -> None:
    np.save(tmp_path / "target.npy", _images(4))
    with open_dataset(tmp_path / "target.npy") as ds:
        assert (ds.labels == -1).all() and not ds.is_labelled


def test_image_dir_with_labels(tmp_path: Path) -> None:
    cat = pd.read_csv(EXAMPLE / "sdss_example.csv", dtype={"objid": str})
    labels = tmp_path / "labels.csv"
    cat.rename(columns={"gz1_merger": "merger"})[["objid", "merger"]].to_csv(labels, index=False)
    with open_dataset(EXAMPLE / "cutouts", labels=labels, crop_fraction=0.5) as ds:
        assert len(ds) == 24
        assert ds.convention.pixel_convention == SDSS_COLOUR_JPEG
        assert ds.convention.bands == ("i", "r", "g")
        assert int((ds.labels == 1).sum()) == 12
        img = ds.read([0, 1])
        assert img.shape == (2, 3, 75, 75) and img.dtype == np.float32
        assert 0 <= img.min() and img.max() <= 255


@pytest.mark.skipif(not (SHARED / "sdss_gz1" / "dev").is_dir(), reason="shared data not present")
def test_real_sdss_dev_set_with_labels_csv() -> None:
    with open_dataset(SHARED / "sdss_gz1" / "dev") as ds:  # finds dev_labels.csv beside it
        assert len(ds) == 229
        assert int((ds.labels == 1).sum()) == 57 and int((ds.labels == 0).sum()) == 172


# --- bad input ------------------------------------------------------------------

def _err(spec: Path, **kw: object) -> str:
    with pytest.raises(GalmergeError) as info:
        open_dataset(spec, **kw)  # type: ignore[arg-type]
    msg = info.value.one_line()
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in _err(tmp_path / "nope.h5")


def test_wrong_shape(tmp_path: Path) -> None:
    np.save(tmp_path / "X.npy", np.zeros((4, 75, 75), dtype=np.float32))
    assert "shape" in _err(tmp_path / "X.npy")


def test_wrong_dtype(tmp_path: Path) -> None:
    np.save(tmp_path / "X.npy", np.zeros((4, 3, 75, 75), dtype=np.complex64))
    assert "dtype" in _err(tmp_path / "X.npy")


def test_nan_pixels_name_the_row(tmp_path: Path) -> None:
    x = _images(6)
    x[4, 1, 10, 10] = np.nan
    write_dataset(tmp_path / "d.h5", x, np.zeros(6, dtype=np.int8), CONV)
    msg = _err(tmp_path / "d.h5")
    assert "image 4" in msg and "NaN" in msg


def test_empty_dataset(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "e.h5", "w") as h:
        h.create_dataset("images", shape=(0, 3, 75, 75), dtype="float32")
        h.create_dataset("labels", shape=(0,), dtype="int8")
    assert "empty" in _err(tmp_path / "e.h5")


def test_bad_labels(tmp_path: Path) -> None:
    np.save(tmp_path / "X.npy", _images(3))
    np.save(tmp_path / "y.npy", np.array([0, 1, 7]))
    assert "row 2" in _err(tmp_path / "X.npy")


def test_truncated_fits_in_image_dir(tmp_path: Path, decals_dir: Path) -> None:
    d = tmp_path / "cutouts"
    d.mkdir()
    shutil.copy(decals_dir / "example_incomplete.fits", d)
    with pytest.raises(GalmergeError) as info:
        open_dataset(d)
    assert "example_incomplete.fits" in info.value.one_line()


def test_not_hdf5(tmp_path: Path) -> None:
    (tmp_path / "x.h5").write_text("hello")
    assert "HDF5" in _err(tmp_path / "x.h5")


def test_h5dataset_missing_images_key(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "x.h5", "w") as h:
        h.create_dataset("labels", data=np.zeros(2, dtype=np.int8))
    with pytest.raises(GalmergeError, match="'images' is missing"):
        H5Dataset(tmp_path / "x.h5")
