"""The bright-star check (galmerge.inference.stars): real SDSS stars flagged, real galaxies
and planted look-alikes not, and what classify and the survey check do with the flag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from galmerge.conventions import DISPLAY_RGB8, SDSS_COLOUR_JPEG
from galmerge.data.dataset import ImageDirDataset
from galmerge.inference.engine import OnnxClassifier
from galmerge.inference.models import resolve_model
from galmerge.inference.pipeline import classify_catalog
from galmerge.inference.stars import bright_star_flags, bright_star_reasons, core_position
from galmerge.survey_check import (
    SET_ASIDE,
    SurveyCheckOptions,
    run_survey_check,
    score_directory,
)

ROOT = Path(__file__).resolve().parents[1]
STARS = ROOT / "tests" / "data" / "sdss_stars"
EXAMPLE = ROOT / "catalogs" / "sdss_example"
SIZE = 75


def _inputs(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    ds = ImageDirDataset(directory, size=SIZE, crop_fraction=0.5)
    try:
        return ds.ids.astype(str), ds.read(np.arange(len(ds))).astype(np.float32)
    finally:
        ds.close()


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
    ids, stars = _inputs(STARS)
    why = dict(zip(ids, bright_star_reasons(stars), strict=True))
    assert "blue-white" in why["587742576456630328"]      # a star beside a galaxy
    assert "blue-white" in why["587738066203377685"]      # spikes and a halo
    _, galaxies = _inputs(EXAMPLE / "cutouts")
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
    _, stars = _inputs(STARS)
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


def test_survey_check_sets_stars_aside_unless_asked(tmp_path: Path) -> None:
    dev, bg = tmp_path / "dev", tmp_path / "bg"
    dev.mkdir(), bg.mkdir()
    galaxies = sorted((EXAMPLE / "cutouts").glob("*.jp*g"))
    rows = []
    for i, f in enumerate(galaxies[:12]):
        (dev / f.name).write_bytes(f.read_bytes())
        rows.append((f.stem, int(i % 3 == 0)))
    for f in sorted(STARS.glob("*.jpeg")):  # labelled non-mergers
        (dev / f.name).write_bytes(f.read_bytes())
        rows.append((f.stem, 0))
    for f in galaxies[12:]:
        (bg / f.name).write_bytes(f.read_bytes())
    labels = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["objid", "merger"]).to_csv(labels, index=False)
    model = resolve_model(None)
    clf = OnnxClassifier(model, device="cpu")
    ids, lab, p = score_directory(clf, dev, labels)
    _, _, pb = score_directory(clf, bg)
    stars = np.isin(ids, [f.stem for f in STARS.glob("*.jpeg")])
    res = {}
    for keep in (False, True):
        opts = SurveyCheckOptions(dev=dev, labels=labels, background=bg, bootstrap=20,
                                  keep_stars=keep)
        res[keep] = run_survey_check({"m": [model]}, opts)["models"]["m"]["auc"]["value"]
    assert res[True] == pytest.approx(_auc(np.r_[lab, 0 * pb], np.r_[p, pb]))
    assert res[False] == pytest.approx(_auc(np.r_[lab, 0 * pb],
                                            np.r_[np.where(stars, SET_ASIDE, p), pb]))
    assert res[False] != res[True]


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC by counting pairs (ties half)."""
    pos, neg = s[y == 1], s[y == 0]
    return float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())
