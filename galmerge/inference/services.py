"""Cutout sources that fetch from survey services: SDSS SkyServer, Legacy Surveys, hips2fits.

Each source turns a :class:`~galmerge.inference.cutouts.CutoutRequest` into a
URL, fetches it through a polite, retrying :class:`~galmerge.inference.http.HttpClient`,
judges the answer (image, out of footprint, error page, corrupt bytes) and
decodes it into a :class:`~galmerge.data.images.RawImage` that says what its
pixels are, so that :func:`galmerge.conventions.to_convention` can bring them
to the model's convention. With a :class:`~galmerge.inference.cache.CutoutCache`
every answer worth keeping is stored and never fetched again; ``offline=True``
makes a source that only reads its cache (``classify --cutouts CACHE_DIR``).

Service facts (``docs`` in ``shared/reference/deploy.md`` §1-2):

* SDSS ``ImgCutout/getjpeg``: ``ra, dec, scale, width, height, opt``;
  width/height in [64, 2048], scale in [0.015, 60] arcsec/px; gri JPEG with
  (R, G, B) = (i, r, g). Out of footprint: HTTP 404 with a black JPEG (current
  code) or HTTP 200 with a mostly black tile (older deployments).
* Legacy Surveys viewer ``jpeg-cutout`` / ``fits-cutout``: ``ra, dec, layer,
  pixscale, bands, size``; FITS is a (bands, H, W) cube in nanomaggies with WCS.
* CDS hips2fits: the same query astroquery's ``hips2fits.query`` sends (see
  :class:`HipsCutoutSource` for why galmerge builds it itself).

Torch-free.
"""

from __future__ import annotations

import math
import os
import threading
import time
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from galmerge.conventions import (
    DISPLAY_RGB8,
    FLUX_LINEAR,
    FLUX_NANOMAGGIES,
    KNOWN_CONVENTIONS,
    SDSS_COLOUR_JPEG,
    ModelConvention,
)
from galmerge.data.images import RawImage, blank_fraction, decode_fits_bytes, decode_rgb8_bytes
from galmerge.data.limits import ImageLimits, ImageTooLarge
from galmerge.errors import GalmergeError
from galmerge.inference.cache import CacheEntry, CacheKey, CutoutCache
from galmerge.inference.concurrency import ordered_map
from galmerge.inference.cutouts import (
    BAD_COORDINATES,
    FETCH_FAILED,
    MISSING_FILE,
    NO_COVERAGE,
    OK,
    TOO_LARGE,
    Cutout,
    CutoutRequest,
    CutoutSource,
    failure_status,
)
from galmerge.inference.http import (
    Attempt,
    HttpClient,
    HttpSettings,
    Response,
    error_message,
    generic_attempt,
    looks_like_html,
)

__all__ = [
    "COVERAGE_THRESHOLD",
    "FAILURE_MEMORY_S",
    "SERVICES",
    "URL_ENV",
    "Geometry",
    "HipsCutoutSource",
    "LegacyCutoutSource",
    "SdssCutoutSource",
    "ServiceCutoutSource",
    "fetch_geometry",
    "make_source",
    "open_cached_source",
    "source_from_spec",
]

#: A fetched tile with more than this fraction of no-data pixels (exactly zero
#: or non-finite in every band) is out of the footprint: real SDSS fields have
#: < 8 % such pixels, an out-of-footprint SDSS tile about 91 % (deploy.md §1).
COVERAGE_THRESHOLD = 0.5

#: A row that failed after all its retries is not asked again by the same source
#: for this long (a chunk and its prefetch share the answer); a new run asks again.
FAILURE_MEMORY_S = 600.0

#: Environment variables that override each service's base URL.
URL_ENV = {"sdss": "GALMERGE_SDSS_URL", "legacy": "GALMERGE_LEGACY_URL",
           "hips": "GALMERGE_HIPS_URL"}

_MAGIC = {"jpeg": (b"\xff\xd8\xff",), "png": (b"\x89PNG\r\n\x1a\n",), "fits": (b"SIMPLE  =",)}
_CONTENT_TYPES = {
    "jpeg": ("image/jpeg", "image/jpg", "image/pjpeg"),
    "png": ("image/png",),
    "fits": ("image/fits", "application/fits", "image/x-fits", "application/x-fits"),
}
#: Media types that say nothing about the bytes; the magic bytes decide.
_NEUTRAL_TYPES = ("", "application/octet-stream", "binary/octet-stream")


