"""Cross-fitted probability check (galmerge.probability_check): known answers."""

from __future__ import annotations

import numpy as np
import pytest

from galmerge.data.holdout import fold_of, is_held_out
from galmerge.probability_check import (
    brier,
    crossfit_probability_check,
    expected_calibration_error,
)


def test_ece_and_brier_by_hand():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.05, 0.15, 0.85, 0.65])
    # bins: [0.0,0.1): y 0, p .05 -> .05; [0.1,0.2): .15; [0.6,0.7): |1-.65| = .35; [0.8,0.9): .15
    assert expected_calibration_error(y, p) == pytest.approx((0.05 + 0.15 + 0.35 + 0.15) / 4)
    assert brier(y, p) == pytest.approx((0.05**2 + 0.15**2 + 0.15**2 + 0.35**2) / 4)
    assert expected_calibration_error(np.array([1, 0]), np.array([0.5, 0.5])) == 0.0


def test_folds_are_stable_balanced_and_independent_of_the_holdout():
    ids = [str(587720000000000000 + i) for i in range(3000)]
    f = np.array([fold_of(i, 2) for i in ids])
    assert f.tolist() == [fold_of(i, 2) for i in ids]
    assert 0.45 < f.mean() < 0.55
    held = np.array([is_held_out(i) for i in ids])
    assert 0.45 < f[held].mean() < 0.55


def test_crossfit_check_finds_a_distorted_model_and_its_fix():
    """Scores that rank well but are over-confident and shifted (the sim->real case)."""
    rng = np.random.default_rng(11)
    n = 6000
    y = (rng.random(n) < 0.09).astype(int)
    z = np.where(y == 1, rng.normal(1.2, 1.0, n), rng.normal(-1.2, 1.0, n))
    raw = 1.0 / (1.0 + np.exp(-(3.0 * z + 1.0)))
    ids = [f"g{i}" for i in range(n)]
    res = crossfit_probability_check(ids, y, raw, train_fraction=0.5)
    m = res["mean"]
    assert m["ece_mapped_shifted"] < 0.5 * m["ece_raw"]
    assert m["brier_mapped_shifted"] < m["brier_raw"]
    assert res["em_mapped_covers_truth_all_folds"]
    for fold in res["per_fold"]:
        assert abs(fold["em_raw"]["fraction"] - fold["true_fraction"]) > 0.05
        assert abs(fold["em_mapped"]["fraction"] - fold["true_fraction"]) < 0.03
    assert sum(f["n"] for f in res["per_fold"]) == n
