"""Training stage (needs torch): models, losses, trainer, metrics, presets, reports.

Its public names are those of its modules (each lists them in ``__all__``); ``train``
and ``TrainConfig`` are re-exported by the package root (docs/api.md).
"""

__all__: list[str] = []
