"""Is ``p_merger`` a probability on real galaxies? Cross-fitted on the survey-like check.

Issue 11 asks that, with the prior set to the check's true merger fraction, the
prior-adjusted ``p_merger`` be calibrated (expected calibration error and Brier score
better than the raw score's) and that the EM estimate of the merger fraction recover the
check's. The score map (:mod:`galmerge.inference.score_map`) is fitted on labelled
galaxies, so judging it on the galaxies it was fitted on would flatter it: here the
check's galaxies are split into folds by a salted objid hash
(:func:`galmerge.data.holdout.fold_of`), the map is fitted on all folds but one and
judged on the one left out, and the numbers are averaged over folds.

Per fold, with π_f its true merger fraction (background counted as non-mergers):

* ``raw``: the model's softmax score as it is;
* ``raw_shifted``: Bayes' rule from the training fraction to π_f (Saerens et al. 2002
  eq. 2.4) -- what ``classify`` did before the score map;
* ``mapped_shifted``: the score map fitted on the other folds, then Bayes' rule from their
  merger fraction to π_f -- what ``classify`` does now;

each with ECE (10 equal-width bins; Naeini, Cooper & Hauskrecht 2015, AAAI; Guo et al.
2017, ICML, eq. 3) and Brier score, and the EM estimate of π_f from the raw scores and from
the mapped ones, each with its interval. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from galmerge.data.holdout import fold_of
from galmerge.inference.calibration import ScoreHistogram, estimate_prior, shift_prior
from galmerge.inference.score_map import ScoreMap, fit_platt

__all__ = ["brier", "crossfit_probability_check", "expected_calibration_error"]


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE = Σ_b (n_b / n) |mean(y)_b - mean(p)_b| over equal-width bins of ``p``."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if not len(p):
        return float("nan")
    k = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    gap = np.abs(np.bincount(k, y, bins) - np.bincount(k, p, bins))  # n_b |mean y - mean p|
    return float(gap.sum() / len(p))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared difference between ``p`` and the 0/1 label."""
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(y)) ** 2))


def _em(p: np.ndarray, base: float) -> dict[str, Any]:
    h = ScoreHistogram()
    h.add(p)
    est = estimate_prior(h, base, n_boot=200)
    return {"fraction": est.fraction, "interval": list(est.interval)}


def _fold(y: np.ndarray, raw: np.ndarray, test: np.ndarray, train_fraction: float
          ) -> dict[str, Any]:
    a, b = fit_platt(raw[~test], y[~test])
    ref = float(y[~test].mean())
    smap = ScoreMap(a, b, ref)
    yt, rt = y[test], raw[test]
    pi = float(yt.mean())
    scores = {"raw": rt, "raw_shifted": shift_prior(rt, train_fraction, pi),
              "mapped_shifted": shift_prior(smap.apply(rt), ref, pi)}
    em_raw, em_map = _em(rt, train_fraction), _em(smap.apply(rt), ref)
    return {"n": int(test.sum()), "true_fraction": pi, "map": smap.to_dict(),
            **{f"ece_{k}": expected_calibration_error(yt, v) for k, v in scores.items()},
            **{f"brier_{k}": brier(yt, v) for k, v in scores.items()},
            "em_raw": em_raw, "em_mapped": em_map,
            "em_mapped_covers_truth": em_map["interval"][0] <= pi <= em_map["interval"][1]}


def crossfit_probability_check(ids: Sequence[str], labels: np.ndarray, raw: np.ndarray, *,
                               train_fraction: float, folds: int = 2) -> dict[str, Any]:
    """The module's check over ``folds`` hash folds of the labelled + background galaxies.

    Args:
        ids: objid of every galaxy (dev and background together).
        labels: (n,) 1 merger, 0 non-merger (background counted as 0).
        raw: (n,) the model's raw scores.
        train_fraction: the model's training merger fraction (0.5 for balanced batches).
    """
    y = np.asarray(labels, dtype=np.int64)
    raw = np.asarray(raw, dtype=np.float64)
    fold = np.array([fold_of(i, folds) for i in ids])
    per = [_fold(y, raw, fold == f, train_fraction) for f in range(folds)]
    keys = [k for k in per[0] if k.startswith(("ece_", "brier_"))]
    return {"folds": folds, "per_fold": per,
            "mean": {k: float(np.mean([r[k] for r in per])) for k in keys},
            "em_mapped_covers_truth_all_folds": all(r["em_mapped_covers_truth"] for r in per)}
