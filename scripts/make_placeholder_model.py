"""Build the interim default model ``models/deepmerge-sdss.onnx`` (a placeholder).

Until the trained SDSS model of issue 6 exists, ``galmerge classify`` needs a
default model in the right input convention so that the inference path can be
installed and run end to end (``make demo``). This script makes one honestly:

* the SDSS colour-JPEG convention (bands i,r,g; central half cropped, 75 px;
  findings #2), with per-channel normalisation measured on real SDSS GZ1 JPEGs
  (the unlabelled ``sdss_gz1/pool`` images of the shared data, prepared the same way);
* a DeepMerge with seeded random weights — *not trained*; the checkpoint config
  says ``placeholder: true``, so the ONNX metadata carries
  ``galmerge.placeholder=1``, its card says so, and ``classify`` warns.

Usage: ``python scripts/make_placeholder_model.py [--pool DIR] [--out models/deepmerge-sdss.onnx]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from galmerge.conventions import Normalisation
from galmerge.data.images import prepare, read_image
from galmerge.export import export_onnx, sdss_example_convention
from galmerge.training.checkpoint import save_checkpoint
from galmerge.training.models import DeepMerge

ROOT = Path(__file__).resolve().parents[1]
NOTE = ("Interim default model shipped so that `make demo` and `galmerge classify` run before "
        "the trained SDSS model exists: DeepMerge (Table A1) with random weights "
        "(torch.manual_seed(0)), normalisation measured on {n} real SDSS GZ1 colour JPEGs "
        "(unlabelled pool). Built by scripts/make_placeholder_model.py.")


def channel_stats(pool: Path, conv_size: int, crop: float) -> tuple[Normalisation, int]:
    """Per-channel mean/std of the prepared pool images (float64 accumulation)."""
    files = sorted(p for p in pool.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    s1 = np.zeros(3)
    s2 = np.zeros(3)
    count = 0
    for f in files:
        img = prepare(read_image(f).pixels, conv_size, crop).astype(np.float64)
        s1 += img.sum(axis=(1, 2))
        s2 += (img ** 2).sum(axis=(1, 2))
        count += img.shape[1] * img.shape[2]
    mean = s1 / count
    std = np.sqrt(s2 / count - mean ** 2)
    return Normalisation(tuple(float(round(m, 4)) for m in mean),
                         tuple(float(round(s, 4)) for s in std)), len(files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = Path(os.environ.get("GALMERGE_SHARED_DATA", ROOT.parent / "shared" / "data"))
    ap.add_argument("--pool", type=Path, default=shared / "sdss_gz1" / "pool")
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "deepmerge-sdss.onnx")
    args = ap.parse_args()
    conv = sdss_example_convention()
    norm, n = channel_stats(args.pool, conv.size, conv.crop_fraction)
    torch.manual_seed(0)
    model = DeepMerge().eval()
    with tempfile.TemporaryDirectory() as tmp:
        ck = save_checkpoint(
            Path(tmp) / "placeholder.pt", model, arch="deepmerge",
            config={"placeholder": True, "note": NOTE.format(n=n),
                    "target": "SDSS DR7 colour JPEGs (Galaxy Zoo 1 subject images)",
                    "method": "none (untrained, random weights)"},
            normalisation={"target": norm}, conventions={"target": conv})
        res = export_onnx(ck, args.out, domain="target", model_name="deepmerge-sdss",
                          placeholder=True)
    print(f"wrote {res.path} (sha256 {res.sha256[:16]}...) and {res.card}")
    print(f"normalisation mean {norm.mean} std {norm.std} from {n} images")
    print("parity:", res.parity)


if __name__ == "__main__":
    main()
