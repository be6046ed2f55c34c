"""The one ROC (training/metrics.py): its curve is scikit-learn's, point for point."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve

from galmerge.training.metrics import roc_points


def test_roc_points_are_sklearns_with_ties() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300) * 0.5 + 0.3 * y, 2)  # rounded: many tied scores
    fpr, tpr = roc_points(y, p)
    want_fpr, want_tpr, _ = roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(fpr, want_fpr)
    np.testing.assert_allclose(tpr, want_tpr)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
