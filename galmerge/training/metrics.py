"""Classification metrics of the paper (§6), with bootstrap confidence intervals.

Mergers are the positive class (label 1), non-mergers the negative class (§6).
Pure numpy (no torch, no sklearn), so evaluation code can run anywhere; the one home
of the ROC (the AUC here, the curve's points for the report's figure), tested against
scikit-learn's. scikit-learn's ``roc_auc_score`` gives the same numbers but costs about
3 ms a call against 0.03 ms here, and the bootstraps call it thousands of times.

* AUC: area under the ROC curve (Mann-Whitney U with average ranks for ties);
* accuracy, precision TP/(TP+FP), recall TP/(TP+FN), F1 (§6);
* Brier score: mean squared difference between p(merger) and the label (§6);
* confusion matrix normalised by the true class (each true-label row sums to 1;
  the paper's Table B1 prints the transpose: true labels horizontal).

Precision (and so F1) of a classifier that predicts no merger at all is
reported as 0 (sklearn's ``zero_division=0``); AUC of a one-class sample is NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CLASS_NAMES",
    "METRIC_NAMES",
    "Interval",
    "PairedDifference",
    "binary_metrics",
    "bootstrap_ci",
    "confusion_counts",
    "format_metrics",
    "paired_bootstrap",
    "roc_auc",
    "roc_points",
]

METRIC_NAMES = ("auc", "accuracy", "precision", "recall", "f1", "brier")
CLASS_NAMES = ("non-merger", "merger")


def _check(y_true: np.ndarray, p_merger: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(np.int64).reshape(-1)
    p = np.asarray(p_merger, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"{y.shape[0]} labels but {p.shape[0]} scores")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (non-merger) or 1 (merger)")
    return y, p


def roc_auc(y_true: np.ndarray, p_merger: np.ndarray) -> float:
    """ROC AUC = P(score of a random merger > score of a random non-merger), ties count 1/2."""
    y, p = _check(y_true, p_merger)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ps = p[order]
    ranks = np.empty(y.size, dtype=np.float64)
    # average ranks over ties (1-based)
    _, first, counts = np.unique(ps, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_points(y_true: np.ndarray, p_merger: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, from (0, 0) to (1, 1)
    (the points of scikit-learn's ``roc_curve(..., drop_intermediate=False)``)."""
    y, p = _check(y_true, p_merger)
    order = np.argsort(-p, kind="stable")
    y, p = y[order], p[order]
    distinct = np.r_[np.flatnonzero(np.diff(p)), len(p) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0, tps / max(y.sum(), 1)]
    fpr = np.r_[0, fps / max((1 - y).sum(), 1)]
    return fpr, tpr


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """2x2 counts, rows = true (non-merger, merger), columns = predicted."""
    y, yp = np.asarray(y_true).astype(np.int64), np.asarray(y_pred).astype(np.int64)
    return np.bincount(2 * y + yp, minlength=4).reshape(2, 2)


def binary_metrics(y_true: np.ndarray, p_merger: np.ndarray,
                   threshold: float = 0.5) -> dict[str, Any]:
    """All §6 metrics for labels (0/1) and merger probabilities.

    Returns a JSON-ready dict: ``auc, accuracy, precision, recall, f1, brier``
    (floats), ``n``, ``n_mergers``, ``threshold``, ``confusion`` (counts, rows =
    true label, columns = predicted, order non-merger, merger) and
    ``confusion_normalised`` (each true-label row divided by its total).
    """
    y, p = _check(y_true, p_merger)
    if y.size == 0:
        raise ValueError("no labelled rows to score")
    pred = (p >= threshold).astype(np.int64)
    cm = confusion_counts(y, pred)
    tn, fp, fn, tp = (int(v) for v in cm.ravel())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.full((2, 2), np.nan), where=rows > 0)
    return {
        "auc": roc_auc(y, p),
        "accuracy": (tp + tn) / y.size,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "brier": float(np.mean((p - y) ** 2)),
        "n": int(y.size),
        "n_mergers": int(y.sum()),
        "threshold": float(threshold),
        "confusion": cm.tolist(),
        "confusion_normalised": norm.tolist(),
    }


