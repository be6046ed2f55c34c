"""The survey-like check: how pure is the top of the ranking at a survey's merger fraction?

A balanced labelled set (the GZ1 ``dev`` set has 57 mergers among 228 galaxies) hides what a
survey user gets: a survey holds 50-100 non-mergers per merger, so what decides the result
is the false-positive rate at the top of the ranking.  The check ranks the labelled galaxies
together with unlabelled survey galaxies counted as non-mergers (the GZ1 ``pool`` was drawn
outside GZ1's merger class; use its held-out part, :mod:`galmerge.data.holdout`) and weights
every non-merger by

    w = n_pos (1 - f) / (f n_neg)                                        (1)

so that mergers make a fraction ``f`` (default 1 %) of the weighted sample.  Then, with TP
and FP counted above a threshold t,

* weighted purity (precision) = TP / (TP + w FP);                          (2)
* **top-k purity**: k = n_pos (the number of labelled mergers); the purity at the highest
  threshold where the weighted count TP + w FP reaches k (walking down the ranking);
* precision at recall 0.5: purity at the highest threshold that keeps half the mergers;
* the fraction of the background flagged and the recall at a given decision threshold;
* ROC AUC of mergers against all non-mergers (prior-free, unweighted).

Intervals: stratified bootstrap (mergers, labelled non-mergers and background resampled
separately); comparisons: the same resamples for both models (paired), and for several
training seeds the mean over seeds on each resample.  Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from galmerge.training.metrics import roc_auc

__all__ = [
    "SURVEY_METRICS",
    "SurveySample",
    "calibration_points",
    "precision_at_recall",
    "survey_bootstrap",
    "survey_metrics",
    "survey_weight",
    "topk_purity",
    "weighted_precision",
]

#: The survey metrics, in report order.
SURVEY_METRICS = ("auc", "topk_purity", "precision_at_recall_0.5", "pool_flagged",
                  "dev_recall", "purity_at_threshold")


def survey_weight(n_pos: int, n_neg: int, merger_fraction: float) -> float:
    """Weight of each non-merger so that mergers make ``merger_fraction`` of the sample, eq. (1)."""
    if not 0.0 < merger_fraction < 1.0:
        raise ValueError(f"merger fraction must be in (0, 1), got {merger_fraction}")
    if n_pos < 1 or n_neg < 1:
        raise ValueError("the check needs at least one merger and one non-merger")
    return n_pos * (1.0 - merger_fraction) / (merger_fraction * n_neg)


def _ranked_counts(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds (descending) and the TP, FP counts at p >= each of them."""
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(ps) != 0), len(ps) - 1]  # end of each tie group
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(1 - ys)[last]
    return ps[last], tp.astype(np.float64), fp.astype(np.float64)


def weighted_precision(tp: np.ndarray, fp: np.ndarray, w: float) -> np.ndarray:
    """Eq. (2): TP / (TP + w FP), 0 where nothing is flagged."""
    den = tp + w * fp
    return np.divide(tp, den, out=np.zeros_like(den), where=den > 0)


def topk_purity(y: np.ndarray, p: np.ndarray, w: float, k: float | None = None) -> float:
    """Purity at the highest threshold where TP + w FP >= k (k = number of mergers by default).

    Galaxies of equal score enter together (a tie group is never split).
    """
    y, p = np.asarray(y, dtype=np.int64), np.asarray(p, dtype=np.float64)
    k = float(y.sum()) if k is None else float(k)
    _, tp, fp = _ranked_counts(y, p)
    j = int(np.searchsorted(tp + w * fp, k, side="left"))
    j = min(j, len(tp) - 1)
    return float(weighted_precision(tp[j:j + 1], fp[j:j + 1], w)[0])