@dataclass(frozen=True)
class Geometry:
    """Size and scale of the cutout a source requests.

    Attributes:
        pixels: width = height of the stored cutout, in pixels.
        scale: arcsec per stored pixel (``None``: only per-row scales).
    """

    pixels: int
    scale: float | None

    def __post_init__(self) -> None:
        if self.pixels < 1:
            raise GalmergeError(f"cutout size must be positive, got {self.pixels} pixels")
        if self.scale is not None and not (math.isfinite(self.scale) and self.scale > 0):
            raise GalmergeError(f"--scale must be a positive number of arcsec, got {self.scale}")


def fetch_geometry(convention: ModelConvention | None, *, scale: float | None = None,
                   pixels: int | None = None, per_row_scale: bool = False) -> Geometry:
    """The cutout to fetch for a model.

    The model sees ``size`` pixels of ``pixel_scale_arcsec`` each, which are the
    central ``crop_fraction`` of the stored cutout. So the stored cutout spans
    ``size * pixel_scale_arcsec / crop_fraction`` arcsec; galmerge requests it
    as ``round(size / crop_fraction)`` pixels (a model pixel per stored pixel,
    scale adjusted for the rounding so the field is exact), and the pipeline
    crops and resizes it back to ``size``. A model trained on per-galaxy
    (Petrosian) scales records ``petro_scale_factor`` instead; its requests
    carry their own scale and ``pixels`` comes from ``extra['cutout_pixels']``
    or the same ``size / crop_fraction``.

    Args:
        convention: the model's input convention (``None``: explicit values only).
        scale: arcsec per stored pixel, overriding the model's (``--scale``).
        pixels: stored cutout size, overriding the model's (``--pixels``).
        per_row_scale: every request carries its own scale (``--scale-col``),
            so no default scale is needed.
    """
    if convention is None:
        if scale is None and not per_row_scale:
            raise GalmergeError(
                "no cutout scale: give --scale ARCSEC_PER_PIXEL or a --model whose metadata "
                "records pixel_scale_arcsec")
        return Geometry(pixels or 128, scale)
    size, crop = convention.size, convention.crop_fraction
    extra_px = convention.extra.get("cutout_pixels") if convention.extra else None
    n = int(pixels or (int(extra_px) if extra_px else max(1, round(size / crop))))
    if scale is None and convention.pixel_scale_arcsec is not None:
        field = size * convention.pixel_scale_arcsec / crop  # arcsec across the stored cutout
        scale = field / n
    if scale is None and convention.petro_scale_factor is None and not per_row_scale:
        raise GalmergeError(
            "the model records no pixel scale (pixel_scale_arcsec or petro_scale_factor)",
            hint="give --scale ARCSEC_PER_PIXEL, or --scale-col with --scale-factor")
    return Geometry(n, scale)


def _env_url(service: str, default: str) -> str:
    return os.environ.get(URL_ENV[service], "").strip() or default


def _valid_coords(ra: float | None, dec: float | None) -> bool:
    return (ra is not None and dec is not None and math.isfinite(ra) and math.isfinite(dec)
            and 0.0 <= ra <= 360.0 and -90.0 <= dec <= 90.0)


