"""Inference stage: catalogues, cutouts, ONNX Runtime, writers. Never imports torch.

Its public names are those of its modules (each lists them in ``__all__``); the ones a
user needs first are re-exported by the package root: ``from galmerge import
classify_catalog, ClassifyOptions, OnnxClassifier`` (docs/api.md).
"""

__all__: list[str] = []
