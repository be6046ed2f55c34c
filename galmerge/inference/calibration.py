"""Probabilities a survey can use: prior shift, prior estimate (EM), calibrated thresholds.

A galmerge model's softmax ``p_merger_raw`` is a posterior under the class
balance of its labelled training batches (``galmerge.train_merger_fraction``,
0.5 for the balanced sources). A survey has far fewer mergers, so classify
re-states it for the survey's merger fraction:

* :func:`shift_prior` -- Bayes' rule for a change of class priors, Saerens,
  Latinne & Decaestecker (2002, Neural Computation 14:21), eq. 2.4::

      p'(m|x) = (pi'/pi) p(m|x) / [ (pi'/pi) p(m|x) + ((1-pi')/(1-pi)) (1 - p(m|x)) ]

  with ``pi`` the training merger fraction and ``pi'`` the survey's. It is
  undone by swapping the two fractions (:func:`shift_prior` (p', pi', pi) = p).
* :func:`estimate_prior` -- the EM estimate of ``pi'`` from the scores alone
  (Saerens et al. 2002, sec. 2.2: E-step = eq. 2.4 at the current estimate,
  M-step = the mean adjusted posterior), run on a :class:`ScoreHistogram`
  so that it needs one streaming pass over the scores in bounded memory,
  with a Poisson-bootstrap interval (sampling only: it assumes the model's
  scores are calibrated for the training prior).
* :class:`CalibrationCurve` -- purity, completeness and flagged fraction per
  raw-score threshold, measured on a survey-like check at a reference merger
  fraction and stored in the model (``galmerge.calibration``).
  :func:`purity_at_prior` re-weights purity to another merger fraction.
  :func:`choose_threshold` picks the threshold for a target purity or
  completeness.
* :class:`ModelCalibration` -- the metadata contract (read here, written by
  ``galmerge export --calibration FILE.json``).

Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from galmerge.conventions import METADATA_PREFIX
from galmerge.errors import GalmergeError
from galmerge.inference.ood import OodRanges
from galmerge.inference.score_map import ScoreMap

__all__ = [
    "DARG2010_MERGER_FRACTION", "DEFAULT_DECISION_THRESHOLD", "DEFAULT_TRAIN_FRACTION",
    "CalibrationCurve", "CurvePoint", "ModelCalibration", "PriorEstimate", "ScoreHistogram",
    "ThresholdChoice", "choose_threshold", "estimate_prior", "flagged_at_prior",
    "purity_at_prior", "shift_prior",
]

#: Default survey merger fraction: Darg et al. (2010a, MNRAS 401, 1043), abstract: the
#: fraction of volume-limited (M_r < -20.55) major mergers (mass ratio 1/3..3) in the
#: nearby Universe (SDSS, Galaxy Zoo 1, 0.005 < z < 0.1) is "1-3 x C per cent, where
#: C ~ 1.5 is a correction factor for spectroscopic incompleteness". 0.02 is the
#: middle of their 1-3 per cent before C.
DARG2010_MERGER_FRACTION = 0.02
#: Training merger fraction assumed when a model does not record one (balanced batches).
DEFAULT_TRAIN_FRACTION = 0.5
#: Cut on the raw score when the model records no decision threshold (as before issue 11).
DEFAULT_DECISION_THRESHOLD = 0.5

KEY_TRAIN_FRACTION = METADATA_PREFIX + "train_merger_fraction"
KEY_THRESHOLD = METADATA_PREFIX + "decision_threshold"
KEY_RULE = METADATA_PREFIX + "decision_rule"
KEY_CURVE = METADATA_PREFIX + "calibration"
KEY_OOD = METADATA_PREFIX + "ood_ranges"
KEY_SCORE_MAP = METADATA_PREFIX + "score_map"

_EPS = 1e-12


# --- prior shift ---------------------------------------------------------------------------

def _check_fraction(f: float, what: str) -> float:
    f = float(f)
    if not 0.0 < f < 1.0:
        raise GalmergeError(f"{what} must be strictly between 0 and 1, got {f:g}")
    return f


def shift_prior(p: np.ndarray, train_fraction: float, target_fraction: float) -> np.ndarray:
    """``p(merger|x)`` under prior ``train_fraction`` -> under ``target_fraction``.

    Saerens, Latinne & Decaestecker (2002), eq. 2.4, for two classes. NaN stays NaN;
    the shift is monotone, so it keeps the order of the scores.
    """
    pi = _check_fraction(train_fraction, "training merger fraction")
    pt = _check_fraction(target_fraction, "merger fraction")
    q = np.asarray(p, dtype=np.float64)
    a = (pt / pi) * q
    b = ((1.0 - pt) / (1.0 - pi)) * (1.0 - q)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = a / (a + b)
    return out.astype(np.float32) if np.asarray(p).dtype == np.float32 else out


# --- EM estimate of the prior, streaming ---------------------------------------------------

@dataclass
class ScoreHistogram:
    """Counts and sums of raw scores in fine logit bins: a streaming summary for EM.

    Each bin keeps the number of scores and their sum, so EM uses the bin's mean
    score (not its centre) and the quantisation error is far below 1e-4 in the
    estimated fraction. ``add`` takes any chunk; NaN scores are skipped.
    """

    bins: int = 4096
    logit_range: float = 18.0
    counts: np.ndarray = field(init=False)
    sums: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.counts = np.zeros(self.bins, dtype=np.float64)
        self.sums = np.zeros(self.bins, dtype=np.float64)

    def add(self, p: np.ndarray) -> None:
        """Accumulate one chunk of raw scores."""
        q = np.asarray(p, dtype=np.float64)
        q = q[np.isfinite(q)]
        if not q.size:
            return
        z = np.log(np.clip(q, _EPS, 1 - _EPS)) - np.log(np.clip(1 - q, _EPS, 1 - _EPS))
        k = np.clip(((z + self.logit_range) / (2 * self.logit_range) * self.bins).astype(np.int64),
                    0, self.bins - 1)
        self.counts += np.bincount(k, minlength=self.bins)
        self.sums += np.bincount(k, weights=q, minlength=self.bins)

    @property
    def n(self) -> int:
        """Scores seen."""
        return int(self.counts.sum())

    def support(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean score, count) of the non-empty bins."""
        keep = self.counts > 0
        return self.sums[keep] / self.counts[keep], self.counts[keep]


