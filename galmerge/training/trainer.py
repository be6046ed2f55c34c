"""The training loop: DeepMerge/ResNet18 with MMD, DANN, Fisher and entropy losses.

How a run works (``train(config)``):

1. Open the source (labelled) and target (labels optional) datasets with
   :func:`~galmerge.data.open_dataset`; compute each domain's per-channel
   normalisation on its *training split only*; load each training split into
   RAM when it fits ``max_in_memory_mb`` (else read batches from the file).
2. Each step draws ``batch_size`` source and ``batch_size`` target images
   (infinite reshuffled samplers, so unequal domain sizes are fine) and sends
   them through the network as ONE concatenated batch, so BatchNorm sees both
   domains. Loss: Eq. 2 = CE(source) + lambda_TL x transfer (MMD or the Sinkhorn
   divergence on the features, or DANN) + Fisher (source) + lambda_EM x entropy (target).
   One epoch = ceil(max(n_source, n_target) / batch_size) steps.
3. Adam (betas, eps, weight decay from the config; Table A2) with a triangular
   one-cycle learning rate (Appendix A): linear from lr/10 up to lr over half a
   cycle, back down over the other half, cycle length in epochs, repeated.
   The domain classifier and the Fisher centres are in the optimiser with their
   own learning-rate multipliers (unlike the paper's code).
4. After each epoch the model is scored on the validation splits and the
   *selection criterion* decides the best epoch (early stopping with patience;
   the best weights are written to ``best.pt``). Target labels are never used
   for selection:

   * ``source-loss``: cross-entropy on the source validation split;
   * ``source-loss+mmd``: that plus ``selection_mmd_weight`` x the multi-kernel
     MMD between the source-validation and target-validation features (the
     unlabelled domain gap; lower = better aligned);
   * ``auto`` (default): ``source-loss`` without domain adaptation,
     ``source-loss+mmd`` with MMD or DANN — a DA model that is accurate on
     source but not aligned is not what the user asked for.

   Target-validation accuracy/AUC are logged (``monitor_*`` columns) when the
   target has labels, for inspection only.
   With ``swa_start > 0`` (stochastic weight averaging, Izmailov et al. 2018)
   no epoch is selected: the end-of-epoch weights of epochs ``swa_start`` ..
   ``epochs`` are averaged, BatchNorm statistics are recomputed for the
   average on one pass of training batches (both domains concatenated, as in
   training), every epoch is run (no early stopping), and the average is the
   delivered model. The criterion-best single epoch is still written, to
   ``best-epoch.pt``, for comparison.
5. At the end the delivered weights are scored on the test splits: ``metrics.json``.

Outputs in ``out``: ``best.pt``, ``config.json``, ``history.csv``, ``metrics.json``
(and ``best-epoch.pt`` with weight averaging).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from torch import nn

from galmerge.conventions import ModelConvention, Normalisation
from galmerge.data.dataset import Dataset, open_dataset
from galmerge.errors import GalmergeError
from galmerge.progressbar import ProgressBar
from galmerge.training.averaging import WeightAverage, mixed_batches, recompute_batchnorm
from galmerge.training.checkpoint import load_checkpoint, save_checkpoint
from galmerge.training.config import DataConfig, TrainConfig
from galmerge.training.data import (
    ClassFractionSampler,
    DomainSplit,
    InfiniteSampler,
    augment_batch,
    compute_normalisation,
)
from galmerge.training.losses import (
    PAPER_MMD_SIGMA2,
    DomainAdversarialLoss,
    DomainClassifier,
    EntropyLoss,
    FisherLoss,
    GradientReversal,
    MMDLoss,
    SinkhornLoss,
    total_loss,
)
from galmerge.training.metrics import binary_metrics
from galmerge.training.models import (
    FeatureClassifier,
    build_feature_model,
    count_trainable_parameters,
)

__all__ = [
    "HISTORY_COLUMNS",
    "VAL_KEYS",
    "Log",
    "TrainResult",
    "conventions_match",
    "deterministic",
    "load_history",
    "one_cycle_lr",
    "open_domain",
    "predict",
    "resolve_device",
    "train",
]

Log = Callable[[str], None]

HISTORY_COLUMNS = (
    "epoch", "lr", "grl_lambda",
    "train_loss", "train_ce", "train_transfer", "train_fisher", "train_entropy",
    "train_source_acc", "train_domain_acc",
    "val_source_loss", "val_source_acc", "val_source_auc", "val_domain_mmd",
    "val_target_entropy", "val_criterion", "is_best",
    "monitor_target_val_acc", "monitor_target_val_auc", "seconds", "in_average",
)


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    out: Path
    checkpoint: Path
    best_epoch: int
    epochs_run: int
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


# --- devices, seeds, determinism ----------------------------------------------

def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GalmergeError("--device cuda requested but no CUDA GPU is available",
                            hint="use --device auto or --device cpu")
    if name not in ("cpu", "cuda"):
        raise GalmergeError(f"--device {name!r} is not one of auto, cpu, cuda")
    return torch.device(name)


@contextmanager
def deterministic(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch and switch to deterministic kernels for the duration of a run.

    The paper fixes seeds for shuffling, initialisation and the CUDA backend
    (Appendix A): same machine, same numbers. Settings are restored afterwards.
    """
    if device.type == "cuda":
        # cuBLAS needs this before its first call to be deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    prev_cudnn_det = torch.backends.cudnn.deterministic
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev_bench
        torch.backends.cudnn.deterministic = prev_cudnn_det


