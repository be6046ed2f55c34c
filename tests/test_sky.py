"""The no-sky check (galmerge.inference.sky): real fields without sky flagged, real
galaxies and planted look-alikes not, and what classify does with it
(the survey check sets such cutouts aside: tests/test_survey_check.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from galmerge.conventions import DISPLAY_RGB8, SDSS_COLOUR_JPEG
from galmerge.inference.options import ClassifyOptions
from galmerge.inference.pipeline import classify_catalog
from galmerge.inference.sky import NO_SKY_LEVEL, border_level, no_sky_flags, no_sky_reasons
from tests.conftest import DATA, EXAMPLE, sdss_model_inputs

NO_SKY = DATA / "sdss_no_sky"
STARS = DATA / "sdss_stars"
SIZE = 75


def _field(sky: float, *, envelope: float = 0.0, scale: float = 20.0,
           sides_lit: tuple[str, ...] = ()) -> np.ndarray:
    """(3, 75, 75) sky + a galaxy whose exponential envelope has ``envelope`` counts at
    the centre; ``sides_lit`` adds a bright (120) band along those sides."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float64)
    r = np.hypot(yy - 37, xx - 37)
    img = sky + rng.normal(0, 2.0, (3, SIZE, SIZE)) + envelope * np.exp(-r / scale)
    band = {"top": yy < 10, "bottom": yy > 64, "left": xx < 10, "right": xx > 64}
    for side in sides_lit:
        img[:, band[side]] += 120.0
    return np.clip(img, 0, 255).astype(np.float32)


def test_real_fields_without_sky_flagged_and_real_galaxies_not() -> None:
    ids, fields = sdss_model_inputs(NO_SKY)
    why = dict(zip(ids, no_sky_reasons(fields), strict=True))
    assert all("no sky" in w for w in why.values()), why
    _, galaxies = sdss_model_inputs(EXAMPLE / "cutouts")
    _, stars = sdss_model_inputs(STARS)
    assert not any(no_sky_reasons(np.concatenate([galaxies, stars])))  # 24 galaxies, 2 stars
    assert border_level(galaxies).max() < NO_SKY_LEVEL / 2


def test_planted_fields_and_look_alikes() -> None:
    planted = {
        "uniform bright field": (_field(90.0), True),
        "galaxy inside a larger galaxy's light": (_field(10.0, envelope=400.0, scale=60.0), True),
        "big elliptical envelope, sky at the border": (_field(4.0, envelope=250.0), False),
        "dark sky": (_field(3.0), False),
        "three sides in a halo, sky on the fourth": (
            _field(4.0, sides_lit=("top", "left", "right")), False),
        "all four sides in a halo": (
            _field(4.0, sides_lit=("top", "bottom", "left", "right")), True),
    }
    imgs = np.stack([v[0] for v in planted.values()])
    flag, why = no_sky_flags(imgs, SDSS_COLOUR_JPEG)
    got = dict(zip(planted, flag.tolist(), strict=True))
    assert got == {k: v[1] for k, v in planted.items()}, dict(zip(planted, why, strict=True))
    assert all(("--scale" in w) == f for w, f in zip(why, flag, strict=True))


def test_only_sdss_colour_jpeg_inputs_are_checked() -> None:
    _, fields = sdss_model_inputs(NO_SKY)
    flag, why = no_sky_flags(fields, DISPLAY_RGB8)
    assert not flag.any() and why == ["", "", ""]
    flag, why = no_sky_flags(fields[:0], SDSS_COLOUR_JPEG)
    assert flag.shape == (0,) and why == []


@pytest.mark.parametrize("fraction", [None, "estimate"])  # estimate: two passes over parts
def test_classify_flags_no_sky_and_never_calls_it_a_merger(tmp_path: Path,
                                                          fraction: str | None) -> None:
    files = sorted(NO_SKY.glob("*.jpeg")) + sorted((EXAMPLE / "cutouts").glob("*.jp*g"))[:3]
    cat = tmp_path / "cat.csv"
    pd.DataFrame({"objid": [f.stem for f in files], "file_loc": [str(f) for f in files]}
                 ).to_csv(cat, index=False)
    out = tmp_path / "out.csv"
    opts = ClassifyOptions(threshold=0.05, **({"merger_fraction": fraction} if fraction else {}))
    classify_catalog(cat, output=out, options=opts)  # the shipped SDSS model
    got = pd.read_csv(out, dtype={"objid": str}).set_index("objid")
    flagged = [f.stem for f in files[:3]]
    assert (got.loc[flagged, "p_merger_raw"] >= 0.05).sum() >= 2  # above the cut: only the
    # flag keeps them out of is_merger
    assert got.loc[flagged, "no_sky"].all() and not got.loc[flagged, "is_merger"].any()
    assert (got.loc[flagged, "status"] == "ok").all()
    assert got.loc[flagged, "p_merger"].notna().all()
    assert got.loc[flagged, "status_detail"].str.contains("no sky").all()
    assert not got.drop(index=flagged)["no_sky"].any()
    assert not got.drop(index=flagged)["status_detail"].fillna("").str.contains("no sky").any()
