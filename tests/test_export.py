"""ONNX export: graph checks, ONNX Runtime vs PyTorch parity, metadata, refusal, model card."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from galmerge.conventions import (
    FLUX_LINEAR,
    METADATA_PREFIX,
    ModelConvention,
    Normalisation,
)
from galmerge.errors import GalmergeError
from galmerge.export import PARITY_TOLERANCE, export_onnx, sdss_example_convention
from galmerge.inference.engine import OnnxClassifier
from galmerge.training.checkpoint import load_checkpoint, save_checkpoint
from galmerge.training.models import DeepMerge, register_architecture

SDSS_NORM = Normalisation((20.6, 17.5, 13.0), (32.2, 26.5, 21.5))
SIM_NORM = Normalisation((0.02, 0.03, 0.05), (0.1, 0.12, 0.2))
SIM_CONV = ModelConvention(pixel_convention=FLUX_LINEAR, bands=("g", "r", "i"), size=75)


def _checkpoint(path: Path, model: nn.Module | None = None, arch: str = "deepmerge") -> Path:
    torch.manual_seed(3)
    model = model or DeepMerge()
    # Non-trivial BatchNorm statistics, so folding them into the convolutions is exercised.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return save_checkpoint(
        path, model, arch=arch,
        config={"method": "mmd", "epochs": 2, "source": "sim-source.h5", "target": "sdss-pool"},
        normalisation={"target": SDSS_NORM, "source": SIM_NORM},
        conventions={"target": sdss_example_convention(), "source": SIM_CONV}, epoch=2,
        metrics={"target_auc": 0.71})


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Export through the CLI (a real subprocess), with the features output."""
    d = tmp_path_factory.mktemp("export")
    ck = _checkpoint(d / "best.pt")
    (d / "metrics.json").write_text(json.dumps({"target_auc": 0.73, "source_accuracy": 0.91}))
    out = d / "model.onnx"
    proc = subprocess.run([sys.executable, "-m", "galmerge", "export", str(ck), str(out),
                           "--features", "--name", "test-model"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "max |Δp|" in proc.stdout
    return ck, out


def test_export_passes_the_onnx_checker_and_has_a_symbolic_batch(exported: tuple[Path, Path]
                                                                   ) -> None:
    _, out = exported
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    inp = model.graph.input[0]
    assert inp.name == "images"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 75, 75]
    assert [o.name for o in model.graph.output] == ["p_merger", "features"]
    # BatchNorm folded away: no BatchNormalization node is left.
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}


def test_onnx_runtime_matches_pytorch_at_batch_1_and_1000(exported: tuple[Path, Path]) -> None:
    ck_path, out = exported
    ck = load_checkpoint(ck_path)
    model = ck.build()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(11)
    mean = np.asarray(SDSS_NORM.mean, dtype=np.float32)[None, :, None, None]
    std = np.asarray(SDSS_NORM.std, dtype=np.float32)[None, :, None, None]
    for n in (1, 1000):
        x = np.clip(rng.uniform(0, 255, (n, 3, 75, 75)), 0, 255).astype(np.float32)
        p_onnx, feats = sess.run(None, {"images": x})
        with torch.no_grad():
            xt = torch.from_numpy((x - mean) / std)
            logits = model(xt)
            p_torch = torch.softmax(logits, dim=1)[:, 1].numpy()
            f_torch = model.features(xt).numpy()
        assert p_onnx.shape == (n,)
        assert np.max(np.abs(p_onnx - p_torch)) <= PARITY_TOLERANCE
        assert feats.shape == (n, DeepMerge.feature_dim)
        assert np.allclose(feats, f_torch, atol=1e-4, rtol=1e-4)
        # The probabilities are not all the same (a real, non-degenerate network).
        if n == 1000:
            assert p_onnx.std() > 1e-4


def test_metadata_describes_the_input_and_the_run(exported: tuple[Path, Path]) -> None:
    ck_path, out = exported
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    conv = ModelConvention.from_metadata(meta)
    assert conv == sdss_example_convention()
    assert meta[METADATA_PREFIX + "architecture"] == "deepmerge"
    assert meta[METADATA_PREFIX + "model_name"] == "test-model"
    assert meta[METADATA_PREFIX + "config_hash"] == load_checkpoint(ck_path).config_hash()
    assert json.loads(meta[METADATA_PREFIX + "normalisation"]) == SDSS_NORM.to_dict()
    assert meta[METADATA_PREFIX + "placeholder"] == "0"
    assert meta[METADATA_PREFIX + "domain"] == "target"
    assert meta[METADATA_PREFIX + "created"].endswith("Z")
    parity = json.loads(meta[METADATA_PREFIX + "parity_max_abs_diff"])
    assert {"random_batch1", "random_batch1000", "real_batch1", "real_batch1000"} <= set(parity)
    assert max(parity.values()) <= PARITY_TOLERANCE
    # And the inference engine reads it back.
    clf = OnnxClassifier(out, device="cpu", batch_size=8)
    assert clf.convention == conv and clf.name == "test-model" and not clf.placeholder