def one_cycle_lr(step: int, steps_per_cycle: int, lr: float, min_factor: float = 0.1) -> float:
    """Triangular one-cycle learning rate (Appendix A).

    Linear from ``min_factor * lr`` up to ``lr`` over the first half of each
    cycle and back down over the second half; cycles repeat.
    """
    lo = min_factor * lr
    pos = (step % steps_per_cycle) / steps_per_cycle
    frac = 2 * pos if pos < 0.5 else 2 * (1 - pos)
    return lo + (lr - lo) * frac


# --- datasets -----------------------------------------------------------------

def open_domain(dc: DataConfig, role: str) -> Dataset:
    """Open one domain's dataset (any layout), naming the role in errors."""
    try:
        return open_dataset(dc.path, labels=dc.labels, crop_fraction=dc.crop_fraction)
    except GalmergeError as exc:
        raise GalmergeError(f"{role}: {exc.message}", hint=exc.hint) from None


def _check_domains(src: Dataset, tgt: Dataset, config: TrainConfig) -> None:
    for role, ds in (("source", src), ("target", tgt)):
        for split in ("train", "val"):
            if len(ds.indices(split)) < 2:
                raise GalmergeError(
                    f"{role} {ds.path}: only {len(ds.indices(split))} image(s) in the "
                    f"{split} split; need at least 2",
                    hint="use a larger dataset (the 70/10/20 split needs >= 20 images)")
    for split in ("train", "val"):
        lab = src.labels[src.indices(split)]
        if (lab < 0).any():
            raise GalmergeError(
                f"source {src.path}: {int((lab < 0).sum())} of {len(lab)} images in the {split} "
                "split have no label; the source domain must be labelled",
                hint="pass --source-labels, or swap source and target")
    lab = src.labels[src.indices("train")]
    if lab.min() == lab.max():
        raise GalmergeError(f"source {src.path}: the training split has only class {lab[0]}; "
                            "need mergers and non-mergers")
    cs, ct = src.convention, tgt.convention
    if len(cs.bands) != len(ct.bands) or cs.size != ct.size:
        raise GalmergeError(
            f"source has {len(cs.bands)}x{cs.size}x{cs.size} images but target has "
            f"{len(ct.bands)}x{ct.size}x{ct.size}; both domains must share the input shape")
    if config.arch == "deepmerge" and cs.size != 75:
        raise GalmergeError(f"DeepMerge needs 75x75 images (Table A1); {src.path} has "
                            f"{cs.size}x{cs.size}",
                            hint="resize the cutouts, or use --arch resnet18")


# --- evaluation helpers ----------------------------------------------------------

@torch.no_grad()
def predict(model: FeatureClassifier, split: DomainSplit, device: torch.device,
            batch_size: int = 256, *, features_max: int = 0
            ) -> tuple[np.ndarray, np.ndarray, torch.Tensor | None]:
    """Eval-mode logits (N, 2), merger probabilities (N,) and, optionally, the first
    ``features_max`` rows of features for a split."""
    was_training = model.training
    model.eval()
    logits_all, feats = [], []
    n_feat = 0
    for _, x in split.batches(batch_size):
        f = model.features(torch.from_numpy(x).to(device))
        logits_all.append(model.classify(f).float().cpu())
        if n_feat < features_max:
            take = f[: features_max - n_feat].float().cpu()
            feats.append(take)
            n_feat += take.shape[0]
    model.train(was_training)
    logits = torch.cat(logits_all).numpy()
    probs = torch.softmax(torch.from_numpy(logits), 1)[:, 1].numpy()
    return logits, probs, (torch.cat(feats) if feats else None)


