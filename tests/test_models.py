"""Architectures and checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from galmerge.conventions import FLUX_LINEAR, ModelConvention, Normalisation
from galmerge.errors import GalmergeError
from galmerge.training.checkpoint import load_checkpoint, save_checkpoint
from galmerge.training.models import DeepMerge, count_trainable_parameters


def test_deepmerge_has_174626_parameters_table_a1() -> None:
    assert count_trainable_parameters(DeepMerge()) == 174_626


def test_deepmerge_shapes_and_split() -> None:
    torch.manual_seed(0)
    m = DeepMerge().eval()
    x = torch.randn(4, 3, 75, 75)
    f = m.features(x)
    assert f.shape == (4, 2592)
    torch.testing.assert_close(m(x), m.classify(f))


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = DeepMerge()
    conv = ModelConvention(pixel_convention=FLUX_LINEAR, bands=("a", "b", "c"))
    norm = Normalisation((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    save_checkpoint(tmp_path / "best.pt", m, arch="deepmerge", config={"lr": 0.001},
                    normalisation={"source": norm, "target": norm},
                    conventions={"source": conv, "target": conv}, epoch=3,
                    metrics={"val_acc": 0.9})
    ck = load_checkpoint(tmp_path / "best.pt")
    assert ck.epoch == 3 and ck.config == {"lr": 0.001} and ck.normalisation["target"] == norm
    assert ck.conventions["source"] == conv
    m2 = ck.build()
    x = torch.randn(2, 3, 75, 75)
    torch.testing.assert_close(m.eval()(x), m2(x))


def test_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "x.pt").write_bytes(b"garbage")
    with pytest.raises(GalmergeError, match="not a readable galmerge checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
