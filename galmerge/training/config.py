"""Typed training configuration, saved as ``config.json`` and inside each checkpoint.

Defaults are the paper's where it gives them (Table A2 DeepMerge column, §5,
Appendix A, the paper code's settings in ``anchors.md`` §b); every such default
says where it comes from. Presets (:mod:`galmerge.training.presets`) change a
subset of fields by name; explicit CLI options override presets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from galmerge.errors import GalmergeError
from galmerge.serial import from_plain, to_plain

__all__ = [
    "ALIGN_CLASSES",
    "ARCHS",
    "DEVICES",
    "FISHER_KINDS",
    "FREEZE",
    "GRL_SCHEDULES",
    "METHODS",
    "MMD_KERNELS",
    "SELECTION",
    "DataConfig",
    "TrainConfig",
]

METHODS = ("none", "mmd", "dann", "sinkhorn")
ARCHS = ("deepmerge", "resnet18")
FREEZE = ("none", "conv")
SELECTION = ("auto", "source-loss", "source-loss+mmd")
MMD_KERNELS = ("batch", "paper")
GRL_SCHEDULES = ("ganin", "constant")
FISHER_KINDS = ("tr", "td")
DEVICES = ("auto", "cpu", "cuda")
ALIGN_CLASSES = ("all", "non-mergers")


@dataclass
class DataConfig:
    """Where one domain's images come from (any layout ``open_dataset`` reads)."""

    path: str = ""
    #: labels file (``.npy`` for array pairs, CSV for image directories); None = found by name
    labels: str | None = None
    #: central fraction of each cutout used, for image directories (findings.md #2)
    crop_fraction: float = 1.0


