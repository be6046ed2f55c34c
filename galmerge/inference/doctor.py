"""`galmerge doctor`: is this installation able to classify, and on what?

Checks, in order, the things that go wrong in real deployments:

* which ONNX Runtime distribution is installed (``onnxruntime`` *and*
  ``onnxruntime-gpu`` side by side make the CUDA provider silently disappear);
* which execution providers the build offers, and whether the CUDA provider
  really *initialises and runs a convolution* (a listed provider can still fail
  to load its CUDA/cuDNN libraries, and ONNX Runtime then falls back to the CPU
  with only a log line);
* which models are installed (name, sha256, input convention from the ONNX
  metadata), and that each opens and scores a blank image.

Used by the container's ``HEALTHCHECK``. Never imports torch.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import re
import struct
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from galmerge import __version__
from galmerge.conventions import ModelConvention
from galmerge.errors import GalmergeError
from galmerge.inference.engine import file_sha256
from galmerge.inference.models import MODELS_ENV, model_search_path
from galmerge.inference.onnx_wire import field_bytes, field_varint

__all__ = [
    "DEVICES",
    "ORT_DISTRIBUTIONS",
    "PROBE_INPUT",
    "PROBE_KERNEL",
    "DoctorReport",
    "ModelInfo",
    "ProviderCheck",
    "check_provider",
    "default_models_location",
    "find_models",
    "format_report",
    "inspect_model",
    "probe_expected",
    "probe_model_bytes",
    "provider_failure_reason",
    "run_doctor",
]

#: Distributions that each provide the ``onnxruntime`` Python package. More
#: than one installed at once means one overwrote the other's files.
ORT_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-openvino",
    "onnxruntime-directml",
    "onnxruntime-qnn",
    "onnxruntime-training",
)

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class ProviderCheck:
    """Outcome of opening a session on one execution provider."""

    provider: str
    listed: bool
    initialised: bool = False
    detail: str = ""


@dataclass
class ModelInfo:
    """One installed ONNX model as the doctor saw it."""

    name: str
    path: str
    sha256: str
    size_bytes: int
    convention: dict[str, Any] | None = None
    summary: str = ""
    input_shape: list[Any] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    problem: str | None = None


@dataclass
class DoctorReport:
    """Everything ``galmerge doctor`` found; ``healthy`` when ``problems`` is empty."""

    galmerge_version: str
    python: str
    platform: str
    device: str
    ort_distributions: dict[str, str]
    ort_shadowed: list[str]
    ort_version: str | None
    ort_build_device: str | None
    available_providers: list[str]
    cuda: ProviderCheck
    models_dir: str | None
    models: list[ModelInfo]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """True when nothing stops ``galmerge classify`` on the requested device."""
        return not self.problems

    @property
    def reason(self) -> str:
        """One line: the first problem, or ``healthy``."""
        return self.problems[0] if self.problems else "healthy"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (what ``galmerge doctor --json`` prints)."""
        d = asdict(self)
        d["healthy"] = self.healthy
        d["reason"] = self.reason
        return d


# --- a tiny ONNX model, encoded by hand ----------------------------------------
# The inference image has no `onnx` package, so the probe model for the
# provider check is written directly in protobuf wire format (onnx.proto3:
# ModelProto / GraphProto / NodeProto / TensorProto / ValueInfoProto; onnx_wire.py).


def _tensor_type(dims: tuple[int, ...]) -> bytes:
    shape = b"".join(field_bytes(1, field_varint(1, d)) for d in dims)  # Dimension.dim_value
    tensor = field_varint(1, 1) + field_bytes(2, shape)  # elem_type FLOAT, shape
    return field_bytes(1, tensor)  # TypeProto.tensor_type


def _value_info(name: str, dims: tuple[int, ...]) -> bytes:
    return field_bytes(1, name) + field_bytes(2, _tensor_type(dims))


#: Probe input and kernel: a 1x1x4x4 ramp convolved with a 3x3 kernel.
PROBE_INPUT = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
PROBE_KERNEL = np.array([[0.5, -1.0, 0.25], [1.0, 2.0, -0.5], [0.0, 0.75, 1.5]],
                        dtype=np.float32).reshape(1, 1, 3, 3)