class ServiceCutoutSource(CutoutSource):
    """Base of the HTTP cutout sources: cache, concurrency, retries, body checks.

    Args:
        geometry: stored cutout size and default scale.
        url: service base URL (``None``: the environment variable of
            :data:`URL_ENV`, else the public service); may name mirrors
            separated by commas.
        settings: concurrency, rate cap, timeouts, retries.
        cache: where answers are kept (``None``: no cache).
        offline: only read the cache; a miss becomes ``missing_file``.
        prefetch: results buffered per worker thread in :meth:`get_many`
            (the window is ``concurrency * prefetch``).
        coverage_threshold: see :data:`COVERAGE_THRESHOLD`.
        limits: the largest image decoded from an answer (default: scaled to
            the requested cutout, :meth:`ImageLimits.for_model`).
    """

    name = "service"
    error_status = FETCH_FAILED
    default_url: ClassVar[str] = ""
    min_pixels: ClassVar[int] = 1
    max_pixels: ClassVar[int] = 4096
    min_scale: ClassVar[float] = 0.0
    max_scale: ClassVar[float] = math.inf

    def __init__(self, geometry: Geometry, *, url: str | None = None,
                 settings: HttpSettings | None = None, cache: CutoutCache | None = None,
                 offline: bool = False, prefetch: int = 4,
                 coverage_threshold: float = COVERAGE_THRESHOLD,
                 limits: ImageLimits | None = None) -> None:
        self.geometry = geometry
        self.limits = limits or ImageLimits.for_model(max(geometry.pixels, self.min_pixels))
        raw_url = (url or "").strip() or _env_url(self.name, self.default_url)
        self.urls = tuple(u.strip().rstrip("/") for u in raw_url.split(",") if u.strip())
        if not self.urls or not all(u.startswith(("http://", "https://")) for u in self.urls):
            raise GalmergeError(f"{self.name}: service URL {raw_url!r} is not an http(s) URL",
                                hint=f"set --service-url or {URL_ENV[self.name]}")
        self.settings = settings or HttpSettings()
        self.cache = cache
        self.offline = offline
        if offline and cache is None:
            raise GalmergeError(f"{self.name}: an offline source needs a cache directory")
        self.prefetch = max(1, prefetch)
        self.coverage_threshold = coverage_threshold
        self.client = HttpClient(self.settings)
        self.cache_hits = 0
        self._lock = threading.Lock()
        self._inflight: dict[str, threading.Event] = {}
        self._recent_failures: dict[str, tuple[float, str]] = {}
        if geometry.scale is not None:
            _, s = self._service_geometry(geometry.scale)
            if not self.min_scale <= s <= self.max_scale:
                raise GalmergeError(
                    f"{self.name}: scale {s:g} arcsec/px is outside the service's "
                    f"[{self.min_scale:g}, {self.max_scale:g}]")
        if geometry.pixels > self.max_pixels:
            raise GalmergeError(f"{self.name}: {geometry.pixels} pixels exceeds the service's "
                                f"maximum of {self.max_pixels}")
        if cache is not None and not offline:
            cache.record_spec(self.spec())

    # -- what subclasses define --------------------------------------------------------

    #: ``jpeg``, ``png`` or ``fits``: what this source asks for.
    fmt: str = "jpeg"

    @property
    @abstractmethod
    def release(self) -> str:
        """Data release, layer or HiPS id (part of the cache key)."""

    @property
    def bands(self) -> str:
        """Band string as requested (part of the cache key)."""
        return ""

    @abstractmethod
    def _query(self, ra: float, dec: float, pixels: int, scale: float
               ) -> tuple[tuple[str, ...], dict[str, Any]]:
        """URLs (mirrors) and query parameters for one cutout."""

    @abstractmethod
    def _decode(self, body: bytes, content_type: str, where: str) -> RawImage:
        """Pixels from a body already known to carry this source's format."""

    def _on_404(self, resp: Response) -> Attempt | None:
        """Service-specific meaning of a 404 (None: the generic one)."""
        return None

    # -- configuration --------------------------------------------------------------------

    def spec(self) -> dict[str, Any]:
        """Everything that determines the cache keys (recorded in the cache)."""
        return {"service": self.name, "release": self.release, "pixels": self.geometry.pixels,
                "scale": self.geometry.scale, "bands": self.bands, "format": self.fmt}

    def _service_geometry(self, scale: float) -> tuple[int, float]:
        """(pixels, scale) sent to the service: at least ``min_pixels``, same field of view."""
        n = self.geometry.pixels
        if n < self.min_pixels:
            return self.min_pixels, scale * n / self.min_pixels
        return n, scale

    def key(self, request: CutoutRequest) -> CacheKey | None:
        """The cache key of a request (None when it has no usable coordinates/scale)."""
        scale = request.scale if request.scale is not None else self.geometry.scale
        if not _valid_coords(request.ra, request.dec) or scale is None or not (
                math.isfinite(scale) and scale > 0):
            return None
        n, s = self._service_geometry(scale)
        assert request.ra is not None and request.dec is not None
        return CacheKey(self.name, self.release, request.ra, request.dec, s, n, self.bands,
                        self.fmt)

    # -- CutoutSource ---------------------------------------------------------------------

    def get(self, request: CutoutRequest) -> Cutout:
        """One cutout: from the cache, else from the service (never raises per row)."""
        return self._get(request, decode_cached=True)

    def ensure(self, request: CutoutRequest) -> Cutout:
        """Make sure the row's answer is in the cache; pixels only when fetched now.

        What ``galmerge fetch`` does per row: a cached entry is confirmed by a
        key lookup without reading or decoding its bytes (``raw`` is None), so a
        rerun over a filled cache costs one index lookup per row. Fresh answers
        are fetched, judged and decoded exactly as in :meth:`get`.
        """
        return self._get(request, decode_cached=False)

    def _get(self, request: CutoutRequest, *, decode_cached: bool) -> Cutout:
        where = f"row {request.row} ({request.id})"
        if not _valid_coords(request.ra, request.dec):
            return Cutout(BAD_COORDINATES, detail=f"ra={request.ra}, dec={request.dec} outside "
                          "[0, 360] x [-90, 90] or missing")
        scale = request.scale if request.scale is not None else self.geometry.scale
        if scale is None or not (math.isfinite(scale) and scale > 0):
            why = ("the cutouts are scaled per galaxy (--scale-col) and this row has no usable "
                   "value" if request.scale is not None or self.geometry.scale is None
                   else f"{scale}")
            return Cutout(FETCH_FAILED, detail=f"no valid cutout scale for this row: {why}")
        n, s = self._service_geometry(scale)
        if not self.min_scale <= s <= self.max_scale:
            return Cutout(FETCH_FAILED, detail=f"scale {s:g} arcsec/px outside the service's "
                          f"[{self.min_scale:g}, {self.max_scale:g}] (not requested)")
        key = self.key(request)
        assert key is not None and request.ra is not None and request.dec is not None
        if self.cache is not None and not decode_cached:
            known = self.cache.status(key)
            if known is not None:
                with self._lock:
                    self.cache_hits += 1
                status, detail = known
                return Cutout(status, detail=f"{detail} (cached)" if detail else "")
        if self.cache is not None:
            entry = self.cache.get(key)
            if entry is not None:
                cut = self._from_cache(entry, where)
                if cut is not None:
                    with self._lock:
                        self.cache_hits += 1
                    return cut
                self.cache.delete(key)
        if self.offline:
            assert self.cache is not None
            return Cutout(MISSING_FILE, detail=f"not in the cutout cache {self.cache.directory} "
                          "(fetch it first with `galmerge fetch`)")
        if self.cache is None:
            return self._fetch(request, key, n, s, where)
        # With a cache, one fetch per key at a time: a second caller (e.g. the
        # prefetch of the next chunk and the chunk itself) waits for the first
        # and then reads the cache, or shares its recent failure.
        with self._lock:
            failed = self._recent_failures.get(key.text)
            if failed is not None and time.monotonic() - failed[0] < FAILURE_MEMORY_S:
                return Cutout(FETCH_FAILED, detail=failed[1])
            running = self._inflight.get(key.text)
            if running is None:
                self._inflight[key.text] = threading.Event()
        if running is not None:
            while not running.wait(0.5):
                if self.client.stop.is_set():
                    return Cutout(FETCH_FAILED, detail="interrupted")
            return self._get(request, decode_cached=decode_cached)
        try:
            return self._fetch(request, key, n, s, where)
        finally:
            with self._lock:
                self._inflight.pop(key.text).set()

    def _fetch(self, request: CutoutRequest, key: CacheKey, n: int, s: float, where: str
               ) -> Cutout:
        assert request.ra is not None and request.dec is not None
        urls, params = self._query(request.ra, request.dec, n, s)
        result = self.client.fetch(urls, params, lambda r: self._interpret(r, where))
        status = result.outcome or FETCH_FAILED  # the client gave up, or the answer was bad
        if self.cache is not None and status in (OK, NO_COVERAGE):
            self.cache.put(key, status=status, body=result.body if status == OK
                           else None, content_type=result.content_type, detail=result.detail,
                           url=result.url)
        elif self.cache is not None and status == FETCH_FAILED:
            with self._lock:
                if len(self._recent_failures) >= 100_000:
                    self._recent_failures.pop(next(iter(self._recent_failures)))
                self._recent_failures[key.text] = (time.monotonic(), result.detail)
        return Cutout(status, result.value, result.detail)

    def forget_failures(self) -> None:
        """Let rows that failed recently be fetched again at once."""
        with self._lock:
            self._recent_failures.clear()

    def get_many(self, requests: Sequence[CutoutRequest] | Any) -> Iterator[Cutout]:
        """Cutouts in request order, ``concurrency`` requests in flight.

        At most ``concurrency * prefetch`` results wait for the consumer, so a
        slow consumer (the model) bounds memory, and fetching goes on while it
        works. ``requests`` may be any iterable (it is consumed lazily).
        """
        c = self.settings.concurrency
        return ordered_map(self.get_safely, requests, workers=c, window=c * self.prefetch,
                           name=f"galmerge-{self.name}")

    def get_safely(self, request: CutoutRequest, *, decode_cached: bool = True) -> Cutout:
        """:meth:`get`, with an unexpected exception turned into ``fetch_failed``.

        :class:`GalmergeError` (a configuration problem every row would share,
        e.g. an invalid URL) still propagates and stops the run.
        """
        try:
            return self._get(request, decode_cached=decode_cached)
        except GalmergeError:
            raise
        except Exception as exc:  # one bad row never stops the run
            status, detail = failure_status(exc, FETCH_FAILED)
            return Cutout(status, detail=detail)

    def stats(self) -> dict[str, int]:
        """Requests sent, retries, transient errors, 429s and cache hits so far."""
        return {**self.client.stats.as_dict(), "cache_hits": self.cache_hits}

    def close(self) -> None:
        """Interrupt waiting retries and close connections (the cache stays open)."""
        self.client.close()

    # -- judging answers ----------------------------------------------------------------

    def _from_cache(self, entry: CacheEntry, where: str) -> Cutout | None:
        if entry.status == NO_COVERAGE:
            return Cutout(NO_COVERAGE, detail=f"{entry.detail} (cached)".strip())
        if entry.body is None:
            return None
        try:
            raw = self._decode(entry.body, entry.content_type, f"{where} (cached)")
        except GalmergeError:
            return None
        return Cutout(OK, raw)

    def _interpret(self, resp: Response, where: str) -> Attempt:
        if resp.status == 404:
            special = self._on_404(resp)
            if special is not None:
                return special
        if resp.status != 200:
            generic = generic_attempt(resp)
            assert generic is not None
            return generic
        problem = self._body_problem(resp)
        if problem:
            return Attempt(detail=problem, retry=True)
        try:
            raw = self._decode(resp.body, resp.content_type, where)
        except ImageTooLarge as exc:  # asking again gets the same bomb: final, never cached
            return Attempt(TOO_LARGE, detail=exc.one_line())
        except GalmergeError as exc:
            why = exc.one_line().split(": ", 1)[-1]
            return Attempt(detail=f"corrupt {self.fmt} body with HTTP 200 "
                           f"({why[:160]})", retry=True)
        frac = blank_fraction(raw.pixels)
        if frac > self.coverage_threshold:
            return Attempt(NO_COVERAGE, detail=f"outside the footprint: {frac:.0%} of the "
                           "tile has no data (HTTP 200)")
        return Attempt(OK, raw, body=resp.body, content_type=resp.content_type)

    def _body_problem(self, resp: Response) -> str:
        """Why a 200 body is not this source's image ('' when it looks right)."""
        ctype = resp.content_type
        if looks_like_html(resp):
            msg = error_message(resp, 120)
            return "HTML page served with HTTP 200" + (f" ({msg})" if msg else "")
        if not resp.body:
            return "empty body with HTTP 200"
        if ctype not in _CONTENT_TYPES[self.fmt] and ctype not in _NEUTRAL_TYPES:
            return (f"unexpected content type {ctype!r} with HTTP 200 "
                    f"(expected {_CONTENT_TYPES[self.fmt][0]})")
        if not resp.body.startswith(_MAGIC[self.fmt]):
            return f"body is not a {self.fmt.upper()} file (content type {ctype or 'missing'!r})"
        return ""


