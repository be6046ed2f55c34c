"""`galmerge doctor`: real ONNX files, a real ONNX Runtime, the real CLI in a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from galmerge.conventions import SDSS_COLOUR_JPEG, SDSS_RGB_BANDS, ModelConvention
from galmerge.inference.doctor import (
    PROBE_INPUT,
    check_provider,
    probe_expected,
    probe_model_bytes,
    provider_failure_reason,
    run_doctor,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]


def write_model(path: Path, *, size: int = 75, metadata: bool = True,
                declared_size: int | None = None, extra: dict[str, str] | None = None) -> Path:
    """A small real classifier: mean over pixels -> logistic, input (N, 3, size, size)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, size, size])
    y = helper.make_tensor_value_info("p_merger", TensorProto.FLOAT, ["N"])
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 1], [0.01, -0.02, 0.03])
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["m", "w"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["s"]),
        helper.make_node("Flatten", ["s"], ["f"], axis=0),
        helper.make_node("Squeeze", ["f", "zero"], ["p_merger"]),
    ]
    zero = helper.make_tensor("zero", TensorProto.INT64, [1], [0])
    graph = helper.make_graph(nodes, "tiny", [x], [y], initializer=[w, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    if metadata:
        conv = ModelConvention(SDSS_COLOUR_JPEG, SDSS_RGB_BANDS, size=declared_size or size,
                               crop_fraction=0.5, pixel_scale_arcsec=0.792)
        helper.set_model_props(model, {**conv.to_metadata(), "galmerge.architecture": "tiny",
                                       **(extra or {})})
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "GALMERGE_MODELS"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "galmerge", "doctor", *args], cwd=ROOT,
                          capture_output=True, text=True, env=full_env, check=False)


def test_probe_model_is_valid_onnx_and_matches_reference_evaluator() -> None:
    model = onnx.load_from_string(probe_model_bytes())
    onnx.checker.check_model(model, full_check=True)
    from onnx.reference import ReferenceEvaluator

    ref = ReferenceEvaluator(model).run(None, {"x": PROBE_INPUT})[0]
    np.testing.assert_allclose(ref, probe_expected(), rtol=1e-6)
    sess = ort.InferenceSession(probe_model_bytes(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": PROBE_INPUT})[0], ref, rtol=1e-6)


def test_cpu_provider_check_runs_the_probe() -> None:
    check = check_provider(ort, "CPUExecutionProvider")
    assert check.listed and check.initialised, check.detail


def test_missing_provider_is_reported_not_raised() -> None:
    check = check_provider(ort, "NoSuchExecutionProvider")
    assert not check.listed and not check.initialised
    assert "not in this ONNX Runtime build" in check.detail


# ONNX Runtime 1.26.0 (onnxruntime-gpu) in a container without CUDA libraries, verbatim
# (as captured by the image smoke test, docker/build-and-smoke.sh GALMERGE_EXTRA=gpu).
ORT_CUDA_LOG = [
    "\x1b[1;31m2026-11-27 02:34:12.487762377 [E:onnxruntime:Default, provider_bridge_ort.cc:2369 "
    "TryGetProviderInfo_CUDA] /onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:"
    "1962 onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : "
    "FAIL : Failed to load library /opt/galmerge/venv/lib/python3.11/site-packages/onnxruntime/"
    "capi/libonnxruntime_providers_cuda.so with error: libcublasLt.so.12: cannot open shared "
    "object file: No such file or directory",
    "\x1b[m",
    "\x1b[0;93m2026-11-27 02:34:12.487808926 [W:onnxruntime:Default, onnxruntime_pybind_state.cc:"
    "1094 CreateExecutionProviderFactoryInstance] Failed to create CUDAExecutionProvider. Require "
    "cuDNN 9.* and CUDA 12.*. Please install all dependencies as mentioned in the GPU "
    "requirements page, make sure they're in the PATH, and that your GPU is supported.\x1b[m",
]


def test_provider_failure_reason_names_the_missing_library() -> None:
    assert provider_failure_reason(ORT_CUDA_LOG) == (
        "libcublasLt.so.12: cannot open shared object file: No such file or directory "
        "(loading libonnxruntime_providers_cuda.so)")
    assert provider_failure_reason(ORT_CUDA_LOG[2:]).startswith(
        "Failed to create CUDAExecutionProvider. Require cuDNN 9.* and CUDA 12.*")
    assert provider_failure_reason([]) == ""


def test_healthy_with_a_valid_model(tmp_path: Path) -> None:
    path = write_model(tmp_path / "tiny-sdss.onnx")
    report = run_doctor(models=tmp_path, device="cpu")
    assert report.healthy, report.problems
    assert report.ort_version == ort.__version__
    assert "CPUExecutionProvider" in report.available_providers
    (info,) = report.models
    assert info.name == "tiny-sdss"
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.summary.startswith("sdss-colour-jpeg, i/r/g, 75px")
    assert '0.792"/px' in info.summary and "central 0.5" in info.summary
    assert info.input_shape == ["N", 3, 75, 75]
    assert info.metadata["galmerge.architecture"] == "tiny"


def test_placeholder_model_is_a_warning(tmp_path: Path) -> None:
    write_model(tmp_path / "interim.onnx", extra={"galmerge.placeholder": "1"})
    report = run_doctor(models=tmp_path, device="cpu")
    assert report.healthy
    assert report.warnings == ["model interim is a placeholder (untrained weights): its "
                               "probabilities mean nothing"]


def test_model_without_metadata_is_a_problem(tmp_path: Path) -> None:
    write_model(tmp_path / "bare.onnx", metadata=False)
    report = run_doctor(models=tmp_path, device="cpu")
    assert not report.healthy
    assert "galmerge.pixel_convention" in report.reason and "bare.onnx" in report.reason


def test_input_shape_disagreeing_with_metadata_is_a_problem(tmp_path: Path) -> None:
    write_model(tmp_path / "odd.onnx", size=64, declared_size=75)
    report = run_doctor(models=tmp_path, device="cpu")
    assert not report.healthy
    assert "does not match its metadata" in report.reason


def test_not_an_onnx_file(tmp_path: Path) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"this is not a protobuf")
    report = run_doctor(models=tmp_path, device="cpu")
    assert not report.healthy and "does not load" in report.reason


def test_empty_models_directory(tmp_path: Path) -> None:
    report = run_doctor(models=tmp_path, device="cpu")
    assert not report.healthy and "no .onnx model found" in report.reason


def test_cuda_demanded_on_a_cpu_build(tmp_path: Path) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ONNX Runtime build has the CUDA provider")
    write_model(tmp_path / "m.onnx")
    assert run_doctor(models=tmp_path, device="auto").healthy
    report = run_doctor(models=tmp_path, device="cuda")
    assert not report.healthy and report.reason.startswith("CUDA requested but unusable")


def test_cli_exit_codes_and_json(tmp_path: Path) -> None:
    write_model(tmp_path / "m.onnx")
    ok = run_cli("--json", env={"GALMERGE_MODELS": str(tmp_path)})
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["healthy"] is True and data["models_dir"] == str(tmp_path)
    assert data["models"][0]["convention"]["pixel_convention"] == "sdss-colour-jpeg"

    empty = tmp_path / "empty"
    empty.mkdir()
    bad = run_cli("--models", str(empty))
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        f"unhealthy: no .onnx model found in {empty}; set GALMERGE_MODELS or pass --models"]
    assert "status        unhealthy" in bad.stdout