def _nan_to_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


# --- the run ------------------------------------------------------------------------

def _epoch_bar(enabled: bool) -> ProgressBar:
    """Per-epoch progress bar with the running losses."""
    return ProgressBar(TextColumn("[bold]{task.description}"), BarColumn(),
                       MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("{task.fields[losses]}"), enabled=enabled, transient=True)


def train(config: TrainConfig, *, log: Log | None = None, progress: bool = False,
          overwrite: bool = False) -> TrainResult:
    """Train a model as configured; write ``best.pt``, ``config.json``, ``history.csv``,
    ``metrics.json`` into ``config.out``.

    Args:
        config: the run's settings (validated here).
        log: called with one line per epoch and a few status lines (None: silent).
        progress: show a rich progress bar per epoch.
        overwrite: allow writing into a directory that already holds ``best.pt``.

    Raises:
        GalmergeError: bad options or data (unlabelled source, shape mismatch, ...).
    """
    config.validate()
    say = log or (lambda _msg: None)
    out = Path(config.out)
    if (out / "best.pt").exists() and not overwrite:
        raise GalmergeError(f"{out}/best.pt already exists",
                            hint="choose another --out or pass --overwrite")
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    src = open_domain(config.source, "source")
    try:
        tgt = open_domain(config.target, "target")
    except GalmergeError:
        src.close()
        raise
    try:
        with deterministic(config.seed, device):
            return _run(config, src, tgt, device, out, say, progress)
    finally:
        src.close()
        tgt.close()


VAL_KEYS = ("val_source_loss", "val_source_acc", "val_source_auc", "val_domain_mmd")


@dataclass
class _Splits:
    """A run's four normalised splits, and what its checkpoints record about the domains."""

    s_train: DomainSplit
    t_train: DomainSplit
    s_val: DomainSplit
    t_val: DomainSplit
    norms: dict[str, Normalisation]
    conventions: dict[str, ModelConvention]

    @property
    def target_labelled(self) -> bool:
        """Whether target-validation metrics can be logged (for inspection only)."""
        return bool(len(self.t_val) and (self.t_val.labels >= 0).all())


@dataclass
class _Networks:
    """The model and the domain-adaptation modules of a run."""

    model: FeatureClassifier
    arch_kwargs: dict[str, Any]
    grl: GradientReversal
    dann: DomainAdversarialLoss | None
    mmd: MMDLoss
    sinkhorn: SinkhornLoss
    gap: MMDLoss  # the selection criterion's domain gap
    fisher: FisherLoss | None
    entropy: EntropyLoss | None
    frozen: list[nn.Module]

    def train_mode(self) -> None:
        """Training mode, except frozen layers: frozen BN keeps its statistics (§6.2.1)."""
        self.model.train()
        if self.dann is not None:
            self.dann.train()
        for mod in self.frozen:
            mod.eval()

    def extra_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """Domain classifier and Fisher centres, for ``--init-from`` of a later run."""
        return _extra_state(self.dann, self.fisher)


@dataclass
class _Feed:
    """Where training batches come from, and the step schedule."""

    s_sampler: InfiniteSampler | ClassFractionSampler
    t_sampler: InfiniteSampler
    aug_rng: np.random.Generator
    steps_per_epoch: int
    steps_per_cycle: int
    warmup_steps: int


@dataclass
class _Best:
    """The criterion-best epoch so far (early stopping)."""

    criterion: float = math.inf
    epoch: int = 0
    since: int = 0


@dataclass
class _Run:
    """Everything one training run holds while its epochs run."""

    config: TrainConfig
    device: torch.device
    out: Path
    say: Log
    splits: _Splits
    nets: _Networks
    opt: torch.optim.Optimizer
    feed: _Feed
    selection: str
    swa: WeightAverage | None
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: _Best = field(default_factory=_Best)

    @property
    def ckpt_path(self) -> Path:
        """Where the criterion-best epoch goes: ``best.pt``, or beside the average."""
        return self.out / ("best-epoch.pt" if self.swa is not None else "best.pt")

    def save(self, path: Path, epoch: int, metrics: dict[str, Any],
             extra_state: dict[str, dict[str, torch.Tensor]]) -> None:
        """Write a checkpoint of the model as it is now."""
        c = self.config
        save_checkpoint(path, self.nets.model, arch=c.arch, arch_kwargs=self.nets.arch_kwargs,
                        config=c.to_dict(), normalisation=self.splits.norms,
                        conventions=self.splits.conventions, epoch=epoch, metrics=metrics,
                        extra_state=extra_state)

    def validate(self) -> dict[str, Any]:
        """Validation metrics and the selection criterion of the current weights."""
        s = self.splits
        return _validate(self.nets.model, s.s_val, s.t_val, self.nets.gap, self.device,
                         self.config, self.selection, s.target_labelled)