class SdssCutoutSource(ServiceCutoutSource):
    """SDSS SkyServer ImgCutout ``getjpeg``: gri colour JPEGs (R, G, B = i, r, g).

    Args:
        geometry: see :func:`fetch_geometry`.
        release: data release, e.g. ``dr17`` (default), ``dr16``, ``dr18``;
            SDSS imaging is unchanged since DR17, only the host path differs.
        url: endpoint template; ``{release}`` is replaced. Default
            ``https://skyserver.sdss.org/{release}/SkyServerWS/ImgCutout/getjpeg``.
        **kwargs: see :class:`ServiceCutoutSource`.
    """

    name = "sdss"
    default_url = "https://skyserver.sdss.org/{release}/SkyServerWS/ImgCutout/getjpeg"
    min_pixels = 64  # SkyServer serves width/height in [64, 2048]
    max_pixels = 2048
    min_scale = 0.015  # SkyServer validates scale to [0.015, 60] arcsec/px
    max_scale = 60.0
    fmt = "jpeg"

    def __init__(self, geometry: Geometry, *, release: str = "dr17", **kwargs: Any) -> None:
        rel = str(release).strip().lower()
        rel = rel if rel.startswith("dr") else f"dr{rel}"
        if not rel[2:].isdigit():
            raise GalmergeError(f"sdss: release {release!r} is not a data release like dr17")
        self._release = rel
        super().__init__(geometry, **kwargs)
        self.urls = tuple(u.replace("{release}", rel) for u in self.urls)

    @property
    def release(self) -> str:
        return self._release

    @property
    def bands(self) -> str:
        return "gri"

    def _query(self, ra: float, dec: float, pixels: int, scale: float
               ) -> tuple[tuple[str, ...], dict[str, Any]]:
        # Empty `opt`: no grid, labels or outlines drawn into ML inputs.
        return self.urls, {"ra": f"{ra:.7f}", "dec": f"{dec:.7f}", "scale": f"{scale:.6g}",
                           "width": pixels, "height": pixels, "opt": "",
                           "TaskName": "galmerge"}

    def _decode(self, body: bytes, content_type: str, where: str) -> RawImage:
        return decode_rgb8_bytes(body, source=where, kind=SDSS_COLOUR_JPEG, limits=self.limits)

    def _on_404(self, resp: Response) -> Attempt | None:
        # Current SkyServerWS: 404 "NOT FOUND. Requested (ra, dec) is outside the SDSS
        # footprint." with a black JPEG body. A 404 without either is a wrong URL.
        if "footprint" in resp.reason.lower() or resp.body.startswith(_MAGIC["jpeg"]):
            return Attempt(NO_COVERAGE, detail="outside the SDSS footprint (HTTP 404)")
        return None