def test_cli_rejects_unknown_device() -> None:
    proc = run_cli("--device", "tpu")
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown device 'tpu'")


def _fake_dist(site: Path, name: str, version: str) -> None:
    """The metadata pip leaves for an installed distribution."""
    dist = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_two_runtime_distributions_in_one_site_dir_are_flagged(tmp_path: Path) -> None:
    """onnxruntime-gpu's metadata beside the imported onnxruntime: the broken install."""
    write_model(tmp_path / "m.onnx")
    real = Path(ort.__file__).parent
    site = tmp_path / "site"
    site.mkdir()
    (site / "onnxruntime").symlink_to(real, target_is_directory=True)
    for dist in real.parent.glob("onnxruntime-*.dist-info"):
        (site / dist.name).symlink_to(dist, target_is_directory=True)
    _fake_dist(site, "onnxruntime-gpu", "1.26.0")
    env = {"GALMERGE_MODELS": str(tmp_path), "PYTHONPATH": f"{ROOT}{os.pathsep}{site}"}
    auto = run_cli("--json", env=env)
    data = json.loads(auto.stdout)
    assert auto.returncode == 0, auto.stderr
    assert sorted(data["ort_distributions"]) == ["onnxruntime", "onnxruntime-gpu"]
    assert any("onnxruntime and onnxruntime-gpu are installed together" in w
               for w in data["warnings"])
    cuda = run_cli("--device", "cuda", env=env)
    assert cuda.returncode == 1
    assert "installed together" in cuda.stdout


def test_a_shadowed_distribution_elsewhere_is_harmless(tmp_path: Path) -> None:
    """A second distribution further down sys.path is reported but not a conflict."""
    write_model(tmp_path / "m.onnx")
    other = tmp_path / "other-site"
    _fake_dist(other, "onnxruntime-gpu", "1.26.0")
    env = {"GALMERGE_MODELS": str(tmp_path), "PYTHONPATH": f"{ROOT}{os.pathsep}{other}"}
    proc = run_cli("--json", env=env)
    data = json.loads(proc.stdout)
    assert proc.returncode == 0 and data["warnings"] == []
    assert list(data["ort_distributions"]) == ["onnxruntime"]
    assert data["ort_shadowed"] == [f"onnxruntime-gpu 1.26.0 ({other})"]


def test_doctor_never_imports_torch(tmp_path: Path) -> None:
    write_model(tmp_path / "m.onnx")
    code = ("import sys; sys.modules['torch'] = None\n"
            "from galmerge.cli import main; sys.argv = ['galmerge', 'doctor', '--models', "
            f"{str(tmp_path)!r}]\nmain()")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
