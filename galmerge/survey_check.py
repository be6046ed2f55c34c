"""``galmerge survey-check``: judge exported models as a survey user would.

Scores ONNX models (several files = several training seeds of one recipe, averaged as in
:mod:`galmerge.training.survey`) on a labelled image directory and an unlabelled background
directory, and reports ROC AUC, top-k purity and precision at recall 0.5 at a survey's merger
fraction, the flagged fraction of the background and the labelled recall at each model's
decision threshold, with stratified bootstrap intervals and paired differences between
models.  Torch-free: it reads images through :mod:`galmerge.data` and scores them with ONNX
Runtime, exactly as ``galmerge classify`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from galmerge.atomic import write_bytes_atomic
from galmerge.conventions import METADATA_PREFIX
from galmerge.data.dataset import ImageDirDataset
from galmerge.errors import GalmergeError
from galmerge.inference.calibration import CalibrationCurve, ModelCalibration
from galmerge.inference.engine import OnnxClassifier
from galmerge.inference.paths import same_file
from galmerge.inference.score_map import ScoreMap, fit_platt
from galmerge.inference.scoring import set_aside_mask
from galmerge.probability_check import crossfit_probability_check
from galmerge.training.survey import (
    SURVEY_METRICS,
    SurveySample,
    calibration_points,
    survey_bootstrap,
)

__all__ = ["CURVE_QUANTILES", "SET_ASIDE", "SurveyCheckOptions", "fit_calibration",
           "format_survey_table", "run_survey_check", "score_directory", "write_calibrated"]


@dataclass(frozen=True)
class SurveyCheckOptions:
    """What the check ranks and how.

    Attributes:
        dev: directory of labelled cutouts (named ``<id>.<ext>``).
        labels: CSV with an id column and a 0/1 merger label (``-1`` = leave out).
        background: directory of unlabelled survey cutouts, all counted as non-mergers
            (for the GZ1 pool: its held-out part only, :mod:`galmerge.data.holdout`).
        merger_fraction: the survey's merger fraction the non-mergers are weighted to.
        bootstrap: stratified resamples for the intervals.
        exclude: labelled ids left out (e.g. an SDSS error tile).
        seed: bootstrap seed.
        keep_set_aside: rank the cutouts with a bright star near the centre
            (:mod:`galmerge.inference.stars`) or no sky along the border
            (:mod:`galmerge.inference.sky`) like any other. By default they are set aside
            as ``galmerge classify`` does (never ``is_merger``; a user ranks candidates
            among the rest): ranked last, below every threshold, and still counted (a
            merger set aside is a merger missed).
    """

    dev: Path
    labels: Path
    background: Path
    merger_fraction: float = 0.01
    bootstrap: int = 2000
    exclude: tuple[str, ...] = ()
    seed: int = 0
    keep_set_aside: bool = False


#: Score given to a cutout set aside (bright star, no sky): below every score and threshold.
SET_ASIDE = -1.0


def score_directory(model: OnnxClassifier, directory: Path,
                    labels: Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, labels, scores) of every cutout in ``directory`` in the model's convention."""
    ids, lab, scores, _ = _score_and_flag(model, directory, labels)
    return ids, lab, scores


