"""Checkpoint -> self-describing ONNX model, checked against PyTorch.

The exported graph is ``images`` (N, 3, S, S) float32 *in the pixel convention
of the chosen domain* -> ``(x - mean) / std`` (that domain's normalisation,
folded into the graph) -> the network -> ``softmax[:, merger]`` ->
``p_merger`` (N,), and optionally the latent ``features`` (N, F). Everything
inference needs to know about the model travels in ``metadata_props`` (keys
prefixed ``galmerge.``): the input convention
(:meth:`~galmerge.conventions.ModelConvention.to_metadata`), the
normalisation, architecture, config hash, version, date, and whether the model
is a placeholder.

Before anything is written, the graph is checked with ``onnx.checker``
(full check) and ONNX Runtime is compared with PyTorch on fresh random inputs
and on real images at batch 1 and batch 1000; a model whose
max |Δp| exceeds :data:`PARITY_TOLERANCE` is refused and no file is left
behind. The model and its card (``OUT.md``) are written atomically.

Needs torch, onnx and onnxscript (the ``train`` extra); never imported by
:mod:`galmerge.inference`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from galmerge import __version__
from galmerge.conventions import (
    METADATA_PREFIX,
    SDSS_COLOUR_JPEG,
    SDSS_RGB_BANDS,
    ModelConvention,
    Normalisation,
    to_convention,
)
from galmerge.data.images import prepare, read_image
from galmerge.errors import GalmergeError
from galmerge.inference.calibration import ModelCalibration
from galmerge.inference.engine import import_onnxruntime
from galmerge.training.checkpoint import Checkpoint, load_checkpoint

__all__ = [
    "DEFAULT_OPSET",
    "EXAMPLE_CUTOUTS",
    "FEATURES_NAME",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "PARITY_BATCHES",
    "PARITY_TOLERANCE",
    "ExportResult",
    "calibration_card",
    "export_onnx",
    "render_model_card",
    "sdss_example_convention",
]

#: Maximum |p_onnx - p_torch| accepted at export (issue 4).
PARITY_TOLERANCE = 1e-5
#: Default ONNX opset: supported by every ONNX Runtime >= 1.14 and by the dynamo exporter.
DEFAULT_OPSET = 18
#: Batch sizes checked against PyTorch (issue 4: batch 1 and batch 1000).
PARITY_BATCHES = (1, 1000)
INPUT_NAME = "images"
OUTPUT_NAME = "p_merger"
FEATURES_NAME = "features"
#: The bundled real SDSS example (present in a source checkout, not in a wheel).
EXAMPLE_CUTOUTS = Path(__file__).resolve().parents[1] / "catalogs" / "sdss_example" / "cutouts"


class _ExportWrapper(nn.Module):
    """Normalisation folded in front of the network, merger probability out."""

    def __init__(self, model: nn.Module, norm: Normalisation, merger_index: int,
                 with_features: bool) -> None:
        super().__init__()
        self.model = model
        self.merger_index = merger_index
        self.with_features = with_features
        self.register_buffer("mean", torch.tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> Any:
        x = (images - cast(torch.Tensor, self.mean)) / cast(torch.Tensor, self.std)
        feats = self.model.features(x)  # type: ignore[operator]
        p = torch.softmax(self.model.classify(feats), dim=1)[:, self.merger_index]  # type: ignore[operator]
        if self.with_features:
            return p, feats
        return p


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and measured."""

    path: Path
    card: Path
    sha256: str
    metadata: dict[str, str]
    parity: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def export_onnx(
    ckpt: str | Path | Checkpoint,
    out: str | Path,
    *,
    domain: str = "target",
    opset: int = DEFAULT_OPSET,
    with_features: bool = False,
    model_name: str | None = None,
    placeholder: bool | None = None,
    parity_images: list[Path] | None = None,
    created: str | None = None,
    seed: int = 0,
    calibration: ModelCalibration | None = None,
) -> ExportResult:
    """Export a checkpoint to ONNX, verify it, and write it with a model card.

    Args:
        ckpt: a checkpoint path (``best.pt``) or a loaded :class:`Checkpoint`.
        out: the ``.onnx`` file to write; the card goes to ``out`` with ``.md``.
        domain: whose pixel convention and normalisation the model takes
            (``target`` = the survey domain the model is deployed on, or ``source``).
        opset: ONNX opset version.
        with_features: also output the latent ``features`` (N, F).
        model_name: name recorded in the metadata (default: the output file stem).
        placeholder: mark as a placeholder, not a science model (default: the
            checkpoint config's ``placeholder`` flag).
        parity_images: real cutout files for the parity check (default: the
            bundled SDSS example when present and convertible).
        created: creation date (ISO 8601) to record; default now (UTC).
        seed: seed of the random parity inputs.
        calibration: training merger fraction, decision threshold and rule,
            calibration curve and OOD ranges to store (``galmerge.*`` keys, issue 11).

    Returns:
        :class:`ExportResult` with the paths, sha256, metadata and parity numbers.

    Raises:
        GalmergeError: unknown domain, checker failure, or parity above
            :data:`PARITY_TOLERANCE` (nothing is written then).
    """
    ck = ckpt if isinstance(ckpt, Checkpoint) else load_checkpoint(ckpt)
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise GalmergeError(f"{out}: the output must end in .onnx")
    spec = _ExportSpec.of(ck, domain, name=model_name or out.stem, opset=opset,
                          with_features=with_features, placeholder=placeholder)
    wrapper, proto = _build(ck, spec)
    meta = _metadata(ck, spec, created=created, calibration=calibration)
    # Parity before anything touches the disk.
    parity, notes = _check_parity(proto.SerializeToString(), wrapper, spec.conv, spec.norm,
                                  seed=seed, parity_images=parity_images)
    meta[METADATA_PREFIX + "parity_max_abs_diff"] = json.dumps(
        {k: v for k, v in parity.items() if isinstance(v, float)}, sort_keys=True)
    blob = _finish_proto(proto, ck, spec, meta, out)
    card = _card(ck, spec, meta, parity, notes, calibration)
    out.parent.mkdir(parents=True, exist_ok=True)
    card_path = out.with_suffix(".md")
    _atomic_write(out, blob)
    _atomic_write(card_path, card.encode())
    return ExportResult(path=out, card=card_path, sha256=hashlib.sha256(blob).hexdigest(),
                        metadata=meta, parity=parity, notes=notes)