_LEGACY_LAYERS_HINT = "e.g. ls-dr10, ls-dr10-south, ls-dr10-north, ls-dr9, sdss"


class LegacyCutoutSource(ServiceCutoutSource):
    """Legacy Surveys viewer cutouts: FITS (nanomaggies, with WCS) or JPEG.

    Args:
        geometry: see :func:`fetch_geometry` (``pixscale`` = scale; native 0.262).
        layer: e.g. ``ls-dr10`` (default), ``ls-dr10-south``, ``ls-dr9``.
        bands: e.g. ``grz`` (default; three bands convert to SDSS colour).
        fmt: ``fits`` (default: calibrated flux) or ``jpeg``.
        url: viewer base URL, default ``https://www.legacysurvey.org/viewer``.
    """

    name = "legacy"
    default_url = "https://www.legacysurvey.org/viewer"
    max_pixels = 3000  # larger requests are silently clipped to 3000 by the service

    def __init__(self, geometry: Geometry, *, layer: str = "ls-dr10", bands: str = "grz",
                 fmt: str = "fits", **kwargs: Any) -> None:
        fmt = {"jpg": "jpeg"}.get(fmt.lower(), fmt.lower())
        if fmt not in ("fits", "jpeg"):
            raise GalmergeError(f"legacy: format {fmt!r} is not fits or jpeg")
        if not layer.strip():
            raise GalmergeError("legacy: empty layer", hint=_LEGACY_LAYERS_HINT)
        if not bands or any(b not in "grizy" for b in bands):
            raise GalmergeError(f"legacy: bands {bands!r} must be letters of griz")
        self.fmt = fmt
        self.layer = layer.strip()
        self._bands = bands
        super().__init__(geometry, **kwargs)

    @property
    def release(self) -> str:
        return self.layer

    @property
    def bands(self) -> str:
        return self._bands

    def _query(self, ra: float, dec: float, pixels: int, scale: float
               ) -> tuple[tuple[str, ...], dict[str, Any]]:
        path = "fits-cutout" if self.fmt == "fits" else "jpeg-cutout"
        return tuple(f"{u}/{path}" for u in self.urls), {
            "ra": f"{ra:.7f}", "dec": f"{dec:.7f}", "layer": self.layer,
            "pixscale": f"{scale:.6g}", "bands": self._bands, "size": pixels}

    def _decode(self, body: bytes, content_type: str, where: str) -> RawImage:
        if self.fmt == "jpeg":
            return decode_rgb8_bytes(body, source=where, kind=DISPLAY_RGB8, limits=self.limits)
        raw = decode_fits_bytes(body, source=where, limits=self.limits)
        if raw.pixels.shape[0] != len(self._bands):
            raise GalmergeError(f"{where}: FITS has {raw.pixels.shape[0]} planes, asked for "
                                f"bands {self._bands}")
        bands = raw.bands if len(raw.bands) == len(self._bands) else tuple(self._bands)
        return RawImage(raw.pixels, FLUX_NANOMAGGIES, bands, where)


