"""The whole contract on tiny real files: train -> export -> classify (no mocks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from galmerge.data.dataset import open_dataset
from galmerge.export import export_onnx
from galmerge.inference.pipeline import ClassifyOptions, classify_catalog
from galmerge.training.checkpoint import load_checkpoint
from galmerge.training.config import DataConfig, TrainConfig
from galmerge.training.trainer import train
from tests.train_data import write_pair


def test_trained_checkpoint_exports_and_classifies_its_target_cube(tmp_path: Path) -> None:
    src, tgt = write_pair(tmp_path / "data", n=40)
    res = train(TrainConfig(source=DataConfig(str(src)), target=DataConfig(str(tgt)),
                            out=str(tmp_path / "run"), epochs=1, batch_size=16,
                            eval_batch_size=32))
    ckpt = res.checkpoint
    exp = export_onnx(ckpt, tmp_path / "model.onnx", domain="target")
    assert exp.parity["max"] <= 1e-5
    card = exp.card.read_text()
    assert "## Metrics" in card and "no `metrics.json`" not in card  # metrics.json of the run

    with open_dataset(tgt) as ds:
        ids = list(ds.ids)
        images = ds.read(np.arange(len(ds)))
    cat = tmp_path / "target_ids.csv"
    pd.DataFrame({"id_str": ids}).to_csv(cat, index=False)
    summary = classify_catalog(cat, model=exp.path, output=tmp_path / "scores.parquet",
                               options=ClassifyOptions(cutouts=str(tgt), batch_size=16))
    assert summary.status_counts["ok"] == len(ids)
    got = pd.read_parquet(tmp_path / "scores.parquet")
    # Same numbers as the PyTorch model on the same images with the checkpoint's target stats.
    ck = load_checkpoint(ckpt)
    norm = ck.normalisation["target"]
    with torch.no_grad():
        p_torch = torch.softmax(ck.build()(torch.from_numpy(norm.apply(images))), 1)[:, 1]
    assert np.max(np.abs(got["p_merger_raw"].to_numpy() - p_torch.numpy())) <= 1e-5