@dataclass(frozen=True)
class Interval:
    """A bootstrap percentile interval."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        """Plain-JSON form."""
        return {"value": self.value, "low": self.low, "high": self.high}


def bootstrap_ci(
    y_true: np.ndarray, p_merger: np.ndarray, *, metrics: Sequence[str] = METRIC_NAMES,
    n_boot: int = 2000, confidence: float = 0.95, seed: int = 0, stratified: bool = True,
    threshold: float = 0.5,
) -> dict[str, Interval]:
    """Percentile bootstrap confidence intervals of the §6 metrics.

    ``stratified=True`` resamples mergers and non-mergers separately, keeping
    the class counts of the sample (right for small labelled sets such as the
    57 dev mergers, where a plain bootstrap can draw samples with very few
    mergers). Resamples where a metric is undefined (NaN) are dropped.
    """
    y, p = _check(y_true, p_merger)
    if y.size == 0:
        raise ValueError("no labelled rows to score")
    unknown = [m for m in metrics if m not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {METRIC_NAMES}")
    rng = np.random.default_rng(seed)
    point = binary_metrics(y, p, threshold)
    if stratified:
        groups = [np.flatnonzero(y == c) for c in (0, 1)]
        groups = [g for g in groups if g.size]

        def draw() -> np.ndarray:
            return np.concatenate([rng.choice(g, g.size, replace=True) for g in groups])
    else:
        def draw() -> np.ndarray:
            return rng.integers(0, y.size, y.size)
    samples: dict[str, list[float]] = {m: [] for m in metrics}
    fns: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "auc": roc_auc,
        "brier": lambda yy, pp: float(np.mean((pp - yy) ** 2)),
    }
    for _ in range(n_boot):
        idx = draw()
        yy, pp = y[idx], p[idx]
        need_full = any(m not in fns for m in metrics)
        full = binary_metrics(yy, pp, threshold) if need_full else {}
        for m in metrics:
            v = fns[m](yy, pp) if m in fns else full[m]
            if np.isfinite(v):
                samples[m].append(float(v))
    alpha = (1.0 - confidence) / 2.0
    out: dict[str, Interval] = {}
    for m in metrics:
        s = np.asarray(samples[m])
        lo, hi = (np.quantile(s, [alpha, 1 - alpha]) if s.size else (np.nan, np.nan))
        out[m] = Interval(float(point[m]), float(lo), float(hi))
    return out


@dataclass(frozen=True)
class PairedDifference:
    """A paired bootstrap of the difference of one metric between two models."""

    metric: str
    difference: float   #: metric(a) - metric(b) on the full sample
    low: float          #: percentile interval of the difference
    high: float
    p_not_better: float  #: fraction of resamples where a is not better than b (<= 0 difference)
    n_boot: int

    def to_dict(self) -> dict[str, float | int | str]:
        """Plain-JSON form."""
        return {"metric": self.metric, "difference": self.difference, "low": self.low,
                "high": self.high, "p_not_better": self.p_not_better, "n_boot": self.n_boot}


def paired_bootstrap(
    y_true: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, *, metric: str = "auc",
    n_boot: int = 2000, confidence: float = 0.95, seed: int = 0, stratified: bool = True,
    threshold: float = 0.5,
) -> PairedDifference:
    """Paired bootstrap of ``metric(a) - metric(b)`` for two models scored on the same images.

    Each resample draws the same images for both models (stratified by class
    by default), so the interval reflects the sampling uncertainty of the
    *difference*, which is much smaller than either model's own interval when
    the two models rank the images similarly. Lower-is-better metrics (Brier)
    are reported as they are: a negative Brier difference means a is better.
    """
    y, pa = _check(y_true, p_a)
    _, pb = _check(y_true, p_b)
    if metric not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; choose from {METRIC_NAMES}")
    if y.size == 0:
        raise ValueError("no labelled rows to score")

    def value(yy: np.ndarray, pp: np.ndarray) -> float:
        if metric == "auc":
            return roc_auc(yy, pp)
        if metric == "brier":
            return float(np.mean((pp - yy) ** 2))
        return float(binary_metrics(yy, pp, threshold)[metric])

    rng = np.random.default_rng(seed)
    groups = ([g for g in (np.flatnonzero(y == c) for c in (0, 1)) if g.size] if stratified
              else [np.arange(y.size)])
    diffs = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(g, g.size, replace=True) for g in groups])
        d = value(y[idx], pa[idx]) - value(y[idx], pb[idx])
        if np.isfinite(d):
            diffs.append(d)
    arr = np.asarray(diffs)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = (np.quantile(arr, [alpha, 1 - alpha]) if arr.size else (np.nan, np.nan))
    better = arr < 0 if metric == "brier" else arr > 0
    return PairedDifference(metric, value(y, pa) - value(y, pb), float(lo), float(hi),
                            float(1.0 - better.mean()) if arr.size else float("nan"),
                            int(arr.size))


def format_metrics(m: dict[str, Any], title: str = "") -> str:
    """Human-readable block: the six metrics and the normalised confusion matrix."""
    lines = [title] if title else []
    lines.append(f"  n = {m['n']} ({m['n_mergers']} mergers), threshold {m['threshold']:g}")
    for name in METRIC_NAMES:
        v = m[name]
        lines.append(f"  {name:<10} {'n/a' if v is None or not np.isfinite(v) else f'{v:.4f}'}")
    cm = np.asarray(m["confusion_normalised"], dtype=float)
    counts = np.asarray(m["confusion"])
    lines.append("  confusion matrix (rows: true label; columns: predicted; each row sums to 1)")
    lines.append(f"  {'':<12}{'non-merger':>12}{'merger':>12}")
    for i, name in enumerate(CLASS_NAMES):
        cells = "".join(f"{cm[i, j]:>12.3f}" for j in range(2))
        lines.append(f"  {name:<12}{cells}   (n = {int(counts[i].sum())})")
    return "\n".join(lines)