def probe_model_bytes() -> bytes:
    """A valid ONNX model: ``y = Conv(x, w)``, x (1,1,4,4), w (1,1,3,3), y (1,1,2,2).

    A convolution (rather than an element-wise op) makes the CUDA provider load
    cuDNN, which is the library that is most often missing or mismatched.
    """
    weight = (
        b"".join(field_varint(1, d) for d in PROBE_KERNEL.shape)  # dims
        + field_varint(2, 1)  # data_type FLOAT
        + field_bytes(8, "w")  # name
        + field_bytes(9, PROBE_KERNEL.astype("<f4").tobytes())  # raw_data
    )
    node = (field_bytes(1, "x") + field_bytes(1, "w") + field_bytes(2, "y")
            + field_bytes(3, "probe_conv") + field_bytes(4, "Conv"))
    graph = (field_bytes(1, node) + field_bytes(2, "galmerge_doctor_probe")
             + field_bytes(5, weight)
             + field_bytes(11, _value_info("x", (1, 1, 4, 4)))
             + field_bytes(12, _value_info("y", (1, 1, 2, 2))))
    opset = field_bytes(1, "") + field_varint(2, 13)
    return (field_varint(1, 8)  # ir_version 8 (ONNX 1.10+), opset 13
            + field_bytes(2, "galmerge-doctor")
            + field_bytes(7, graph)
            + field_bytes(8, opset))


