"""From raw model scores to a survey's columns: prior, threshold, spread, OOD flag.

:class:`Scoring` is made once per run from the model's metadata
(:class:`~galmerge.inference.calibration.ModelCalibration`) and the user's
options. Per batch, :meth:`Scoring.score_batch` runs the model over the views
(:mod:`galmerge.inference.views`), the OOD check (:mod:`galmerge.inference.ood`), the
bright-star check (:mod:`galmerge.inference.stars`) and the no-sky check
(:mod:`galmerge.inference.sky`); per chunk, :meth:`Scoring.columns` turns raw scores into
``p_merger`` (prior shifted) and ``is_merger``. A row with a bright star or no sky is *set
aside*: it keeps its scores and is never ``is_merger``.

With ``--merger-fraction estimate`` the prior is known only after every row is
scored: chunks are written with the raw score, then :func:`finalise_parts`
makes two passes over the part files -- one fills a
:class:`~galmerge.inference.calibration.ScoreHistogram` of ``p_merger_raw``
for the EM estimate, one rewrites ``p_merger`` and ``is_merger`` of each part
from its ``p_merger_raw`` (atomic, and idempotent, so an interrupted run
resumes to the same bytes).

Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from galmerge.errors import GalmergeError
from galmerge.inference.calibration import (
    DARG2010_MERGER_FRACTION,
    ModelCalibration,
    PriorEstimate,
    ScoreHistogram,
    ThresholdChoice,
    choose_threshold,
    estimate_prior,
    shift_prior,
)
from galmerge.inference.cutouts import OK
from galmerge.inference.ood import ood_flags
from galmerge.inference.sky import no_sky_flags
from galmerge.inference.stars import bright_star_flags
from galmerge.inference.tablemeta import COLUMN_DESCRIPTIONS
from galmerge.inference.views import DEFAULT_VIEWS, VIEW_CHOICES, score_views

__all__ = ["COLUMN_DESCRIPTIONS", "ESTIMATE", "SET_ASIDE_CHECKS", "SET_ASIDE_COLUMNS",
           "RowScores", "Scoring", "check_scoring_options", "finalise_parts", "make_scoring",
           "set_aside_mask"]

#: ``--merger-fraction estimate``.
ESTIMATE = "estimate"
#: The checks whose rows are set aside (never ``is_merger``), by the column they write.
SET_ASIDE_CHECKS: tuple[tuple[str, Callable[[np.ndarray, str], tuple[np.ndarray, list[str]]]],
                        ...] = (("bright_star", bright_star_flags), ("no_sky", no_sky_flags))
#: The flag columns whose rows are set aside.
SET_ASIDE_COLUMNS = tuple(name for name, _ in SET_ASIDE_CHECKS)


def set_aside_mask(images: np.ndarray, convention: str) -> np.ndarray:
    """(N,) bool: model inputs that some check of :data:`SET_ASIDE_CHECKS` sets aside."""
    out = np.zeros(len(images), dtype=bool)
    for _, check in SET_ASIDE_CHECKS:
        out |= check(images, convention)[0]
    return out



@dataclass
class RowScores:
    """Per-row outputs of one batch or chunk (NaN/False where a row is not classified):
    raw score, its spread, the OOD, bright-star and no-sky flags with their reasons."""

    raw: np.ndarray
    spread: np.ndarray
    ood: np.ndarray
    ood_reason: np.ndarray
    star: np.ndarray
    star_reason: np.ndarray
    nosky: np.ndarray
    nosky_reason: np.ndarray

    @property
    def aside(self) -> np.ndarray:
        """Rows set aside (bright star or no sky): never ``is_merger``."""
        return self.star | self.nosky

    @classmethod
    def empty(cls, n: int) -> RowScores:
        """Arrays for ``n`` rows, nothing classified yet."""
        return cls(np.full(n, np.nan, dtype=np.float32), np.full(n, np.nan, dtype=np.float32),
                   np.zeros(n, dtype=bool), np.full(n, "", dtype=object),
                   np.zeros(n, dtype=bool), np.full(n, "", dtype=object),
                   np.zeros(n, dtype=bool), np.full(n, "", dtype=object))

    def store(self, rows: np.ndarray, batch: RowScores) -> None:
        """Put one batch's outputs at ``rows`` of this chunk's arrays."""
        for name in ("raw", "spread", "ood", "ood_reason", "star", "star_reason", "nosky",
                     "nosky_reason"):
            getattr(self, name)[rows] = getattr(batch, name)


@dataclass
class Scoring:
    """How a run turns model scores into columns (see the module doc)."""

    calibration: ModelCalibration
    convention: str
    merger_fraction: float | str
    choice: ThresholdChoice | None
    views: int = DEFAULT_VIEWS
    members: int = 1
    target_purity: float | None = None
    target_completeness: float | None = None
    estimate: PriorEstimate | None = None
    model: str = "model"
    notes: list[str] = field(default_factory=list)

    @property
    def prior(self) -> float:
        """The merger fraction ``p_merger`` is stated for (the training one until estimated)."""
        if isinstance(self.merger_fraction, str):
            return (self.estimate.fraction if self.estimate is not None
                    else self.calibration.base_fraction)
        return float(self.merger_fraction)

    @property
    def pending(self) -> bool:
        """True while an estimated prior is still to be computed."""
        return self.merger_fraction == ESTIMATE and self.estimate is None

    def score_batch(self, run_batch: Callable[[np.ndarray], np.ndarray], images: np.ndarray
                    ) -> RowScores:
        """Scores, OOD, bright-star and no-sky flags (with reasons) of one batch of model
        inputs."""
        raw, spread = score_views(run_batch, images, self.views)
        flag, why = ood_flags(images, self.convention, self.calibration.ood)
        star, star_why = bright_star_flags(images, self.convention)
        nosky, nosky_why = no_sky_flags(images, self.convention)
        return RowScores(raw, spread, flag, np.asarray(why, dtype=object), star,
                         np.asarray(star_why, dtype=object), nosky,
                         np.asarray(nosky_why, dtype=object))

    def columns(self, raw: np.ndarray, classified: np.ndarray,
                aside: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
        """(``p_merger`` float32, ``is_merger`` nullable boolean) from raw scores; a row set
        aside (``aside`` true: a bright star or no sky, :attr:`RowScores.aside`) is never
        ``is_merger``."""
        if aside is None:
            aside = np.zeros(len(raw), dtype=bool)
        cal = self.calibration
        p = shift_prior(cal.probability(raw), cal.base_fraction, self.prior)
        threshold = self.choice.threshold if self.choice is not None else 0.5
        is_m = pd.array(np.where(classified & ~aside, raw >= threshold, False), dtype="boolean")
        is_m[~classified] = pd.NA
        return np.asarray(p, dtype=np.float32), is_m

    def with_estimate(self, est: PriorEstimate) -> Scoring:
        """This scoring with the estimated prior (and a threshold chosen for it)."""
        out = replace(self, estimate=est)
        if self.target_purity is not None or self.target_completeness is not None:
            out.choice = choose_threshold(self.calibration.curve, est.fraction,
                                          target_purity=self.target_purity,
                                          target_completeness=self.target_completeness,
                                          model=self.model)
        return out

    def views_description(self) -> str:
        """What ``p_merger_spread`` is the spread over, in words."""
        views = {1: "the cutout as given", 2: "identity + left-right mirror",
                 8: "the eight flips/rotations (D4)"}[self.views]
        return views if self.members < 2 else \
            f"{views}, each scored by the {self.members} members of the seed ensemble"

    def metadata(self) -> dict[str, Any]:
        """Run metadata: prior used, threshold and its rule, views, OOD ranges."""
        cal = self.calibration
        m: dict[str, Any] = {
            "prior_used": self.prior,
            "prior_source": (
                "estimated from this catalogue" if self.merger_fraction == ESTIMATE else
                "Darg et al. 2010a default (1-3 per cent; MNRAS 401, 1043)"
                if self.merger_fraction == DARG2010_MERGER_FRACTION else "--merger-fraction"),
            "train_merger_fraction": cal.train_fraction,
            "train_merger_fraction_source": "model metadata" if cal.train_merger_fraction
            is not None else "not recorded by the model: 0.5 (balanced training) assumed",
            "probability_calibration": cal.score_map.to_dict() if cal.score_map is not None
            else "none recorded by the model: Bayes' rule from the training fraction",
            "views": self.views,
            "views_description": self.views_description(),
            "ood_ranges": cal.ood.source or "model metadata" if cal.ood is not None
            else "none recorded by the model: generic checks only",
            "result_columns": dict(COLUMN_DESCRIPTIONS),
        }
        if self.estimate is not None:
            m["prior_estimate"] = self.estimate.to_dict()
        if self.choice is not None:
            m["threshold"] = self.choice.threshold
            m["threshold_rule"] = self.choice.rule
            if self.choice.expected is not None:
                m["threshold_expected"] = self.choice.expected
        return m


def check_scoring_options(merger_fraction: float | str, *, threshold: float | None,
                          target_purity: float | None, target_completeness: float | None,
                          views: int | None) -> float | str:
    """Validate classify's issue-11 options; returns the merger fraction (float or ``estimate``)."""
    mf = merger_fraction
    if isinstance(mf, str) and mf != ESTIMATE:
        try:
            mf = float(mf)
        except ValueError:
            raise GalmergeError(f"--merger-fraction must be a number or 'estimate', got "
                                f"{mf!r}") from None
    if not isinstance(mf, str) and not 0.0 < mf < 1.0:
        raise GalmergeError(f"--merger-fraction must be strictly between 0 and 1, got {mf:g}")
    targets = [t for t in (target_purity, target_completeness) if t is not None]
    if len(targets) > 1 or (targets and threshold is not None):
        raise GalmergeError("give at most one of --threshold, --target-purity and "
                            "--target-completeness")
    if targets and not 0.0 < targets[0] <= 1.0:
        raise GalmergeError(f"target purity/completeness must be in (0, 1], got {targets[0]:g}")
    if views is not None and views not in VIEW_CHOICES:
        raise GalmergeError(f"--views must be one of {', '.join(map(str, VIEW_CHOICES))}, "
                            f"got {views}")
    return mf


