"""galmerge: find merging galaxies in survey data.

Three stages, one contract:

* ``galmerge.training`` (needs torch): DeepMerge/ResNet18 with MMD, adversarial,
  Fisher and entropy losses (DeepMerge II, Ćiprijanović et al. 2021).
* ``galmerge.export``: checkpoint -> self-describing ONNX model.
* ``galmerge.inference`` (never imports torch): catalogues + cutouts -> ONNX
  Runtime -> merger-probability catalogues.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
