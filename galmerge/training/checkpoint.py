"""Checkpoints: weights plus everything needed to use them, no pickled code.

A checkpoint is a plain dict of tensors, strings and numbers saved with
``torch.save`` and read back with ``torch.load(weights_only=True)``:

* ``format`` — ``galmerge-checkpoint/1``
* ``galmerge_version``
* ``arch``, ``arch_kwargs`` (JSON) — rebuilt with :func:`~galmerge.training.models.build_model`
* ``state_dict`` — the model's weights
* ``extra_state`` — other modules' weights (domain classifier, Fisher centres), by name
* ``config`` — the full training configuration (JSON of the config dataclass)
* ``normalisation`` — JSON ``{domain: {"mean": [...], "std": [...]}}``, computed on the
  training split of each domain
* ``conventions`` — JSON ``{domain: ModelConvention dict}``, the pixel convention of each domain
* ``epoch``, ``metrics`` (JSON)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from galmerge import __version__
from galmerge.conventions import ModelConvention, Normalisation
from galmerge.errors import GalmergeError
from galmerge.training.models import build_model

__all__ = [
    "FORMAT",
    "Checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]

FORMAT = "galmerge-checkpoint/1"


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    path: str
    arch: str
    arch_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    normalisation: dict[str, Normalisation]
    conventions: dict[str, ModelConvention]
    epoch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    extra_state: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    galmerge_version: str = ""

    def build(self, device: str | torch.device = "cpu") -> nn.Module:
        """The model with these weights, in eval mode."""
        model = build_model(self.arch, **self.arch_kwargs)
        model.load_state_dict(self.state_dict)
        return model.to(device).eval()

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of the training config (first 16 hex digits)."""
        blob = json.dumps(self.config, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def save_checkpoint(
    path: str | Path, model: nn.Module, *, arch: str, arch_kwargs: dict[str, Any] | None = None,
    config: dict[str, Any], normalisation: dict[str, Normalisation],
    conventions: dict[str, ModelConvention], epoch: int = 0,
    metrics: dict[str, Any] | None = None,
    extra_state: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file + rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": FORMAT,
        "galmerge_version": __version__,
        "arch": arch,
        "arch_kwargs": json.dumps(arch_kwargs or {}, sort_keys=True),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra_state": {name: {k: v.detach().cpu() for k, v in sd.items()}
                        for name, sd in (extra_state or {}).items()},
        "config": json.dumps(config, sort_keys=True, default=str),
        "normalisation": json.dumps({d: n.to_dict() for d, n in normalisation.items()},
                                    sort_keys=True),
        "conventions": json.dumps({d: c.to_dict() for d, c in conventions.items()},
                                  sort_keys=True),
        "epoch": int(epoch),
        "metrics": json.dumps(metrics or {}, sort_keys=True, default=str),
    }
    tmp = p.with_name(p.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, p)
    return p


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        GalmergeError: missing file, not a galmerge checkpoint, or unreadable.
    """
    p = Path(path)
    if not p.is_file():
        raise GalmergeError(f"{p}: checkpoint not found")
    try:
        blob = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise GalmergeError(f"{p}: not a readable galmerge checkpoint ({type(exc).__name__})",
                            hint="pass a best.pt written by `galmerge train`") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise GalmergeError(f"{p}: not a galmerge checkpoint (format {FORMAT} expected)",
                            hint="pass a best.pt written by `galmerge train`")
    return Checkpoint(
        path=str(p),
        arch=blob["arch"],
        arch_kwargs=json.loads(blob["arch_kwargs"]),
        state_dict=blob["state_dict"],
        config=json.loads(blob["config"]),
        normalisation={d: Normalisation.from_dict(v)
                       for d, v in json.loads(blob["normalisation"]).items()},
        conventions={d: ModelConvention.from_dict(v)
                     for d, v in json.loads(blob["conventions"]).items()},
        epoch=int(blob.get("epoch", 0)),
        metrics=json.loads(blob.get("metrics", "{}")),
        extra_state=blob.get("extra_state", {}),
        galmerge_version=str(blob.get("galmerge_version", "")),
    )
