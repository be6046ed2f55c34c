"""ONNX Runtime session: one per process, fixed-size batches, CPU or CUDA.

:class:`OnnxClassifier` opens a galmerge ONNX model once, reads its input
convention from the model's metadata (the model file is the only thing
inference knows about a model), and scores (N, C, S, S) float32 images in the
model's convention in fixed-size batches (the last one padded), so that the
CUDA provider sees one input shape and the CPU provider one set of buffers.

Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from galmerge.conventions import METADATA_PREFIX, ModelConvention
from galmerge.errors import GalmergeError
from galmerge.inference.model_checks import check_batch_output, check_output_shape

__all__ = [
    "CPU",
    "CUDA",
    "DEFAULT_BATCH_SIZE",
    "DEVICES",
    "RUNTIME_EXTRAS",
    "OnnxClassifier",
    "available_cpus",
    "file_sha256",
    "import_onnxruntime",
]

DEVICES = ("auto", "cpu", "cuda")
DEFAULT_BATCH_SIZE = 256
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


#: The extras that bring an ONNX Runtime (exactly one of them).
RUNTIME_EXTRAS = ("galmerge[cpu]", "galmerge[gpu]")


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or a one-line :class:`GalmergeError` naming the extra.

    The core install deliberately has no ONNX Runtime: pip extras can only add
    packages, and ``onnxruntime`` beside ``onnxruntime-gpu`` silently loses the
    CUDA provider, so the runtime comes from exactly one of ``galmerge[cpu]``
    or ``galmerge[gpu]`` (see pyproject.toml).
    """
    try:
        import onnxruntime
    except ImportError:
        raise GalmergeError(
            "ONNX Runtime is not installed (the core galmerge install leaves it to an extra)",
            hint=f"pip install '{RUNTIME_EXTRAS[0]}', or '{RUNTIME_EXTRAS[1]}' for CUDA "
                 "(never both)") from None
    return onnxruntime