def _run(config: TrainConfig, src: Dataset, tgt: Dataset, device: torch.device, out: Path,
         say: Log, progress: bool) -> TrainResult:
    _check_domains(src, tgt, config)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / "config.json")
    say(f"preset {config.preset or '-'}; method {config.method}"
        f"{' + Fisher' if config.fisher else ''}{' + entropy' if config.entropy else ''}, "
        f"{config.arch}, lr {config.lr:g}, weight decay {config.weight_decay:g}, "
        f"{config.epochs} epochs max, batch {config.batch_size} per domain, seed {config.seed}")
    say(f"source: {src.describe()}")
    say(f"target: {tgt.describe()}")
    run = _setup(config, src, tgt, device, out, say)
    t_start = time.perf_counter()
    with _epoch_bar(progress) as bar:
        for epoch in range(1, config.epochs + 1):
            if _epoch(run, epoch, bar):
                break
    train_seconds = time.perf_counter() - t_start
    if run.best.epoch == 0:
        raise GalmergeError("no epoch produced a finite validation criterion; nothing saved",
                            hint="check the data for constant or extreme images")
    return _deliver(run, src, tgt, train_seconds)


# --- setup ---------------------------------------------------------------------------

def _setup(config: TrainConfig, src: Dataset, tgt: Dataset, device: torch.device, out: Path,
           say: Log) -> _Run:
    """Splits, networks, optimiser and batch feed, in the order that fixes the RNG streams."""
    splits = _open_splits(config, src, tgt, say)
    nets = _build_networks(config, len(src.convention.bands), device, say)
    feed = _make_feed(config, splits)
    selection = config.selection
    if selection == "auto":
        selection = "source-loss" if config.method == "none" else "source-loss+mmd"
    say(f"{count_trainable_parameters(nets.model):,} trainable parameters ({config.arch}), "
        f"device {device}, {feed.steps_per_epoch} steps/epoch, selection: {selection}")
    return _Run(config=config, device=device, out=out, say=say, splits=splits, nets=nets,
                opt=_optimiser(config, nets), feed=feed, selection=selection,
                swa=WeightAverage(nets.model) if config.swa_start else None)


def _open_splits(config: TrainConfig, src: Dataset, tgt: Dataset, say: Log) -> _Splits:
    """Normalisation on the training splits only; splits in RAM or streamed."""
    norms = {"source": compute_normalisation(src, src.indices("train")),
             "target": compute_normalisation(tgt, tgt.indices("train"))}
    mem = config.max_in_memory_mb
    splits = _Splits(
        s_train=DomainSplit(src, src.indices("train"), norms["source"], max_in_memory_mb=mem),
        t_train=DomainSplit(tgt, tgt.indices("train"), norms["target"], max_in_memory_mb=mem),
        s_val=DomainSplit(src, src.indices("val"), norms["source"], max_in_memory_mb=mem),
        t_val=DomainSplit(tgt, tgt.indices("val"), norms["target"], max_in_memory_mb=mem),
        norms=norms, conventions={"source": src.convention, "target": tgt.convention})
    say(f"train split in memory: source {splits.s_train.in_memory}, "
        f"target {splits.t_train.in_memory}")
    return splits


def _build_networks(config: TrainConfig, in_ch: int, device: torch.device,
                    say: Log) -> _Networks:
    """Model and DA modules (torch RNG seeded by :func:`deterministic`), ``--init-from``."""
    arch_kwargs = config.arch_kwargs(in_ch)
    model = build_feature_model(config.arch, **arch_kwargs).to(device)
    feature_dim = model.feature_dim
    grl = GradientReversal(config.grl_schedule)
    dann = (DomainAdversarialLoss(DomainClassifier(feature_dim), grl).to(device)
            if config.method == "dann" else None)
    mmd = MMDLoss(multipliers=config.mmd_multipliers,
                  sigma2=PAPER_MMD_SIGMA2 if config.mmd_kernels == "paper" else None,
                  unbiased=config.mmd_unbiased)
    sinkhorn = SinkhornLoss(eps_rel=config.sinkhorn_eps_rel,
                            iterations=config.sinkhorn_iterations)
    gap = MMDLoss(multipliers=config.mmd_multipliers, unbiased=True)
    fisher = (FisherLoss(feature_dim, kind=config.fisher_kind, lambda_w=config.lambda_w,
                         lambda_b=config.lambda_b).to(device) if config.fisher else None)
    entropy = EntropyLoss() if config.entropy else None
    frozen: list[nn.Module] = []
    if config.init_from:
        _init_from(config, model, dann, fisher, say)
        if config.freeze == "conv":
            frozen = model.conv_modules()
            for mod in frozen:
                for prm in mod.parameters():
                    prm.requires_grad_(False)
    return _Networks(model=model, arch_kwargs=arch_kwargs, grl=grl, dann=dann, mmd=mmd,
                     sinkhorn=sinkhorn, gap=gap, fisher=fisher, entropy=entropy, frozen=frozen)


