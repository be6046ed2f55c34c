"""OnnxClassifier: a real ONNX Runtime session on the shipped model and on broken models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from galmerge.conventions import SDSS_COLOUR_JPEG
from galmerge.errors import GalmergeError
from galmerge.inference.engine import OnnxClassifier, available_cpus
from tests.conftest import ROOT

MODEL = ROOT / "models" / "deepmerge-sdss.onnx"


def test_shipped_model_reads_its_convention_and_is_not_a_placeholder() -> None:
    clf = OnnxClassifier(MODEL, device="cpu", batch_size=16)
    conv = clf.convention
    assert conv.pixel_convention == SDSS_COLOUR_JPEG
    assert conv.bands == ("i", "r", "g") and conv.size == 75 and conv.crop_fraction == 0.5
    assert not clf.placeholder  # the trained model (issue 6), not the interim one
    assert clf.providers == ["CPUExecutionProvider"] and clf.device == "cpu"
    assert clf.threads == available_cpus()
    assert len(clf.sha256) == 64


@pytest.mark.parametrize("n", [1, 1000])
def test_batches_of_1_and_1000_give_the_same_probabilities(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.uniform(0, 255, (n, 3, 75, 75)).astype(np.float32)
    big = OnnxClassifier(MODEL, device="cpu", batch_size=64)
    one = OnnxClassifier(MODEL, device="cpu", batch_size=1)
    p = big.predict(x)
    assert p.shape == (n,) and p.dtype == np.float32
    assert np.all((p >= 0) & (p <= 1))
    # Padding the last batch does not change any row's probability.
    idx = np.arange(0, n, max(1, n // 7))
    assert np.allclose(p[idx], one.predict(x[idx]), atol=1e-6)


def test_cuda_demanded_without_the_cuda_provider_fails_loudly() -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    with pytest.raises(GalmergeError, match="CUDA provider"):
        OnnxClassifier(MODEL, device="cuda")
    # auto falls back to the CPU without complaint
    assert OnnxClassifier(MODEL, device="auto").device == "cpu"


def test_not_an_onnx_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_text("this is not a protobuf\n")
    with pytest.raises(GalmergeError, match="not a loadable ONNX model"):
        OnnxClassifier(bad)
    with pytest.raises(GalmergeError, match="not found"):
        OnnxClassifier(tmp_path / "absent.onnx")


def _tiny_model(path: Path, shape: list, meta: dict[str, str] | None = None) -> Path:
    """A real ONNX model: p_merger = ReduceMean(images) over all but the batch axis."""
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)
    out = helper.make_tensor_value_info("p_merger", TensorProto.FLOAT, ["N"])
    axes = helper.make_tensor("axes", TensorProto.INT64, [len(shape) - 1],
                              list(range(1, len(shape))))
    node = helper.make_node("ReduceMean", ["images", "axes"], ["p_merger"], keepdims=0)
    graph = helper.make_graph([node], "tiny", [inp], [out], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    if meta:
        helper.set_model_props(model, meta)
    onnx.save(model, str(path))
    return path


def test_input_that_is_not_nchw_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GalmergeError, match=r"expected float32 N×3×H×W"):
        OnnxClassifier(_tiny_model(tmp_path / "flat.onnx", ["N", 3]))


def test_model_without_galmerge_metadata_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GalmergeError, match=r"galmerge\.pixel_convention"):
        OnnxClassifier(_tiny_model(tmp_path / "plain.onnx", ["N", 3, 75, 75]))


def test_metadata_size_must_match_the_graph(tmp_path: Path) -> None:
    meta = {"galmerge.pixel_convention": SDSS_COLOUR_JPEG, "galmerge.bands": "i,r,g",
            "galmerge.size": "64"}
    with pytest.raises(GalmergeError, match="75px but the metadata says 64px"):
        OnnxClassifier(_tiny_model(tmp_path / "m.onnx", ["N", 3, 75, 75], meta))
    meta["galmerge.size"] = "75"
    clf = OnnxClassifier(_tiny_model(tmp_path / "ok.onnx", ["N", 3, 75, 75], meta), batch_size=4)
    x = np.full((6, 3, 75, 75), 0.25, dtype=np.float32)
    assert np.allclose(clf.predict(x), 0.25)
