"""§6 metrics and bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, f1_score, precision_score, recall_score, roc_auc_score

from galmerge.training.metrics import (
    binary_metrics,
    bootstrap_ci,
    format_metrics,
    paired_bootstrap,
    roc_auc,
)


def test_hand_computed_example() -> None:
    y = np.array([1, 1, 1, 0, 0])
    p = np.array([0.9, 0.6, 0.2, 0.7, 0.1])
    m = binary_metrics(y, p)
    # predictions 1 1 0 1 0: TP 2, FN 1, FP 1, TN 1
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    # pairs (merger, non-merger) ranked correctly: 0.9>0.7,0.9>0.1,0.6>0.1,0.2>0.1 -> 4 of 6
    assert m["auc"] == pytest.approx(4 / 6)
    assert m["confusion"] == [[1, 1], [1, 2]]
    np.testing.assert_allclose(m["confusion_normalised"], [[0.5, 0.5], [1 / 3, 2 / 3]])


def test_agrees_with_sklearn_including_ties() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    p = np.round(np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1), 1)  # many ties
    m = binary_metrics(y, p)
    pred = (p >= 0.5).astype(int)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["recall"] == pytest.approx(recall_score(y, pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))


def test_degenerate_cases() -> None:
    m = binary_metrics(np.array([0, 0, 1]), np.array([0.1, 0.2, 0.3]))
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0
    assert math.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.9])))
    with pytest.raises(ValueError):
        binary_metrics(np.array([0, 2]), np.array([0.1, 0.2]))


def test_bootstrap_interval_contains_point_and_is_reproducible() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(57, int), np.zeros(172, int)]  # the dev set's class counts
    p = np.clip(rng.normal(0.3 + 0.35 * y, 0.2), 0, 1)
    a = bootstrap_ci(y, p, n_boot=300, seed=5)
    b = bootstrap_ci(y, p, n_boot=300, seed=5)
    assert a == b
    for name, iv in a.items():
        assert iv.low <= iv.value <= iv.high, name
        assert iv.high - iv.low > 0
    assert a["auc"].high - a["auc"].low < 0.3


def test_stratified_bootstrap_keeps_class_counts() -> None:
    y = np.r_[np.ones(10, int), np.zeros(30, int)]
    p = np.zeros(40)  # predicts "non-merger" for all: accuracy fixed by the class counts
    iv = bootstrap_ci(y, p, metrics=("accuracy",), n_boot=100)["accuracy"]
    assert iv.low == iv.high == pytest.approx(0.75)
    plain = bootstrap_ci(y, p, metrics=("accuracy",), n_boot=200, stratified=False)["accuracy"]
    assert plain.high > plain.low


def test_format_metrics_lists_all_six_and_matrix() -> None:
    m = binary_metrics(np.array([1, 0, 1, 0]), np.array([0.8, 0.3, 0.4, 0.1]))
    text = format_metrics(m)
    for name in ("auc", "accuracy", "precision", "recall", "f1", "brier", "confusion matrix",
                 "non-merger", "merger"):
        assert name in text


def test_paired_bootstrap_of_the_auc_difference() -> None:
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(57, int), np.zeros(171, int)]
    base = rng.normal(0, 1, y.size) + 1.0 * y       # a decent classifier
    better = base + 0.8 * y + rng.normal(0, 0.3, y.size)  # the same ranking, mergers pushed up
    d = paired_bootstrap(y, better, base, n_boot=400, seed=1)
    assert d.difference == pytest.approx(roc_auc(y, better) - roc_auc(y, base))
    assert 0 < d.low < d.difference < d.high
    assert d.p_not_better < 0.025 and d.n_boot == 400
    # the paired interval is narrower than the unpaired intervals would suggest
    a = bootstrap_ci(y, better, metrics=("auc",), n_boot=400, seed=1)["auc"]
    assert d.high - d.low < a.high - a.low
    # a model against itself: no difference at all
    same = paired_bootstrap(y, base, base, n_boot=50)
    assert same.difference == 0 and same.low == 0 and same.high == 0 and same.p_not_better == 1
    # reversed order flips the sign; Brier: lower is better
    rev = paired_bootstrap(y, base, better, n_boot=400, seed=1)
    assert rev.difference == pytest.approx(-d.difference) and rev.p_not_better > 0.975
    pa, pb = np.where(y == 1, 0.9, 0.1), np.full(y.size, 0.5)
    brier = paired_bootstrap(y, pa, pb, metric="brier", n_boot=50)
    assert brier.difference < 0 and brier.p_not_better == 0
    with pytest.raises(ValueError, match="unknown metric"):
        paired_bootstrap(y, pa, pb, metric="kappa")