def available_cpus() -> int:
    """CPU cores this process may use: affinity mask, cgroup quota, physical cores.

    The smallest of: the CPUs in the affinity mask (``taskset``, Slurm, Dask
    worker pinning), the cgroup CPU quota (Docker ``--cpus``, Kubernetes
    limits) rounded up, and the number of physical cores (hyper-threads do
    not speed up convolutions).
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, int(np.ceil(quota))))
    try:
        import psutil

        phys = psutil.cpu_count(logical=False)
        if phys:
            n = min(n, phys)
    except ImportError:  # pragma: no cover - psutil is a core dependency
        pass
    return max(1, n)


def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max`` or v1 CFS quota), or None."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return float(text[0]) / float(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        p = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return q / p if q > 0 and p > 0 else None
    except (OSError, ValueError):
        return None


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file (streamed)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class OnnxClassifier:
    """A galmerge ONNX model ready to score images.

    Args:
        model_path: an ``.onnx`` file written by ``galmerge export``.
        device: ``cpu``; ``cuda`` (fails if the CUDA provider cannot be used);
            or ``auto`` (CUDA when available, else CPU).
        batch_size: images per model call; every call has exactly this many
            rows (the last batch is padded), so the GPU sees one shape.
        threads: intra-op threads for the CPU provider (default: the cores
            available to this process, :func:`available_cpus`).

    Attributes:
        convention: the model's input convention (from its metadata).
        metadata: all ``metadata_props`` of the model.
        providers: the providers the session really uses.
        name, sha256, placeholder: for run metadata and warnings.

    Raises:
        GalmergeError: missing file, not ONNX, input not N×C×H×W, output
            missing, no galmerge metadata, or CUDA demanded but unavailable.
    """

    def __init__(self, model_path: str | Path, *, device: str = "auto",
                 batch_size: int = DEFAULT_BATCH_SIZE, threads: int | None = None) -> None:
        ort = import_onnxruntime()
        p = Path(model_path)
        if device not in DEVICES:
            raise GalmergeError(f"unknown device {device!r}", hint="use auto, cpu or cuda")
        if batch_size < 1:
            raise GalmergeError(f"batch size must be at least 1, got {batch_size}")
        if not p.is_file():
            raise GalmergeError(f"{p}: model file not found",
                                hint="pass --model PATH.onnx (see `galmerge export`)")
        self.path = p
        self.batch_size = int(batch_size)
        self.threads = int(threads) if threads else available_cpus()
        available = ort.get_available_providers()
        if device == "cuda" and CUDA not in available:
            raise GalmergeError(
                f"--device cuda, but this ONNX Runtime has no CUDA provider (available: "
                f"{', '.join(available)})",
                hint="install onnxruntime-gpu (and not onnxruntime), or use --device cpu")
        if device == "cuda" or (device == "auto" and CUDA in available):
            providers: list[Any] = [(CUDA, {"cudnn_conv_algo_search": "HEURISTIC",
                                            "do_copy_in_default_stream": "1"}), CPU]
        else:
            providers = [CPU]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(p), opts, providers=providers)
        except Exception as exc:  # ORT raises InvalidProtobuf, Fail, InvalidGraph, ...
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            raise GalmergeError(f"{p}: not a loadable ONNX model ({type(exc).__name__}: {first})",
                                hint="pass a .onnx file written by `galmerge export`") from None
        self.providers = list(self.session.get_providers())
        if device == "cuda" and (not self.providers or self.providers[0] != CUDA):
            raise GalmergeError(
                f"{p}: --device cuda, but ONNX Runtime could not use the CUDA provider "
                f"(available: {', '.join(available)}; in use: {', '.join(self.providers)})",
                hint="install onnxruntime-gpu (and not onnxruntime) with matching CUDA 12/cuDNN 9 "
                     "libraries, or use --device cpu")
        self.device = "cuda" if self.providers and self.providers[0] == CUDA else "cpu"
        self._check_io(p)
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.convention = ModelConvention.from_metadata(self.metadata, source=str(p))
        if self._static_hw and self._static_hw != self.convention.size:
            raise GalmergeError(f"{p}: input is {self._static_hw}px but the metadata says "
                                f"{self.convention.size}px")
        if self._channels != len(self.convention.bands):
            raise GalmergeError(f"{p}: input has {self._channels} channels but the metadata lists "
                                f"bands {','.join(self.convention.bands)}")
        self.name = self.metadata.get(METADATA_PREFIX + "model_name", p.stem)
        self.placeholder = self.metadata.get(METADATA_PREFIX + "placeholder", "0") == "1"
        self.sha256 = file_sha256(p)
        size = self.convention.size
        self._buffer = np.zeros((self.batch_size, self._channels, size, size), dtype=np.float32)

    def _check_io(self, p: Path) -> None:
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise GalmergeError(f"{p}: model has {len(inputs)} inputs, expected one image input")
        inp = inputs[0]
        shape = list(inp.shape)
        ok = (len(shape) == 4 and isinstance(shape[1], int) and shape[1] in (1, 3, 4)
              and (not isinstance(shape[2], int) or not isinstance(shape[3], int)
                   or shape[2] == shape[3]))
        if not ok or inp.type != "tensor(float)":
            raise GalmergeError(
                f"{p}: model input {inp.name!r} is {inp.type} {shape}, expected float32 N×3×H×W",
                hint="export image models with `galmerge export`")
        if isinstance(shape[0], int) and shape[0] != 1:
            # A fixed batch dimension: use it.
            self.batch_size = shape[0]
        self._input = inp.name
        self._channels = int(shape[1])
        self._static_hw = shape[2] if isinstance(shape[2], int) else None
        outs = {o.name: o for o in self.session.get_outputs()}
        members = outs.get("p_members")
        #: Members of a seed ensemble (its ``p_members`` output), 1 for a single model.
        self.n_members = (int(members.shape[1]) if members is not None and len(members.shape) == 2
                          and isinstance(members.shape[1], int) else 1)
        if "p_merger" in outs:
            self._output = "p_merger"
            check_output_shape(outs["p_merger"].shape, str(p))
        else:
            raise GalmergeError(f"{p}: model has no output 'p_merger' (outputs: "
                                f"{', '.join(outs)})", hint="export it with `galmerge export`")

    def _model_input(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` as the model's fixed-size float32 input (padded with zeros; no copy
        when it already is one)."""
        k = batch.shape[0]
        if k == self.batch_size and batch.dtype == np.float32 and batch.flags.c_contiguous:
            return batch
        x = self._buffer
        x[:k] = batch
        if k < self.batch_size:
            x[k:] = 0.0
        return x

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """Score exactly one batch (k <= batch_size images); returns float32 (k,)."""
        k = batch.shape[0]
        x = self._model_input(batch)
        p = check_batch_output(self.session.run([self._output], {self._input: x})[0],
                               self.batch_size, str(self.path))
        return p[:k]

    def run_batch_members(self, batch: np.ndarray) -> np.ndarray:
        """Like :meth:`run_batch`, but each member's score of an ensemble: float32 (k, M);
        (k,) for a single model."""
        if self.n_members == 1:
            return self.run_batch(batch)
        k = batch.shape[0]
        m = np.asarray(self.session.run(["p_members"],
                                        {self._input: self._model_input(batch)})[0])
        if m.shape != (self.batch_size, self.n_members) or m.dtype.kind not in "fiub":
            raise GalmergeError(f"{self.path}: output p_members is {m.dtype} {m.shape} for a "
                                f"batch of {self.batch_size}, expected ({self.batch_size}, "
                                f"{self.n_members})", hint="build ensembles with galmerge.ensemble")
        return m[:k].astype(np.float32, copy=False)

    def predict(self, images: np.ndarray, *,
                progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Merger probabilities for (N, C, S, S) float32 images in the model's convention."""
        n = images.shape[0]
        out = np.empty(n, dtype=np.float32)
        for start in range(0, n, self.batch_size):
            stop = min(n, start + self.batch_size)
            out[start:stop] = self.run_batch(images[start:stop])
            if progress is not None:
                progress(stop - start)
        return out

    def describe(self) -> dict[str, Any]:
        """Plain-JSON description for run metadata."""
        return {
            "name": self.name, "path": str(self.path), "sha256": self.sha256,
            "placeholder": self.placeholder, "device": self.device,
            "providers": self.providers, "batch_size": self.batch_size,
            "threads": self.threads,
            "convention": json.loads(json.dumps(self.convention.to_dict())),
            "galmerge_version": self.metadata.get(METADATA_PREFIX + "version", ""),
            "created": self.metadata.get(METADATA_PREFIX + "created", ""),
        }