@dataclass(frozen=True)
class _ExportSpec:
    """What one export is: the domain's convention and normalisation, and the options."""

    domain: str
    conv: ModelConvention
    norm: Normalisation
    merger_index: int
    name: str
    opset: int
    with_features: bool
    placeholder: bool

    @classmethod
    def of(cls, ck: Checkpoint, domain: str, *, name: str, opset: int, with_features: bool,
           placeholder: bool | None) -> _ExportSpec:
        """Check that the checkpoint can be exported for ``domain``."""
        if domain not in ck.conventions or domain not in ck.normalisation:
            have = sorted(set(ck.conventions) & set(ck.normalisation))
            raise GalmergeError(
                f"{ck.path}: checkpoint has no convention/normalisation for domain {domain!r}",
                hint=f"use --domain {' or '.join(have) if have else 'source|target'}")
        conv, norm = ck.conventions[domain], ck.normalisation[domain]
        if len(norm.mean) != len(conv.bands):
            raise GalmergeError(f"{ck.path}: normalisation of {domain!r} has {len(norm.mean)} "
                                f"channels but the convention has {len(conv.bands)} bands")
        if "merger" not in conv.class_names:
            raise GalmergeError(f"{ck.path}: class names {conv.class_names} have no 'merger'")
        if placeholder is None:
            placeholder = bool(ck.config.get("placeholder", False))
        return cls(domain=domain, conv=conv, norm=norm,
                   merger_index=list(conv.class_names).index("merger"), name=name, opset=opset,
                   with_features=with_features, placeholder=bool(placeholder))