class HipsCutoutSource(ServiceCutoutSource):
    """Any HiPS survey through CDS hips2fits (e.g. ``CDS/P/SDSS9/color``).

    galmerge sends the same GET query as astroquery's ``hips2fits.query``
    (``hips, width, height, projection, coordsys, rotation_angle, ra, dec,
    fov, min_cut, max_cut, stretch, cmap, format``; see
    ``astroquery/hips2fits/core.py``) but builds it itself, because astroquery
    (0.4.x) takes its server from a global config item, never retries, turns
    every HTTP error into ``AttributeError`` (losing the status and
    ``Retry-After``), parses error bodies as JSON unconditionally, and imports
    matplotlib (not an inference dependency) to build the payload.

    Args:
        geometry: ``pixels`` = width = height; ``fov`` = pixels * scale.
        hips: HiPS id, default ``CDS/P/SDSS9/color``.
        fmt: ``jpeg`` (default), ``png`` or ``fits``.
        pixel_kind: convention of the returned pixels (default: display RGB for
            JPEG/PNG, linear flux for FITS).
        url: endpoint; default the CDS server and its mirror.
    """

    name = "hips"
    default_url = ("https://alasky.cds.unistra.fr/hips-image-services/hips2fits,"
                   "https://alaskybis.cds.unistra.fr/hips-image-services/hips2fits")
    max_pixels = 4096

    def __init__(self, geometry: Geometry, *, hips: str = "CDS/P/SDSS9/color",
                 fmt: str = "jpeg", pixel_kind: str | None = None, projection: str = "TAN",
                 **kwargs: Any) -> None:
        fmt = {"jpg": "jpeg"}.get(fmt.lower(), fmt.lower())
        if fmt not in ("jpeg", "png", "fits"):
            raise GalmergeError(f"hips: format {fmt!r} is not jpeg, png or fits")
        if not hips.strip():
            raise GalmergeError("hips: empty HiPS id", hint="e.g. CDS/P/SDSS9/color")
        kind = pixel_kind or (FLUX_LINEAR if fmt == "fits" else DISPLAY_RGB8)
        if kind not in KNOWN_CONVENTIONS:
            raise GalmergeError(f"hips: unknown pixel kind {kind!r}",
                                hint=f"use one of {', '.join(KNOWN_CONVENTIONS)}")
        self.fmt = fmt
        self.hips = hips.strip()
        self.pixel_kind = kind
        self.projection = projection
        super().__init__(geometry, **kwargs)

    @property
    def release(self) -> str:
        return self.hips

    def _query(self, ra: float, dec: float, pixels: int, scale: float
               ) -> tuple[tuple[str, ...], dict[str, Any]]:
        return self.urls, {
            "hips": self.hips, "width": pixels, "height": pixels,
            "projection": self.projection, "coordsys": "icrs", "rotation_angle": 0.0,
            "ra": ra, "dec": dec, "fov": pixels * scale / 3600.0,
            "min_cut": "0.5%", "max_cut": "99.5%", "stretch": "linear", "cmap": "Greys_r",
            "format": "jpg" if self.fmt == "jpeg" else self.fmt}

    def _decode(self, body: bytes, content_type: str, where: str) -> RawImage:
        if self.fmt == "fits":
            raw = decode_fits_bytes(body, source=where, limits=self.limits)
            return RawImage(raw.pixels, self.pixel_kind, raw.bands, where)
        if self.fmt == "png":
            return decode_rgb8_bytes(body, source=where, kind=self.pixel_kind,
                                     transparent_is_nodata=True, limits=self.limits)
        return decode_rgb8_bytes(body, source=where, kind=self.pixel_kind, limits=self.limits)


