"""Training stage (needs torch): models, losses, trainer, metrics, presets, reports."""
