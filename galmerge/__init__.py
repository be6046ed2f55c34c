"""galmerge: find merging galaxies in survey data.

Three stages, one contract:

* ``galmerge.training`` (needs torch): DeepMerge/ResNet18 with MMD, adversarial,
  Fisher and entropy losses (DeepMerge II, Ćiprijanović et al. 2021).
* ``galmerge.export``: checkpoint -> self-describing ONNX model.
* ``galmerge.inference`` (never imports torch): catalogues + cutouts -> ONNX
  Runtime -> merger-probability catalogues.

The public Python API (``docs/api.md``)::

    from galmerge import classify_catalog, ClassifyOptions, OnnxClassifier
    from galmerge import simulate, train, TrainConfig, export_onnx

Every name is imported on first use (module ``__getattr__``), so ``import galmerge``
stays light and torch-free; ``train``, ``TrainConfig`` and ``export_onnx`` need the
``train`` extra (torch), the others ONNX Runtime (the ``cpu`` or ``gpu`` extra).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_API = {
    "classify_catalog": "galmerge.inference.run",
    "ClassifyOptions": "galmerge.inference.options",
    "RunSummary": "galmerge.inference.run",
    "OnnxClassifier": "galmerge.inference.engine",
    "GalmergeError": "galmerge.errors",
    "GalmergeWarning": "galmerge.errors",
    "simulate": "galmerge.data.simulator",
    "train": "galmerge.training.trainer",
    "TrainConfig": "galmerge.training.config",
    "export_onnx": "galmerge.export",
}

__all__ = [
    "ClassifyOptions",
    "GalmergeError",
    "GalmergeWarning",
    "OnnxClassifier",
    "RunSummary",
    "TrainConfig",
    "__version__",
    "classify_catalog",
    "export_onnx",
    "simulate",
    "train",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors only
    from galmerge.data.simulator import simulate
    from galmerge.errors import GalmergeError, GalmergeWarning
    from galmerge.export import export_onnx
    from galmerge.inference.engine import OnnxClassifier
    from galmerge.inference.options import ClassifyOptions
    from galmerge.inference.run import RunSummary, classify_catalog
    from galmerge.training.config import TrainConfig
    from galmerge.training.trainer import train


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'galmerge' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
