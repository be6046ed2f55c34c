"""Seed ensembles as one ONNX graph: the mean of the members' merger probabilities.

A deep ensemble (Lakshminarayanan, Pritzel & Blundell 2017, NeurIPS, §2.4) predicts with
the uniform mixture of its M members,

    p_merger(x) = (1/M) Σ_m p_m(merger | x),

here M galmerge models trained with the same recipe and different seeds. The combined
graph shares one input (the members' common pixel convention; each member keeps its own
normalisation inside), runs every member and has two outputs:

* ``p_merger`` (N,): the mixture above -- what ``classify`` ranks and thresholds;
* ``p_members`` (N, M): each member's probability, from which ``classify`` takes the
  per-row spread (:mod:`galmerge.inference.views`) at no extra model cost.

The members' ``galmerge.*`` convention metadata must agree; the ensemble's own metadata
starts from the first member's, records the members and their sha256, and takes the
calibration (threshold, curve, OOD ranges) measured for the ensemble. Torch-free
(``onnx`` and ONNX Runtime only), so ensembles can be built where models are deployed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from galmerge.atomic import write_bytes_atomic
from galmerge.conventions import METADATA_PREFIX
from galmerge.errors import GalmergeError
from galmerge.inference.calibration import ModelCalibration
from galmerge.inference.engine import import_onnxruntime
from galmerge.inference.paths import same_file

__all__ = ["MEMBERS_NAME", "EnsembleResult", "combine_onnx"]

INPUT_NAME = "images"
OUTPUT_NAME = "p_merger"
#: Second output of an ensemble: (N, M) member probabilities.
MEMBERS_NAME = "p_members"
#: Keys that describe a member alone and do not carry over to the ensemble.
_MEMBER_ONLY = ("checkpoint_sha256", "epoch", "config_hash", "normalisation",
                "parity_max_abs_diff", "outputs", "model_name", "created",
                "decision_threshold", "decision_rule", "calibration", "ood_ranges",
                "train_merger_fraction")
#: The largest |ensemble - mean of members| accepted by the parity check.
PARITY_TOLERANCE = 1e-5


@dataclass
class EnsembleResult:
    """What :func:`combine_onnx` wrote and measured."""

    path: Path
    sha256: str
    metadata: dict[str, str]
    parity_max_abs_diff: float
    members: list[str] = field(default_factory=list)


def _load(path: Path) -> Any:
    import onnx

    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise GalmergeError(f"{path}: not an ONNX model ({type(exc).__name__})",
                            hint="give exported galmerge .onnx files") from None
    names_in = [i.name for i in proto.graph.input]
    names_out = [o.name for o in proto.graph.output]
    if names_in != [INPUT_NAME] or OUTPUT_NAME not in names_out:
        raise GalmergeError(f"{path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
                            f"found inputs {names_in}, outputs {names_out}",
                            hint="members must be models written by `galmerge export`")
    if MEMBERS_NAME in names_out:
        raise GalmergeError(f"{path}: is already an ensemble", hint="combine single models")
    if len(proto.functions):
        raise GalmergeError(f"{path}: has ONNX local functions, which cannot be merged",
                            hint="re-export the member with `galmerge export`")
    return proto


def _metadata(proto: Any) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def _check_compatible(protos: Sequence[Any], paths: Sequence[Path]) -> None:
    """Same input shape, opsets and convention for every member."""
    ref_meta = {k: v for k, v in _metadata(protos[0]).items()
                if k.startswith(METADATA_PREFIX) and k[len(METADATA_PREFIX):] not in _MEMBER_ONLY
                and k != METADATA_PREFIX + "version"}
    ref_ops = {(o.domain, o.version) for o in protos[0].opset_import}
    ref_shape = [d.dim_value for d in protos[0].graph.input[0].type.tensor_type.shape.dim[1:]]
    for proto, path in zip(protos[1:], paths[1:], strict=True):
        meta = _metadata(proto)
        for k, v in ref_meta.items():
            if meta.get(k) != v:
                raise GalmergeError(f"{path}: metadata {k} = {meta.get(k)!r} differs from "
                                    f"{paths[0]} ({v!r})",
                                    hint="ensemble members must share one pixel convention")
        if {(o.domain, o.version) for o in proto.opset_import} != ref_ops:
            raise GalmergeError(f"{path}: opset differs from {paths[0]}",
                                hint="export all members with the same --opset")
        shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]]
        if shape != ref_shape:
            raise GalmergeError(f"{path}: input shape {shape} differs from {ref_shape}")


def _merge_graphs(protos: Sequence[Any], name: str) -> Any:
    """One graph: shared input, every member's nodes, mean and per-member outputs."""
    import onnx
    from onnx import TensorProto, helper

    nodes, inits, infos, member_outs = [], [], [], []
    for i, proto in enumerate(protos):
        g = onnx.compose.add_prefix(proto, f"m{i}/", rename_inputs=False).graph
        nodes += list(g.node)
        inits += list(g.initializer)
        infos += list(g.value_info)
        out = f"m{i}/{OUTPUT_NAME}"
        nodes.append(helper.make_node("Unsqueeze", [out, "ensemble/axis1"], [f"{out}:col"],
                                      name=f"ensemble/unsqueeze{i}"))
        member_outs.append(f"{out}:col")
    axis = helper.make_tensor("ensemble/axis1", TensorProto.INT64, [1], [1])
    nodes.append(helper.make_node("Concat", member_outs, [MEMBERS_NAME], axis=1,
                                  name="ensemble/concat"))
    nodes.append(helper.make_node("ReduceMean", [MEMBERS_NAME, "ensemble/axis1"], [OUTPUT_NAME],
                                  keepdims=0, name="ensemble/mean"))
    batch = protos[0].graph.input[0].type.tensor_type.shape.dim[0].dim_param or "batch"
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [batch]),
               helper.make_tensor_value_info(MEMBERS_NAME, TensorProto.FLOAT,
                                             [batch, len(protos)])]
    graph = helper.make_graph(nodes, name, [protos[0].graph.input[0]], outputs,
                              initializer=[*inits, axis], value_info=infos)
    model = helper.make_model(graph, opset_imports=list(protos[0].opset_import))
    model.ir_version = protos[0].ir_version
    return model


