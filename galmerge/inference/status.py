"""Row statuses, what each means, and the row/result types every inference layer shares.

The bottom of the inference room: the cutout sources, the cache, the HTTP
transport, the pipeline and the progress table all import from here, and it
imports nothing of the inference room. Statuses are documented in
docs/statuses.md.

Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from galmerge.data.images import RawImage, stable_message
from galmerge.data.limits import FileMissing, ImageTooLarge, file_problem
from galmerge.errors import GalmergeError

__all__ = [
    "BAD_COORDINATES", "BAD_MODEL_OUTPUT", "BLANK", "FETCH_FAILED", "MISSING_FILE",
    "NO_COVERAGE", "NO_CUTOUT_SOURCE", "OK", "STATUSES", "STATUS_MEANING", "TOO_LARGE",
    "UNREADABLE", "UNSUPPORTED_PIXELS", "Cutout", "CutoutRequest", "WholeRunError",
    "failure_status",
]

# --- row statuses (documented in docs/statuses.md) -------------------------------
OK = "ok"
#: No cutout file at the row's location.
MISSING_FILE = "missing_file"
#: A file/body was there but could not be decoded, or has the wrong shape/bands.
UNREADABLE = "unreadable"
#: The cutout holds (almost) no data: all-zero or non-finite pixels.
BLANK = "blank"
#: RA/Dec missing, NaN, unparseable, or outside [0, 360) x [-90, 90].
BAD_COORDINATES = "bad_coordinates"
#: The survey has no data at these coordinates (out of footprint).
NO_COVERAGE = "no_coverage"
#: The service failed for this row after retries (reason in ``status_detail``).
FETCH_FAILED = "fetch_failed"
#: The pixels are of a kind that cannot be converted to the model's convention.
UNSUPPORTED_PIXELS = "unsupported_pixels"
#: The row has neither a cutout location nor coordinates to fetch one.
NO_CUTOUT_SOURCE = "no_cutout_source"
#: The cutout declares more pixels or bytes than the run accepts (``--max-pixels``).
TOO_LARGE = "too_large"
#: The model returned a value that is not a probability (non-finite or outside [0, 1]).
BAD_MODEL_OUTPUT = "bad_model_output"

STATUSES = (OK, MISSING_FILE, UNREADABLE, BLANK, BAD_COORDINATES, NO_COVERAGE, FETCH_FAILED,
            UNSUPPORTED_PIXELS, NO_CUTOUT_SOURCE, TOO_LARGE, BAD_MODEL_OUTPUT)


@dataclass(frozen=True)
class CutoutRequest:
    """What a source needs to find one row's cutout.

    Attributes:
        row: position of the row in the input catalogue (0-based, global).
        id: the row's identifier as a string (exactly as in the catalogue).
        ra, dec: J2000 degrees, or ``None`` when the catalogue has none / bad ones.
        file_loc: path of a local cutout (absolute, or relative to the catalogue).
        scale: per-row arcsec per pixel of the cutout to fetch, overriding the model's.
    """

    row: int
    id: str
    ra: float | None = None
    dec: float | None = None
    file_loc: str | None = None
    scale: float | None = None


@dataclass
class Cutout:
    """A cutout or the reason there is none."""

    status: str
    raw: RawImage | None = None
    detail: str = ""
    #: Fraction of the standard cutout's field already cropped away by whoever
    #: stored the pixels (e.g. a dataset file of model-ready images); the
    #: pipeline crops only what remains of the model's ``crop_fraction``.
    crop_applied: float = 1.0

    @property
    def ok(self) -> bool:
        """True when pixels are present."""
        return self.status == OK and self.raw is not None


class WholeRunError(GalmergeError):
    """A problem every row would share (e.g. an output that would replace an input):
    the per-row firewall lets it through, and it ends the run with one line."""


def failure_status(exc: BaseException, status: str) -> tuple[str, str]:
    """The row status and a short, stable detail for an exception raised by one row.

    ``status`` is what an unexpected failure means for the source (``unreadable``
    for files, ``fetch_failed`` for services). Details carry no object
    addresses and no traceback, so two runs over the same input agree.
    """
    if isinstance(exc, ImageTooLarge):
        return TOO_LARGE, exc.one_line()
    if isinstance(exc, FileMissing):
        return MISSING_FILE, exc.one_line()
    if isinstance(exc, GalmergeError):
        return status, exc.one_line()
    if isinstance(exc, MemoryError):
        return TOO_LARGE, "not enough memory to decode this cutout"
    if isinstance(exc, OSError):
        name = Path(exc.filename).name if isinstance(exc.filename, str) else ""
        return status, f"{name + ': ' if name else ''}{file_problem(exc)}"
    return status, f"internal error: {type(exc).__name__}: {stable_message(exc)}"


#: What each status means (the summary table and docs/statuses.md).
STATUS_MEANING = {
    "ok": "classified",
    "missing_file": "no cutout file at the row's location",
    "unreadable": "file could not be decoded, or wrong shape/bands",
    "blank": "cutout holds (almost) no data where the model looks",
    "bad_coordinates": "RA/Dec missing, unparseable, a sentinel, or out of range",
    "no_coverage": "survey has no data at these coordinates",
    "fetch_failed": "the cutout service failed after retries",
    "unsupported_pixels": "pixels of a kind that cannot be converted to the model's convention",
    "no_cutout_source": "no file_loc, no --cutouts, and nothing to fetch from",
}
