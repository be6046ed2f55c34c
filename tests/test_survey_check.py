"""The survey-like check (galmerge.training.survey, galmerge survey-check) on toy sets whose
answers are computed by hand, and the held-out pool rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from galmerge.data.holdout import is_held_out, split_ids, split_image_dir
from galmerge.inference.engine import OnnxClassifier
from galmerge.inference.models import resolve_model
from galmerge.survey_check import (
    SET_ASIDE,
    SurveyCheckOptions,
    run_survey_check,
    score_directory,
)
from galmerge.training.survey import (
    SurveySample,
    calibration_points,
    precision_at_recall,
    survey_bootstrap,
    survey_metrics,
    survey_weight,
    topk_purity,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "catalogs" / "sdss_example"
STARS = ROOT / "tests" / "data" / "sdss_stars"
NO_SKY = ROOT / "tests" / "data" / "sdss_no_sky"


def test_weight_makes_mergers_the_stated_fraction() -> None:
    w = survey_weight(10, 90, 0.01)
    assert w == pytest.approx(11.0)               # 10 (1 - 0.01) / (0.01 x 90)
    assert 10 / (10 + w * 90) == pytest.approx(0.01)


def test_topk_purity_by_hand() -> None:
    # 10 mergers, 90 non-mergers, w = 11 at 1 %. Ranking: 5 mergers, 1 non-merger, 5 mergers.
    y = np.r_[np.ones(5), 0, np.ones(5), np.zeros(89)].astype(int)
    p = np.linspace(1, 0, 100)
    # weighted counts down the ranking: 1..5, then 5 + 11 = 16 >= k = 10 -> purity 5 / 16
    assert topk_purity(y, p, 11.0) == pytest.approx(5 / 16)
    # recall 0.5 = 5 mergers is reached before the first non-merger
    assert precision_at_recall(y, p, 11.0, 0.5) == pytest.approx(1.0)
    # a non-merger on top: weighted count 11 >= 10 at once, purity 0
    y2 = np.r_[0, np.ones(10), np.zeros(89)].astype(int)
    assert topk_purity(y2, p, 11.0) == 0.0
    assert precision_at_recall(y2, p, 11.0, 0.5) == pytest.approx(5 / 16)


def test_ties_enter_together() -> None:
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.9, 0.1, 0.1])                # first tie group: 1 TP + 1 FP
    assert topk_purity(y, p, 1.0, k=1) == pytest.approx(0.5)


def test_sample_metrics_perfect_and_threshold() -> None:
    lab = np.r_[np.ones(4), np.zeros(6)].astype(int)
    dev = np.r_[np.full(4, 0.9), np.full(6, 0.2)]
    pool = np.r_[np.full(19, 0.1), 0.95]              # one background galaxy above all
    s = SurveySample(lab, dev, pool, threshold=0.5)
    m = survey_metrics(s, 0.01)
    # w = 4 x 0.99 / (0.01 x 26) = 15.23: the top background galaxy alone outweighs k = 4
    assert m["topk_purity"] == 0.0
    assert m["pool_flagged"] == pytest.approx(1 / 20)
    assert m["dev_recall"] == 1.0
    assert m["purity_at_threshold"] == pytest.approx(4 / (4 + 4 * 0.99 / (0.01 * 26)))
    assert m["auc"] == pytest.approx(1 - 4 / (4 * 26))    # one of 26 negatives beats all 4


def test_seed_average_and_paired_bootstrap() -> None:
    rng = np.random.default_rng(0)
    lab = np.r_[np.ones(20), np.zeros(60)].astype(int)
    good = np.r_[rng.uniform(0.6, 1, 20), rng.uniform(0, 0.5, 60)]
    bad = rng.uniform(0, 1, 80)
    pool_good, pool_bad = rng.uniform(0, 0.5, 200), rng.uniform(0, 1, 200)
    samples = {"good": SurveySample(lab, np.stack([good, good]), np.stack([pool_good] * 2)),
               "bad": SurveySample(lab, bad, pool_bad)}
    res = survey_bootstrap(samples, 0.01, n_boot=200, seed=1)
    assert res["models"]["good"]["topk_purity"]["value"] == 1.0
    d = res["differences"]["good - bad"]["topk_purity"]
    assert d["value"] > 0 and d["ci95"][0] > 0          # paired interval excludes zero
    lo, hi = res["models"]["bad"]["auc"]["ci95"]
    assert lo <= res["models"]["bad"]["auc"]["value"] <= hi
    json.dumps(res)                                      # plain JSON for the run summary


def test_calibration_points_are_monotone() -> None:
    rng = np.random.default_rng(2)
    lab = np.r_[np.ones(30), np.zeros(70)].astype(int)
    dev = np.r_[rng.uniform(0.3, 1, 30), rng.uniform(0, 0.7, 70)]
    pool = rng.uniform(0, 0.7, 300)
    pts = calibration_points(SurveySample(lab, dev, pool), [0.2, 0.5, 0.8], n_boot=50)
    comp = [p["completeness"] for p in pts]
    flagged = [p["flagged_fraction"] for p in pts]
    assert comp == sorted(comp, reverse=True) and flagged == sorted(flagged, reverse=True)
    assert pts[-1]["fpr"] == 0.0 and pts[-1]["purity"] == 1.0
    assert all(p["purity_ci"][0] <= p["purity_ci"][1] for p in pts)


def test_holdout_rule_is_a_pure_function_of_the_id(tmp_path: Path) -> None:
    ids = [str(587722981750865959 + i) for i in range(3000)]
    train, held = split_ids(ids)
    assert len(train) + len(held) == 3000 and 0.28 < len(held) / 3000 < 0.39
    assert all(is_held_out(i) for i in held) and not any(is_held_out(i) for i in train)
    src = EXAMPLE / "cutouts"
    n_train, n_held = split_image_dir(src, tmp_path / "train", tmp_path / "held")
    names = sorted(p.name for p in src.iterdir() if p.is_file())
    assert n_train + n_held == len(names)
    assert sorted(p.name for p in (tmp_path / "held").iterdir()) == \
        [n for n in names if is_held_out(Path(n).stem)]


def _example_labels(tmp_path: Path) -> Path:
    labels = tmp_path / "labels.csv"
    rows = (EXAMPLE / "sdss_example.csv").read_text().splitlines()
    head = rows[0].split(",")
    i_id, i_lab = head.index("objid"), head.index("gz1_merger")
    labels.write_text("objid,merger\n" + "\n".join(
        f"{r.split(',')[i_id]},{r.split(',')[i_lab]}" for r in rows[1:]) + "\n")
    return labels


def test_cli_survey_check_on_the_example(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from galmerge.cli import app

    # the 24 example cutouts: labelled set and (its non-mergers) background, shipped model
    labels = _example_labels(tmp_path)
    out = tmp_path / "check.json"
    res = CliRunner().invoke(app, [
        "survey-check", "--model", f"shipped={ROOT / 'models' / 'deepmerge-sdss.onnx'}",
        "--dev", str(EXAMPLE / "cutouts"), "--labels", str(labels),
        "--background", str(EXAMPLE / "cutouts"), "--bootstrap", "20", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "top-k purity" in res.output
    data = json.loads(out.read_text())
    m = data["models"]["shipped"]
    assert 0 <= m["topk_purity"]["value"] <= 1 and 0 <= m["pool_flagged"]["value"] <= 1
    assert data["n_background"] == 24


def test_cli_calibrate_writes_a_calibrated_copy_and_spares_the_model(tmp_path: Path) -> None:
    import onnx
    from typer.testing import CliRunner

    from galmerge.cli import app
    from galmerge.inference.calibration import ModelCalibration
    from galmerge.inference.engine import OnnxClassifier
    from galmerge.survey_check import score_directory

    labels = _example_labels(tmp_path)
    model = tmp_path / "m.onnx"
    model.write_bytes((ROOT / "models" / "deepmerge-sdss.onnx").read_bytes())
    before = model.read_bytes()
    out = tmp_path / "calibrated.onnx"
    base = ["calibrate", "--model", str(model), "--dev", str(EXAMPLE / "cutouts"),
            "--labels", str(labels), "--background", str(EXAMPLE / "cutouts"),
            "--bootstrap", "20"]
    res = CliRunner().invoke(app, [*base, "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "score map: p = sigmoid(" in res.output and "cross-fitted" in res.output
    assert model.read_bytes() == before
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    cal = ModelCalibration.from_metadata(meta)
    assert cal.score_map is not None and cal.score_map.a > 0
    assert cal.curve is not None and len(cal.curve.points) >= 3
    # the graph is unchanged: same raw scores
    _, _, p0 = score_directory(OnnxClassifier(model, device="cpu"), EXAMPLE / "cutouts")
    _, _, p1 = score_directory(OnnxClassifier(out, device="cpu"), EXAMPLE / "cutouts")
    assert np.array_equal(p0, p1)
    # never over the model itself
    res = CliRunner().invoke(app, [*base, "-o", str(model)])
    assert res.exit_code != 0 and "is the model itself" in res.output
    assert model.read_bytes() == before


def test_survey_check_sets_flagged_cutouts_aside_unless_asked(tmp_path: Path) -> None:
    """Bright stars and fields without sky are ranked last (as classify never calls them
    is_merger), and still counted; --keep-set-aside ranks them like the rest."""
    dev, bg = tmp_path / "dev", tmp_path / "bg"
    dev.mkdir(), bg.mkdir()
    galaxies = sorted((EXAMPLE / "cutouts").glob("*.jp*g"))
    flagged = sorted(STARS.glob("*.jpeg")) + sorted(NO_SKY.glob("*.jpeg"))
    rows = []
    for i, f in enumerate(galaxies[:12]):
        (dev / f.name).write_bytes(f.read_bytes())
        rows.append((f.stem, int(i % 3 == 0)))
    for f in flagged:  # labelled non-mergers
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
    aside = np.isin(ids, [f.stem for f in flagged])
    res = {}
    for keep in (False, True):
        opts = SurveyCheckOptions(dev=dev, labels=labels, background=bg, bootstrap=20,
                                  keep_set_aside=keep)
        res[keep] = run_survey_check({"m": [model]}, opts)["models"]["m"]["auc"]["value"]
    y = np.r_[lab, 0 * pb]
    assert res[True] == pytest.approx(_auc(y, np.r_[p, pb]))
    assert res[False] == pytest.approx(_auc(y, np.r_[np.where(aside, SET_ASIDE, p), pb]))
    assert res[False] > res[True]  # the set-aside non-mergers outscored labelled mergers


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC by counting pairs (ties half)."""
    pos, neg = s[y == 1], s[y == 0]
    return float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())