def _parity(blob: bytes, member_blobs: Sequence[bytes], size: tuple[int, int, int],
            seed: int) -> float:
    """max |ensemble p_merger - mean of members run alone| on random pixels in 0..255."""
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    x = (np.random.default_rng(seed).random((64, *size), dtype=np.float32) * 255.0)
    sess = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
    p, members = sess.run([OUTPUT_NAME, MEMBERS_NAME], {INPUT_NAME: x})
    alone = np.stack([ort.InferenceSession(b, opts, providers=["CPUExecutionProvider"]).run(
        [OUTPUT_NAME], {INPUT_NAME: x})[0] for b in member_blobs], axis=1)
    return float(max(np.max(np.abs(members - alone)), np.max(np.abs(p - alone.mean(axis=1)))))


def combine_onnx(members: Sequence[str | Path], out: str | Path, *,
                 model_name: str | None = None, calibration: ModelCalibration | None = None,
                 created: str | None = None, seed: int = 0) -> EnsembleResult:
    """Write one ONNX model whose ``p_merger`` is the mean of ``members``' (see module doc).

    Args:
        members: two or more exported galmerge models of one pixel convention.
        out: the ``.onnx`` file to write (atomically; never one of the members).
        model_name: name recorded in the metadata (default: the output file stem).
        calibration: threshold, curve and OOD ranges measured for the ensemble.
        created: creation date (ISO 8601) to record; default the first member's.
        seed: seed of the random parity inputs.

    Raises:
        GalmergeError: fewer than two members, an unreadable or incompatible member,
            ``out`` naming a member, or a parity failure (nothing is written then).
    """
    import onnx

    paths = [Path(m) for m in members]
    out = Path(out)
    if len(paths) < 2:
        raise GalmergeError(f"an ensemble needs at least two members, got {len(paths)}")
    if out.suffix.lower() != ".onnx":
        raise GalmergeError(f"{out}: the output must end in .onnx")
    if any(same_file(out, p) for p in paths if out.exists()):
        raise GalmergeError(f"{out}: is one of the members; choose another output")
    protos = [_load(p) for p in paths]
    _check_compatible(protos, paths)
    model = _merge_graphs(protos, model_name or out.stem)
    meta = {k: v for k, v in _metadata(protos[0]).items()
            if not k.startswith(METADATA_PREFIX) or k[len(METADATA_PREFIX):] not in _MEMBER_ONLY}
    meta |= {METADATA_PREFIX + "model_name": model_name or out.stem,
             METADATA_PREFIX + "created": created or _metadata(protos[0]).get(
                 METADATA_PREFIX + "created", ""),
             METADATA_PREFIX + "outputs": f"{OUTPUT_NAME},{MEMBERS_NAME}",
             METADATA_PREFIX + "ensemble_members": json.dumps(
                 [{"file": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                   "model_name": _metadata(pr).get(METADATA_PREFIX + "model_name", "")}
                  for p, pr in zip(paths, protos, strict=True)]),
             **(calibration.to_metadata() if calibration is not None else {})}
    onnx.helper.set_model_props(model, meta)
    model.producer_name = "galmerge"
    model.doc_string = (f"galmerge ensemble of {len(paths)} merger classifiers; input "
                        f"{INPUT_NAME}, outputs {OUTPUT_NAME} (N,) = mean of {MEMBERS_NAME} "
                        f"(N,{len(paths)})")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # onnx raises ValidationError / InferenceError
        raise GalmergeError(f"{out}: combined graph fails onnx.checker ({exc})") from None
    blob = model.SerializeToString()
    shape = tuple(d.dim_value for d in protos[0].graph.input[0].type.tensor_type.shape.dim[1:])
    diff = _parity(blob, [p.SerializeToString() for p in protos], shape, seed)  # type: ignore[arg-type]
    if not diff <= PARITY_TOLERANCE:
        raise GalmergeError(f"ensemble and members disagree by {diff:.2e} > "
                            f"{PARITY_TOLERANCE:g}; refusing to write {out}")
    write_bytes_atomic(out, blob)
    return EnsembleResult(path=out, sha256=hashlib.sha256(blob).hexdigest(), metadata=meta,
                          parity_max_abs_diff=diff, members=[str(p) for p in paths])

