"""Issue 11: prior shift, EM prior estimate, calibrated thresholds, view spread, OOD flag.

Toy models are real ONNX graphs built with ``onnx.helper`` and run by ONNX Runtime;
real images come from the bundled SDSS example and the DECaLS FITS test cutouts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pyarrow.parquet as pq
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from galmerge.cli import app
from galmerge.conventions import FLUX_LINEAR, FLUX_NANOMAGGIES, ModelConvention
from galmerge.data.dataset import write_dataset
from galmerge.data.images import prepare, read_image
from galmerge.errors import GalmergeError
from galmerge.export import calibration_card, sdss_example_convention
from galmerge.inference.calibration import (
    CalibrationCurve,
    CurvePoint,
    ModelCalibration,
    ScoreHistogram,
    choose_threshold,
    estimate_prior,
    purity_at_prior,
    shift_prior,
)
from galmerge.inference.engine import OnnxClassifier
from galmerge.inference.ood import fit_ood_ranges, image_statistics, ood_flags
from galmerge.inference.views import apply_view, score_views

TOY_CONV = ModelConvention(pixel_convention=FLUX_LINEAR, bands=("g", "r", "z"), size=8,
                           stretch="none")
MU = 1.25  # class-conditional mean score -> calibrated p = sigmoid(2 MU s) at prior 0.5


# --- toy ONNX models ---------------------------------------------------------------------------

def _save(path: Path, nodes: list, inits: list, meta: dict[str, str] | None = None) -> Path:
    s = TOY_CONV.size
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, s, s])
    out = helper.make_tensor_value_info("p_merger", TensorProto.FLOAT, ["N"])
    graph = helper.make_graph(nodes, "toy", [inp], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    props = dict(TOY_CONV.to_metadata())
    props.update(meta or {})
    helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def weighted_model(path: Path, weights: np.ndarray, bias: float, meta: dict[str, str] | None = None
                   ) -> Path:
    """p = sigmoid(sum(images * weights) + bias)."""
    inits = [numpy_helper.from_array(weights.astype(np.float32)[None], "w"),
             numpy_helper.from_array(np.array([1, 2, 3], dtype=np.int64), "axes"),
             numpy_helper.from_array(np.array(bias, dtype=np.float32), "b")]
    nodes = [helper.make_node("Mul", ["images", "w"], ["x"]),
             helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0),
             helper.make_node("Add", ["s", "b"], ["z"]),
             helper.make_node("Sigmoid", ["z"], ["p_merger"])]
    return _save(path, nodes, inits, meta)


def mean_model(path: Path, meta: dict[str, str] | None = None) -> Path:
    """p = sigmoid(2 MU mean(images)): calibrated for the planted scores at prior 0.5."""
    n = 3 * TOY_CONV.size ** 2
    return weighted_model(path, np.full((3, TOY_CONV.size, TOY_CONV.size), 2 * MU / n), 0.0, meta)


def planted_images(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose mean is s ~ N(+-MU, 1) by class, plus a zero-mean smooth pattern."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < fraction
    s = rng.normal(np.where(y, MU, -MU), 1.0)
    ramp = np.linspace(-1, 1, TOY_CONV.size, dtype=np.float32)
    pattern = (ramp[None, :, None] * ramp[None, None, :]).repeat(3, axis=0)
    return (s[:, None, None, None] + pattern[None]).astype(np.float32), y


def planted_scores(n: int, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < fraction
    s = rng.normal(np.where(y, MU, -MU), 1.0)
    return 1.0 / (1.0 + np.exp(-2 * MU * s))


# --- prior shift ---------------------------------------------------------------------------

def test_prior_shift_matches_a_hand_computation() -> None:
    # Saerens et al. (2002) eq. 2.4 with pi = 0.5, pi' = 0.02, p = 0.8:
    # 0.02 * 0.8 / (0.02 * 0.8 + 0.98 * 0.2) = 0.016 / 0.212
    got = shift_prior(np.array([0.8]), 0.5, 0.02)
    assert got[0] == pytest.approx(0.016 / 0.212, abs=1e-12)
    # an unbalanced training prior: pi = 0.3, pi' = 0.1, p = 0.6
    # (0.1/0.3) 0.6 / ((0.1/0.3) 0.6 + (0.9/0.7) 0.4) = 0.2 / (0.2 + 0.514285714...)
    assert shift_prior(np.array([0.6]), 0.3, 0.1)[0] == pytest.approx(0.2 / (0.2 + 0.9 / 0.7 * 0.4))
    p = np.array([0.0, 0.01, 0.5, 0.99, 1.0, np.nan], dtype=np.float32)
    back = shift_prior(shift_prior(p, 0.5, 0.02), 0.02, 0.5)  # undone by swapping the fractions
    np.testing.assert_allclose(back, p, atol=1e-6)
    assert shift_prior(p, 0.5, 0.5).tolist()[:5] == pytest.approx(p.tolist()[:5])
    with pytest.raises(GalmergeError, match="strictly between"):
        shift_prior(p, 0.5, 0.0)


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.30])
def test_em_recovers_planted_fractions_within_one_point_from_chunks(fraction: float) -> None:
    scores = planted_scores(40_000, fraction, seed=int(fraction * 1000))
    hist = ScoreHistogram()
    for chunk in np.array_split(scores, 7):  # streamed: chunks, bounded memory
        hist.add(chunk)
    est = estimate_prior(hist, 0.5, n_boot=100)
    assert abs(est.fraction - fraction) < 0.01, est
    assert est.interval[0] <= est.fraction <= est.interval[1]
    assert est.interval[0] <= fraction <= est.interval[1]
    assert est.converged and est.n == len(scores)
    # the raw mean score is far off: that is what EM corrects
    assert abs(scores.mean() - fraction) > 0.05


# --- thresholds from the calibration curve ---------------------------------------------------

def _curve() -> CalibrationCurve:
    pts = []
    ref = 0.01
    for t, c, fpr in [(0.5, 0.9, 0.30), (0.8, 0.7, 0.05), (0.95, 0.5, 0.005), (0.99, 0.2, 0.0004)]:
        purity = ref * c / (ref * c + (1 - ref) * fpr)
        pts.append(CurvePoint(threshold=t, purity=purity, completeness=c,
                              flagged_fraction=ref * c + (1 - ref) * fpr,
                              purity_ci=(purity * 0.8, min(1.0, purity * 1.2)),
                              completeness_ci=(c - 0.05, c + 0.05)))
    return CalibrationCurve(ref, "toy check", pts)


def test_purity_is_reweighted_to_another_merger_fraction() -> None:
    # completeness 0.5, FPR 0.005: at pi = 0.05 purity = 0.025 / (0.025 + 0.95 * 0.005)
    p01 = 0.01 * 0.5 / (0.01 * 0.5 + 0.99 * 0.005)
    assert purity_at_prior(p01, 0.01, 0.05) == pytest.approx(0.025 / (0.025 + 0.95 * 0.005))
    pt = _curve().points[2]
    assert pt.false_positive_rate(0.01) == pytest.approx(0.005)


def test_threshold_for_a_target_purity_or_completeness() -> None:
    curve = _curve()
    purities = [p.purity for p in curve.points]  # 0.029, 0.124, 0.503, 0.835 at 1 %
    assert purities == sorted(purities)
    ch = choose_threshold(curve, 0.01, target_purity=0.5)
    assert ch.threshold == 0.95 and ch.expected["purity"] == pytest.approx(purities[2])
    # at a 5 % merger fraction the same purity is reached at a lower threshold
    assert choose_threshold(curve, 0.05, target_purity=0.4).threshold == 0.8
    ch = choose_threshold(curve, 0.01, target_completeness=0.6)
    assert ch.threshold == 0.8 and ch.expected["completeness"] == 0.7
    assert ch.expected["flagged_fraction"] == pytest.approx(0.01 * 0.7 + 0.99 * 0.05)
    with pytest.raises(GalmergeError, match=r"no threshold .* reaches purity >= 0\.99"):
        choose_threshold(curve, 0.01, target_purity=0.99)
    with pytest.raises(GalmergeError, match="has no calibration curve"):
        choose_threshold(None, 0.01, target_completeness=0.5)


def test_calibration_metadata_round_trips_through_a_real_model(tmp_path: Path) -> None:
    imgs = planted_images(200, 0.3, seed=3)[0]
    cal = ModelCalibration(train_merger_fraction=0.5, decision_threshold=0.95,
                           decision_rule="purity 0.5 at 1 % on the toy check", curve=_curve(),
                           ood=fit_ood_ranges(imgs, source="toy images"))
    clf = OnnxClassifier(mean_model(tmp_path / "m.onnx", cal.to_metadata()), device="cpu")
    back = ModelCalibration.from_metadata(clf.metadata)
    assert back == cal
    assert back.default_choice().threshold == 0.95
    card = calibration_card(back)
    assert "purity 0.503" in card and "completeness 0.500" in card and "toy images" in card
    # a model without the new keys still classifies, with the documented defaults
    bare = ModelCalibration.from_metadata(OnnxClassifier(mean_model(tmp_path / "b.onnx"),
                                                         device="cpu").metadata)
    assert bare.train_fraction == 0.5 and bare.default_choice().threshold == 0.5
    assert bare.curve is None and bare.ood is None


# --- per-row uncertainty ---------------------------------------------------------------------

def test_spread_is_zero_for_a_constant_model_and_positive_when_views_disagree(tmp_path: Path
                                                                              ) -> None:
    s = TOY_CONV.size
    imgs = planted_images(16, 0.5, seed=5)[0] + np.linspace(0, 3, s, dtype=np.float32)
    const = OnnxClassifier(weighted_model(tmp_path / "c.onnx", np.zeros((3, s, s)), 0.4),
                           device="cpu", batch_size=16)
    for views in (2, 8):
        p0, spread = score_views(const.run_batch, imgs, views)
        assert np.allclose(p0, 1 / (1 + np.exp(-0.4))) and (spread == 0).all()
    ramp = np.broadcast_to(np.linspace(-0.2, 0.2, s), (3, s, s))  # left-right asymmetric
    tilt = OnnxClassifier(weighted_model(tmp_path / "t.onnx", ramp, 0.0), device="cpu",
                          batch_size=16)
    p0, spread = score_views(tilt.run_batch, imgs, 2)
    mirrored = tilt.run_batch(apply_view(imgs, 1))
    assert (spread > 0.01).all()
    np.testing.assert_allclose(spread, np.abs(p0 - mirrored) / 2, atol=1e-6)
    p8, spread8 = score_views(tilt.run_batch, imgs, 8)
    np.testing.assert_array_equal(p8, p0)  # the row's score is the identity view's
    assert (spread8 > 0).all()


# --- out-of-distribution flag ------------------------------------------------------------------

def _sdss_inputs(example_dir: Path) -> np.ndarray:
    conv = sdss_example_convention()
    out = []
    for f in sorted((example_dir / "cutouts").iterdir()):
        px = read_image(f).pixels
        if (px == 0).mean() < 0.25:  # the example's one blank JPEG is a `blank` row, not OOD
            out.append(prepare(px, conv.size, conv.crop_fraction))
    return np.stack(out).astype(np.float32)


def test_ood_flags_planted_cases_and_no_real_galaxy(example_dir: Path, decals_dir: Path) -> None:
    conv = sdss_example_convention()
    real = _sdss_inputs(example_dir)
    flag, _ = ood_flags(real, conv.pixel_convention)  # generic checks only: no real galaxy
    assert not flag.any()
    ranges = fit_ood_ranges(real, source="bundled SDSS example")
    flag, why = ood_flags(real, conv.pixel_convention, ranges)
    assert not flag.any(), why
    galaxy = real[0]
    rng = np.random.default_rng(0)
    decals = read_image(decals_dir / "example_a.fits")
    assert decals.kind == FLUX_NANOMAGGIES
    raw_flux = prepare(decals.pixels, conv.size, conv.crop_fraction)  # nanomaggies, no stretch
    planted = {
        "blank": np.full_like(galaxy, 23.0),  # an empty sky tile, not dead pixels
        "noise": rng.uniform(0, 255, galaxy.shape).astype(np.float32),
        "saturated": np.clip(galaxy * 12.0, 0, 255),
        "wrong convention (0-1)": galaxy / 255.0,
        "wrong convention (DECaLS nanomaggies)": raw_flux,
    }
    imgs = np.stack(list(planted.values())).astype(np.float32)
    flag, why = ood_flags(imgs, conv.pixel_convention)  # generic checks: all but the DECaLS flux
    assert flag[:4].all(), dict(zip(planted, why, strict=True))
    flag, why_r = ood_flags(imgs, conv.pixel_convention, ranges)  # + the model's training ranges
    assert flag.all(), dict(zip(planted, why_r, strict=True))
    assert "flat" in why[0] and "correlation" in why[1] and "saturated" in why[2]
    assert "0-1 image" in why[3]
    assert "outside the training range" in why_r[4]


def _reference_statistics(images: np.ndarray) -> np.ndarray:
    """The whole-batch float64 implementation before issue 13 (reference only)."""
    x = np.asarray(images, dtype=np.float32)
    n, c = x.shape[:2]
    flat = x.reshape(n, -1)
    mean = flat.mean(axis=1, dtype=np.float64)
    std = flat.std(axis=1, dtype=np.float64)
    top = flat.max(axis=1)
    tol = 1e-6 * np.maximum(1.0, np.abs(top))
    plateau = np.count_nonzero(flat >= (top - tol)[:, None], axis=1) / flat.shape[1]
    d = x - mean.astype(np.float32)[:, None, None, None]
    num = (d[..., :, 1:] * d[..., :, :-1]).reshape(n, -1).sum(axis=1, dtype=np.float64)
    den = (d * d).reshape(n, -1).sum(axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        smooth = np.where(den > 0, num / den, np.nan)
        band = x.reshape(n, c, -1).mean(axis=2, dtype=np.float64)
        colour = band / band.mean(axis=1, keepdims=True)
    return np.column_stack([mean, std, plateau, smooth, colour])


def test_blocked_ood_statistics_equal_the_reference_and_flag_the_same(example_dir: Path,
                                                                        decals_dir: Path) -> None:
    conv = sdss_example_convention()
    real = _sdss_inputs(example_dir)
    rng = np.random.default_rng(3)
    raw_flux = prepare(read_image(decals_dir / "example_a.fits").pixels, conv.size,
                       conv.crop_fraction)
    planted = [np.full_like(real[0], 23.0), rng.uniform(0, 255, real[0].shape),
               np.clip(real[0] * 12.0, 0, 255), real[0] / 255.0, raw_flux]
    # 37 images: more than two blocks, the last one short.
    imgs = np.concatenate([real, np.stack(planted).astype(np.float32), real[:14]])
    got, ref = image_statistics(imgs), _reference_statistics(imgs)
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=1e-5, atol=1e-9)
    ranges = fit_ood_ranges(real, source="bundled SDSS example")
    for r, flagged in ((None, 4), (ranges, 5)):  # generic checks miss the DECaLS flux
        flag, why = ood_flags(imgs, conv.pixel_convention, r)
        assert flag.sum() == flagged and flag[len(real):len(real) + flagged].all(), why


# --- end to end: classify ------------------------------------------------------------------

def _planted_catalogue(tmp_path: Path, n: int, fraction: float) -> tuple[Path, Path]:
    imgs, _ = planted_images(n, fraction, seed=11)
    ids = [f"g{i}" for i in range(n)]
    cube = write_dataset(tmp_path / "cube.h5", imgs, np.full(n, -1), TOY_CONV, ids=ids)
    cat = tmp_path / "cat.csv"
    pd.DataFrame({"objid": ids}).to_csv(cat, index=False)
    return cat, cube


def test_classify_estimates_the_merger_fraction_of_a_planted_catalogue(tmp_path: Path) -> None:
    cat, cube = _planted_catalogue(tmp_path, 6000, 0.05)
    curve = _curve()
    model = mean_model(tmp_path / "toy.onnx", ModelCalibration(curve=curve).to_metadata())
    out = tmp_path / "o.csv"
    res = CliRunner().invoke(app, [
        "classify", "--quiet", "--catalog", str(cat), "--cutouts", str(cube), "--model",
        str(model), "--output", str(out), "--merger-fraction", "estimate", "--chunk-size",
        "1000", "--target-purity", "0.4"])
    assert res.exit_code == 0, res.output
    meta = json.loads(Path(str(out) + ".meta.json").read_text())
    est = meta["prior_estimate"]
    assert abs(est["fraction"] - 0.05) < 0.01 and meta["prior_used"] == est["fraction"]
    assert est["interval"][0] <= 0.05 <= est["interval"][1]
    assert "estimated merger fraction" in res.output
    assert "0.5 (balanced training) assumed" in meta["train_merger_fraction_source"]
    # the threshold is chosen at the estimated fraction
    assert meta["threshold"] == choose_threshold(curve, est["fraction"],
                                                 target_purity=0.4).threshold
    got = pd.read_csv(out)
    assert (got["status"] == "ok").all()
    raw = got["p_merger_raw"].to_numpy()
    np.testing.assert_allclose(got["p_merger"], shift_prior(raw, 0.5, est["fraction"]),
                               atol=1e-6)
    assert (got["is_merger"] == (raw >= meta["threshold"])).all()
    assert (got["p_merger_spread"].abs() < 1e-6).all()  # the mean model is mirror-symmetric
    assert got["ood"].notna().all() and "p_merger_spread" in meta["result_columns"]


def test_classify_states_the_prior_and_refuses_impossible_targets(tmp_path: Path) -> None:
    cat, cube = _planted_catalogue(tmp_path, 50, 0.3)
    model = mean_model(tmp_path / "toy.onnx")
    out = tmp_path / "o.parquet"
    base = ["classify", "--quiet", "--catalog", str(cat), "--cutouts", str(cube), "--model",
            str(model)]
    res = CliRunner().invoke(app, [*base, "--output", str(out), "--merger-fraction", "0.1"])
    assert res.exit_code == 0, res.output
    meta = json.loads(pq.read_schema(out).metadata[b"galmerge"])
    assert meta["prior_used"] == 0.1 and meta["threshold"] == 0.5
    got = pd.read_parquet(out)
    np.testing.assert_allclose(got["p_merger"], shift_prior(got["p_merger_raw"], 0.5, 0.1),
                               atol=1e-6)
    res = CliRunner().invoke(app, [*base, "--output", str(tmp_path / "x.csv"),
                                   "--target-purity", "0.5"])
    assert res.exit_code != 0 and "has no calibration curve" in res.output
    assert len(res.output.strip().splitlines()) <= 2
    res = CliRunner().invoke(app, [*base, "--output", str(tmp_path / "y.csv"),
                                   "--merger-fraction", "lots"])
    assert res.exit_code != 0 and "--merger-fraction must be a number" in res.output


# --- the score map (Platt scaling on labelled real galaxies) -------------------------------

def test_platt_fit_recovers_a_known_map():
    from galmerge.inference.score_map import ScoreMap, fit_platt

    rng = np.random.default_rng(3)
    z = rng.normal(0.0, 2.5, 200_000)
    raw = 1.0 / (1.0 + np.exp(-z))
    true = ScoreMap(a=0.6, b=-1.3, reference_merger_fraction=0.1)
    y = (rng.random(z.size) < true.apply(raw)).astype(int)
    a, b = fit_platt(raw, y)
    assert abs(a - 0.6) < 0.02 and abs(b + 1.3) < 0.03
    fitted = ScoreMap(a, b, float(y.mean()))
    np.testing.assert_allclose(fitted.invert(fitted.apply(raw[:100])), raw[:100], rtol=1e-6)


def test_score_map_by_hand_and_in_classify_columns():
    from galmerge.inference.score_map import ScoreMap
    from galmerge.inference.scoring import Scoring

    smap = ScoreMap(a=0.5, b=-2.0, reference_merger_fraction=0.09, source="hand")
    cal = ModelCalibration(train_merger_fraction=0.5, score_map=smap)
    raw = np.array([0.2, 0.5, 0.9], dtype=np.float32)
    # by hand: logit(0.9) = 2.19722; 0.5 * 2.19722 - 2 = -0.90139; sigmoid = 0.288765
    assert cal.probability(raw)[2] == pytest.approx(0.288765, abs=1e-5)
    assert cal.probability(raw)[1] == pytest.approx(1 / (1 + np.exp(2.0)), abs=1e-9)
    s = Scoring(cal, "sdss-colour-jpeg", 0.02, None)
    p, is_m = s.columns(raw, np.ones(3, dtype=bool))
    assert is_m.tolist() == [False, True, True]  # raw >= the default cut 0.5
    _, is_m = s.columns(raw, np.ones(3, dtype=bool), aside=np.array([False, False, True]))
    assert is_m.tolist() == [False, True, False]  # a row set aside is never a merger
    # then Bayes' rule from the map's reference 0.09 to 0.02: odds x (0.02/0.98)/(0.09/0.91)
    odds = 0.288765 / (1 - 0.288765) * (0.02 / 0.98) / (0.09 / 0.91)
    assert p[2] == pytest.approx(odds / (1 + odds), abs=1e-5)
    meta = s.metadata()
    assert meta["probability_calibration"]["a"] == 0.5
    back = ModelCalibration.from_metadata(cal.to_metadata())
    assert back.score_map == smap and back.base_fraction == 0.09


@pytest.mark.parametrize("bad", [{"a": -1.0, "b": 0.0, "reference_merger_fraction": 0.1},
                                 {"a": 1.0, "b": 0.0, "reference_merger_fraction": 1.5},
                                 {"b": 0.0, "reference_merger_fraction": 0.1}])
def test_malformed_score_maps_are_one_line_errors(bad):
    import json

    with pytest.raises(GalmergeError, match="score"):
        ModelCalibration.from_metadata({"galmerge.score_map": json.dumps(bad)}, source="m.onnx")


def test_em_on_calibrated_scores_recovers_planted_fraction_despite_a_distorted_model():
    """A model whose raw score is a distorted posterior (the sim->real case): EM on the raw
    score is biased, EM after the score map fitted on a labelled sample is not."""
    from galmerge.inference.score_map import ScoreMap, fit_platt

    rng = np.random.default_rng(5)

    def sample(n, frac):
        y = (rng.random(n) < frac).astype(int)
        z = np.where(y == 1, rng.normal(1.0, 1.0, n), rng.normal(-1.0, 1.0, n))
        return y, 1.0 / (1.0 + np.exp(-(2.5 * z - 3.0)))  # over-sharp and shifted

    y_lab, raw_lab = sample(20_000, 0.2)
    a, b = fit_platt(raw_lab, y_lab)
    cal = ModelCalibration(train_merger_fraction=0.5,
                           score_map=ScoreMap(a, b, float(y_lab.mean())))
    _, raw_survey = sample(50_000, 0.05)
    h_raw, h_cal = ScoreHistogram(), ScoreHistogram()
    h_raw.add(raw_survey)
    h_cal.add(cal.probability(raw_survey))
    biased = estimate_prior(h_raw, 0.5, n_boot=20).fraction
    fixed = estimate_prior(h_cal, cal.base_fraction, n_boot=50)
    assert abs(biased - 0.05) > 0.02
    assert abs(fixed.fraction - 0.05) < 0.01
    assert fixed.interval[0] - 0.005 <= 0.05 <= fixed.interval[1] + 0.005