def _score_and_flag(model: OnnxClassifier, directory: Path, labels: Path | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`score_directory` and whether each cutout is set aside (a bright star or no
    sky), as ``classify`` sets it."""
    conv = model.convention
    ds = ImageDirDataset(directory, labels_csv=labels, size=conv.size,
                         crop_fraction=conv.crop_fraction)
    try:
        scores = np.empty(len(ds), dtype=np.float64)
        aside = np.zeros(len(ds), dtype=bool)
        for start in range(0, len(ds), 256):
            idx = np.arange(start, min(start + 256, len(ds)))
            images = ds.read(idx)
            scores[idx] = model.predict(images)
            aside[idx] = set_aside_mask(images, conv.pixel_convention)
        return ds.ids.astype(str), ds.labels.astype(np.int64), scores, aside
    finally:
        ds.close()


def model_threshold(model: OnnxClassifier) -> float:
    """The model's ``is_merger`` cut on its score (metadata ``galmerge.decision_threshold``,
    else 0.5)."""
    v = model.metadata.get(METADATA_PREFIX + "decision_threshold", "")
    return float(v) if v not in ("", "None") else 0.5


def run_survey_check(models: dict[str, Sequence[Path]], opts: SurveyCheckOptions
                     ) -> dict[str, Any]:
    """Score each named model (one ONNX file per training seed) and run the check."""
    samples: dict[str, SurveySample] = {}
    ref_ids: np.ndarray | None = None
    for name, paths in models.items():
        if not paths:
            raise GalmergeError(f"model {name!r}: no ONNX file given")
        dev_s, pool_s, thr = [], [], []
        for path in paths:
            clf = OnnxClassifier(path, device="cpu")
            ids, lab, p_dev, aside_dev = _score_and_flag(clf, opts.dev, opts.labels)
            _, _, p_pool, aside_pool = _score_and_flag(clf, opts.background)
            if not opts.keep_set_aside:
                p_dev[aside_dev], p_pool[aside_pool] = SET_ASIDE, SET_ASIDE
            keep = (lab >= 0) & ~np.isin(ids, list(opts.exclude))
            if ref_ids is None:
                ref_ids, ref_lab = ids[keep], lab[keep]
            elif not np.array_equal(ids[keep], ref_ids):
                raise GalmergeError(f"{path}: scored a different labelled set")
            dev_s.append(p_dev[keep])
            pool_s.append(p_pool)
            thr.append(model_threshold(clf))
        samples[name] = SurveySample(ref_lab, np.stack(dev_s), np.stack(pool_s), thr)
    if ref_ids is None or not (ref_lab == 1).any() or not (ref_lab == 0).any():
        raise GalmergeError(f"{opts.labels}: the check needs labelled mergers and non-mergers")
    return survey_bootstrap(samples, opts.merger_fraction, opts.bootstrap, opts.seed)


_TITLES = {"auc": "ROC AUC (dev + background)", "topk_purity": "top-k purity",
           "precision_at_recall_0.5": "precision at recall 0.5",
           "pool_flagged": "background flagged by is_merger",
           "dev_recall": "dev recall at is_merger",
           "purity_at_threshold": "purity at is_merger"}


def _fmt(m: dict[str, Any]) -> str:
    v, ci = m["value"], m.get("ci95")
    if v is None or not np.isfinite(v):
        return "–"
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{v:.3f}"


def format_survey_table(result: dict[str, Any], pairs: Sequence[tuple[str, str]] = ()) -> str:
    """Markdown: one column per model, then the paired differences asked for."""
    names = list(result["models"])
    f = result["merger_fraction"]
    head = ["| metric (at a merger fraction of " f"{f:.0%}) | "
            + " | ".join(f"{n} ({result['models'][n]['n_seeds']} seed(s))" for n in names) + " |",
            "|---|" + "---|" * len(names)]
    for key in SURVEY_METRICS:
        head.append(f"| {_TITLES[key]} | "
                    + " | ".join(_fmt(result["models"][n][key]) for n in names) + " |")
    lines = ["\n".join(head)]
    for a, b in pairs:
        d = result["differences"].get(f"{a} - {b}")
        if d:
            lines.append(f"- {a} − {b}: AUC {_fmt(d['auc'])}, top-k purity "
                         f"{_fmt(d['topk_purity'])}, precision at recall 0.5 "
                         f"{_fmt(d['precision_at_recall_0.5'])} (paired bootstrap)")
    lines.append(f"\n{result['n_dev_mergers']} labelled mergers, {result['n_dev_non_mergers']} "
                 f"labelled non-mergers, {result['n_background']} background galaxies counted "
                 f"as non-mergers; {result['n_boot']} stratified bootstrap resamples.")
    return "\n".join(lines)


#: Thresholds of a fitted calibration curve: these quantiles of the background's scores.
CURVE_QUANTILES = (0.5, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995)


def fit_calibration(model: Path, opts: SurveyCheckOptions) -> dict[str, Any]:
    """The calibration curve, the score map and its cross-fitted check of one model, all
    measured on the survey-like check of ``opts`` (issue 11).

    Returns:
        ``{"reference_merger_fraction", "source", "points"}`` (a
        :class:`~galmerge.inference.calibration.CalibrationCurve` as a dict) plus
        ``score_map`` (:class:`~galmerge.inference.score_map.ScoreMap` as a dict) and
        ``probability_check`` (:func:`galmerge.probability_check.crossfit_probability_check`);
        both None / ``{"skipped": why}`` when no increasing map fits.
    """
    clf = OnnxClassifier(model, device="cpu")
    ids, lab, p_dev = score_directory(clf, opts.dev, opts.labels)
    pool_ids, _, p_pool = score_directory(clf, opts.background)
    keep = (lab >= 0) & ~np.isin(ids, list(opts.exclude))
    if not (lab[keep] == 1).any() or not (lab[keep] == 0).any():
        raise GalmergeError(f"{opts.labels}: calibration needs labelled mergers and non-mergers")
    sample = SurveySample(lab[keep], p_dev[keep], p_pool)
    thresholds = sorted({float(q) for q in np.quantile(p_pool, CURVE_QUANTILES)})
    source = (f"survey-like check: {int(keep.sum())} labelled galaxies ({opts.dev.name}) + "
              f"{len(p_pool)} background galaxies ({opts.background.name}) counted as "
              "non-mergers")
    points = calibration_points(sample, thresholds, opts.merger_fraction,
                                n_boot=opts.bootstrap, seed=opts.seed)
    y = np.r_[lab[keep], np.zeros(len(p_pool), np.int64)]
    raw = np.r_[p_dev[keep], p_pool]
    out: dict[str, Any] = {"reference_merger_fraction": opts.merger_fraction,
                           "source": source, "points": points}
    train = ModelCalibration.from_metadata(clf.metadata).train_fraction
    try:
        a, b = fit_platt(raw, y)
        out["probability_check"] = crossfit_probability_check(
            [*ids[keep], *pool_ids], y, raw, train_fraction=train)
    except GalmergeError as exc:  # a model that ranks mergers last has no increasing map
        return {**out, "score_map": None, "probability_check": {"skipped": exc.message}}
    out["score_map"] = ScoreMap(a, b, float(y.mean()),
                                source=f"Platt fit on the {source}").to_dict()
    return out


def write_calibrated(model: Path, output: Path, fitted: dict[str, Any]) -> ModelCalibration:
    """A copy of ``model`` whose metadata carries ``fitted``'s curve and score map (the
    rest of the model and its metadata unchanged); never writes over ``model``."""
    import onnx

    if same_file(model, output):
        raise GalmergeError(f"{output}: is the model itself; choose another output")
    proto = onnx.load(str(model))
    meta = {p.key: p.value for p in proto.metadata_props}
    cal = replace(ModelCalibration.from_metadata(meta, source=str(model)),
                  curve=CalibrationCurve.from_dict(fitted),
                  score_map=ScoreMap.from_dict(fitted["score_map"]) if fitted["score_map"]
                  else None)
    meta.update(cal.to_metadata())
    onnx.helper.set_model_props(proto, meta)
    write_bytes_atomic(output, proto.SerializeToString())
    return cal