def make_scoring(metadata: dict[str, str], convention: str, *, threshold: float | None,
                 merger_fraction: float | str, target_purity: float | None,
                 target_completeness: float | None, views: int, model: str,
                 members: int = 1) -> Scoring:
    """The run's :class:`Scoring` (raises GalmergeError for an impossible target)."""
    if views == 1 and members < 2:
        raise GalmergeError(f"--views 1 gives no spread for {model}, a single model",
                            hint="use --views 2 or 8 (1 is for seed ensembles)")
    cal = ModelCalibration.from_metadata(metadata, source=model)
    s = Scoring(cal, convention, merger_fraction, None, views=views, members=members,
                target_purity=target_purity, target_completeness=target_completeness,
                model=model)
    if threshold is not None:
        s.choice = ThresholdChoice(float(threshold), f"--threshold {threshold:g} on the raw score")
    elif target_purity is not None or target_completeness is not None:
        if cal.curve is None or merger_fraction != ESTIMATE:
            s.choice = choose_threshold(cal.curve, s.prior, target_purity=target_purity,
                                        target_completeness=target_completeness, model=model)
    else:
        s.choice = cal.default_choice()
    return s


def finalise_parts(parts: list[Path], scoring: Scoring,
                   write: Callable[[pd.DataFrame, int], Any]) -> Scoring:
    """Estimate the prior from the parts' raw scores, then rewrite their
    ``p_merger``/``is_merger`` (two passes; ``write(frame, k)`` stores part ``k``)."""
    import pyarrow.parquet as pq

    hist = ScoreHistogram()
    for path in parts:
        t = pq.read_table(path, columns=["p_merger_raw", "status"]).to_pandas()
        raw = t["p_merger_raw"].to_numpy()[t["status"].to_numpy() == OK]
        hist.add(scoring.calibration.probability(raw))
    cal = scoring.calibration
    done = scoring.with_estimate(estimate_prior(hist, cal.base_fraction))
    for k, path in enumerate(parts):
        frame = pq.read_table(path).to_pandas()
        raw = frame["p_merger_raw"].to_numpy(dtype=np.float32)
        aside = np.zeros(len(frame), dtype=bool)
        for col in SET_ASIDE_COLUMNS:  # parts written before a flag existed lack its column
            if col in frame:
                aside |= frame[col].fillna(False).to_numpy(dtype=bool)
        p, is_m = done.columns(raw, frame["status"].to_numpy() == OK, aside)
        frame["p_merger"] = p
        frame["is_merger"] = is_m
        write(frame, k)
    return done
