"""Model discovery: which ``.onnx`` file ``--model`` (or no ``--model``) means.

A model is a path, a name looked up in :func:`model_search_path`
(``$GALMERGE_MODELS``, the package's ``galmerge/models/``, ``<prefix>/share``), or
the shipped default :data:`DEFAULT_MODEL`. Used by the run, by ``galmerge fetch``
(the model's geometry) and by ``galmerge doctor``. Torch-free.
"""

from __future__ import annotations

import importlib.resources
import os
import sys
from pathlib import Path

from galmerge.errors import GalmergeError

__all__ = ["DEFAULT_MODEL", "MODELS_ENV", "model_search_path", "resolve_model"]

#: File name of the shipped default model.
DEFAULT_MODEL = "deepmerge-sdss.onnx"
#: Environment variable naming a folder of models (or one .onnx file), e.g. in Docker.
MODELS_ENV = "GALMERGE_MODELS"


def model_search_path() -> list[Path]:
    """Folders searched for a model given by name (and for the default model).

    1. ``$GALMERGE_MODELS`` (a folder, e.g. ``/opt/galmerge/models`` in Docker);
    2. the package's own ``galmerge/models/`` (package data, read with
       :mod:`importlib.resources`: a checkout and an installed wheel alike);
    3. ``<prefix>/share/galmerge/models`` (where earlier installs put them).
    """
    paths = []
    env = os.environ.get(MODELS_ENV)
    if env:
        paths.append(Path(env))
    paths.append(Path(str(importlib.resources.files("galmerge") / "models")))
    paths.append(Path(sys.prefix) / "share" / "galmerge" / "models")
    return paths


def resolve_model(model: str | Path | None) -> Path:
    """The model file for ``--model`` (a path, a name in the search path, or the default)."""
    env = os.environ.get(MODELS_ENV)
    if model is None and env and Path(env).is_file():
        return Path(env)
    name = DEFAULT_MODEL if model is None else str(model)
    p = Path(name)
    if model is not None and (p.exists() or p.is_absolute() or len(p.parts) > 1):
        return p
    candidates = [name] if name.endswith(".onnx") else [name + ".onnx", name]
    for folder in model_search_path():
        for cand in candidates:
            if (folder / cand).is_file():
                return folder / cand
    if model is not None:
        return p
    raise GalmergeError(
        f"default model {DEFAULT_MODEL} not found (searched "
        f"{', '.join(str(f) for f in model_search_path())})",
        hint=f"pass --model PATH.onnx or set {MODELS_ENV} to a folder holding it")
