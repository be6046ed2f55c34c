"""Named hyper-parameter presets: the paper's Tables A2 and A3 by name.

``galmerge train --preset paper-simsim-mmd ...`` starts from the
:class:`~galmerge.training.config.TrainConfig` defaults, applies the preset,
then any option given explicitly on the command line. Without ``--preset``,
the Table A2 row that matches ``--method``/``--fisher``/``--entropy``/``--arch``
is used (:func:`preset_for`).

All rows share Adam betas (0.7, 0.8) and epsilon 1e-8 (Table A2/A3), which
are the config defaults. Values the tables do not give are marked "assumed".
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import Any

from galmerge.errors import GalmergeError
from galmerge.training.config import DataConfig, TrainConfig

__all__ = [
    "PRESETS",
    "Preset",
    "build_config",
    "get_preset",
    "preset_for",
    "preset_table",
]


@dataclass(frozen=True)
class Preset:
    """A named set of config values and the table they come from."""

    name: str
    source: str
    description: str
    values: dict[str, Any]


def _p(name: str, source: str, description: str, **values: Any) -> Preset:
    return Preset(name, source, description, values)


_DM_FE_MMD = dict(lambda_w=0.01, lambda_b=1.0, lambda_em=0.05)  # Table A2 DeepMerge MMD+F+E
_DM_FE_DANN = dict(lambda_w=1e-4, lambda_b=1.0, lambda_em=1e-4)  # Table A2 DeepMerge Adv.+F+E

PRESETS: dict[str, Preset] = {p.name: p for p in (
    # --- Table A2, DeepMerge column ---------------------------------------------------
    _p("paper-simsim-noda", "Table A2, DeepMerge, No Domain Adaptation",
       "sim->sim, no domain adaptation",
       method="none", fisher=False, entropy=False, arch="deepmerge",
       lr=1e-3, weight_decay=0.01, cycle_length=8, patience=20),
    _p("paper-simsim-mmd", "Table A2, DeepMerge, MMD",
       "sim->sim, MMD transfer loss",
       method="mmd", fisher=False, entropy=False, arch="deepmerge",
       lr=1e-3, weight_decay=1e-4, cycle_length=8, patience=20, lambda_tl=1.0),
    _p("paper-simsim-mmd-fisher-entropy", "Table A2, DeepMerge, MMD + Fisher + Entropy",
       "sim->sim, MMD + Fisher trace ratio + entropy minimisation",
       method="mmd", fisher=True, entropy=True, arch="deepmerge",
       lr=1e-3, weight_decay=1e-4, cycle_length=8, patience=20, lambda_tl=1.0, **_DM_FE_MMD),
    _p("paper-simsim-dann", "Table A2, DeepMerge, Adversarial",
       "sim->sim, adversarial (DANN) transfer loss",
       method="dann", fisher=False, entropy=False, arch="deepmerge",
       lr=1e-3, weight_decay=1e-4, cycle_length=8, patience=20, lambda_tl=1.0, dc_lr_mult=1.0),
    _p("paper-simsim-dann-fisher-entropy", "Table A2, DeepMerge, Adversarial + Fisher + Entropy",
       "sim->sim, DANN + Fisher trace ratio + entropy minimisation",
       method="dann", fisher=True, entropy=True, arch="deepmerge",
       lr=1e-3, weight_decay=1e-4, cycle_length=8, patience=20, lambda_tl=1.0,
       dc_lr_mult=0.01, **_DM_FE_DANN),
    # --- Table A2, ResNet18 column (dropout 0.6 is listed once, in the first block, for
    # the one ResNet18 definition the paper uses; applied to every ResNet18 row) ---------
    _p("paper-simsim-resnet18-noda", "Table A2, ResNet18, No Domain Adaptation",
       "sim->sim ResNet18, no domain adaptation",
       method="none", fisher=False, entropy=False, arch="resnet18", dropout=0.6,
       lr=2.3e-4, weight_decay=0.1, cycle_length=2, patience=15),
    _p("paper-simsim-resnet18-mmd", "Table A2, ResNet18, MMD",
       "sim->sim ResNet18, MMD",
       method="mmd", fisher=False, entropy=False, arch="resnet18", dropout=0.6,
       lr=2.3e-4, weight_decay=0.08, cycle_length=2, patience=15, lambda_tl=0.01),
    _p("paper-simsim-resnet18-mmd-fisher-entropy", "Table A2, ResNet18, MMD + Fisher + Entropy",
       "sim->sim ResNet18, MMD + Fisher + entropy",
       method="mmd", fisher=True, entropy=True, arch="resnet18", dropout=0.6,
       lr=2.3e-4, weight_decay=0.08, cycle_length=2, patience=15, lambda_tl=1.0,
       lambda_w=0.01, lambda_b=1.0, lambda_em=0.05),
    _p("paper-simsim-resnet18-dann", "Table A2, ResNet18, Adversarial",
       "sim->sim ResNet18, DANN",
       method="dann", fisher=False, entropy=False, arch="resnet18", dropout=0.6,
       lr=1e-3, weight_decay=1e-4, cycle_length=2, patience=15, lambda_tl=0.1, dc_lr_mult=1.0),
    _p("paper-simsim-resnet18-dann-fisher-entropy",
       "Table A2, ResNet18, Adversarial + Fisher + Entropy",
       "sim->sim ResNet18, DANN + Fisher + entropy",
       method="dann", fisher=True, entropy=True, arch="resnet18", dropout=0.6,
       lr=1e-3, weight_decay=1e-4, cycle_length=8, patience=15, lambda_tl=0.1,
       lambda_w=0.01, lambda_b=1.0, lambda_em=0.05, dc_lr_mult=0.1),
    # --- Table A3, DeepMerge sim->real ---------------------------------------------------
    _p("paper-simreal-noda", "Table A3, noDA", "sim->real, no domain adaptation",
       method="none", fisher=False, entropy=False, arch="deepmerge",
       lr=1e-3, weight_decay=1e-3, cycle_length=5, patience=20),
    _p("paper-simreal-mmd", "Table A3, MMD (lambda_TL not in the table: assumed 1)",
       "sim->real, MMD",
       method="mmd", fisher=False, entropy=False, arch="deepmerge",
       lr=1e-3, weight_decay=1e-3, cycle_length=5, patience=20, lambda_tl=1.0),
    _p("paper-simreal-tl-mmd",
       "Table A3, TL+MMD (lambda_TL assumed 1); pass --init-from a sim->sim checkpoint (§6.2.1)",
       "sim->real, MMD with transfer learning from a sim->sim model; all weights train",
       method="mmd", fisher=False, entropy=False, arch="deepmerge",
       lr=1e-2, weight_decay=1e-4, cycle_length=5, patience=20, lambda_tl=1.0),
    # --- the shipped SDSS model (issue 6; scripts/train_sdss_model.py runs all four) -------
    # Paper rows plus two galmerge choices fixed in advance, so that no epoch is selected:
    # flips/90-degree rotations, and a fixed number of epochs whose last half is averaged
    # (stochastic weight averaging). Target: real SDSS GZ1 JPEGs, central half (crop 0.5).
    _p("sdss-stage1", "Table A2, DeepMerge, MMD; + augment, 20 epochs, SWA 11-20 (galmerge)",
       "stage 1 of the shipped SDSS model: sim->sim (pristine -> noisy) with MMD",
       method="mmd", fisher=False, entropy=False, arch="deepmerge",
       lr=1e-3, weight_decay=1e-4, cycle_length=8, patience=20, lambda_tl=1.0,
       augment=True, epochs=20, swa_start=11),
    _p("sdss", "Table A3, TL+MMD; + augment, 30 epochs, SWA 16-30, target crop 0.5, MMD on "
       "the source non-mergers only (galmerge, issue 10)",
       "the shipped SDSS model: --init-from the sdss-stage1 run, sim-SDSS with real hosts -> "
       "real SDSS with class-aware MMD (the merger-poor survey is aligned with the simulated "
       "non-mergers)",
       method="mmd", fisher=False, entropy=False, arch="deepmerge",
       lr=1e-2, weight_decay=1e-4, cycle_length=5, patience=20, lambda_tl=1.0,
       augment=True, epochs=30, swa_start=16, target_crop=0.5, align_classes="non-mergers"),
    _p("sdss-2026-12", "Table A3, TL+MMD; + augment, 30 epochs, SWA 16-30, target crop 0.5 "
       "(galmerge)",
       "the SDSS model shipped until issue 10: as sdss, MMD on all source images",
       method="mmd", fisher=False, entropy=False, arch="deepmerge",
       lr=1e-2, weight_decay=1e-4, cycle_length=5, patience=20, lambda_tl=1.0,
       augment=True, epochs=30, swa_start=16, target_crop=0.5),
    _p("sdss-noda", "Table A3, noDA; + augment, 30 epochs, SWA 16-30, target crop 0.5 (galmerge)",
       "baseline of the shipped SDSS model: no domain adaptation, no transfer learning",
       method="none", fisher=False, entropy=False, arch="deepmerge",
       lr=1e-3, weight_decay=1e-3, cycle_length=5, patience=20,
       augment=True, epochs=30, swa_start=16, target_crop=0.5),
    _p("sdss-mmd", "Table A3, MMD; + augment, 30 epochs, SWA 16-30, target crop 0.5 (galmerge)",
       "baseline of the shipped SDSS model: MMD, no transfer learning",
       method="mmd", fisher=False, entropy=False, arch="deepmerge",
       lr=1e-3, weight_decay=1e-3, cycle_length=5, patience=20, lambda_tl=1.0,
       augment=True, epochs=30, swa_start=16, target_crop=0.5),
)}


def get_preset(name: str) -> Preset:
    """A preset by name (case-insensitive)."""
    key = name.strip().lower()
    if key not in PRESETS:
        raise GalmergeError(f"unknown preset {name!r}",
                            hint=f"use one of {', '.join(sorted(PRESETS))}")
    return PRESETS[key]


def preset_for(method: str, fisher: bool, entropy: bool, arch: str) -> str:
    """Name of the Table A2 row matching a method/loss/architecture choice."""
    arch_part = "resnet18-" if arch == "resnet18" else ""
    method_part = {"none": "noda", "mmd": "mmd", "dann": "dann"}.get(method, method)
    suffix = "-fisher-entropy" if (fisher or entropy) and method != "none" else ""
    return f"paper-simsim-{arch_part}{method_part}{suffix}"


def preset_table() -> str:
    """A markdown table of all presets (for the README / ``--help``)."""
    keys = ("method", "fisher", "entropy", "arch", "lr", "weight_decay", "cycle_length",
            "patience", "lambda_tl", "lambda_w", "lambda_b", "lambda_em", "dc_lr_mult", "dropout")
    head = "| preset | " + " | ".join(keys) + " | source |"
    sep = "|" + "---|" * (len(keys) + 2)
    rows = [head, sep]
    for p in PRESETS.values():
        cells = [str(p.values.get(k, "")) if k in p.values else "" for k in keys]
        rows.append(f"| `{p.name}` | " + " | ".join(cells) + f" | {p.source} |")
    return "\n".join(rows)


def build_config(overrides: dict[str, Any], preset: str | None = None) -> TrainConfig:
    """Config = defaults <- preset <- explicit overrides (``None`` values are ignored).

    ``overrides`` holds :class:`TrainConfig` field names plus ``source``/``target``
    (paths), ``source_labels``/``target_labels`` and ``source_crop``/``target_crop``.
    Without ``preset``, the Table A2 row matching the method, losses and
    architecture is used (:func:`preset_for`).
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    data_keys = {"source", "target", "source_labels", "target_labels", "source_crop",
                 "target_crop"}
    name = preset or preset_for(given.get("method", "none"), bool(given.get("fisher")),
                                bool(given.get("entropy")), given.get("arch", "deepmerge"))
    chosen = get_preset(name)
    fields_ = {f.name for f in dataclass_fields(TrainConfig)}
    unknown = set(given) - fields_ - data_keys
    if unknown:
        raise GalmergeError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {k: v for k, v in chosen.values.items() if k not in data_keys}
    values.update({k: v for k, v in given.items() if k not in data_keys})
    # a preset may set the crop of its data (the SDSS presets crop the real target)
    given = {**{k: v for k, v in chosen.values.items() if k in data_keys}, **given}
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    cfg = TrainConfig(**values)
    cfg.preset = chosen.name
    cfg.source = DataConfig(str(given.get("source", "")), _str_or_none(given.get("source_labels")),
                            float(given.get("source_crop", 1.0)))
    cfg.target = DataConfig(str(given.get("target", "")), _str_or_none(given.get("target_labels")),
                            float(given.get("target_crop", 1.0)))
    return cfg


def _str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)