@dataclass
class TrainConfig:
    """Everything that determines a training run."""

    source: DataConfig = field(default_factory=DataConfig)
    target: DataConfig = field(default_factory=DataConfig)
    out: str = "run"

    # --- model and losses ---
    method: str = "none"                 # none | mmd | dann (§5) | sinkhorn (not in the paper)
    fisher: bool = False                 # Fisher loss, Eq. 10
    entropy: bool = False                # entropy minimisation, Eq. 11
    arch: str = "deepmerge"              # deepmerge (Table A1) | resnet18 (§3)
    dropout: float = 0.0                 # ResNet18 head (Table A2: 0.6); DeepMerge: none (§3)
    bottleneck_dim: int = 0              # ResNet18 linear bottleneck (paper code: 256); 0 = none
    lambda_tl: float = 1.0               # Eq. 2 transfer-loss weight (Table A2 DeepMerge: 1)
    lambda_w: float = 0.01               # Fisher intra-class weight (Table A2 MMD+F: 0.01)
    lambda_b: float = 1.0                # Fisher inter-class weight (Table A2: 1.0)
    lambda_em: float = 0.05              # entropy weight (Table A2 MMD+F: 0.05)
    fisher_kind: str = "tr"              # trace ratio (§2.2, the paper's choice) | td
    mmd_kernels: str = "batch"           # batch: 2^k x mean sq. distance | paper: 19 fixed
    mmd_multipliers: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)  # 2^k, k = -2..2
    mmd_unbiased: bool = True            # Eq. 6 is the unbiased estimator
    #: Sinkhorn entropic blur: eps = this x the batch's mean squared feature distance
    sinkhorn_eps_rel: float = 0.05
    sinkhorn_iterations: int = 50        # log-domain Sinkhorn iterations per loss
    grl_schedule: str = "ganin"          # ganin warm-up | constant (paper code)
    grl_warmup_epochs: float | None = None  # horizon of the warm-up; None = max epochs
    dc_lr_mult: float = 1.0              # domain classifier LR multiplier (Table A2)
    centre_lr_mult: float = 10.0         # Fisher centres LR multiplier (paper code train_MMD.py)

    # --- optimisation (Appendix A, Table A2) ---
    epochs: int = 200                    # maximum epochs (paper code examples: 200)
    batch_size: int = 128                # per domain (paper code, anchors b.2)
    lr: float = 1e-3                     # Table A2 DeepMerge
    betas: tuple[float, float] = (0.7, 0.8)  # Table A2
    eps: float = 1e-8                    # Table A2
    weight_decay: float = 1e-4           # Table A2 DeepMerge DA rows
    cycle_length: float = 8.0            # one-cycle length in epochs (Table A2 DeepMerge)
    lr_min_factor: float = 0.1           # cycle between lr/10 and lr (Appendix A)
    patience: int = 20                   # early-stopping patience in epochs (Table A2 DeepMerge)
    selection: str = "auto"              # validation criterion, see trainer docs
    selection_mmd_weight: float = 1.0    # weight of the val MMD in 'source-loss+mmd'
    augment: bool = False                # random flips / 90-degree rotations (off: paper fidelity)
    #: stochastic weight averaging (Izmailov et al. 2018): average the end-of-epoch weights of
    #: epochs swa_start..epochs and recompute BatchNorm statistics; 0 = off (paper: off).
    #: With averaging the run always trains all epochs and saves the average, so no epoch
    #: has to be *selected* at all.
    swa_start: int = 0
    #: fraction of mergers in every source batch (None: as the data come, e.g. 50/50 from the
    #: simulator). Set it near the target's expected merger fraction so that MMD/DANN do not
    #: align source mergers with target non-mergers (class-prior shift; not in the paper).
    source_merger_fraction: float | None = None
    #: which source images the transfer loss aligns with the target: "all" (the paper) or
    #: "non-mergers" (class-aware: a merger-poor survey target is aligned with the source
    #: non-mergers only, so that no source merger is pulled onto a target non-merger —
    #: class-prior shift, Zhao et al. 2019; Tachet des Combes et al. 2020; not in the paper).
    align_classes: str = "all"

    # --- transfer learning (§6.2.1) ---
    init_from: str | None = None         # checkpoint whose weights start the run
    freeze: str = "none"                 # none | conv (conv + BN layers frozen)

    # --- reproducibility and resources ---
    seed: int = 1                        # §5: seed 1
    device: str = "auto"
    threads: int | None = None           # torch CPU threads; None = torch default
    max_in_memory_mb: float = 2048.0     # load a domain's train split into RAM below this size
    eval_batch_size: int = 256
    val_mmd_max: int = 1000              # rows per domain in the validation MMD
    preset: str | None = None            # preset the values came from (recorded)

    # ------------------------------------------------------------------
    def validate(self) -> TrainConfig:
        """Check choices and ranges; raise :class:`GalmergeError` naming the option."""
        checks: list[tuple[str, Any, tuple[str, ...]]] = [
            ("--method", self.method, METHODS), ("--arch", self.arch, ARCHS),
            ("--freeze", self.freeze, FREEZE), ("--selection", self.selection, SELECTION),
            ("--mmd-kernels", self.mmd_kernels, MMD_KERNELS),
            ("--grl-schedule", self.grl_schedule, GRL_SCHEDULES),
            ("--fisher-kind", self.fisher_kind, FISHER_KINDS), ("--device", self.device, DEVICES),
        ]
        for opt, val, allowed in checks:
            if val not in allowed:
                raise GalmergeError(f"{opt} {val!r} is not one of {', '.join(allowed)}")
        if not self.source.path:
            raise GalmergeError("--source is required (a labelled dataset)")
        if not self.target.path:
            raise GalmergeError("--target is required (labels optional)")
        positive = {"--epochs": self.epochs, "--batch-size": self.batch_size, "--lr": self.lr,
                    "--cycle-length": self.cycle_length, "--patience": self.patience,
                    "--eval-batch-size": self.eval_batch_size}
        for opt, v in positive.items():
            if not v > 0:
                raise GalmergeError(f"{opt} must be positive, got {v}")
        if self.batch_size < 2:
            raise GalmergeError("--batch-size must be at least 2 (per domain)")
        if self.weight_decay < 0 or self.lambda_tl < 0 or self.lambda_em < 0:
            raise GalmergeError("weight decay and loss weights must be >= 0")
        if self.fisher and self.fisher_kind == "tr" and self.lambda_b <= 0:
            raise GalmergeError("--lambda-b must be > 0 for the Fisher trace ratio (0/0 otherwise)",
                                hint="set --lambda-b 1 (Table A2) or use --fisher-kind td")
        if not 0 <= self.dropout < 1:
            raise GalmergeError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.arch == "deepmerge" and (self.dropout or self.bottleneck_dim):
            raise GalmergeError("--dropout/--bottleneck apply to resnet18 only "
                                "(DeepMerge has no dropout, §3)")
        if not 0 < self.lr_min_factor <= 1:
            raise GalmergeError("lr_min_factor must be in (0, 1]")
        if self.sinkhorn_eps_rel <= 0 or self.sinkhorn_iterations < 1:
            raise GalmergeError("sinkhorn_eps_rel must be > 0 and sinkhorn_iterations >= 1")
        if self.align_classes not in ALIGN_CLASSES:
            raise GalmergeError(f"unknown --align-classes {self.align_classes!r}",
                                hint=f"use one of {', '.join(ALIGN_CLASSES)}")
        if self.source_merger_fraction is not None and not 0 < self.source_merger_fraction < 1:
            raise GalmergeError(f"--source-merger-fraction must be between 0 and 1 (exclusive), "
                                f"got {self.source_merger_fraction}")
        if self.swa_start < 0 or self.swa_start > self.epochs:
            raise GalmergeError(f"--swa-start must be between 0 (off) and --epochs "
                                f"({self.epochs}), got {self.swa_start}")
        if self.freeze == "conv" and not self.init_from:
            raise GalmergeError("--freeze conv needs --init-from CKPT (frozen random layers "
                                "would never learn)")
        for d in (self.source, self.target):
            if not 0 < d.crop_fraction <= 1:
                raise GalmergeError(f"crop fraction must be in (0, 1], got {d.crop_fraction}")
        return self

    def arch_kwargs(self, in_channels: int = 3) -> dict[str, Any]:
        """Keyword arguments of :func:`~galmerge.training.models.build_model`."""
        kw: dict[str, Any] = {"in_channels": in_channels}
        if self.arch == "resnet18":
            kw.update(dropout=self.dropout, bottleneck_dim=self.bottleneck_dim)
        return kw

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        return from_plain(cls, data)

    def save(self, path: str | Path) -> Path:
        """Write ``config.json``."""
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return p

    def with_updates(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)
