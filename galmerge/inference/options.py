"""The settings of a classify run (:class:`ClassifyOptions`), saved in its manifest.

Below the run, both runners and the chunk context: every process of a run
(the client, each Dask worker) holds the same options. Torch-free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from galmerge.errors import GalmergeError
from galmerge.inference.calibration import DARG2010_MERGER_FRACTION
from galmerge.inference.engine import DEFAULT_BATCH_SIZE
from galmerge.inference.fetch import FetchOptions
from galmerge.inference.preprocess import DEFAULT_BLANK_THRESHOLD
from galmerge.inference.scoring import check_scoring_options

__all__ = ["DEFAULT_CHUNK_SIZE", "FETCH_RESULT_KEYS", "ClassifyOptions"]

#: Catalogue rows per chunk (= per part file = unit of resume) unless ``--chunk-size``.
DEFAULT_CHUNK_SIZE = 8192
#: Fetch options that change the output (and so must match to resume).
FETCH_RESULT_KEYS = ("service", "release", "layer", "bands", "cutout_format", "hips", "scale",
                     "pixels", "scale_col", "scale_factor")


@dataclass
class ClassifyOptions:
    """Settings of a classify run (saved in the run manifest).

    Attributes:
        threshold: ``is_merger`` is ``p_merger_raw >= threshold`` (default: from
            ``target_purity``/``target_completeness``, else the model's
            ``galmerge.decision_threshold``, else 0.5).
        merger_fraction: the catalogue's merger fraction that ``p_merger`` is
            stated for (default 0.02, Darg et al. 2010a), or ``"estimate"`` (EM).
        target_purity, target_completeness: choose the threshold from the
            model's calibration curve (at most one; not with ``threshold``).
        views: views per cutout for ``p_merger_spread`` (1, 2 or 8; None: 1 for a seed
            ensemble, whose spread is over its members, else 2).
        batch_size: images per model call (fixed; the last batch is padded).
        chunk_size: catalogue rows per chunk = per part file = unit of resume.
        id_col, ra_col, dec_col, file_loc_col: explicit column names.
        cutouts: a folder of cutout files, or an HDF5 cube.
        pattern: file name pattern in ``cutouts`` (``{id}``, ``{row}``).
        format: catalogue format (default: from the extension).
        limit: classify only the first ``limit`` rows.
        device: ``auto``, ``cpu`` or ``cuda``.
        threads: ONNX Runtime intra-op threads (default: available cores).
        workers: cutout decode threads (default: available cores, at most 8).
        blank_threshold: fraction of dead pixels above which a cutout is ``blank``.
        fetch: fetch cutouts from a survey service (``classify --fetch``).
        max_pixels: largest cutout plane (height x width) decoded; larger ones are
            ``too_large`` (default: scaled to the model, see
            :meth:`~galmerge.data.limits.ImageLimits.for_model`).
    """

    threshold: float | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    chunk_size: int = DEFAULT_CHUNK_SIZE
    id_col: str | None = None
    ra_col: str | None = None
    dec_col: str | None = None
    file_loc_col: str | None = None
    cutouts: str | None = None
    pattern: str | None = None
    format: str | None = None
    limit: int | None = None
    device: str = "auto"
    threads: int | None = None
    workers: int | None = None
    blank_threshold: float = DEFAULT_BLANK_THRESHOLD
    fetch: FetchOptions | None = None
    max_pixels: int | None = None
    # --- issue 11 (calibration): prior, threshold choice, views ---
    merger_fraction: float | str = DARG2010_MERGER_FRACTION
    target_purity: float | None = None
    target_completeness: float | None = None
    views: int | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise GalmergeError(f"threshold must be in [0, 1], got {self.threshold}")
        self._check_calibration_options()
        if self.chunk_size < 1 or self.batch_size < 1:
            raise GalmergeError("chunk size and batch size must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise GalmergeError(f"--limit must be at least 1, got {self.limit}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise GalmergeError(f"--max-pixels must be at least 1, got {self.max_pixels}")

    def _check_calibration_options(self) -> None:
        self.merger_fraction = check_scoring_options(
            self.merger_fraction, threshold=self.threshold, target_purity=self.target_purity,
            target_completeness=self.target_completeness, views=self.views)

    def result_settings(self) -> dict[str, Any]:
        """The settings that change the output (must match to resume)."""
        d = asdict(self)
        for k in ("device", "threads", "workers"):
            d.pop(k)
        if self.fetch is not None:  # how politely we fetch does not change the pixels
            d["fetch"] = {k: v for k, v in d["fetch"].items() if k in FETCH_RESULT_KEYS}
        return d