def _optimiser(config: TrainConfig, nets: _Networks) -> torch.optim.Adam:
    """Adam over every trainable module, each with its learning-rate multiplier."""
    groups: list[dict[str, Any]] = [
        {"params": [p for p in nets.model.parameters() if p.requires_grad], "lr_mult": 1.0}]
    if nets.dann is not None:
        groups.append({"params": list(nets.dann.discriminator.parameters()),
                       "lr_mult": config.dc_lr_mult})  # Table A2 "Domain class. LR mult."
    if nets.fisher is not None:
        groups.append({"params": [nets.fisher.centres], "lr_mult": config.centre_lr_mult,
                       "weight_decay": 0.0})
    return torch.optim.Adam(groups, lr=config.lr, betas=config.betas, eps=config.eps,
                            weight_decay=config.weight_decay)


def _make_feed(config: TrainConfig, splits: _Splits) -> _Feed:
    """Endless reshuffled samplers per domain (seeded) and the steps of an epoch and a cycle."""
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(3)]
    s_train, t_train = splits.s_train, splits.t_train
    s_sampler: InfiniteSampler | ClassFractionSampler = (
        InfiniteSampler(len(s_train), config.batch_size, rngs[0])
        if config.source_merger_fraction is None else
        ClassFractionSampler(s_train.labels, config.batch_size, config.source_merger_fraction,
                             rngs[0]))
    steps_per_epoch = math.ceil(max(len(s_train), len(t_train)) / config.batch_size)
    return _Feed(
        s_sampler=s_sampler, t_sampler=InfiniteSampler(len(t_train), config.batch_size, rngs[1]),
        aug_rng=rngs[2], steps_per_epoch=steps_per_epoch,
        steps_per_cycle=max(1, round(config.cycle_length * steps_per_epoch)),
        warmup_steps=max(1, round((config.grl_warmup_epochs or config.epochs) * steps_per_epoch)))


# --- one epoch -----------------------------------------------------------------------

def _epoch(run: _Run, epoch: int, bar: ProgressBar) -> bool:
    """Train one epoch, validate, keep the best; True when early stopping ends the run."""
    t0 = time.perf_counter()
    train_means, lr_now = _train_epoch(run, epoch, bar)
    row = _epoch_row(run, epoch, train_means, lr_now)
    crit = row["val_criterion"]
    improved = math.isfinite(crit) and crit < run.best.criterion
    row["is_best"] = int(improved)
    in_average = run.swa is not None and epoch >= run.config.swa_start
    row["in_average"] = int(in_average)
    if run.swa is not None and in_average:
        run.swa.add(run.nets.model)
    row["seconds"] = round(time.perf_counter() - t0, 3)
    run.history.append(row)
    _write_history(run.out / "history.csv", run.history)
    if improved:
        run.best = _Best(crit, epoch, 0)
        run.save(run.ckpt_path, epoch, {"val_criterion": crit, "selection": run.selection},
                 run.nets.extra_state())
    else:
        run.best.since += 1
    run.say(_epoch_line(row, run.config.epochs))
    if run.swa is None and run.best.since >= run.config.patience:
        run.say(f"early stopping: no improvement of {run.selection} for "
                f"{run.config.patience} epochs; best epoch {run.best.epoch}")
        return True
    return False


