"""Score a checkpoint on any labelled dataset: the paper's §6 metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from galmerge.data.dataset import Dataset, open_dataset
from galmerge.errors import GalmergeError
from galmerge.training.checkpoint import Checkpoint, load_checkpoint
from galmerge.training.data import DomainSplit
from galmerge.training.metrics import binary_metrics, bootstrap_ci
from galmerge.training.models import FeatureClassifier
from galmerge.training.trainer import conventions_match, predict, resolve_device

__all__ = [
    "DOMAINS",
    "choose_domain",
    "evaluate_checkpoint",
]

DOMAINS = ("source", "target")


def _same_path(a: str | None, b: str | Path) -> bool:
    if not a:
        return False
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def choose_domain(ck: Checkpoint, data: str | Path, ds: Dataset | None) -> tuple[str, str]:
    """Which domain's normalisation to use for ``data``, and why.

    The domain the checkpoint was trained with on this very path; else the one
    whose pixel convention matches the data (if only one does); else target.
    """
    cfg = ck.config
    for dom in DOMAINS:
        if _same_path((cfg.get(dom) or {}).get("path"), data):
            return dom, f"{data} is the run's {dom} dataset"
    if ds is not None:
        matches = [d for d in DOMAINS if d in ck.conventions
                   and conventions_match(ck.conventions[d], ds.convention)]
        if len(matches) == 1:
            return matches[0], f"pixel convention matches the {matches[0]} domain"
    return "target", "default (target domain)"


def evaluate_checkpoint(
    checkpoint: str | Path, data: str | Path, *, split: str = "test", domain: str | None = None,
    labels: str | Path | None = None, batch_size: int = 256, device: str = "auto",
    threshold: float = 0.5, bootstrap: int = 0, seed: int = 0, scores: bool = False,
) -> dict[str, Any]:
    """Metrics of a checkpoint on one split of a labelled dataset.

    Args:
        checkpoint: a ``best.pt`` written by ``galmerge train``.
        data: any dataset layout :func:`~galmerge.data.open_dataset` reads.
        split: ``train``/``val``/``test``/``all``.
        domain: whose normalisation to apply (``source``/``target``); None = chosen
            by :func:`choose_domain`.
        labels: explicit labels file for ``.npy`` arrays or image directories.
        bootstrap: number of bootstrap resamples for 95% intervals (0 = none).
        scores: also return the per-image ``ids``, ``labels`` and ``p_merger``
            (lists, in dataset order) — e.g. for paired comparisons of two models.

    Returns:
        JSON-ready dict: the six metrics, counts, confusion matrices, and what
        was evaluated (``domain``, ``domain_reason``, ``split``, ``n_unlabelled_skipped``).

    Raises:
        GalmergeError: unreadable checkpoint/data, no labels, shape or convention mismatch.
    """
    if domain is not None and domain not in DOMAINS:
        raise GalmergeError(f"--domain {domain!r} is not one of source, target")
    ck = load_checkpoint(checkpoint)
    dev = resolve_device(device)
    ds, domain, reason = _open_for_domain(ck, data, labels, domain)
    try:
        _check_fits(ck, checkpoint, data, ds, domain)
        idx, n_split = _labelled(ds, data, split)
        part = DomainSplit(ds, idx, ck.normalisation[domain], max_in_memory_mb=0)
        prob = _score(ck, checkpoint, part, dev, batch_size)
        res: dict[str, Any] = binary_metrics(part.labels, prob, threshold)
        if bootstrap:
            ci = bootstrap_ci(part.labels, prob, n_boot=bootstrap, seed=seed, threshold=threshold)
            res["ci95"] = {k: [v.low, v.high] for k, v in ci.items()}
        if not np.isfinite(res["auc"]):
            res["auc"] = None
        if scores:
            res.update(ids=[str(i) for i in ds.ids[idx]], labels=part.labels.tolist(),
                       p_merger=prob.astype(float).tolist())
        res.update(checkpoint=str(checkpoint), data=str(data), split=split, domain=domain,
                   domain_reason=reason, n_unlabelled_skipped=int(n_split - len(idx)),
                   arch=ck.arch, epoch=ck.epoch)
        return res
    finally:
        ds.close()


def _open_for_domain(ck: Checkpoint, data: str | Path, labels: str | Path | None,
                     domain: str | None) -> tuple[Dataset, str, str]:
    """Open ``data`` at the geometry of the chosen (or given) domain: the dataset, the
    domain and why it was chosen."""
    conv = ck.conventions.get(domain or "target")
    size = conv.size if conv else 75
    crop = conv.crop_fraction if conv else 1.0
    ds = open_dataset(data, labels=labels, size=size, crop_fraction=crop)
    if domain is not None:
        return ds, domain, "chosen with --domain"
    try:
        domain, reason = choose_domain(ck, data, ds)
    except BaseException:
        ds.close()
        raise
    conv = ck.conventions.get(domain)
    if Path(data).is_dir() and conv is not None and (conv.size, conv.crop_fraction) != (
            size, crop):
        ds.close()
        ds = open_dataset(data, labels=labels, size=conv.size, crop_fraction=conv.crop_fraction)
    return ds, domain, reason


def _check_fits(ck: Checkpoint, checkpoint: str | Path, data: str | Path, ds: Dataset,
                domain: str) -> None:
    """The data must have the shape and pixel convention of the model's ``domain``."""
    if domain not in ck.normalisation:
        raise GalmergeError(f"{checkpoint}: has no normalisation for the {domain} domain")
    conv = ck.conventions[domain]
    if len(ds.convention.bands) != len(conv.bands) or ds.convention.size != conv.size:
        raise GalmergeError(
            f"{data}: images are {len(ds.convention.bands)}x{ds.convention.size}px but the "
            f"model's {domain} domain had {len(conv.bands)}x{conv.size}px")
    if ds.convention.pixel_convention != conv.pixel_convention:
        raise GalmergeError(
            f"{data}: pixels are {ds.convention.pixel_convention!r} but the model's {domain} "
            f"domain was trained on {conv.pixel_convention!r}",
            hint="evaluate on data in the model's pixel convention")


def _labelled(ds: Dataset, data: str | Path, split: str) -> tuple[np.ndarray, int]:
    """The labelled rows of ``split`` and the split's size."""
    idx = ds.indices(split)
    n_split = len(idx)
    idx = idx[ds.labels[idx] >= 0]
    if len(idx) == 0:
        raise GalmergeError(
            f"{data}: no labelled images in split {split!r} ({n_split} images, none labelled)",
            hint="evaluate needs labels (1 merger, 0 non-merger); pass --labels if they "
                 "live in a separate file")
    return idx, n_split


def _score(ck: Checkpoint, checkpoint: str | Path, part: DomainSplit, dev: torch.device,
           batch_size: int) -> np.ndarray:
    """Merger probabilities of the checkpoint's model on ``part``."""
    model = ck.build(dev)
    if not isinstance(model, FeatureClassifier):
        raise GalmergeError(f"{checkpoint}: architecture {ck.arch!r} cannot be evaluated")
    with torch.no_grad():
        _, prob, _ = predict(model, part, dev, batch_size)
    return prob
