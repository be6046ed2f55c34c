"""Inference stage: catalogues, cutouts, ONNX Runtime, writers. Never imports torch."""