def precision_at_recall(y: np.ndarray, p: np.ndarray, w: float, recall: float = 0.5) -> float:
    """Weighted precision at the highest threshold whose recall reaches ``recall``."""
    y, p = np.asarray(y, dtype=np.int64), np.asarray(p, dtype=np.float64)
    _, tp, fp = _ranked_counts(y, p)
    j = int(np.searchsorted(tp, recall * y.sum() - 1e-9, side="left"))
    j = min(j, len(tp) - 1)
    return float(weighted_precision(tp[j:j + 1], fp[j:j + 1], w)[0])


@dataclass
class SurveySample:
    """Scores of one model on the survey-like check.

    Attributes:
        dev_labels: (n_dev,) 0/1 labels of the labelled galaxies.
        dev_scores: (n_dev,) or (n_seeds, n_dev) merger scores.
        pool_scores: (n_pool,) or (n_seeds, n_pool) scores of the background (non-mergers).
        threshold: the model's decision threshold (``is_merger``) per seed, if any.
    """

    dev_labels: np.ndarray
    dev_scores: np.ndarray
    pool_scores: np.ndarray
    threshold: Sequence[float] | float | None = None
    _t: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.dev_labels = np.asarray(self.dev_labels, dtype=np.int64)
        self.dev_scores = np.atleast_2d(np.asarray(self.dev_scores, dtype=np.float64))
        self.pool_scores = np.atleast_2d(np.asarray(self.pool_scores, dtype=np.float64))
        if self.dev_scores.shape[0] != self.pool_scores.shape[0]:
            raise ValueError("dev and pool scores must come from the same number of seeds")
        if self.dev_scores.shape[1] != self.dev_labels.shape[0]:
            raise ValueError(f"{self.dev_labels.shape[0]} dev labels but "
                             f"{self.dev_scores.shape[1]} dev scores")
        t = np.full(self.n_seeds, np.nan) if self.threshold is None else \
            np.broadcast_to(np.asarray(self.threshold, dtype=np.float64), (self.n_seeds,))
        self._t = np.array(t)

    @property
    def n_seeds(self) -> int:
        return int(self.dev_scores.shape[0])

    def strata(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Indices of dev mergers, dev non-mergers and the number of pool galaxies."""
        return (np.flatnonzero(self.dev_labels == 1), np.flatnonzero(self.dev_labels == 0),
                self.pool_scores.shape[1])


def survey_metrics(sample: SurveySample, merger_fraction: float = 0.01,
                   pos: np.ndarray | None = None, neg: np.ndarray | None = None,
                   pool: np.ndarray | None = None) -> dict[str, float]:
    """The survey metrics averaged over seeds, optionally on resampled indices."""
    p_idx, n_idx, n_pool = sample.strata()
    pos = p_idx if pos is None else pos
    neg = n_idx if neg is None else neg
    pool = np.arange(n_pool) if pool is None else pool
    y = np.r_[np.ones(len(pos), np.int64), np.zeros(len(neg) + len(pool), np.int64)]
    w = survey_weight(len(pos), len(neg) + len(pool), merger_fraction)
    per_seed: dict[str, list[float]] = {k: [] for k in SURVEY_METRICS}
    for s in range(sample.n_seeds):
        d, b = sample.dev_scores[s], sample.pool_scores[s]
        p = np.r_[d[pos], d[neg], b[pool]]
        per_seed["auc"].append(roc_auc(y, p))
        per_seed["topk_purity"].append(topk_purity(y, p, w))
        per_seed["precision_at_recall_0.5"].append(precision_at_recall(y, p, w, 0.5))
        t = sample._t[s]
        flagged = p >= t
        tp, fp = float(flagged[y == 1].sum()), float(flagged[y == 0].sum())
        per_seed["pool_flagged"].append(float(np.mean(b[pool] >= t)) if np.isfinite(t)
                                        else np.nan)
        per_seed["dev_recall"].append(tp / len(pos) if np.isfinite(t) else np.nan)
        per_seed["purity_at_threshold"].append(
            float(weighted_precision(np.array([tp]), np.array([fp]), w)[0])
            if np.isfinite(t) else np.nan)
    return {k: float(np.mean(v)) for k, v in per_seed.items()}


def survey_bootstrap(samples: dict[str, SurveySample], merger_fraction: float = 0.01,
                     n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Point values and stratified 95 % intervals for each model, and paired differences
    (every model minus every other, on the same resamples).

    All samples must share the labelled set and the background (same order).
    """
    names = list(samples)
    first = samples[names[0]]
    pos, neg, n_pool = first.strata()
    for s in samples.values():
        if not np.array_equal(s.dev_labels, first.dev_labels) or \
                s.pool_scores.shape[1] != n_pool:
            raise ValueError("all models must be scored on the same dev set and background")
    point = {n: survey_metrics(samples[n], merger_fraction) for n in names}
    rng = np.random.default_rng(seed)
    boots: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for _ in range(n_boot):
        rp = rng.choice(pos, len(pos))
        rn = rng.choice(neg, len(neg))
        rb = rng.integers(0, n_pool, n_pool)
        for n in names:
            boots[n].append(survey_metrics(samples[n], merger_fraction, rp, rn, rb))
    out: dict[str, Any] = {"merger_fraction": merger_fraction, "n_boot": n_boot,
                           "n_dev_mergers": len(pos), "n_dev_non_mergers": len(neg),
                           "n_background": int(n_pool), "models": {}, "differences": {}}
    for n in names:
        out["models"][n] = {"n_seeds": samples[n].n_seeds, **{
            k: {"value": point[n][k], "ci95": _ci([b[k] for b in boots[n]])}
            for k in SURVEY_METRICS}}
    for a in names:
        for b in names:
            if a == b:
                continue
            out["differences"][f"{a} - {b}"] = {
                k: {"value": point[a][k] - point[b][k],
                    "ci95": _ci([x[k] - y[k] for x, y in zip(boots[a], boots[b], strict=True)])}
                for k in ("auc", "topk_purity", "precision_at_recall_0.5")}
    return out


def _ci(values: Sequence[float]) -> list[float] | None:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return None if v.size == 0 else [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]


def calibration_points(sample: SurveySample, thresholds: Sequence[float],
                       merger_fraction: float = 0.01, n_boot: int = 500,
                       seed: int = 0) -> list[dict[str, Any]]:
    """Purity, completeness, false-positive rate and flagged background fraction at each
    threshold (seed-averaged), with stratified bootstrap intervals: the curve a model
    stores so that users can choose a threshold for the purity they need."""
    pos, neg, n_pool = sample.strata()
    rng = np.random.default_rng(seed)
    resamples = [(pos, neg, np.arange(n_pool))] + [
        (rng.choice(pos, len(pos)), rng.choice(neg, len(neg)), rng.integers(0, n_pool, n_pool))
        for _ in range(n_boot)]
    table = np.empty((len(resamples), len(thresholds), 4))
    for r, (rp, rn, rb) in enumerate(resamples):
        w = survey_weight(len(rp), len(rn) + len(rb), merger_fraction)
        for j, t in enumerate(thresholds):
            vals = []
            for s in range(sample.n_seeds):
                d, b = sample.dev_scores[s], sample.pool_scores[s]
                tp = float((d[rp] >= t).sum())
                fp = float((d[rn] >= t).sum() + (b[rb] >= t).sum())
                vals.append((float(weighted_precision(np.array([tp]), np.array([fp]), w)[0]),
                             tp / len(rp), fp / (len(rn) + len(rb)), float(np.mean(b[rb] >= t))))
            table[r, j] = np.mean(vals, axis=0)
    keys = ("purity", "completeness", "fpr", "flagged_fraction")
    points = []
    for j, t in enumerate(thresholds):
        pt: dict[str, Any] = {"threshold": float(t)}
        for c, key in enumerate(keys):
            pt[key] = float(table[0, j, c])
            if n_boot:
                pt[f"{key}_ci"] = _ci(table[1:, j, c])
        points.append(pt)
    return points