def _build(ck: Checkpoint, spec: _ExportSpec) -> tuple[nn.Module, Any]:
    """The network with its normalisation in front, and its ONNX graph."""
    wrapper = _ExportWrapper(ck.build("cpu"), spec.norm, spec.merger_index,
                             spec.with_features).eval()
    proto = _export_graph(wrapper, len(spec.conv.bands), spec.conv.size, spec.opset,
                          spec.with_features)
    return wrapper, proto


def _metadata(ck: Checkpoint, spec: _ExportSpec, *, created: str | None,
              calibration: ModelCalibration | None) -> dict[str, str]:
    """The ``galmerge.*`` metadata_props (all but the parity numbers)."""
    outputs = OUTPUT_NAME + ("," + FEATURES_NAME if spec.with_features else "")
    return {
        METADATA_PREFIX + "version": __version__,
        METADATA_PREFIX + "model_name": spec.name,
        METADATA_PREFIX + "architecture": ck.arch,
        METADATA_PREFIX + "arch_kwargs": json.dumps(ck.arch_kwargs, sort_keys=True),
        METADATA_PREFIX + "config_hash": ck.config_hash(),
        METADATA_PREFIX + "domain": spec.domain,
        METADATA_PREFIX + "normalisation": json.dumps(spec.norm.to_dict()),
        METADATA_PREFIX + "normalisation_in_graph": "1",
        METADATA_PREFIX + "created": created or _dt.datetime.now(_dt.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"),
        METADATA_PREFIX + "placeholder": "1" if spec.placeholder else "0",
        METADATA_PREFIX + "epoch": str(ck.epoch),
        METADATA_PREFIX + "outputs": outputs,
        METADATA_PREFIX + "checkpoint_sha256": _sha256(Path(ck.path)) if Path(ck.path).is_file()
        else "",
        **spec.conv.to_metadata(),
        **(calibration.to_metadata() if calibration is not None else {}),
    }


def _finish_proto(proto: Any, ck: Checkpoint, spec: _ExportSpec, meta: dict[str, str],
                  out: Path) -> bytes:
    """Metadata and producer into the graph, ``onnx.checker`` (full), the file's bytes."""
    import onnx

    conv = spec.conv
    onnx.helper.set_model_props(proto, meta)
    proto.producer_name = "galmerge"
    proto.producer_version = __version__
    proto.doc_string = (f"galmerge {ck.arch} merger classifier ({spec.name}); input "
                        f"{INPUT_NAME} (N,{len(conv.bands)},{conv.size},{conv.size}) float32 in "
                        f"the {conv.pixel_convention} convention, output {OUTPUT_NAME} (N,)"
                        + (" [PLACEHOLDER, not a science model]" if spec.placeholder else ""))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # onnx raises ValidationError / InferenceError
        raise GalmergeError(f"{out}: exported graph fails onnx.checker ({exc})") from None
    return proto.SerializeToString()


def _card(ck: Checkpoint, spec: _ExportSpec, meta: dict[str, str], parity: dict[str, Any],
          notes: list[str], calibration: ModelCalibration | None) -> str:
    """The model card: metrics from ``metrics.json`` beside the checkpoint, or its own."""
    metrics = _read_metrics(Path(ck.path).parent / "metrics.json") or dict(ck.metrics)
    card = render_model_card(ck, name=spec.name, domain=spec.domain, conv=spec.conv,
                             norm=spec.norm, meta=meta, metrics=metrics, parity=parity,
                             notes=notes, placeholder=spec.placeholder, opset=spec.opset,
                             with_features=spec.with_features)
    return card + calibration_card(calibration)


def _export_graph(wrapper: nn.Module, channels: int, size: int, opset: int,
                  with_features: bool) -> Any:
    """Run the dynamo exporter with a symbolic batch axis; returns the ModelProto.

    The dynamo exporter (the default in torch 2.13) folds BatchNorm into the
    convolutions and gives a clean 19-node graph for DeepMerge; its chatter
    goes to a buffer and is shown only if the export fails.
    """
    example = torch.rand(2, channels, size, size) * 255.0
    outputs = [OUTPUT_NAME, FEATURES_NAME] if with_features else [OUTPUT_NAME]
    batch = torch.export.Dim("batch", min=1)
    chatter = io.StringIO()
    try:
        with (warnings.catch_warnings(), contextlib.redirect_stdout(chatter),
              contextlib.redirect_stderr(chatter), _quiet_torch_logs()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapper, (example,), dynamo=True, input_names=[INPUT_NAME],
                output_names=outputs, dynamic_shapes={"images": {0: batch}},
                opset_version=opset, external_data=False, optimize=True, verbose=False)
    except Exception as exc:
        raise GalmergeError(
            f"ONNX export failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
            hint="see the exporter log: " + " | ".join(chatter.getvalue().splitlines()[-3:]),
        ) from None
    if program is None:  # pragma: no cover - only when f= is given
        raise GalmergeError("ONNX export returned no program")
    proto = program.model_proto
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    if not dims[0].dim_param or any(d.dim_value != v for d, v in
                                    zip(dims[1:], (channels, size, size), strict=True)):
        raise GalmergeError("ONNX export did not produce a (batch, C, S, S) input with a "
                            "symbolic batch axis")
    return proto


@contextlib.contextmanager
def _quiet_torch_logs() -> Any:
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                              "torch.fx", "onnxscript")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, old, strict=True):
            lg.setLevel(lvl)