@dataclass
class PriorEstimate:
    """EM estimate of the catalogue's merger fraction."""

    fraction: float
    interval: tuple[float, float]
    confidence: float
    n: int
    iterations: int
    converged: bool
    method: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for run metadata."""
        d = asdict(self)
        d["interval"] = list(self.interval)
        return d


def _em(scores: np.ndarray, weights: np.ndarray, train_fraction: float, *,
        tol: float = 1e-9, max_iter: int = 5000) -> tuple[float, int, bool]:
    """Saerens et al. (2002) sec. 2.2 EM for two classes; returns (fraction, iterations, ok)."""
    total = weights.sum()
    pt = float(np.dot(scores, weights) / total)  # start: the mean raw score (their eq. 2.5 start)
    pt = min(max(pt, 1e-6), 1 - 1e-6)
    for it in range(1, max_iter + 1):
        post = shift_prior(scores, train_fraction, pt)
        new = float(np.dot(post, weights) / total)
        new = min(max(new, 1e-9), 1 - 1e-9)
        if abs(new - pt) < tol:
            return new, it, True
        pt = new
    return pt, max_iter, False


def estimate_prior(hist: ScoreHistogram, train_fraction: float, *, n_boot: int = 200,
                   confidence: float = 0.95, seed: int = 0) -> PriorEstimate:
    """EM estimate of the merger fraction with a Poisson-bootstrap interval.

    Args:
        hist: the raw scores of the catalogue (filled chunk by chunk).
        train_fraction: the model's training merger fraction.
        n_boot: bootstrap replicates (each bin count redrawn as Poisson(count)).
        confidence: interval coverage.
        seed: bootstrap seed (fixed, so that a rerun writes the same numbers).

    Raises:
        GalmergeError: no finite scores.
    """
    scores, counts = hist.support()
    if not counts.size:
        raise GalmergeError("--merger-fraction estimate: no classified rows to estimate from")
    frac, iters, ok = _em(scores, counts, train_fraction)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        w = rng.poisson(counts).astype(np.float64)
        if w.sum() > 0:
            boots.append(_em(scores, w, train_fraction, tol=1e-7)[0])
    alpha = (1.0 - confidence) / 2.0
    lo, hi = (np.quantile(boots, [alpha, 1 - alpha]) if boots else (frac, frac))
    return PriorEstimate(fraction=frac, interval=(float(lo), float(hi)), confidence=confidence,
                         n=hist.n, iterations=iters, converged=ok,
                         method="EM (Saerens, Latinne & Decaestecker 2002, sec. 2.2) over a "
                                f"{hist.bins}-bin histogram of the scores; {n_boot}-replicate "
                                "Poisson bootstrap interval (sampling error only)")


# --- calibration curve and thresholds -------------------------------------------------------

def _odds(x: float) -> float:
    return x / (1.0 - x)


def purity_at_prior(purity: float, reference: float, prior: float) -> float:
    """Purity measured at merger fraction ``reference``, re-weighted to ``prior``.

    With completeness ``c`` and false-positive rate ``FPR`` (both independent of
    the prior), purity at prior ``pi`` is ``pi c / (pi c + (1 - pi) FPR)``; so
    ``odds(purity)`` scales with ``odds(pi)``:
    ``odds(P(pi)) = odds(P(ref)) * odds(pi) / odds(ref)``. Purity 0 or 1 stays.
    """
    if purity <= 0.0 or purity >= 1.0 or prior == reference:
        return float(purity)
    o = _odds(purity) * _odds(prior) / _odds(reference)
    return float(o / (1.0 + o))


def flagged_at_prior(point: CurvePoint, reference: float, prior: float) -> float:
    """Flagged fraction ``pi c + (1 - pi) FPR`` at merger fraction ``prior``."""
    return float(prior * point.completeness + (1.0 - prior) * point.false_positive_rate(reference))


@dataclass
class CurvePoint:
    """One raw-score threshold on the calibration curve (fractions in [0, 1]).

    ``fpr`` (false-positive rate, optional) is stored when known; otherwise it is
    derived from purity P, completeness c and the reference fraction pi0:
    ``FPR = pi0 c (1 - P) / ((1 - pi0) P)``.
    """

    threshold: float
    purity: float
    completeness: float
    flagged_fraction: float
    purity_ci: tuple[float, float] | None = None
    completeness_ci: tuple[float, float] | None = None
    flagged_fraction_ci: tuple[float, float] | None = None
    fpr: float | None = None

    def false_positive_rate(self, reference: float) -> float:
        """Stored ``fpr``, or the one implied by purity and completeness at ``reference``."""
        if self.fpr is not None:
            return float(self.fpr)
        if self.purity <= 0.0:
            return float((self.flagged_fraction - reference * self.completeness)
                         / (1.0 - reference))
        return float(reference * self.completeness * (1.0 - self.purity)
                     / ((1.0 - reference) * self.purity))


@dataclass
class CalibrationCurve:
    """Purity / completeness / flagged fraction per raw-score threshold (increasing)."""

    reference_merger_fraction: float
    source: str
    points: list[CurvePoint]

    def __post_init__(self) -> None:
        _check_fraction(self.reference_merger_fraction, "calibration reference_merger_fraction")
        t = [p.threshold for p in self.points]
        if not t or any(b <= a for a, b in pairwise(t)):
            raise GalmergeError("calibration curve: thresholds must be non-empty and "
                                "strictly increasing")

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "calibration") -> CalibrationCurve:
        """From the ``galmerge.calibration`` JSON object."""
        try:
            pts = []
            for p in d["points"]:
                kw = {k: float(p[k]) for k in ("threshold", "purity", "completeness",
                                                "flagged_fraction")}
                for k in ("purity_ci", "completeness_ci", "flagged_fraction_ci"):
                    if p.get(k) is not None:
                        kw[k] = (float(p[k][0]), float(p[k][1]))  # type: ignore[assignment]
                if p.get("fpr") is not None:
                    kw["fpr"] = float(p["fpr"])
                pts.append(CurvePoint(**kw))  # type: ignore[arg-type]
            return cls(float(d["reference_merger_fraction"]), str(d.get("source", "")), pts)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise GalmergeError(f"{where}: malformed calibration curve ({type(exc).__name__}: "
                                f"{exc})", hint="see docs/output-columns.md for the format") \
                from None

    def to_dict(self) -> dict[str, Any]:
        """The ``galmerge.calibration`` JSON object."""
        pts = []
        for p in self.points:
            d = {k: v for k, v in asdict(p).items() if v is not None}
            for k in ("purity_ci", "completeness_ci", "flagged_fraction_ci"):
                if k in d:
                    d[k] = list(d[k])
            pts.append(d)
        return {"reference_merger_fraction": self.reference_merger_fraction,
                "source": self.source, "points": pts}

    def expected(self, point: CurvePoint, prior: float) -> dict[str, Any]:
        """Purity, completeness and flagged fraction of ``point`` at merger fraction ``prior``."""
        ref = self.reference_merger_fraction
        out: dict[str, Any] = {
            "threshold": point.threshold, "merger_fraction": prior,
            "purity": purity_at_prior(point.purity, ref, prior),
            "completeness": point.completeness,
            "flagged_fraction": flagged_at_prior(point, ref, prior)}
        if point.purity_ci is not None:
            out["purity_ci"] = [purity_at_prior(x, ref, prior) for x in point.purity_ci]
        if point.completeness_ci is not None:
            out["completeness_ci"] = list(point.completeness_ci)
        if point.flagged_fraction_ci is not None and prior == ref:
            out["flagged_fraction_ci"] = list(point.flagged_fraction_ci)
        return out


@dataclass
class ThresholdChoice:
    """The cut on the raw score that ``is_merger`` uses, and why."""

    threshold: float
    rule: str
    expected: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for run metadata."""
        d: dict[str, Any] = {"threshold": self.threshold, "rule": self.rule}
        if self.expected is not None:
            d["expected"] = self.expected
        return d


