"""The shipped-model recipe (scripts/train_sdss_model.py) runs end to end at toy size.

The bundled example catalogue (24 real GZ1 JPEGs with their Galaxy Zoo class) stands in for
both the unlabelled pool and the labelled dev set, so the test runs on a fresh clone.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "catalogs" / "sdss_example"


@pytest.mark.slow
def test_recipe_runs_end_to_end_at_toy_size(tmp_path: Path) -> None:
    work, models, report = tmp_path / "work", tmp_path / "models", tmp_path / "report"
    cmd = [sys.executable, str(ROOT / "scripts" / "train_sdss_model.py"), "--toy",
           "--work", str(work), "--models", str(models), "--report-out", str(report),
           "--pool", str(EXAMPLE / "cutouts"), "--dev", str(EXAMPLE / "cutouts"),
           "--dev-labels", str(EXAMPLE / "sdss_example.csv"), "--label-column", "gz1_merger",
           "--threads", "2", "--more-seeds", "2", "--members", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]

    summary = json.loads((work / "summary.json").read_text())
    # the SDSS error tile in the example is excluded from the evaluation
    assert summary["dev_counts"]["excluded"] == 1
    n_dev = summary["dev_counts"]["mergers"] + summary["dev_counts"]["non_mergers"]
    assert n_dev == 23
    res = summary["results"]
    assert set(res) == {"noda", "sdss"}
    for name, r in res.items():
        d = r["dev"]
        assert d["n"] == n_dev, name
        for key in ("auc", "accuracy", "precision", "recall", "f1", "brier"):
            assert key in d and key in d["ci95"], (name, key)
        assert r["selection"].startswith("swa"), name      # no epoch was selected
        assert 0 <= r["pool"]["predicted_merger_fraction"] <= 1
    diff = res["sdss"]["auc_minus_noda"]
    assert diff["low"] <= diff["difference"] <= diff["high"]
    # stage 2 started from stage 1 (transfer learning) and trained on the cropped real target
    cfg = json.loads((work / "sdss" / "config.json").read_text())
    assert cfg["init_from"].endswith("stage1/best.pt") and cfg["target"]["crop_fraction"] == 0.5
    assert cfg["preset"] == "sdss"
    # its source has real hosts; the target and the hosts are the training part of the pool
    # only: the held-out part (objid hash rule) never enters training in any role
    from galmerge.data.holdout import is_held_out
    assert cfg["source"]["path"].endswith("sim-hosts/source.h5")
    assert cfg["target"]["path"].endswith("pool-train")
    train_ids = {p.stem for p in (work / "pool-train").iterdir()}
    held_ids = {p.stem for p in (work / "pool-heldout").iterdir()}
    assert train_ids and held_ids and not train_ids & held_ids
    assert all(is_held_out(i) for i in held_ids) and not any(is_held_out(i) for i in train_ids)
    import h5py
    with h5py.File(work / "sim-hosts" / "source.h5") as f:
        prov = json.loads(f.attrs["provenance"])
        assert set(prov["hosts"]["ids"]) <= train_ids
        assert int(np.sum(f["extra/host"][:])) == prov["hosts"]["scenes"] > 0

    # the survey-like check: new recipe and noDA, with paired differences
    check = json.loads((work / "survey_check.json").read_text())
    # --members 2 averages two seeds; the first member alone is in the check too
    assert set(check["models"]) == {"new", "new, one member", "noDA"}
    assert check["seed_groups"] == [[1, 2]] and check["shipped"]["seeds"] == [1, 2]
    assert check["n_background"] == len(held_ids)
    for m in check["models"].values():
        for key in ("auc", "topk_purity", "precision_at_recall_0.5", "pool_flagged"):
            assert 0 <= m[key]["value"] <= 1, key
    assert "new - noDA" in check["differences"]
    assert check["calibration"]["points"]

    # the dev scores file: one row per dev image, one column per run
    rows = list(csv.DictReader((work / "dev_scores.csv").open()))
    assert len(rows) == n_dev and {"p_noda", "p_sdss"} <= set(rows[0])

    # both models exported with cards; the SDSS one carries the GZ1 geometry
    for name in ("deepmerge-sdss", "deepmerge-simsim"):
        assert (models / f"{name}.onnx").is_file() and (models / f"{name}.md").is_file()
    meta = {p.key: p.value for p in onnx.load(str(models / "deepmerge-sdss.onnx")).metadata_props}
    assert meta["galmerge.petro_scale_factor"] == "0.024"
    assert float(meta["galmerge.pixel_scale_arcsec"]) > 0
    assert meta["galmerge.crop_fraction"] == "0.5"
    # the label-free decision threshold and the calibration curve travel with the model
    assert 0 < float(meta["galmerge.decision_threshold"]) < 1
    assert "label-free" in meta["galmerge.decision_rule"]
    assert json.loads(meta["galmerge.calibration"])["reference_merger_fraction"] == 0.01
    assert meta["galmerge.train_merger_fraction"] == "0.5" and "galmerge.ood_ranges" in meta
    members = json.loads(meta["galmerge.ensemble_members"])
    assert [m["model_name"] for m in members] == ["deepmerge-sdss-sdss", "deepmerge-sdss-sdss-s2"]
    outs = [o.name for o in onnx.load(str(models / "deepmerge-sdss.onnx")).graph.output]
    assert outs == ["p_merger", "p_members"]
    card = (models / "deepmerge-sdss.md").read_text()
    assert "noDA" in card and "paired bootstrap" in card and "ROC AUC" in card
    assert "top-k purity" in card and "## Ensemble" in card
    assert (report / "report.html").is_file()
    assert np.isfinite(res["sdss"]["dev"]["auc"])


@pytest.mark.slow
def test_opt_in_recipe_options_reach_the_runs(tmp_path: Path) -> None:
    """The issue-10 opt-in variants (rings, inclined real hosts, Sinkhorn alignment) at toy
    size, one seed, no baselines: each option is recorded where it acts."""
    work = tmp_path / "work"
    cmd = [sys.executable, str(ROOT / "scripts" / "train_sdss_model.py"), "--toy",
           "--work", str(work), "--models", str(tmp_path / "models"),
           "--report-out", str(tmp_path / "report"),
           "--pool", str(EXAMPLE / "cutouts"), "--dev", str(EXAMPLE / "cutouts"),
           "--dev-labels", str(EXAMPLE / "sdss_example.csv"), "--label-column", "gz1_merger",
           "--threads", "2", "--no-baselines", "--no-export", "--ring-fraction", "0.3",
           "--inclined-host-weight", "3", "--transfer", "sinkhorn"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = json.loads((work / "sdss" / "config.json").read_text())
    assert cfg["method"] == "sinkhorn" and cfg["align_classes"] == "non-mergers"
    stage1 = json.loads((work / "stage1" / "config.json").read_text())
    assert stage1["method"] == "mmd"  # only stage 2 changes its transfer loss
    import h5py
    with h5py.File(work / "sim-hosts" / "source.h5") as f:
        prov = json.loads(f.attrs["provenance"])["config"]
    assert prov["ring_fraction"] == 0.3 and prov["inclined_host_weight"] == 3.0
    with h5py.File(work / "sim-sdss" / "source.h5") as f:
        plain = json.loads(f.attrs["provenance"])["config"]
    assert plain["ring_fraction"] == 0.3 and plain["inclined_host_weight"] == 1.0
    with (work / "sdss" / "history.csv").open() as fh:
        assert float(next(csv.DictReader(fh))["train_transfer"]) != 0.0
    assert not (work / "noda").exists()