def _random_inputs(n: int, conv: ModelConvention, norm: Normalisation,
                   rng: np.random.Generator) -> np.ndarray:
    """Fresh inputs spread like the domain's pixels (its mean and std per channel)."""
    c, s = len(conv.bands), conv.size
    mean = np.asarray(norm.mean, dtype=np.float32)[None, :, None, None]
    std = np.asarray(norm.std, dtype=np.float32)[None, :, None, None]
    x = mean + std * rng.standard_normal((n, c, s, s), dtype=np.float32) * 1.5
    if conv.pixel_convention == SDSS_COLOUR_JPEG:
        x = np.clip(x, 0.0, 255.0)
    return x.astype(np.float32)


def _real_inputs(conv: ModelConvention, files: list[Path] | None) -> tuple[np.ndarray | None, str]:
    """Real cutouts converted to the model's convention, or None and why not."""
    if files is None:
        if not EXAMPLE_CUTOUTS.is_dir():
            return None, "real-image parity skipped: bundled example not found (installed wheel)"
        files = sorted(EXAMPLE_CUTOUTS.iterdir())
    images = []
    for f in files:
        raw = read_image(f)
        try:
            px = to_convention(raw.pixels, raw.kind, raw.bands, conv, where=f.name)
        except GalmergeError as exc:
            return None, f"real-image parity skipped: {exc.message}"
        if px.shape[0] != len(conv.bands):
            return None, "real-image parity skipped: channel count differs"
        images.append(prepare(px, conv.size, conv.crop_fraction))
    if not images:
        return None, "real-image parity skipped: no images"
    return np.stack(images).astype(np.float32), f"real-image parity on {len(images)} cutouts"


