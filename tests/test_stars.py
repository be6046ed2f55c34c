"""The bright-star check (galmerge.inference.stars): real SDSS stars flagged, real galaxies
and planted look-alikes not, and what classify does with the flag (the survey check sets
such cutouts aside: tests/test_survey_check.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from galmerge.conventions import DISPLAY_RGB8, SDSS_COLOUR_JPEG
from galmerge.inference.pipeline import classify_catalog
from galmerge.inference.stars import bright_star_flags, bright_star_reasons, core_position
from tests.conftest import DATA, EXAMPLE, sdss_model_inputs

STARS = DATA / "sdss_stars"
SIZE = 75


def _scene(core_rgb: tuple[float, float, float], *, sigma: float = 2.0,
           at: tuple[float, float] = (37.0, 37.0), axis_ratio: float = 1.0) -> np.ndarray:
    """(3, 75, 75) noisy sky + one over-exposed Gaussian source, clipped at 255 like a
    JPEG (``core_rgb`` x 1.5 at the peak)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float64)
    blob = np.exp(-0.5 * (((xx - at[1]) / sigma) ** 2
                          + ((yy - at[0]) / (sigma * axis_ratio)) ** 2))
    img = 5.0 + rng.normal(0, 3.0, (3, SIZE, SIZE))
    img += 1.5 * np.asarray(core_rgb)[:, None, None] * blob
    return np.clip(img, 0, 255).astype(np.float32)


def test_real_sdss_stars_flagged_and_real_galaxies_not() -> None:
    ids, stars = sdss_model_inputs(STARS)
    why = dict(zip(ids, bright_star_reasons(stars), strict=True))
    assert "blue-white" in why["587742576456630328"]      # a star beside a galaxy
    assert "blue-white" in why["587738066203377685"]      # spikes and a halo
    _, galaxies = sdss_model_inputs(EXAMPLE / "cutouts")
    assert not any(bright_star_reasons(galaxies))         # 24 real SDSS galaxies


def test_planted_stars_and_look_alikes() -> None:
    planted = {
        "blue-white star": (_scene((150, 200, 255)), True),
        "blue-white star off centre": (_scene((150, 200, 255), at=(20, 55)), True),
        "red saturated galaxy core": (_scene((255, 170, 120), sigma=3), False),
        "saturated in every channel": (_scene((255, 255, 255), sigma=5), False),
        "edge-on disc": (_scene((255, 190, 120), sigma=12, axis_ratio=0.1), False),
        "faint blue star": (_scene((20, 25, 40)), False),
        "blue-white star in the corner": (_scene((150, 200, 255), at=(4, 4)), False),
    }
    imgs = np.stack([v[0] for v in planted.values()])
    flag, why = bright_star_flags(imgs, SDSS_COLOUR_JPEG)
    got = dict(zip(planted, flag.tolist(), strict=True))
    assert got == {k: v[1] for k, v in planted.items()}, dict(zip(planted, why, strict=True))
    cy, cx = core_position(imgs[1].sum(axis=0)[None])
    assert (cy[0], cx[0]) == (pytest.approx(20, abs=0.5), pytest.approx(55, abs=0.5))


def test_only_sdss_colour_jpeg_inputs_are_checked() -> None:
    _, stars = sdss_model_inputs(STARS)
    flag, why = bright_star_flags(stars, DISPLAY_RGB8)
    assert not flag.any() and why == ["", ""]
    flag, why = bright_star_flags(stars[:0], SDSS_COLOUR_JPEG)
    assert flag.shape == (0,) and why == []


def test_classify_flags_the_star_and_never_calls_it_a_merger(tmp_path: Path) -> None:
    files = sorted(STARS.glob("*.jpeg")) + sorted((EXAMPLE / "cutouts").glob("*.jp*g"))[:3]
    cat = tmp_path / "cat.csv"
    pd.DataFrame({"objid": [f.stem for f in files], "file_loc": [str(f) for f in files]}
                 ).to_csv(cat, index=False)
    out = tmp_path / "out.csv"
    classify_catalog(cat, output=out)  # the shipped SDSS model
    got = pd.read_csv(out, dtype={"objid": str}).set_index("objid")
    stars = [f.stem for f in files[:2]]
    assert got.loc[stars, "bright_star"].all() and not got.loc[stars, "is_merger"].any()
    assert (got.loc[stars, "status"] == "ok").all() and got.loc[stars, "p_merger"].notna().all()
    assert got.loc[stars, "status_detail"].str.contains("bright star").all()
    assert not got.drop(index=stars)["bright_star"].any()