def choose_threshold(curve: CalibrationCurve | None, prior: float, *,
                     target_purity: float | None = None,
                     target_completeness: float | None = None,
                     model: str = "model") -> ThresholdChoice:
    """The raw-score threshold for a target purity (smallest threshold reaching it at
    ``prior``) or completeness (largest threshold reaching it).

    Raises:
        GalmergeError: no curve in the model, both or neither target given, or no
            point of the curve reaches the target.
    """
    if (target_purity is None) == (target_completeness is None):
        raise GalmergeError("give one of --target-purity and --target-completeness")
    if curve is None:
        raise GalmergeError(f"{model}: the model has no calibration curve ({KEY_CURVE}), so "
                            "--target-purity/--target-completeness cannot be met",
                            hint="use --threshold, or a model exported with --calibration")
    if target_purity is not None:
        ok = [p for p in curve.points
              if purity_at_prior(p.purity, curve.reference_merger_fraction, prior)
              >= target_purity]
        what = f"purity >= {target_purity:g}"
        pick = ok[0] if ok else None
        best = max(purity_at_prior(p.purity, curve.reference_merger_fraction, prior)
                   for p in curve.points)
    else:
        assert target_completeness is not None
        ok = [p for p in curve.points if p.completeness >= target_completeness]
        what = f"completeness >= {target_completeness:g}"
        pick = ok[-1] if ok else None
        best = max(p.completeness for p in curve.points)
    if pick is None:
        raise GalmergeError(f"{model}: no threshold on the calibration curve reaches {what} at "
                            f"merger fraction {prior:g} (best {best:.3g})",
                            hint="ask for less, or use --threshold")
    rule = (f"smallest threshold of the model's calibration curve ({curve.source}) with {what} "
            f"at merger fraction {prior:g}" if target_purity is not None else
            f"largest threshold of the model's calibration curve ({curve.source}) with {what}")
    return ThresholdChoice(pick.threshold, rule, curve.expected(pick, prior))