def _train_epoch(run: _Run, epoch: int, bar: ProgressBar) -> tuple[dict[str, float], float]:
    """The optimiser steps of one epoch; returns the mean losses and the last learning rate."""
    config, feed = run.config, run.feed
    run.nets.train_mode()
    sums: dict[str, float] = {}
    task = bar.add(f"epoch {epoch}/{config.epochs}", feed.steps_per_epoch, losses="")
    lr_now = config.lr
    for n_done in range(1, feed.steps_per_epoch + 1):
        lr_now = one_cycle_lr(run.step, feed.steps_per_cycle, config.lr, config.lr_min_factor)
        for g in run.opt.param_groups:
            g["lr"] = lr_now * g["lr_mult"]
        run.nets.grl.set_progress(run.step / feed.warmup_steps)
        for k, v in _train_step(run, epoch).items():
            sums[k] = sums.get(k, 0.0) + v
        bar.advance(task, losses="  ".join(f"{k} {sums[k] / n_done:.3f}"
                                           for k in ("loss", "ce", "transfer") if k in sums))
    bar.remove(task)
    return {k: v / feed.steps_per_epoch for k, v in sums.items()}, lr_now


def _train_step(run: _Run, epoch: int) -> dict[str, float]:
    """One concatenated source + target batch through Eq. 2 and one optimiser step."""
    config, feed, nets, splits = run.config, run.feed, run.nets, run.splits
    ps, pt = feed.s_sampler.next(), feed.t_sampler.next()
    xs, xt = splits.s_train.images(ps), splits.t_train.images(pt)
    if config.augment:
        xs, xt = augment_batch(xs, feed.aug_rng), augment_batch(xt, feed.aug_rng)
    ys = torch.from_numpy(splits.s_train.labels[ps]).to(run.device)
    x = torch.from_numpy(np.concatenate([xs, xt])).to(run.device)
    feats = nets.model.features(x)  # one pass: BatchNorm sees both domains
    logits = nets.model.classify(feats)
    ns = xs.shape[0]
    terms = _loss_terms(config, nets, feats, logits, ys, ns)
    loss = total_loss(terms["ce"], transfer=terms.get("transfer"), fisher=terms.get("fisher"),
                      entropy=terms.get("entropy"), lambda_tl=config.lambda_tl,
                      lambda_em=config.lambda_em)  # Eq. 2
    if not torch.isfinite(loss):
        raise GalmergeError(
            f"training diverged at epoch {epoch} (loss {float(loss)}; "
            f"{', '.join(f'{k}={float(v):.3g}' for k, v in terms.items())})",
            hint="lower --lr or the loss weights")
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    run.step += 1
    with torch.no_grad():
        acc = (logits[:ns].argmax(1) == ys).float().mean()
    vals = {"loss": float(loss.detach()), "source_acc": float(acc),
            **{k: float(v.detach()) for k, v in terms.items()}}
    if nets.dann is not None:
        vals["domain_acc"] = nets.dann.domain_accuracy
    return vals


def _loss_terms(config: TrainConfig, nets: _Networks, feats: torch.Tensor,
                logits: torch.Tensor, ys: torch.Tensor, ns: int) -> dict[str, torch.Tensor]:
    """The terms of Eq. 2 for one batch whose first ``ns`` rows are the source."""
    f_s, f_t = feats[:ns], feats[ns:]
    terms: dict[str, torch.Tensor] = {"ce": F.cross_entropy(logits[:ns], ys)}  # Eq. 1
    f_align = f_s if config.align_classes == "all" else f_s[ys == 0]
    if config.method != "none" and f_align.shape[0] < 2:
        terms["transfer"] = feats.sum() * 0.0  # tiny batch: < 2 non-mergers
    elif config.method == "mmd":
        terms["transfer"] = nets.mmd(f_align, f_t)  # Eq. 5-7
    elif config.method == "sinkhorn":
        terms["transfer"] = nets.sinkhorn(f_align, f_t)  # Feydy et al. 2019 eq. 4
    elif nets.dann is not None:
        terms["transfer"] = nets.dann(f_align, f_t)  # Eq. 8-9
    if nets.fisher is not None:
        terms["fisher"] = nets.fisher(f_s, ys)  # Eq. 10
    if nets.entropy is not None:
        terms["entropy"] = nets.entropy(logits[ns:])  # Eq. 11
    return terms


def _epoch_row(run: _Run, epoch: int, train_means: dict[str, float],
               lr_now: float) -> dict[str, Any]:
    """The epoch's ``history.csv`` row: validation, selection criterion, training means."""
    row = run.validate()
    row.update(epoch=epoch, lr=lr_now,
               grl_lambda=run.nets.grl.coeff if run.nets.dann is not None else None,
               train_loss=train_means["loss"], train_ce=train_means["ce"],
               train_transfer=train_means.get("transfer"),
               train_fisher=train_means.get("fisher"),
               train_entropy=train_means.get("entropy"),
               train_source_acc=train_means["source_acc"],
               train_domain_acc=train_means.get("domain_acc"))
    return row


