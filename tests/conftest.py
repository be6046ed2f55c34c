"""Shared fixtures: paths to the real data bundled in the repository."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
EXAMPLE = ROOT / "catalogs" / "sdss_example"
#: The project's shared real data, present on development machines; tests that
#: use it are skipped elsewhere (a bundled sample covers the same code paths).
SHARED = Path(os.environ.get("GALMERGE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def sdss_model_inputs(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, (N, 3, 75, 75) float32) of a folder of SDSS JPEG cutouts, prepared as the
    shipped SDSS model reads them (central half, area-resized)."""
    from galmerge.data.dataset import ImageDirDataset

    ds = ImageDirDataset(directory, size=75, crop_fraction=0.5)
    try:
        return ds.ids.astype(str), ds.read(np.arange(len(ds))).astype(np.float32)
    finally:
        ds.close()


@pytest.fixture(scope="session")
def example_dir() -> Path:
    return EXAMPLE


@pytest.fixture(scope="session")
def decals_dir() -> Path:
    return DATA / "decals"


@pytest.fixture(scope="session")
def darg_dir() -> Path:
    return DATA / "darg2010"


@pytest.fixture(scope="session")
def fake_services_server():
    """The local fake SDSS / Legacy Surveys / hips2fits server, one per test session."""
    from tests.fake_services import FakeServices

    with FakeServices() as server:
        yield server


@pytest.fixture
def fake(fake_services_server):
    """The fake services with no faults, no latency and an empty request log."""
    fake_services_server.reset()
    yield fake_services_server
    fake_services_server.reset()


@pytest.fixture(scope="session")
def unscaled_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped SDSS model with its pixel scale removed from the metadata.

    For the errors a model that records no cutout scale must give (``--scale`` needed).
    """
    import json

    import onnx

    proto = onnx.load(str(ROOT / "models" / "deepmerge-sdss.onnx"))
    for prop in proto.metadata_props:
        if prop.key in ("galmerge.pixel_scale_arcsec", "galmerge.petro_scale_factor"):
            prop.value = ""
        elif prop.key == "galmerge.convention_extra":
            extra = json.loads(prop.value)
            extra.pop("cutout_pixels", None)
            prop.value = json.dumps(extra, sort_keys=True)
    out = tmp_path_factory.mktemp("unscaled") / "unscaled.onnx"
    onnx.save(proto, str(out))
    return out