# --- the metadata contract ---------------------------------------------------------------------

@dataclass
class ModelCalibration:
    """What a model says about its scores (``galmerge.*`` metadata; all optional).

    Attributes:
        train_merger_fraction: merger fraction of the labelled training batches.
        decision_threshold: default cut on the raw score for ``is_merger``.
        decision_rule: one sentence on how ``decision_threshold`` was chosen.
        curve: the calibration curve measured on a survey-like check.
        ood: pixel-statistic ranges of the training images (:mod:`galmerge.inference.ood`).
        score_map: raw score -> probability on real images (:mod:`galmerge.inference.score_map`).
    """

    train_merger_fraction: float | None = None
    decision_threshold: float | None = None
    decision_rule: str | None = None
    curve: CalibrationCurve | None = None
    ood: OodRanges | None = None
    score_map: ScoreMap | None = None

    def __post_init__(self) -> None:
        if self.train_merger_fraction is not None:
            _check_fraction(self.train_merger_fraction, "train_merger_fraction")
        if self.decision_threshold is not None and not 0.0 <= self.decision_threshold <= 1.0:
            raise GalmergeError(f"decision_threshold must be in [0, 1], got "
                                f"{self.decision_threshold:g}")

    @property
    def train_fraction(self) -> float:
        """The recorded training fraction, else :data:`DEFAULT_TRAIN_FRACTION`."""
        return (DEFAULT_TRAIN_FRACTION if self.train_merger_fraction is None
                else self.train_merger_fraction)

    @property
    def base_fraction(self) -> float:
        """The merger fraction :meth:`probability` is a posterior under: the score map's
        reference fraction, else the training fraction (Bayes' rule starts from it)."""
        return (self.score_map.reference_merger_fraction if self.score_map is not None
                else self.train_fraction)

    def probability(self, raw: np.ndarray) -> np.ndarray:
        """The raw scores through the score map (unchanged without one), float64."""
        q = np.asarray(raw, dtype=np.float64)
        return q if self.score_map is None else self.score_map.apply(q)

    def default_choice(self) -> ThresholdChoice:
        """The model's own threshold, else 0.5 on the raw score."""
        if self.decision_threshold is None:
            return ThresholdChoice(DEFAULT_DECISION_THRESHOLD,
                                   "raw score >= 0.5 (the model records no decision threshold)")
        return ThresholdChoice(self.decision_threshold, self.decision_rule
                               or "the model's decision threshold (no rule recorded)")

    def to_metadata(self) -> dict[str, str]:
        """``metadata_props`` entries (strings) for the fields that are set."""
        m: dict[str, str] = {}
        if self.train_merger_fraction is not None:
            m[KEY_TRAIN_FRACTION] = repr(float(self.train_merger_fraction))
        if self.decision_threshold is not None:
            m[KEY_THRESHOLD] = repr(float(self.decision_threshold))
            m[KEY_RULE] = self.decision_rule or ""
        if self.curve is not None:
            m[KEY_CURVE] = json.dumps(self.curve.to_dict(), sort_keys=True)
        if self.ood is not None:
            m[KEY_OOD] = json.dumps(self.ood.to_dict())  # statistic order kept
        if self.score_map is not None:
            m[KEY_SCORE_MAP] = json.dumps(self.score_map.to_dict(), sort_keys=True)
        return m

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str = "model") -> ModelCalibration:
        """Read the fields a model has; absent or empty ones stay None."""
        def num(key: str) -> float | None:
            v = meta.get(key, "").strip()
            if not v:
                return None
            try:
                return float(v)
            except ValueError:
                raise GalmergeError(f"{source}: metadata {key} = {v!r} is not a number") \
                    from None

        def obj(key: str) -> dict[str, Any] | None:
            v = meta.get(key, "").strip()
            if not v:
                return None
            try:
                return json.loads(v)
            except ValueError:
                raise GalmergeError(f"{source}: metadata {key} is not JSON") from None

        curve, ood, smap = obj(KEY_CURVE), obj(KEY_OOD), obj(KEY_SCORE_MAP)
        return cls(train_merger_fraction=num(KEY_TRAIN_FRACTION),
                   decision_threshold=num(KEY_THRESHOLD),
                   decision_rule=meta.get(KEY_RULE) or None,
                   curve=CalibrationCurve.from_dict(curve, f"{source}: {KEY_CURVE}")
                   if curve else None,
                   ood=OodRanges.from_dict(ood, f"{source}: {KEY_OOD}") if ood else None,
                   score_map=ScoreMap.from_dict(smap, f"{source}: {KEY_SCORE_MAP}")
                   if smap else None)

    @classmethod
    def from_json_file(cls, path: str | Path) -> ModelCalibration:
        """From ``galmerge export --calibration FILE.json`` (keys as the attributes;
        ``calibration`` = the curve object, ``ood_ranges`` = the OOD ranges)."""
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise GalmergeError(f"{p}: cannot read calibration JSON ({exc})") from None
        if not isinstance(d, dict):
            raise GalmergeError(f"{p}: calibration JSON must be an object")
        known = {"train_merger_fraction", "decision_threshold", "decision_rule", "calibration",
                 "ood_ranges", "score_map"}
        extra = sorted(set(d) - known)
        if extra:
            raise GalmergeError(f"{p}: unknown keys {', '.join(extra)}",
                                hint=f"use {', '.join(sorted(known))}")
        meta = {METADATA_PREFIX + k: (v if isinstance(v, str) else json.dumps(v))
                for k, v in d.items() if v is not None}
        return cls.from_metadata(meta, source=str(p))
