"""The shipped ONNX models: trained (not placeholders), self-describing, and they score.

``models/deepmerge-sdss.onnx`` is the default model of ``galmerge classify``;
``models/deepmerge-simsim.onnx`` is stage 1 of its recipe (scripts/train_sdss_model.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from galmerge.conventions import SDSS_COLOUR_JPEG
from galmerge.data.dataset import open_dataset
from galmerge.inference.engine import OnnxClassifier
from galmerge.inference.pipeline import classify_catalog, resolve_model
from galmerge.training.metrics import roc_auc
from tests.conftest import ROOT

MODELS = ROOT / "models"
SDSS = MODELS / "deepmerge-sdss.onnx"
SIMSIM = MODELS / "deepmerge-simsim.onnx"


def test_sdss_model_is_the_default_and_carries_what_classify_needs() -> None:
    assert resolve_model(None) == SDSS.resolve() or resolve_model(None).samefile(SDSS)
    clf = OnnxClassifier(SDSS, device="cpu")
    assert not clf.placeholder
    c = clf.convention
    assert c.pixel_convention == SDSS_COLOUR_JPEG and c.bands == ("i", "r", "g")
    assert (c.size, c.crop_fraction, c.class_names) == (75, 0.5, ("non-merger", "merger"))
    # fetchers: Galaxy Zoo 1 geometry (423 px at 0.024 x petroR90_r) and a fixed-scale default
    assert c.petro_scale_factor == 0.024 and c.extra["cutout_pixels"] == "423"
    assert c.pixel_scale_arcsec is not None and 0.3 < c.pixel_scale_arcsec < 0.8
    meta = clf.metadata
    assert meta["galmerge.architecture"] == "deepmerge"
    assert meta["galmerge.model_name"] == "deepmerge-sdss"
    card = SDSS.with_suffix(".md").read_text()
    for needed in ("noDA", "bootstrap", "Limitations", "Intended use", "Acknowledgements",
                   "How the recipe was chosen", "Galaxy Zoo"):
        assert needed in card, needed
    assert "PLACEHOLDER" not in card


def test_sdss_model_ranks_the_bundled_galaxy_zoo_mergers_above_non_mergers(
        tmp_path: Path, example_dir: Path) -> None:
    out = tmp_path / "scores.csv"
    summary = classify_catalog(example_dir / "sdss_example.csv", output=out)
    assert summary.rows == 24
    got = pd.read_csv(out, dtype={"objid": str})
    ok = got[got["status"] == "ok"]
    assert len(ok) == 23  # the SDSS error tile is `blank`
    y, p = ok["gz1_merger"].to_numpy(), ok["p_merger"].to_numpy()
    # 12 GZ1 mergers vs 11 non-mergers: a trained model ranks most mergers higher
    assert roc_auc(y, p) > 0.7
    assert p.std() > 0.05  # not a constant


@pytest.mark.slow
def test_simsim_model_separates_simulated_noisy_mergers(tmp_path: Path) -> None:
    from galmerge.data.simulator import simulate

    simulate(tmp_path, n=200, seed=1234)  # a seed the model was not trained on
    ds = open_dataset(tmp_path / "target.h5")
    try:
        x, y = ds.read(np.arange(len(ds))), ds.labels
    finally:
        ds.close()
    clf = OnnxClassifier(SIMSIM, device="cpu")
    assert not clf.placeholder and clf.convention.pixel_convention == "flux-linear"
    assert roc_auc(y, clf.predict(x.astype(np.float32))) > 0.8


@pytest.mark.parametrize("name", ["deepmerge-sdss.onnx", "deepmerge-simsim.onnx"])
def test_metadata_read_without_a_session_is_the_sessions(name: str) -> None:
    """`galmerge fetch` reads a model's metadata from the file, not from an ORT session."""
    from galmerge.inference.fetch import convention_from_onnx
    from galmerge.inference.onnx_wire import read_metadata_props

    clf = OnnxClassifier(MODELS / name, device="cpu", threads=1)
    assert read_metadata_props(MODELS / name) == clf.metadata
    assert convention_from_onnx(MODELS / name) == clf.convention
