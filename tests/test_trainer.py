"""End-to-end training on tiny real files: CLI, determinism, checkpoints, transfer learning,
bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from galmerge.data import open_dataset, write_dataset
from galmerge.errors import GalmergeError
from galmerge.training.checkpoint import load_checkpoint
from galmerge.training.config import DataConfig, TrainConfig
from galmerge.training.data import (
    ClassFractionSampler,
    DomainSplit,
    InfiniteSampler,
    augment_batch,
    compute_normalisation,
)
from galmerge.training.evaluate import evaluate_checkpoint
from galmerge.training.trainer import HISTORY_COLUMNS, one_cycle_lr, train
from tests.train_data import CONVENTION, blobs, write_pair

TINY = dict(epochs=2, batch_size=16, eval_batch_size=32)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_pair(tmp_path_factory.mktemp("pair"), n=60)


def _config(src: Path, tgt: Path, out: Path, **kw: object) -> TrainConfig:
    values = {**TINY, **kw}
    return TrainConfig(source=DataConfig(str(src)), target=DataConfig(str(tgt)), out=str(out),
                       **values)  # type: ignore[arg-type]


def _history_without_time(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r.pop("seconds")
    return rows


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "galmerge", *args], capture_output=True,
                          text=True, check=False)


# --- the CLI end to end --------------------------------------------------------------

def test_cli_two_epoch_run_and_evaluate(pair: tuple[Path, Path], tmp_path: Path) -> None:
    src, tgt = pair
    out = tmp_path / "run"
    proc = _run_cli("train", "--source", str(src), "--target", str(tgt), "--method", "mmd",
                    "--fisher", "--entropy", "--epochs", "2", "--batch-size", "16",
                    "--lr", "0.002", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "best epoch" in proc.stdout and "target test" in proc.stdout
    for name in ("best.pt", "config.json", "history.csv", "metrics.json"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    # the preset for mmd+fisher+entropy (Table A2), with the explicit --lr on top
    assert cfg["preset"] == "paper-simsim-mmd-fisher-entropy"
    assert cfg["lr"] == 0.002 and cfg["weight_decay"] == 1e-4 and cfg["lambda_em"] == 0.05
    with (out / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and tuple(rows[0].keys()) == HISTORY_COLUMNS
    for col in ("train_ce", "train_transfer", "train_fisher", "train_entropy",
                "val_source_loss", "val_domain_mmd", "val_criterion"):
        assert all(np.isfinite(float(r[col])) for r in rows), col
    metrics = json.loads((out / "metrics.json").read_text())
    for role in ("source_test", "target_test"):
        assert set(metrics[role]) >= {"auc", "accuracy", "precision", "recall", "f1", "brier",
                                      "confusion_normalised"}
    assert metrics["selection"] == "source-loss+mmd"

    ev = _run_cli("evaluate", str(out / "best.pt"), str(tgt))
    assert ev.returncode == 0, ev.stderr
    for word in ("auc", "accuracy", "precision", "recall", "f1", "brier", "confusion matrix"):
        assert word in ev.stdout
    assert "target normalisation" in ev.stdout
    js = _run_cli("evaluate", str(out / "best.pt"), str(tgt), "--json")
    res = json.loads(js.stdout)
    # evaluate reproduces the training run's own target test metrics
    assert res["accuracy"] == pytest.approx(metrics["target_test"]["accuracy"])
    assert res["brier"] == pytest.approx(metrics["target_test"]["brier"], rel=1e-5)


def test_cli_bad_input_is_one_line(pair: tuple[Path, Path], tmp_path: Path) -> None:
    src, _ = pair
    proc = _run_cli("train", "--source", str(src), "--target", str(tmp_path / "nope.h5"),
                    "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: target:") and "nope.h5" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    proc = _run_cli("train", "--source", str(src), "--target", str(src), "--preset", "nonsense",
                    "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "unknown preset" in proc.stderr
    proc = _run_cli("evaluate", str(tmp_path / "missing.pt"), str(src))
    assert proc.returncode == 2 and "checkpoint not found" in proc.stderr


# --- determinism, checkpoints ----------------------------------------------------------------

def test_seeded_rerun_is_identical(pair: tuple[Path, Path], tmp_path: Path) -> None:
    src, tgt = pair
    kw = dict(method="dann", fisher=True, entropy=True, augment=True)
    a = train(_config(src, tgt, tmp_path / "a", **kw))
    b = train(_config(src, tgt, tmp_path / "b", **kw))
    assert _history_without_time(tmp_path / "a" / "history.csv") == \
        _history_without_time(tmp_path / "b" / "history.csv")
    ca, cb = load_checkpoint(a.checkpoint), load_checkpoint(b.checkpoint)
    for key, val in ca.state_dict.items():
        assert torch.equal(val, cb.state_dict[key]), key
    assert torch.equal(ca.extra_state["domain_classifier"]["net.0.weight"],
                       cb.extra_state["domain_classifier"]["net.0.weight"])
    c = train(_config(src, tgt, tmp_path / "c", seed=2, **kw))
    cc = load_checkpoint(c.checkpoint)
    assert not torch.equal(cc.state_dict["conv.0.weight"], ca.state_dict["conv.0.weight"])


def test_streamed_reads_match_in_memory(pair: tuple[Path, Path], tmp_path: Path) -> None:
    src, tgt = pair
    train(_config(src, tgt, tmp_path / "mem", method="mmd", epochs=1))
    train(_config(src, tgt, tmp_path / "disk", method="mmd", epochs=1, max_in_memory_mb=0))
    assert _history_without_time(tmp_path / "mem" / "history.csv") == \
        _history_without_time(tmp_path / "disk" / "history.csv")


def test_checkpoint_holds_train_split_normalisation_and_conventions(
        pair: tuple[Path, Path], tmp_path: Path) -> None:
    src, tgt = pair
    res = train(_config(src, tgt, tmp_path / "r", epochs=1))
    ck = load_checkpoint(res.checkpoint)
    with open_dataset(tgt) as ds:
        x = ds.read(ds.indices("train")).astype(np.float64)
        np.testing.assert_allclose(ck.normalisation["target"].mean, x.mean(axis=(0, 2, 3)),
                                   rtol=1e-6)
        np.testing.assert_allclose(ck.normalisation["target"].std, x.std(axis=(0, 2, 3)),
                                   rtol=1e-5)
        assert ck.conventions["target"] == ds.convention
    assert ck.config["source"]["path"] == str(src) and ck.arch == "deepmerge"
    assert ck.epoch == res.best_epoch and ck.metrics["target_test"] is not None
    model = ck.build()
    ev = evaluate_checkpoint(res.checkpoint, src, device="cpu")
    assert ev["domain"] == "source" and ev["n"] == int((open_dataset(src).split == "test").sum())
    assert ev["auc"] == pytest.approx(res.metrics["source_test"]["auc"])
    assert isinstance(model, torch.nn.Module)


def test_normalisation_uses_training_split_only(tmp_path: Path) -> None:
    x, y = blobs(40, 0, noise=0.1)
    split = np.array(["train"] * 28 + ["val"] * 4 + ["test"] * 8)
    x[split != "train"] += 1000.0  # a leak would show
    path = write_dataset(tmp_path / "d.h5", x, y, CONVENTION, split=split)
    with open_dataset(path) as ds:
        norm = compute_normalisation(ds, ds.indices("train"))
    np.testing.assert_allclose(norm.mean, x[:28].astype(np.float64).mean(axis=(0, 2, 3)),
                               rtol=1e-5)


def test_existing_run_is_not_overwritten(pair: tuple[Path, Path], tmp_path: Path) -> None:
    src, tgt = pair
    train(_config(src, tgt, tmp_path / "r", epochs=1))
    with pytest.raises(GalmergeError, match="already exists"):
        train(_config(src, tgt, tmp_path / "r", epochs=1))
    train(_config(src, tgt, tmp_path / "r", epochs=1), overwrite=True)


# --- weight averaging --------------------------------------------------------------------

def test_weight_averaging_delivers_the_mean_of_the_last_epochs(pair: tuple[Path, Path],
                                                               tmp_path: Path) -> None:
    src, tgt = pair
    # patience 1 would stop a plain run early; with averaging every epoch runs
    kw = dict(method="mmd", epochs=4, patience=1, augment=True)
    plain = train(_config(src, tgt, tmp_path / "plain", **kw, swa_start=0))
    avg = train(_config(src, tgt, tmp_path / "avg", **kw, swa_start=3))
    assert avg.epochs_run == 4 and avg.best_epoch == 4
    m = avg.metrics
    assert m["selection"] == "swa (average of epochs 3-4)" and m["swa_epochs"] == [3, 4]
    assert m["swa_models"] == 2 and m["val_criterion"] is None
    rows = list(csv.DictReader((tmp_path / "avg" / "history.csv").open()))
    assert [r["in_average"] for r in rows] == ["0", "0", "1", "1"]
    single = load_checkpoint(tmp_path / "avg" / "best-epoch.pt")
    ck = load_checkpoint(avg.checkpoint)
    assert ck.metrics["selection"].startswith("swa") and single.epoch == m["best_single_epoch"]
    # the same seed trains the same weights, so the plain run's last epoch is epoch 4 of this
    # run; the average differs from it, and the BatchNorm statistics were recomputed
    assert not torch.equal(ck.state_dict["conv.0.weight"], single.state_dict["conv.0.weight"])
    assert int(ck.state_dict["conv.1.num_batches_tracked"]) == 3  # one pass of 3 steps
    assert plain.metrics["selection"] == "source-loss+mmd"
    assert not (tmp_path / "plain" / "best-epoch.pt").exists()
    # deterministic
    again = train(_config(src, tgt, tmp_path / "again", **kw, swa_start=3))
    for key, val in load_checkpoint(again.checkpoint).state_dict.items():
        assert torch.equal(val, ck.state_dict[key]), key
    with pytest.raises(GalmergeError, match="--swa-start"):
        train(_config(src, tgt, tmp_path / "bad", **kw, swa_start=5))


def test_weight_average_is_the_parameter_mean() -> None:
    from galmerge.training.models import DeepMerge
    from galmerge.training.trainer import WeightAverage

    torch.manual_seed(0)
    a, b, out = DeepMerge(), DeepMerge(), DeepMerge()
    avg = WeightAverage(a)
    avg.add(a)
    avg.add(b)
    avg.apply(out)
    for (name, pa), pb, po in zip(a.named_parameters(), b.parameters(), out.parameters(),
                                  strict=True):
        torch.testing.assert_close(po, (pa + pb) / 2, msg=name)
    with pytest.raises(ValueError):
        WeightAverage(a).apply(out)


# --- transfer learning -------------------------------------------------------------------

def test_transfer_learning_loads_weights_and_freezes_conv(pair: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    src, tgt = pair
    first = train(_config(src, tgt, tmp_path / "simsim", method="mmd", epochs=1))
    base = load_checkpoint(first.checkpoint)
    new_src, new_tgt = write_pair(tmp_path / "other", n=60, seed=7, target_labelled=False)
    second = train(_config(new_src, new_tgt, tmp_path / "simreal", method="mmd", epochs=1,
                           init_from=str(first.checkpoint), freeze="conv"))
    tuned = load_checkpoint(second.checkpoint)
    # frozen conv + BatchNorm (weights and running statistics) are exactly the loaded ones
    for key, val in base.state_dict.items():
        if key.startswith("conv."):
            assert torch.equal(val, tuned.state_dict[key]), key
    assert not torch.equal(base.state_dict["head.0.weight"], tuned.state_dict["head.0.weight"])
    # normalisation recomputed for the new domains
    assert tuned.normalisation["target"] != base.normalisation["target"]
    assert second.metrics["target_test"] is None  # unlabelled target: no target metrics

    # without --freeze every weight trains, starting from the loaded ones
    third = train(_config(new_src, new_tgt, tmp_path / "all", method="mmd", epochs=1,
                          init_from=str(first.checkpoint), lr=1e-7))
    t3 = load_checkpoint(third.checkpoint)
    w0, w1 = base.state_dict["conv.0.weight"], t3.state_dict["conv.0.weight"]
    assert not torch.equal(w0, w1)
    assert float((w0 - w1).abs().max()) < 1e-4  # tiny LR: still next to the loaded weights


def test_init_from_wrong_architecture(pair: tuple[Path, Path], tmp_path: Path) -> None:
    src, tgt = pair
    first = train(_config(src, tgt, tmp_path / "dm", epochs=1))
    with pytest.raises(GalmergeError, match="deepmerge checkpoint"):
        train(_config(src, tgt, tmp_path / "rn", arch="resnet18", epochs=1,
                      init_from=str(first.checkpoint)))


# --- data contracts and bad input ----------------------------------------------------

def test_unlabelled_target_is_fine_unlabelled_source_is_not(tmp_path: Path) -> None:
    src, tgt = write_pair(tmp_path / "d", n=40, target_labelled=False)
    res = train(_config(src, tgt, tmp_path / "ok", method="dann", epochs=1))
    assert res.metrics["target_test"] is None and res.metrics["source_test"] is not None
    with pytest.raises(GalmergeError, match="source domain must be labelled"):
        train(_config(tgt, src, tmp_path / "bad", epochs=1))
    with pytest.raises(GalmergeError, match="no labelled images"):
        evaluate_checkpoint(res.checkpoint, tgt)


def test_shape_mismatch_and_deepmerge_size(tmp_path: Path) -> None:
    src, _ = write_pair(tmp_path / "a", n=30)
    _, small = write_pair(tmp_path / "b", n=30, size=64)
    with pytest.raises(GalmergeError, match="share the input shape"):
        train(_config(src, small, tmp_path / "r", epochs=1))
    s64, t64 = write_pair(tmp_path / "c", n=30, size=64)
    with pytest.raises(GalmergeError, match="75x75"):
        train(_config(s64, t64, tmp_path / "r2", epochs=1))


def test_config_validation_messages(pair: tuple[Path, Path], tmp_path: Path) -> None:
    src, tgt = pair
    with pytest.raises(GalmergeError, match="--method"):
        train(_config(src, tgt, tmp_path / "r", method="coral"))
    with pytest.raises(GalmergeError, match="--freeze conv needs --init-from"):
        train(_config(src, tgt, tmp_path / "r", freeze="conv"))
    with pytest.raises(GalmergeError, match="lambda-b"):
        train(_config(src, tgt, tmp_path / "r", fisher=True, lambda_b=0.0))
    if not torch.cuda.is_available():
        with pytest.raises(GalmergeError, match="no CUDA"):
            train(_config(src, tgt, tmp_path / "r", device="cuda"))


def test_resnet18_trains_one_epoch(tmp_path: Path) -> None:
    src, tgt = write_pair(tmp_path / "d", n=24)
    res = train(_config(src, tgt, tmp_path / "rn", arch="resnet18", dropout=0.6,
                        method="dann", epochs=1, batch_size=8))
    ck = load_checkpoint(res.checkpoint)
    assert ck.arch == "resnet18" and ck.arch_kwargs["dropout"] == 0.6
    assert ck.extra_state["domain_classifier"]["net.0.weight"].shape == (1024, 512)


# --- schedule, sampling, augmentation ---------------------------------------------------

def test_one_cycle_is_a_triangle_between_lr_over_10_and_lr() -> None:
    lrs = [one_cycle_lr(s, 100, 1e-3) for s in range(200)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[50] == pytest.approx(1e-3)
    assert lrs[100] == pytest.approx(1e-4) and lrs[150] == pytest.approx(1e-3)
    assert lrs[25] == pytest.approx(5.5e-4)
    assert max(lrs) <= 1e-3 + 1e-12 and min(lrs) >= 1e-4 - 1e-12


def test_infinite_sampler_covers_every_item_each_pass() -> None:
    s = InfiniteSampler(10, 4, np.random.default_rng(0))
    draws = np.concatenate([s.next() for _ in range(5)])  # 20 = two passes
    assert all(len(s.next()) == 4 for _ in range(3))
    assert sorted(draws[:10]) == list(range(10)) and sorted(draws[10:20]) == list(range(10))


def test_class_fraction_sampler_fixes_the_merger_share_of_every_batch() -> None:
    labels = np.r_[np.ones(50, int), np.zeros(50, int)]
    s = ClassFractionSampler(labels, 16, 0.25, np.random.default_rng(0))
    batches = [s.next() for _ in range(25)]
    assert all(len(b) == 16 and labels[b].sum() == 4 for b in batches)
    # each class is cycled through completely before repeating: 25 x 4 mergers = 2 passes
    pos = np.concatenate([b[labels[b] == 1] for b in batches])
    assert sorted(pos[:50]) == list(range(50)) and sorted(pos[50:]) == list(range(50))
    # mergers are not all at the front of the batch
    assert any(labels[b][0] == 0 for b in batches) and any(labels[b][0] == 1 for b in batches)
    assert labels[ClassFractionSampler(labels, 4, 0.01, np.random.default_rng(0)).next()].sum() == 1
    with pytest.raises(GalmergeError, match="both classes"):
        ClassFractionSampler(np.ones(10, int), 4, 0.5, np.random.default_rng(0))


def test_source_merger_fraction_is_validated_and_trains(pair: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    src, tgt = pair
    with pytest.raises(GalmergeError, match="--source-merger-fraction"):
        train(_config(src, tgt, tmp_path / "bad", source_merger_fraction=1.0))
    res = train(_config(src, tgt, tmp_path / "r", method="mmd", epochs=1,
                        source_merger_fraction=0.25))
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["source_merger_fraction"] == 0.25 and res.epochs_run == 1


@pytest.mark.parametrize("method", ["mmd", "sinkhorn"])
def test_class_aware_alignment_is_validated_and_trains(pair: tuple[Path, Path],
                                                       tmp_path: Path, method: str) -> None:
    src, tgt = pair
    with pytest.raises(GalmergeError, match="--align-classes"):
        train(_config(src, tgt, tmp_path / "bad", method=method, align_classes="mergers"))
    with pytest.raises(GalmergeError, match="sinkhorn_eps_rel"):
        train(_config(src, tgt, tmp_path / "bad", method=method, sinkhorn_eps_rel=0.0))
    res = train(_config(src, tgt, tmp_path / "r", method=method, epochs=1,
                        align_classes="non-mergers"))
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["align_classes"] == "non-mergers" and cfg["method"] == method
    assert res.epochs_run == 1
    with (tmp_path / "r" / "history.csv").open() as fh:
        row = next(csv.DictReader(fh))
    assert float(row["train_transfer"]) != 0.0  # the transfer term ran on the non-mergers


def test_augmentation_is_a_dihedral_transform() -> None:
    x = np.random.default_rng(0).normal(size=(16, 3, 9, 9)).astype(np.float32)
    y = augment_batch(x, np.random.default_rng(1))
    for a, b in zip(x, y, strict=True):
        variants = [np.rot90(a, k, axes=(1, 2)) for k in range(4)]
        variants += [v[:, :, ::-1] for v in variants]
        assert any(np.array_equal(b, v) for v in variants)
    assert not np.array_equal(x, y)


def test_domain_split_streams_the_same_pixels(pair: tuple[Path, Path]) -> None:
    src, _ = pair
    with open_dataset(src) as ds:
        idx = ds.indices("val")
        norm = compute_normalisation(ds, ds.indices("train"))
        a = DomainSplit(ds, idx, norm)
        b = DomainSplit(ds, idx, norm, max_in_memory_mb=0)
        assert a.in_memory and not b.in_memory
        pos = np.array([2, 0, 1])
        np.testing.assert_array_equal(a.images(pos), b.images(pos))


def test_real_jpeg_directory_as_target_and_evaluate(tmp_path: Path, example_dir: Path) -> None:
    """Sim->real shape on real SDSS JPEGs: a directory target (central crop), evaluate by path."""
    import pandas as pd

    cut = example_dir / "cutouts"
    table = pd.read_csv(example_dir / "sdss_example.csv", dtype=str)
    labels = tmp_path / "labels.csv"
    table.rename(columns={"gz1_merger": "merger"})[["objid", "merger"]].to_csv(labels,
                                                                               index=False)
    with open_dataset(cut, labels=labels, crop_fraction=0.5) as ds:
        x = ds.read(ds.indices())
        src = write_dataset(tmp_path / "src.h5", x, ds.labels, ds.convention)
    cfg = TrainConfig(source=DataConfig(str(src)),
                      target=DataConfig(str(cut), labels=None, crop_fraction=0.5),
                      out=str(tmp_path / "run"), method="mmd", epochs=1, batch_size=8)
    res = train(cfg)
    ck = load_checkpoint(res.checkpoint)
    assert ck.conventions["target"].pixel_convention == "sdss-colour-jpeg"
    assert ck.conventions["target"].crop_fraction == 0.5
    assert res.metrics["target_test"] is None  # no labels given for the target
    ev = evaluate_checkpoint(res.checkpoint, cut, labels=labels, split="all", device="cpu")
    assert ev["domain"] == "target" and ev["n"] == len(table)
    assert ev["n_mergers"] == int((table["gz1_merger"] == "1").sum())