def probe_expected() -> np.ndarray:
    """What the probe model must output (valid cross-correlation, as ONNX Conv)."""
    x, k = PROBE_INPUT[0, 0], PROBE_KERNEL[0, 0]
    out = np.empty((2, 2), dtype=np.float32)
    for i in range(2):
        for j in range(2):
            out[i, j] = float((x[i:i + 3, j:j + 3] * k).sum())
    return out.reshape(1, 1, 2, 2)


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Capture what native code writes to file descriptor 2 (ONNX Runtime's log).

    ONNX Runtime reports *why* a provider failed (e.g. ``libcudnn.so.9: cannot
    open shared object file``) only through its C++ logger; the lines land in
    the yielded list after the block.
    """
    lines: list[str] = []
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (embedded interpreters): do not capture
        yield lines
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def provider_failure_reason(log_lines: list[str]) -> str:
    """The root cause in ONNX Runtime's log of a failed provider, as one short line.

    Prefers the first error-level line (``[E:...]``), e.g. ``libcublasLt.so.12:
    cannot open shared object file ... (loading libonnxruntime_providers_cuda.so)``,
    over the generic warning that follows it.
    """
    lines = [_ANSI.sub("", line).strip() for line in log_lines]
    lines = [line for line in lines if line]
    for marker in ("[E:", "[W:"):
        for line in lines:
            if marker not in line:
                continue
            text = line.split("] ", 1)[-1]
            if "with error: " in text:
                head, err = text.rsplit("with error: ", 1)
                library = head.rsplit("Failed to load library ", 1)[-1].strip()
                return f"{err.strip()} (loading {Path(library).name})"[:400]
            return text.split(" : FAIL : ", 1)[-1].strip()[:400]
    return lines[-1][:400] if lines else ""


def check_provider(ort: Any, provider: str) -> ProviderCheck:
    """Open the probe model on ``provider`` and run it; report what happened."""
    listed = provider in ort.get_available_providers()
    check = ProviderCheck(provider=provider, listed=listed)
    if not listed:
        check.detail = f"{provider} is not in this ONNX Runtime build"
        return check
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    providers = [provider] if provider == "CPUExecutionProvider" else [
        provider, "CPUExecutionProvider"]
    with _captured_stderr() as log:
        try:
            session = ort.InferenceSession(probe_model_bytes(), sess_options=options,
                                           providers=providers)
            active = session.get_providers()
            out = session.run(None, {"x": PROBE_INPUT})[0] if provider in active else None
        except Exception as exc:  # ORT raises RuntimeError and its own Fail
            check.detail = f"session creation failed: {' '.join(str(exc).split())[:400]}"
            return check
    if provider not in active:
        why = provider_failure_reason(log)
        check.detail = (f"{provider} is listed but did not initialise"
                        + (f": {why}" if why else " (ONNX Runtime fell back to the CPU)"))
        return check
    expected = probe_expected()
    if out is None or not np.allclose(out, expected, rtol=1e-4, atol=1e-4):
        check.detail = f"{provider} ran the probe convolution but returned wrong values"
        return check
    check.initialised = True
    check.detail = "ran a probe convolution; output correct"
    return check


# --- models ------------------------------------------------------------------------


def default_models_location() -> Path | None:
    """Where installed models live: the first existing folder of classify's model search
    path (``$GALMERGE_MODELS``, ``models/`` of a checkout, ``<prefix>/share/galmerge/models``);
    ``$GALMERGE_MODELS`` may also name one ``.onnx`` file."""
    if os.environ.get(MODELS_ENV):
        return Path(os.environ[MODELS_ENV])
    return next((p for p in model_search_path() if p.is_dir()), None)


def _convention_summary(conv: ModelConvention) -> str:
    parts = [conv.pixel_convention, "/".join(conv.bands), f"{conv.size}px"]
    if conv.crop_fraction != 1.0:
        parts.append(f"central {conv.crop_fraction:g}")
    if conv.pixel_scale_arcsec is not None:
        parts.append(f'{conv.pixel_scale_arcsec:g}"/px')
    if conv.petro_scale_factor is not None:
        parts.append(f"{conv.petro_scale_factor:g}xPetro/px")
    return ", ".join(parts)


def inspect_model(ort: Any, path: Path) -> ModelInfo:
    """Hash one model, read its convention, and score one blank image on the CPU."""
    info = ModelInfo(name=path.stem, path=str(path), sha256=file_sha256(path),
                     size_bytes=path.stat().st_size)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), sess_options=options,
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # any load failure is reported, not raised
        info.problem = f"model {path} does not load: {' '.join(str(exc).split())[:300]}"
        return info
    meta = dict(session.get_modelmeta().custom_metadata_map)
    info.metadata = {k: v for k, v in meta.items() if len(v) <= 200}
    inputs = session.get_inputs()
    info.input_shape = list(inputs[0].shape) if inputs else []
    try:
        conv = ModelConvention.from_metadata(meta, source=str(path))
    except (GalmergeError, ValueError) as exc:
        info.problem = f"model {path} lacks galmerge metadata: {exc}"
        return info
    info.convention = conv.to_dict()
    info.summary = _convention_summary(conv)
    shape = info.input_shape
    if len(shape) != 4 or shape[1:] != [len(conv.bands), conv.size, conv.size]:
        info.problem = (f"model {path}: input shape {shape} does not match its metadata "
                        f"(N, {len(conv.bands)}, {conv.size}, {conv.size})")
        return info
    blank = np.zeros((1, len(conv.bands), conv.size, conv.size), dtype=np.float32)
    try:
        out = np.asarray(session.run(None, {inputs[0].name: blank})[0], dtype=np.float64)
    except Exception as exc:  # reported, not raised
        info.problem = f"model {path} fails on a blank image: {' '.join(str(exc).split())[:300]}"
        return info
    if out.size == 0 or not np.all(np.isfinite(out)):
        info.problem = f"model {path} returns non-finite output on a blank image"
    return info


def find_models(location: Path) -> list[Path]:
    """The ``.onnx`` files at ``location`` (a file, or a directory searched one level deep)."""
    if location.is_file():
        return [location]
    if location.is_dir():
        return sorted(p for p in location.glob("*.onnx") if p.is_file())
    return []


# --- the report --------------------------------------------------------------------


def _ort_distributions(active_dir: Path | None) -> tuple[dict[str, str], list[str]]:
    """ONNX Runtime distributions installed where the imported package lives, and elsewhere.

    Two distributions in the *same* site directory overwrite each other's files
    (the CUDA provider then disappears). One in another directory further down
    ``sys.path`` is merely shadowed (e.g. a ``--system-site-packages`` venv that
    adds onnxruntime-gpu over a system onnxruntime) and does no harm.
    """
    together: dict[str, str] = {}
    shadowed: list[str] = []
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name not in ORT_DISTRIBUTIONS:
            continue
        where = Path(os.path.abspath(str(dist.locate_file(""))))
        if active_dir is None or where == active_dir:
            together.setdefault(name, dist.version)
        elif f"{name} {dist.version} ({where})" not in shadowed:
            shadowed.append(f"{name} {dist.version} ({where})")
    return together, shadowed


def run_doctor(models: Path | None = None, device: str = "auto") -> DoctorReport:
    """Check the installation; never raises for a broken one (it is reported instead).

    Args:
        models: a model file or a directory of ``.onnx`` files; default
            ``$GALMERGE_MODELS`` or the checkout's ``models/``.
        device: ``auto`` (CUDA is optional), ``cuda`` (a CUDA provider that
            does not initialise is a problem) or ``cpu`` (CUDA is not checked).
    """
    if device not in DEVICES:
        raise GalmergeError(f"unknown device {device!r}", hint=f"use one of {', '.join(DEVICES)}")
    problems: list[str] = []
    warnings: list[str] = []
    try:
        import onnxruntime as ort
    except ImportError as exc:
        ort = None
        problems.append(f"ONNX Runtime cannot be imported ({exc}); install galmerge[cpu] "
                        "or galmerge[gpu]")
    active_dir = (Path(os.path.abspath(ort.__file__)).parent.parent
                  if ort is not None and getattr(ort, "__file__", None) else None)
    dists, shadowed = _ort_distributions(active_dir)
    if len(dists) > 1:
        names = " and ".join(sorted(dists))
        message = (f"{names} are installed together: they overwrite each other and the CUDA "
                   f"provider disappears; `pip uninstall {' '.join(sorted(dists))}` and "
                   "reinstall only one (galmerge[cpu] or galmerge[gpu])")
        (problems if device == "cuda" else warnings).append(message)

    cuda = ProviderCheck(provider="CUDAExecutionProvider", listed=False,
                         detail="not checked (--device cpu)" if device == "cpu" else "")
    providers: list[str] = []
    if ort is not None:
        providers = list(ort.get_available_providers())
        cpu = check_provider(ort, "CPUExecutionProvider")
        if not cpu.initialised:
            problems.append(f"the CPU provider does not work: {cpu.detail}")
        if device != "cpu":
            cuda = check_provider(ort, "CUDAExecutionProvider")
            if not cuda.initialised:
                if device == "cuda":
                    problems.append(f"CUDA requested but unusable: {cuda.detail}")
                elif cuda.listed:
                    warnings.append(f"{cuda.detail}; classify will run on the CPU")

    location = models if models is not None else default_models_location()
    infos: list[ModelInfo] = []
    if location is None:
        problems.append(f"no models directory: set {MODELS_ENV} or pass --models")
    else:
        paths = find_models(location)
        if not paths:
            problems.append(f"no .onnx model found in {location}; set {MODELS_ENV} or pass "
                            "--models")
        elif ort is not None:
            infos = [inspect_model(ort, p) for p in paths]
            problems.extend(i.problem for i in infos if i.problem)
            warnings.extend(f"model {i.name} is a placeholder (untrained weights): its "
                            "probabilities mean nothing" for i in infos
                            if i.metadata.get("galmerge.placeholder") in ("1", "true"))

    return DoctorReport(
        galmerge_version=__version__,
        python=f"{platform.python_implementation()} {platform.python_version()} "
               f"({sys.executable})",
        platform=f"{platform.system()} {platform.release()} {platform.machine()}"
                 f" ({struct.calcsize('P') * 8}-bit)",
        device=device,
        ort_distributions=dists,
        ort_shadowed=shadowed,
        ort_version=getattr(ort, "__version__", None),
        ort_build_device=ort.get_device() if ort is not None else None,
        available_providers=providers,
        cuda=cuda,
        models_dir=str(location) if location is not None else None,
        models=infos,
        problems=problems,
        warnings=warnings,
    )


def format_report(report: DoctorReport) -> str:
    """Human-readable multi-line report."""
    dists = ", ".join(f"{k} {v}" for k, v in report.ort_distributions.items()) or "none"
    cuda = report.cuda
    cuda_line = ("yes (" + cuda.detail + ")" if cuda.initialised
                 else ("no" + (f" - {cuda.detail}" if cuda.detail else "")))
    lines = [
        f"galmerge      {report.galmerge_version}",
        f"python        {report.python}",
        f"platform      {report.platform}",
        f"onnxruntime   {report.ort_version or 'not importable'} (installed: {dists}; "
        f"build: {report.ort_build_device or '-'})",
        *(f"              (shadowed, unused: {s})" for s in report.ort_shadowed),
        f"providers     {', '.join(report.available_providers) or 'none'}",
        f"CUDA usable   {cuda_line}",
        f"models        {report.models_dir or 'none'}",
    ]
    for m in report.models:
        state = "ok" if m.problem is None else "PROBLEM"
        lines.append(f"  {m.name:<22} {state:<7} sha256 {m.sha256[:16]}  "
                     f"{m.summary or '-'}")
    lines.extend(f"warning: {w}" for w in report.warnings)
    lines.extend(f"problem: {p}" for p in report.problems)
    lines.append("status        " + ("healthy" if report.healthy
                                      else f"unhealthy: {report.reason}"))
    return "\n".join(lines)
