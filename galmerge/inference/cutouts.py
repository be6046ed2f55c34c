"""Where cutouts come from: one small interface for local files, caches and services.

A :class:`CutoutSource` turns :class:`CutoutRequest` s (one per catalogue row)
into :class:`Cutout` s: decoded pixels plus what they are, or a row status
saying why there are none. Sources never raise for a per-row problem; the
pipeline carries the status to the output row.

Torch-free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from galmerge.data.images import RawImage

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

STATUSES = (OK, MISSING_FILE, UNREADABLE, BLANK, BAD_COORDINATES, NO_COVERAGE, FETCH_FAILED,
            UNSUPPORTED_PIXELS, NO_CUTOUT_SOURCE)


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

    @property
    def ok(self) -> bool:
        """True when pixels are present."""
        return self.status == OK and self.raw is not None


class CutoutSource(ABC):
    """Coordinates or locations in, images (or statuses) out."""

    #: Short name used in messages, cache keys and output metadata.
    name: str = "source"

    @abstractmethod
    def get(self, request: CutoutRequest) -> Cutout:
        """One cutout; per-row problems become a status, never an exception."""

    def get_many(self, requests: Sequence[CutoutRequest]) -> Iterator[Cutout]:
        """Cutouts for ``requests``, yielded in the same order.

        The default is sequential; network sources override it with bounded
        concurrency.
        """
        for req in requests:
            yield self.get(req)

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections, files and threads."""

    def __enter__(self) -> CutoutSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
