"""From the raw score to a probability on real images: Platt scaling measured on labelled galaxies.

A model trained on simulations ranks real galaxies well but its softmax is not a
probability on them: Bayes' rule for the prior (:func:`galmerge.inference.calibration.shift_prior`)
assumes the score is calibrated under the training prior, which sim->real breaks (the
survey-like check of issue 11: ECE 0.052 raw, 0.055 shifted). A :class:`ScoreMap` is the
monotone map of Platt (1999, "Probabilistic outputs for support vector machines", eq. 1),
in the logit of the raw score::

    p_cal = 1 / (1 + exp(-(a * logit(p_raw) + b)))

fitted by maximum likelihood (Newton's method) on labelled galaxies -- the survey-like
check: labelled dev + a merger-poor background counted as non-mergers -- with Platt's
smoothed targets (his §2.2: (N+ + 1)/(N+ + 2) for positives, 1/(N- + 2) for negatives),
so a few dozen mergers do not give an over-confident map. ``p_cal`` is a posterior under
the check's own merger fraction (``reference_merger_fraction``); ``classify`` shifts it
from there to the survey's prior.

With ``a > 0`` the map is increasing: it changes no ranking, so the ROC AUC, the top-k
purity and every threshold on the raw score stay as they were. Only the numbers in
``p_merger`` and the EM prior estimate use it. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from galmerge.errors import GalmergeError

__all__ = ["ScoreMap", "fit_platt"]

_EPS = 1e-7


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(q) - np.log1p(-q)


@dataclass(frozen=True)
class ScoreMap:
    """``p_cal = sigmoid(a * logit(p_raw) + b)``, a posterior at ``reference_merger_fraction``."""

    a: float
    b: float
    reference_merger_fraction: float
    source: str = ""
    method: str = "platt"

    def __post_init__(self) -> None:
        if self.method != "platt":
            raise GalmergeError(f"score map method {self.method!r} is not known (platt)")
        if not (np.isfinite(self.a) and self.a > 0 and np.isfinite(self.b)):
            raise GalmergeError(f"score map needs a finite slope a > 0 and offset b, got "
                                f"a={self.a:g}, b={self.b:g}")
        if not 0.0 < self.reference_merger_fraction < 1.0:
            raise GalmergeError("score map reference merger fraction must be in (0, 1), got "
                                f"{self.reference_merger_fraction:g}")

    def apply(self, p_raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, float64 (NaN stays NaN)."""
        z = self.a * _logit(p_raw) + self.b
        out = 1.0 / (1.0 + np.exp(-z))
        return np.where(np.isnan(np.asarray(p_raw, dtype=np.float64)), np.nan, out)

    def invert(self, p_cal: np.ndarray) -> np.ndarray:
        """The raw score a calibrated probability came from (undoes :meth:`apply`)."""
        z = (_logit(p_cal) - self.b) / self.a
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for the model metadata (``galmerge.score_map``)."""
        return {"method": self.method, "a": self.a, "b": self.b,
                "reference_merger_fraction": self.reference_merger_fraction,
                "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "score map") -> ScoreMap:
        """Read :meth:`to_dict` output; one-line error naming ``where`` when malformed."""
        try:
            return cls(a=float(d["a"]), b=float(d["b"]),
                       reference_merger_fraction=float(d["reference_merger_fraction"]),
                       source=str(d.get("source", "")), method=str(d.get("method", "platt")))
        except (KeyError, TypeError, ValueError) as exc:
            raise GalmergeError(f"{where}: malformed score map ({exc})") from None


def fit_platt(p_raw: np.ndarray, labels: np.ndarray, *, max_iter: int = 200,
              tol: float = 1e-12) -> tuple[float, float]:
    """Maximum-likelihood ``(a, b)`` of :class:`ScoreMap` with Platt's smoothed targets.

    Args:
        p_raw: (n,) raw scores of labelled galaxies.
        labels: (n,) 1 for mergers, 0 for non-mergers.

    Raises:
        GalmergeError: no mergers or no non-mergers, a fit that does not converge, or a
            non-increasing map (scores that rank mergers below non-mergers).
    """
    y = np.asarray(labels, dtype=np.int64)
    x = _logit(p_raw)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0 or n_pos + n_neg != y.size:
        raise GalmergeError("a score map needs labels 0/1 with mergers and non-mergers")
    t = np.where(y == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

    def nll(a: float, b: float) -> float:  # cross-entropy against the smoothed targets
        z = a * x + b
        return float(np.sum(np.logaddexp(0.0, z) - t * z))

    a, b = 0.0, float(np.log((n_pos + 1.0) / (n_neg + 1.0)))
    f = nll(a, b)
    for _ in range(max_iter):
        p = 0.5 * (1.0 + np.tanh(0.5 * (a * x + b)))  # sigmoid without overflow
        g = np.array([np.dot(p - t, x), np.sum(p - t)])
        w = p * (1.0 - p) + 1e-12
        h = np.array([[np.dot(w, x * x), np.dot(w, x)], [np.dot(w, x), w.sum()]])
        step = np.linalg.solve(h, g)
        lam = 1.0  # backtracking Newton (Lin, Lin & Weng 2007, Machine Learning 68:267, alg. 1)
        while lam > 1e-10:
            a_new, b_new = a - lam * float(step[0]), b - lam * float(step[1])
            f_new = nll(a_new, b_new)
            if f_new <= f + 1e-4 * lam * float(np.dot(g, -step)):
                break
            lam /= 2.0
        a, b, f_old, f = a_new, b_new, f, f_new
        if abs(f_old - f) <= tol * max(1.0, abs(f)):
            if a <= 0:
                raise GalmergeError("Platt fit gives a non-increasing map: the scores do not "
                                    "rank mergers above non-mergers")
            return a, b
    raise GalmergeError("Platt fit did not converge (are the scores all equal?)")