# --- delivery: the average or the best epoch, test metrics, best.pt ------------------------

def _deliver(run: _Run, src: Dataset, tgt: Dataset, train_seconds: float) -> TrainResult:
    """Test metrics with the delivered weights (criterion-best epoch, or the average)."""
    config, model, best, history = run.config, run.nets.model, run.best, run.history
    ck = load_checkpoint(run.ckpt_path)
    model.load_state_dict(ck.state_dict)
    val = {k: history[best.epoch - 1][k] for k in VAL_KEYS}
    delivered_epoch, selection = best.epoch, run.selection
    averaged: dict[str, Any] = {}
    if run.swa is not None:
        val, averaged, selection = _average(run, run.swa)
        delivered_epoch = len(history)
    metrics = _final_metrics(model, src, tgt, run.splits.norms, run.device, config,
                             config.max_in_memory_mb)
    metrics.update(best_epoch=delivered_epoch, epochs_run=len(history), selection=selection,
                   val_criterion=best.criterion if run.swa is None else None,
                   train_seconds=round(train_seconds, 2),
                   device=str(run.device), trainable_parameters=count_trainable_parameters(model),
                   config_hash=ck.config_hash(), val=_nan_to_none(val), **averaged)
    (run.out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True,
                                                     default=_json_default) + "\n")
    final_path = run.out / "best.pt"
    run.save(final_path, delivered_epoch, metrics, ck.extra_state)
    return TrainResult(out=run.out, checkpoint=final_path, best_epoch=delivered_epoch,
                       epochs_run=len(history), metrics=metrics, history=history)