#: ``--fetch`` names.
SERVICES: dict[str, type[ServiceCutoutSource]] = {
    "sdss": SdssCutoutSource, "legacy": LegacyCutoutSource, "hips": HipsCutoutSource}


def make_source(service: str, geometry: Geometry, **kwargs: Any) -> ServiceCutoutSource:
    """A source by ``--fetch`` name; ``kwargs`` go to its constructor.

    Service-specific options that do not apply (e.g. ``layer`` for SDSS) may be
    passed as ``None`` and are dropped.
    """
    cls = SERVICES.get(service)
    if cls is None:
        raise GalmergeError(f"unknown cutout service {service!r}",
                            hint=f"use one of {', '.join(SERVICES)}")
    own = {"sdss": {"release"}, "legacy": {"layer", "bands", "fmt"},
           "hips": {"hips", "fmt", "pixel_kind", "projection"}}[service]
    specific = {"release", "layer", "bands", "fmt", "hips", "pixel_kind", "projection"}
    kw = {k: v for k, v in kwargs.items()
          if v is not None and (k not in specific or k in own)}
    return cls(geometry, **kw)


def source_from_spec(spec: dict[str, Any], **kwargs: Any) -> ServiceCutoutSource:
    """Rebuild a source from :meth:`ServiceCutoutSource.spec` (e.g. from a cache)."""
    service = spec["service"]
    geometry = Geometry(int(spec["pixels"]), spec.get("scale"))
    own: dict[str, Any] = {}
    if service == "sdss":
        own["release"] = spec["release"]
    elif service == "legacy":
        own.update(layer=spec["release"], bands=spec["bands"], fmt=spec["format"])
    elif service == "hips":
        own.update(hips=spec["release"], fmt=spec["format"])
    return make_source(service, geometry, **own, **kwargs)


def open_cached_source(directory: str, *, service: str | None = None,
                       **kwargs: Any) -> ServiceCutoutSource:
    """An offline source reading a cache directory written by ``galmerge fetch``.

    The cache records every source configuration that wrote to it; with one
    configuration (for ``service``, when given) that one is used, otherwise
    the choice is ambiguous and a :class:`GalmergeError` lists them.
    """
    cache = CutoutCache(directory, create=False)
    specs = [s for s in cache.specs() if service is None or s.get("service") == service]
    if not specs:
        cache.close()
        raise GalmergeError(f"{directory}: the cache holds no cutouts"
                            + (f" from {service!r}" if service else ""),
                            hint="fill it with `galmerge fetch --out DIR`")
    if len(specs) > 1:
        cache.close()
        listed = "; ".join(f"{s['service']} {s['release']} {s['pixels']}px "
                           f"scale={s['scale']} bands={s['bands']} {s['format']}" for s in specs)
        raise GalmergeError(f"{directory}: the cache holds cutouts of {len(specs)} kinds "
                            f"({listed})", hint="choose one with --fetch and its options")
    return source_from_spec(specs[0], cache=cache, offline=True, **kwargs)