def test_model_card_reports_metrics_data_and_limitations(exported: tuple[Path, Path]) -> None:
    _, out = exported
    card = out.with_suffix(".md").read_text()
    assert "# Model card: test-model" in card
    assert "target_auc: 0.73" in card  # from metrics.json beside the checkpoint
    assert "sim-source.h5" in card and "mmd" in card
    assert "## Limitations" in card
    assert "PLACEHOLDER" not in card


def test_source_domain_export_uses_the_source_convention(tmp_path: Path) -> None:
    ck = _checkpoint(tmp_path / "best.pt")
    res = export_onnx(ck, tmp_path / "sim.onnx", domain="source", placeholder=True)
    clf = OnnxClassifier(res.path, device="cpu")
    assert clf.convention.pixel_convention == FLUX_LINEAR
    assert clf.placeholder
    # The bundled SDSS JPEGs cannot be converted to flux-linear: real-image parity is skipped.
    assert any("skipped" in n for n in res.notes)
    assert "PLACEHOLDER" in res.card.read_text()


def test_export_stores_calibration_read_back_by_classify_cli(tmp_path: Path) -> None:
    """`galmerge export --calibration FILE.json` (issue 11): metadata, card, read back."""
    from typer.testing import CliRunner

    from galmerge.cli import app
    from galmerge.inference.calibration import ModelCalibration

    ck = _checkpoint(tmp_path / "best.pt")
    cal = {"train_merger_fraction": 0.5, "decision_threshold": 0.9,
           "decision_rule": "purity >= 0.6 at 1 % on the survey-like check",
           "calibration": {"reference_merger_fraction": 0.01, "source": "survey-like check",
                           "points": [{"threshold": 0.9, "purity": 0.6, "purity_ci": [0.5, 0.7],
                                       "completeness": 0.4, "completeness_ci": [0.3, 0.5],
                                       "flagged_fraction": 0.0067,
                                       "flagged_fraction_ci": [0.005, 0.008]}]}}
    (tmp_path / "cal.json").write_text(json.dumps(cal))
    out = tmp_path / "m.onnx"
    res = CliRunner().invoke(app, ["export", str(ck), str(out), "--calibration",
                                   str(tmp_path / "cal.json")])
    assert res.exit_code == 0, res.output
    back = ModelCalibration.from_metadata(OnnxClassifier(out, device="cpu").metadata)
    assert back.decision_threshold == 0.9 and back.train_merger_fraction == 0.5
    assert back.curve is not None and back.curve.points[0].purity_ci == (0.5, 0.7)
    card = out.with_suffix(".md").read_text()
    assert "purity 0.600 [0.500, 0.700], completeness 0.400 [0.300, 0.500]" in card
    (tmp_path / "bad.json").write_text(json.dumps({"decision_treshold": 0.9}))
    res = CliRunner().invoke(app, ["export", str(ck), str(tmp_path / "n.onnx"),
                                   "--calibration", str(tmp_path / "bad.json")])
    assert res.exit_code != 0 and "unknown keys decision_treshold" in res.output
    assert not (tmp_path / "n.onnx").exists()


class _Stochastic(DeepMerge):
    """A DeepMerge that keeps dropout on at inference: ONNX Runtime cannot match it."""

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return super().classify(nn.functional.dropout(features, p=0.5, training=True))


def test_export_refuses_a_model_that_fails_parity_and_leaves_no_file(tmp_path: Path) -> None:
    register_architecture("stochastic-test", _Stochastic)
    ck = _checkpoint(tmp_path / "best.pt", _Stochastic(), arch="stochastic-test")
    out = tmp_path / "bad.onnx"
    with pytest.raises(GalmergeError, match="refusing to write"):
        export_onnx(ck, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_unknown_domain_is_a_one_line_error(tmp_path: Path) -> None:
    ck = _checkpoint(tmp_path / "best.pt")
    proc = subprocess.run([sys.executable, "-m", "galmerge", "export", str(ck),
                           str(tmp_path / "m.onnx"), "--domain", "validation"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()