def _average(run: _Run, swa: WeightAverage
             ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Put the weight average into the model, refresh its BatchNorm statistics, validate it.

    Returns its validation numbers, what the metrics record about the average, and
    the selection's description.
    """
    config, model, n = run.config, run.nets.model, len(run.history)
    swa.apply(model)
    bn_rngs = [np.random.default_rng(s)
               for s in np.random.SeedSequence([config.seed, 1]).spawn(3)]
    batches = mixed_batches(run.splits.s_train, run.splits.t_train,
                            batch_size=config.batch_size, steps=run.feed.steps_per_epoch,
                            rngs=bn_rngs, augment=config.augment)
    recompute_batchnorm(model, batches, run.device, frozen=run.nets.frozen)
    vrow = run.validate()
    averaged = {"swa_epochs": [config.swa_start, n], "swa_models": swa.count,
                "best_single_epoch": run.best.epoch,
                "best_single_epoch_criterion": run.best.criterion}
    run.say(f"weight average of {swa.count} epochs ({config.swa_start}-{n}): "
            f"val loss {vrow['val_source_loss']:.4f}, acc {vrow['val_source_acc']:.3f}, "
            f"mmd {vrow['val_domain_mmd']:.4f}")
    return ({k: vrow[k] for k in VAL_KEYS}, averaged,
            f"swa (average of epochs {config.swa_start}-{n})")


def _validate(model: FeatureClassifier, s_val: DomainSplit, t_val: DomainSplit, gap: MMDLoss,
              device: torch.device, config: TrainConfig, selection: str,
              target_labelled: bool) -> dict[str, Any]:
    bs = config.eval_batch_size
    need_feats = config.val_mmd_max
    s_logits, s_prob, s_feat = predict(model, s_val, device, bs, features_max=need_feats)
    t_logits, t_prob, t_feat = predict(model, t_val, device, bs, features_max=need_feats)
    ys = torch.from_numpy(s_val.labels)
    val_loss = float(F.cross_entropy(torch.from_numpy(s_logits), ys))
    sm = binary_metrics(s_val.labels, s_prob)
    with torch.no_grad():
        mmd_val = (float(gap(s_feat, t_feat)) if s_feat is not None and t_feat is not None
                   and len(s_feat) >= 2 and len(t_feat) >= 2 else float("nan"))
        t_ent = float(EntropyLoss()(torch.from_numpy(t_logits)))
    crit = val_loss
    if selection == "source-loss+mmd" and math.isfinite(mmd_val):
        crit = val_loss + config.selection_mmd_weight * mmd_val
    row: dict[str, Any] = {
        "val_source_loss": val_loss, "val_source_acc": sm["accuracy"],
        "val_source_auc": sm["auc"], "val_domain_mmd": mmd_val,
        "val_target_entropy": t_ent, "val_criterion": crit,
        "monitor_target_val_acc": None, "monitor_target_val_auc": None,
    }
    if target_labelled:
        tm = binary_metrics(t_val.labels, t_prob)
        row["monitor_target_val_acc"] = tm["accuracy"]
        row["monitor_target_val_auc"] = tm["auc"]
    return row


def _final_metrics(model: FeatureClassifier, src: Dataset, tgt: Dataset,
                   norms: dict[str, Normalisation], device: torch.device,
                   config: TrainConfig, mem: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for role, ds in (("source", src), ("target", tgt)):
        for split in ("val", "test"):
            idx = ds.indices(split)
            idx = idx[ds.labels[idx] >= 0]
            if len(idx) == 0:
                out[f"{role}_{split}"] = None
                continue
            part = DomainSplit(ds, idx, norms[role], max_in_memory_mb=mem)
            _, prob, _ = predict(model, part, device, config.eval_batch_size)
            out[f"{role}_{split}"] = _nan_to_none(binary_metrics(part.labels, prob))
    return out


def _extra_state(dann: DomainAdversarialLoss | None, fisher: FisherLoss | None
                 ) -> dict[str, dict[str, torch.Tensor]]:
    extra: dict[str, dict[str, torch.Tensor]] = {}
    if dann is not None:
        extra["domain_classifier"] = dann.discriminator.state_dict()
    if fisher is not None:
        extra["fisher"] = {"centres": fisher.centres.detach()}
    return extra


def _init_from(config: TrainConfig, model: nn.Module, dann: DomainAdversarialLoss | None,
               fisher: FisherLoss | None, say: Log) -> None:
    """Transfer learning (§6.2.1): start from an earlier galmerge checkpoint's weights."""
    assert config.init_from is not None
    ck = load_checkpoint(config.init_from)
    if ck.arch != config.arch:
        raise GalmergeError(f"{config.init_from}: is a {ck.arch} checkpoint but --arch is "
                            f"{config.arch}", hint=f"pass --arch {ck.arch}")
    try:
        model.load_state_dict(ck.state_dict)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise GalmergeError(f"{config.init_from}: weights do not fit this model ({first})",
                            hint="use the same --arch options (bottleneck, channels)") from None
    loaded = ["model"]
    dc = ck.extra_state.get("domain_classifier")
    if dann is not None and dc is not None:
        try:
            dann.discriminator.load_state_dict(dc)
            loaded.append("domain classifier")
        except RuntimeError:
            pass
    fc = ck.extra_state.get("fisher")
    if fisher is not None and fc is not None and fc["centres"].shape == fisher.centres.shape:
        with torch.no_grad():
            fisher.centres.copy_(fc["centres"])
        loaded.append("Fisher centres")
    say(f"initialised from {config.init_from} (epoch {ck.epoch}): {', '.join(loaded)}; "
        f"normalisation recomputed for the new domains")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    return str(v)


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HISTORY_COLUMNS)
        for row in history:
            w.writerow([_fmt(row.get(c)) for c in HISTORY_COLUMNS])
    os.replace(tmp, path)


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {row['epoch']:>3}/{epochs}", f"lr {row['lr']:.2e}",
             f"loss {row['train_loss']:.4f}", f"ce {row['train_ce']:.4f}"]
    for key, name in (("train_transfer", "tl"), ("train_fisher", "fl"),
                      ("train_entropy", "em"), ("train_domain_acc", "dom_acc")):
        if row.get(key) is not None:
            parts.append(f"{name} {row[key]:.4f}")
    parts += [f"| val loss {row['val_source_loss']:.4f}", f"acc {row['val_source_acc']:.3f}",
              f"mmd {row['val_domain_mmd']:.4f}", f"crit {row['val_criterion']:.4f}"]
    if row.get("monitor_target_val_acc") is not None:
        parts.append(f"(target val acc {row['monitor_target_val_acc']:.3f}, not used)")
    if row["is_best"]:
        parts.append("*")
    parts.append(f"{row['seconds']:.1f}s")
    return " ".join(parts)


def load_history(path: str | Path) -> list[dict[str, str]]:
    """Read a ``history.csv`` back (strings)."""
    with Path(path).open(newline="") as fh:
        return list(csv.DictReader(fh))


def conventions_match(a: ModelConvention, b: ModelConvention) -> bool:
    """Same pixel convention, band order and size."""
    return (a.pixel_convention == b.pixel_convention and tuple(a.bands) == tuple(b.bands)
            and a.size == b.size)
