"""Presets reproduce Tables A2/A3; explicit options override them."""

from __future__ import annotations

import json

import pytest

from galmerge.errors import GalmergeError
from galmerge.training.config import TrainConfig
from galmerge.training.presets import PRESETS, build_config, get_preset, preset_for

PATHS = dict(source="s.h5", target="t.h5", out="run")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_a_valid_config(name: str) -> None:
    cfg = build_config(dict(PATHS), name)
    cfg.validate()
    assert cfg.preset == name
    assert cfg.betas == (0.7, 0.8) and cfg.eps == 1e-8  # Table A2/A3, every row


def test_table_a2_values() -> None:
    c = build_config(dict(PATHS), "paper-simsim-dann-fisher-entropy")
    assert (c.method, c.fisher, c.entropy, c.lr, c.weight_decay, c.cycle_length, c.patience) == \
        ("dann", True, True, 1e-3, 1e-4, 8, 20)
    assert (c.lambda_tl, c.lambda_w, c.lambda_b, c.lambda_em, c.dc_lr_mult) == \
        (1.0, 1e-4, 1.0, 1e-4, 0.01)
    r = build_config(dict(PATHS), "paper-simsim-resnet18-mmd")
    assert (r.arch, r.lr, r.weight_decay, r.cycle_length, r.patience, r.lambda_tl, r.dropout) == \
        ("resnet18", 2.3e-4, 0.08, 2, 15, 0.01, 0.6)
    n = build_config(dict(PATHS), "paper-simsim-noda")
    assert n.weight_decay == 0.01 and n.method == "none"
    t = build_config(dict(PATHS), "paper-simreal-tl-mmd")
    assert (t.lr, t.weight_decay, t.cycle_length) == (0.01, 1e-4, 5)


def test_explicit_options_override_the_preset() -> None:
    c = build_config(dict(PATHS, lr=0.5, epochs=3, fisher=False, lambda_tl=None),
                     "paper-simsim-mmd-fisher-entropy")
    assert c.lr == 0.5 and c.epochs == 3 and c.fisher is False
    assert c.lambda_tl == 1.0  # None = not given
    assert c.entropy is True


def test_no_preset_uses_the_matching_table_a2_row() -> None:
    assert preset_for("dann", True, True, "deepmerge") == "paper-simsim-dann-fisher-entropy"
    assert preset_for("mmd", False, False, "resnet18") == "paper-simsim-resnet18-mmd"
    assert preset_for("none", False, False, "deepmerge") == "paper-simsim-noda"
    c = build_config(dict(PATHS, method="mmd", arch="resnet18"))
    assert c.preset == "paper-simsim-resnet18-mmd" and c.lambda_tl == 0.01


def test_names_are_case_insensitive_and_unknown_is_an_error() -> None:
    assert get_preset("paper-simsim-nodA").name == "paper-simsim-noda"
    with pytest.raises(GalmergeError, match="unknown preset"):
        get_preset("paper-simsim-coral")
    with pytest.raises(GalmergeError, match="unknown training option"):
        build_config(dict(PATHS, learning_rate=1.0))


def test_config_json_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = build_config(dict(PATHS, source_labels="y.npy", target_crop=0.5), "paper-simsim-mmd")
    c.save(tmp_path / "config.json")
    back = TrainConfig.from_dict(json.loads((tmp_path / "config.json").read_text()))
    assert back == c
    assert back.target.crop_fraction == 0.5 and back.source.labels == "y.npy"


def test_sdss_presets_fix_the_epochs_average_and_target_crop() -> None:
    for name in ("sdss-stage1", "sdss", "sdss-noda", "sdss-mmd"):
        c = build_config(dict(PATHS), name)
        # no epoch is selected: a fixed run whose last epochs are averaged
        assert c.augment and 0 < c.swa_start <= c.epochs, name
    assert build_config(dict(PATHS), "sdss-stage1").target.crop_fraction == 1.0
    for name in ("sdss", "sdss-noda", "sdss-mmd"):
        assert build_config(dict(PATHS), name).target.crop_fraction == 0.5, name
    # an explicit crop still overrides the preset's
    assert build_config(dict(PATHS, target_crop=0.8), "sdss").target.crop_fraction == 0.8
    assert build_config(dict(PATHS), "sdss-noda").method == "none"
    # the shipped recipe aligns the merger-poor survey with the simulated non-mergers only
    assert build_config(dict(PATHS), "sdss").align_classes == "non-mergers"
    assert build_config(dict(PATHS), "sdss-2026-12").align_classes == "all"
