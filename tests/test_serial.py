"""One (de)serialiser for the configuration dataclasses: JSON round trips keep every value
and its type, unknown keys are ignored, missing keys take the defaults."""

from __future__ import annotations

import json

import numpy as np

from galmerge.conventions import SDSS_COLOUR_JPEG, ModelConvention, Normalisation
from galmerge.serial import from_plain, to_plain
from galmerge.training.config import DataConfig, TrainConfig


def _json(d: dict) -> dict:
    return json.loads(json.dumps(d))


def test_train_config_round_trip_keeps_tuples_and_nested_domains() -> None:
    cfg = TrainConfig(source=DataConfig("s.h5"), target=DataConfig("t", "l.csv", 0.5),
                      method="mmd", betas=(0.6, 0.9), mmd_multipliers=(1.0, 2.0))
    plain = _json(cfg.to_dict())
    assert plain["betas"] == [0.6, 0.9] and plain["target"]["crop_fraction"] == 0.5
    back = TrainConfig.from_dict({**plain, "from_a_newer_version": 1})
    assert back == cfg
    assert isinstance(back.betas, tuple) and isinstance(back.target, DataConfig)


def test_missing_keys_take_defaults() -> None:
    assert TrainConfig.from_dict({"method": "dann"}) == TrainConfig(method="dann")
    conv = ModelConvention.from_dict({"pixel_convention": SDSS_COLOUR_JPEG, "bands": ["i"]})
    assert conv.bands == ("i",) and conv.class_names == ("non-merger", "merger")


def test_conventions_and_normalisation_round_trip() -> None:
    conv = ModelConvention(SDSS_COLOUR_JPEG, ("i", "r", "g"), size=64, crop_fraction=0.5,
                           pixel_scale_arcsec=0.4, extra={"cutout_pixels": "423"})
    assert ModelConvention.from_dict(_json(conv.to_dict())) == conv
    norm = Normalisation((np.float64(1.5), 2.0), (3.0, 4.0))  # numpy scalars become floats
    plain = norm.to_dict()
    assert plain == {"mean": [1.5, 2.0], "std": [3.0, 4.0]}
    assert type(plain["mean"][0]) is float
    back = Normalisation.from_dict({"mean": [1, 2], "std": [3, 4]})  # JSON ints: floats back
    assert back == Normalisation((1.5 - 0.5, 2.0), (3.0, 4.0))
    assert all(type(v) is float for v in back.mean + back.std)


def test_generic_helpers_on_a_nested_dataclass() -> None:
    cfg = TrainConfig(source=DataConfig("a"))
    assert from_plain(TrainConfig, _json(to_plain(cfg))) == cfg
