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


# --- classify with an ensemble: the spread comes from the members --------------------------

def _classify(tmp_path: Path, example_dir: Path, model: Path, name: str, *extra: str):
    import shutil

    import pandas as pd
    from typer.testing import CliRunner

    from galmerge.cli import app

    dest = tmp_path / name
    shutil.copytree(example_dir, dest)
    out = dest / "scores.csv"
    res = CliRunner().invoke(app, ["classify", "--quiet", "--catalog",
                                   str(dest / "sdss_example.csv"), "--model", str(model),
                                   "--output", str(out), *extra])
    return res, (pd.read_csv(out, dtype={"objid": str}) if res.exit_code == 0 else None)


def test_classify_takes_the_spread_over_the_ensemble_members(tmp_path, second_member,
                                                             example_dir):
    ens = combine_onnx([SDSS, second_member], tmp_path / "ens.onnx").path
    res, got = _classify(tmp_path, example_dir, ens, "ens")
    assert res.exit_code == 0, res.output
    _, a = _classify(tmp_path, example_dir, SDSS, "a", "--views", "2")
    _, b = _classify(tmp_path, example_dir, second_member, "b", "--views", "2")
    ok = (got["status"] == "ok").to_numpy()
    assert ok.sum() == 23
    ra, rb = a["p_merger_raw"].to_numpy()[ok], b["p_merger_raw"].to_numpy()[ok]
    np.testing.assert_allclose(got["p_merger_raw"].to_numpy()[ok], (ra + rb) / 2, atol=2e-6)
    # one view, two members: the spread is half the members' difference
    np.testing.assert_allclose(got["p_merger_spread"].to_numpy()[ok], np.abs(ra - rb) / 2,
                               atol=2e-6)
    assert got["p_merger_spread"].to_numpy()[ok].max() > 1e-3
    meta = json.loads((tmp_path / "ens" / "scores.csv.meta.json").read_text())
    assert meta["views"] == 1 and "2 members of the seed ensemble" in meta["views_description"]


def test_an_ensemble_of_identical_members_has_zero_spread(tmp_path, example_dir):
    twin = tmp_path / "twin.onnx"
    twin.write_bytes(SDSS.read_bytes())
    ens = combine_onnx([SDSS, twin], tmp_path / "same.onnx").path
    res, got = _classify(tmp_path, example_dir, ens, "same")
    assert res.exit_code == 0, res.output
    ok = got["status"] == "ok"
    assert (got.loc[ok, "p_merger_spread"] == 0).all()


def test_views_1_is_refused_for_a_single_model(tmp_path, example_dir):
    res, _ = _classify(tmp_path, example_dir, SDSS, "single", "--views", "1")
    assert res.exit_code != 0
    assert "--views 1 gives no spread" in res.output and "Traceback" not in res.output