def _check_parity(blob: bytes, wrapper: nn.Module, conv: ModelConvention, norm: Normalisation,
                  *, seed: int, parity_images: list[Path] | None
                  ) -> tuple[dict[str, Any], list[str]]:
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    parity: dict[str, Any] = {}
    notes: list[str] = []
    sets: list[tuple[str, np.ndarray]] = [
        (f"random_batch{n}", _random_inputs(n, conv, norm, rng)) for n in PARITY_BATCHES]
    real, note = _real_inputs(conv, parity_images)
    notes.append(note)
    if real is not None:
        # Real images alone (batch len) and tiled to batch 1000, and the first one at batch 1.
        reps = -(-PARITY_BATCHES[-1] // len(real))
        sets += [("real_batch1", real[:1]),
                 (f"real_batch{PARITY_BATCHES[-1]}", np.tile(real, (reps, 1, 1, 1))[
                     :PARITY_BATCHES[-1]])]
    worst = 0.0
    for label, x in sets:
        p_onnx = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        with torch.no_grad():
            res = wrapper(torch.from_numpy(x))
            p_torch = (res[0] if isinstance(res, tuple) else res).numpy()
        if p_onnx.shape != (len(x),):
            raise GalmergeError(f"ONNX output has shape {p_onnx.shape}, expected ({len(x)},)")
        diff = float(np.max(np.abs(p_onnx.astype(np.float64) - p_torch.astype(np.float64))))
        if not np.isfinite(diff):
            diff = float("inf")
        parity[label] = diff
        worst = max(worst, diff)
    parity["max"] = worst
    if worst > PARITY_TOLERANCE:
        detail = ", ".join(f"{k} {v:.2e}" for k, v in parity.items() if k != "max")
        raise GalmergeError(
            f"ONNX Runtime and PyTorch disagree by {worst:.2e} > {PARITY_TOLERANCE:g} "
            f"({detail}); refusing to write the model",
            hint="try another --opset, or report the architecture as an export bug")
    return parity, notes


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_metrics(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise GalmergeError(f"{path}: cannot write ({exc.strerror})") from None


def _fmt_metric(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt_metric(x)}" for k, x in v.items())
    return str(v)


def render_model_card(
    ck: Checkpoint, *, name: str, domain: str, conv: ModelConvention, norm: Normalisation,
    meta: dict[str, str], metrics: dict[str, Any], parity: dict[str, Any], notes: list[str],
    placeholder: bool, opset: int, with_features: bool,
) -> str:
    """The short Markdown model card written beside the ONNX file."""
    cfg = ck.config
    lines = [f"# Model card: {name}", ""]
    if placeholder:
        lines += ["> **PLACEHOLDER — not a science model.** Its weights are not trained to find "
                  "mergers; its probabilities carry no information. It exists so that the "
                  "inference path can be installed and exercised end to end, and will be "
                  "replaced by the trained SDSS model (issue 6). `galmerge classify` warns when "
                  "it runs this model.", ""]
        if cfg.get("note"):
            lines += [str(cfg["note"]), ""]
    lines += [
        "## Input and output", "",
        f"- input `{INPUT_NAME}`: float32 (N, {len(conv.bands)}, {conv.size}, {conv.size}), "
        f"pixel convention `{conv.pixel_convention}`, bands {','.join(conv.bands)} (channel order)",
        f"- stretch: {conv.stretch}",
        f"- cutout preparation: central {conv.crop_fraction:g} of the stored cutout, area-resized "
        f"to {conv.size}x{conv.size}",
        "- pixel scale: " + (f"{conv.pixel_scale_arcsec:g} arcsec per model pixel"
                             if conv.pixel_scale_arcsec else
                             (f"{conv.petro_scale_factor:g} x Petrosian radius per cutout pixel"
                              if conv.petro_scale_factor else "not fixed (see Data)")),
        f"- normalisation (inside the graph): mean {list(norm.mean)}, std {list(norm.std)} "
        f"(domain `{domain}`)",
        f"- output `{OUTPUT_NAME}`: probability of class `merger` (softmax over "
        f"{', '.join(conv.class_names)})" + (f"; `{FEATURES_NAME}`: latent features"
                                               if with_features else ""),
        f"- ONNX opset {opset}; galmerge {__version__}; architecture `{ck.arch}`; "
        f"config hash `{meta[METADATA_PREFIX + 'config_hash']}`; created "
        f"{meta[METADATA_PREFIX + 'created']}", "",
        "## Data", "",
    ]
    data_keys = [k for k in ("source", "target", "source_data", "target_data", "data",
                             "dataset") if k in cfg]
    if data_keys:
        lines += [f"- {k}: `{cfg[k]}`" for k in data_keys]
    else:
        lines.append("- not recorded in the checkpoint config")
    lines += ["", "## Method", ""]
    method_keys = [k for k in ("method", "losses", "loss", "epochs", "batch_size", "lr",
                               "optimizer", "seed") if k in cfg]
    lines += ([f"- {k}: `{cfg[k]}`" for k in method_keys] if method_keys
              else ["- not recorded in the checkpoint config"])
    lines += ["", "## Metrics", ""]
    if metrics:
        lines += [f"- {k}: {_fmt_metric(v)}" for k, v in sorted(metrics.items())]
    else:
        lines.append("- none recorded (no `metrics.json` beside the checkpoint)")
    lines += ["", "## Export check", ""]
    lines += [f"- max |p_onnx - p_torch| {k}: {v:.2e}" for k, v in parity.items()]
    lines += [f"- {n}" for n in notes]
    lines += [
        "", "## Limitations", "",
        "- The model sees only cutouts prepared exactly as above; other surveys, stretches, "
        "pixel scales or fields of view shift its inputs and its probabilities.",
        "- Probabilities are a classifier's scores, not calibrated merger fractions; check them "
        "against labelled data before using a threshold scientifically.",
        "- DeepMerge II (Ćiprijanović et al. 2021) reports that domain adaptation narrows but "
        "does not close the gap between the training domain and survey images.",
    ]
    return "\n".join(lines) + "\n"


def calibration_card(cal: ModelCalibration | None) -> str:
    """The model card's "Probabilities and threshold" section (issue 11)."""
    cal = cal or ModelCalibration()
    lines = ["", "## Probabilities and threshold", "",
             f"- training merger fraction: {cal.train_fraction:g}"
             + ("" if cal.train_merger_fraction is not None else " (not recorded; assumed)"),
             "- `classify` re-states `p_merger` for `--merger-fraction` (default 0.02, Darg et "
             "al. 2010a) by Bayes' rule; `p_merger_raw` is the score above"]
    if cal.score_map is not None:
        m = cal.score_map
        lines.append(f"- score map (Platt 1999) before the prior shift: p = sigmoid({m.a:.4f} "
                     f"logit(p_raw) {m.b:+.4f}), a probability at merger fraction "
                     f"{m.reference_merger_fraction:.4f} ({m.source or 'source not recorded'});"
                     " monotone, so rankings and thresholds are unchanged")
    choice = cal.default_choice()
    lines.append(f"- default threshold on the raw score: {choice.threshold:g} ({choice.rule})")
    if cal.curve is not None:
        ref = cal.curve.reference_merger_fraction
        pick = min(cal.curve.points, key=lambda p: abs(p.threshold - choice.threshold))
        e = cal.curve.expected(pick, ref)

        def ci(k: str) -> str:
            v = e.get(k + "_ci")
            return f" [{v[0]:.3f}, {v[1]:.3f}]" if v else ""
        lines.append(f"- at threshold {pick.threshold:g} and merger fraction {ref:g} "
                     f"({cal.curve.source}): purity {e['purity']:.3f}{ci('purity')}, "
                     f"completeness {e['completeness']:.3f}{ci('completeness')}, flagged "
                     f"fraction {e['flagged_fraction']:.4f}{ci('flagged_fraction')}")
    lines.append("- OOD ranges: " + (cal.ood.source or "recorded") if cal.ood is not None
                 else "- OOD ranges: none recorded (classify uses its generic checks only)")
    return "\n".join(lines) + "\n"


def sdss_example_convention() -> ModelConvention:
    """The convention of the SDSS colour-JPEG models (findings #2: crop 0.5, 75 px)."""
    return ModelConvention(
        pixel_convention=SDSS_COLOUR_JPEG, bands=SDSS_RGB_BANDS, size=75, crop_fraction=0.5,
        stretch="SDSS ImgCutout colour JPEG (Lupton et al. 2004 asinh)")
