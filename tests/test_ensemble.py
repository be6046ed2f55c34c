"""Seed ensembles as one ONNX graph (galmerge.ensemble): real models, real ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from galmerge.ensemble import MEMBERS_NAME, combine_onnx
from galmerge.errors import GalmergeError
from galmerge.inference.calibration import ModelCalibration
from galmerge.inference.engine import OnnxClassifier
from galmerge.survey_check import score_directory

ROOT = Path(__file__).resolve().parents[1]
SDSS = ROOT / "models" / "deepmerge-sdss.onnx"
SIMSIM = ROOT / "models" / "deepmerge-simsim.onnx"


@pytest.fixture(scope="module")
def second_member(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped SDSS model with every weight tensor scaled by 0.9: a different model of
    the same convention (its scores differ from the shipped model's)."""
    proto = onnx.load(str(SDSS))
    for init in proto.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32 and a.ndim >= 2:
            init.CopyFrom(numpy_helper.from_array(a * np.float32(0.9), init.name))
    for prop in proto.metadata_props:
        if prop.key == "galmerge.model_name":
            prop.value = "scaled"
    out = tmp_path_factory.mktemp("member") / "scaled.onnx"
    onnx.save(proto, str(out))
    return out


def test_ensemble_is_the_mean_of_its_members_on_real_cutouts(tmp_path, second_member,
                                                             example_dir):
    cal = ModelCalibration(train_merger_fraction=0.5, decision_threshold=0.4,
                           decision_rule="test rule")
    res = combine_onnx([SDSS, second_member], tmp_path / "ens.onnx", calibration=cal)
    assert res.parity_max_abs_diff <= 1e-5
    cutouts = example_dir / "cutouts"
    _, _, p_a = score_directory(OnnxClassifier(SDSS, device="cpu"), cutouts)
    _, _, p_b = score_directory(OnnxClassifier(second_member, device="cpu"), cutouts)
    assert np.max(np.abs(p_a - p_b)) > 1e-3  # the members really differ
    ens = OnnxClassifier(res.path, device="cpu")
    _, _, p_e = score_directory(ens, cutouts)
    np.testing.assert_allclose(p_e, (p_a + p_b) / 2, atol=1e-5)
    # both outputs, the members' probabilities side by side
    outs = [o.name for o in ens.session.get_outputs()]
    assert outs == ["p_merger", MEMBERS_NAME]
    meta = ens.metadata
    members = json.loads(meta["galmerge.ensemble_members"])
    assert [m["model_name"] for m in members] == ["deepmerge-sdss", "scaled"]
    assert meta["galmerge.decision_threshold"] == "0.4"
    assert meta["galmerge.model_name"] == "ens"
    # a member's own calibration does not leak into the ensemble
    assert "galmerge.calibration" not in meta and "galmerge.ood_ranges" not in meta


def test_member_calibration_is_not_inherited_without_one(tmp_path, second_member):
    res = combine_onnx([SDSS, second_member], tmp_path / "ens.onnx")
    assert "galmerge.decision_threshold" not in res.metadata
    assert res.metadata["galmerge.pixel_convention"] == "sdss-colour-jpeg"


def test_members_of_different_conventions_are_refused(tmp_path):
    with pytest.raises(GalmergeError, match=r"deepmerge-simsim.onnx: metadata galmerge\."):
        combine_onnx([SDSS, SIMSIM], tmp_path / "ens.onnx")
    assert not (tmp_path / "ens.onnx").exists()


def test_bad_member_lists_are_refused(tmp_path, second_member):
    with pytest.raises(GalmergeError, match="at least two members"):
        combine_onnx([SDSS], tmp_path / "ens.onnx")
    copy = tmp_path / "member.onnx"
    copy.write_bytes(second_member.read_bytes())
    with pytest.raises(GalmergeError, match="is one of the members"):
        combine_onnx([SDSS, copy], copy)
    assert copy.read_bytes() == second_member.read_bytes()
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(GalmergeError, match=r"junk\.onnx: not an ONNX model"):
        combine_onnx([SDSS, junk], tmp_path / "ens.onnx")
    ens = combine_onnx([SDSS, second_member], tmp_path / "ens.onnx").path
    with pytest.raises(GalmergeError, match="already an ensemble"):
        combine_onnx([SDSS, ens], tmp_path / "ens2.onnx")
