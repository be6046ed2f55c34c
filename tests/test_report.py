"""`galmerge report`: every figure is produced, and Grad-CAM behaves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from galmerge.conventions import FLUX_LINEAR, ModelConvention
from galmerge.data import write_dataset
from galmerge.training.config import DataConfig, TrainConfig
from galmerge.training.models import DeepMerge
from galmerge.training.report import build_report, grad_cam
from galmerge.training.trainer import train

CONV = ModelConvention(pixel_convention=FLUX_LINEAR, bands=("a", "b", "c"))
FIGURES = ("roc.png", "metrics.png", "histograms.png", "tsne.png", "gradcam.png", "curves.png")


def _domain(path: Path, n: int, noise: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.int8)
    yy, xx = np.mgrid[:75, :75]
    core = np.exp(-((yy - 37) ** 2 + (xx - 37) ** 2) / 50.0)
    companion = np.exp(-((yy - 37) ** 2 + (xx - 52) ** 2) / 30.0)
    x = rng.normal(0, noise, (n, 3, 75, 75)).astype(np.float32) + 2 * core
    x[y == 1] += companion
    return write_dataset(path, x.astype(np.float32), y, CONV)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("report")
    src, tgt = _domain(d / "src.h5", 160, 0.1, 1), _domain(d / "tgt.h5", 160, 0.8, 2)
    out = []
    for method in ("mmd", "none"):
        cfg = TrainConfig(source=DataConfig(str(src)), target=DataConfig(str(tgt)),
                          out=str(d / method), method=method, epochs=2, batch_size=32)
        out.append(train(cfg).out)
    return out[0], out[1]


def test_report_writes_every_figure_and_the_summary(runs: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    mmd, none = runs
    page = build_report(mmd, compare=[none], names=["MMD", "noDA"], out=tmp_path,
                        tsne_per_domain=40, bootstrap=20)
    text = page.read_text()
    for name in FIGURES:
        png = tmp_path / name
        assert png.is_file() and name in text
        with Image.open(png) as im:  # a real, non-trivial picture
            assert im.size[0] > 300 and im.size[1] > 200
            assert np.asarray(im.convert("L")).std() > 5
    summary = json.loads((tmp_path / "report.json").read_text())
    assert set(summary) == {"MMD", "noDA"}
    for run in summary.values():
        for dom in ("source", "target"):
            m = run[dom]["metrics"]
            assert 0.0 <= m["auc"] <= 1.0 and run[dom]["n"] == 32
            assert run[dom]["ci95"]["auc"][0] <= m["auc"] <= run[dom]["ci95"]["auc"][1]


def test_report_cli_with_explicit_target(runs: tuple[Path, Path], tmp_path: Path) -> None:
    import subprocess
    import sys

    mmd, _ = runs
    tgt = json.loads((mmd / "config.json").read_text())["target"]["path"]
    proc = subprocess.run(
        [sys.executable, "-m", "galmerge", "report", str(mmd), "--target-data", tgt,
         "--out", str(tmp_path), "--tsne-per-domain", "30", "--bootstrap", "0"],
        capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "report.json").read_text())
    assert summary[mmd.name]["target"]["split"] == "all"
    assert summary[mmd.name]["target"]["n"] == 160


def test_report_missing_run_is_one_line_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "galmerge", "report", str(tmp_path / "nope")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "checkpoint not found" in proc.stderr


def test_grad_cam_highlights_the_region_the_logit_depends_on() -> None:
    torch.manual_seed(0)
    model = DeepMerge().eval()
    # Make the merger logit depend only on the right half of the last conv's output:
    # zero the first dense layer's weights that read the left columns of the 9x9 maps.
    with torch.no_grad():
        w = model.head[0].weight.view(64, 32, 9, 9)
        w[:, :, :, :5] = 0.0
    x = torch.randn(3, 3, 75, 75)
    cam = grad_cam(model, x, 1)
    assert cam.shape == (3, 75, 75)
    assert cam.min() >= 0.0 and cam.max() <= 1.0 + 1e-6
    assert cam[:, :, :30].mean() < cam[:, :, 45:].mean()
    conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert not conv._forward_hooks  # the hook is removed
