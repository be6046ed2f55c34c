"""Local imitations of SDSS SkyServer ImgCutout, the Legacy Surveys viewer and hips2fits.

Real HTTP on 127.0.0.1 (``ThreadingHTTPServer`` in a thread, HTTP/1.1 keep-alive),
the services' URL schemes and parameter validation (deploy.md §1-2), and real
image bytes cut and resized from the bundled SDSS JPEGs
(``catalogs/sdss_example/cutouts``) and DECaLS FITS (``tests/data/decals``).

Faults are injected per sky position (:meth:`FakeServices.add_fault`), for
every request or for the first ``times`` requests at that position: latency,
429 with Retry-After (seconds or HTTP date), 500/503, timeouts (sleeping past
the client's timeout), truncated bodies (Content-Length larger than what is
sent), corrupt bodies, HTML pages with 200, wrong content types, connection
resets, 4xx, and out-of-footprint answers in both SDSS styles. Every request
is logged (:attr:`FakeServices.log`) so tests count what the client sent.

Footprints of the fakes: SDSS and the SDSS9 HiPS end at dec < -30; the Legacy
Surveys at dec > 80 (answered, like the SDSS 200 style, with an all-zero image:
the real Legacy behaviour is not documented, deploy.md §2).

Run standalone (used by ``benchmarks/fetch.py``)::

    python -m tests.fake_services --latency 0.1   # prints "READY http://127.0.0.1:PORT"
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import math
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: One bundled GZ1 "cutout" is really a SkyServer diagnostic tile served with HTTP 200
#: ("getFrames() has failed ... Parameter is not valid", white text on black): the older
#: error style of deploy.md §1, in real bytes. It answers the `footprint200` fault; the
#: other 23 are the real fields.
SDSS_ERROR_TILE = ROOT / "catalogs" / "sdss_example" / "cutouts" / "587729387686002878.jpeg"
SDSS_JPEGS = sorted(p for p in (ROOT / "catalogs" / "sdss_example" / "cutouts").glob("*.jpeg")
                    if p != SDSS_ERROR_TILE)
DECALS_FITS = [ROOT / "tests" / "data" / "decals" / f"{n}.fits"
               for n in ("example_a", "example_d", "temp_small")]
#: Nominal pixel scales of the bundled images (arcsec/px).
SDSS_NATIVE = 0.396
DECALS_NATIVE = 0.262

LEGACY_LAYERS = {"ls-dr10", "ls-dr10-south", "ls-dr10-north", "ls-dr9", "ls-dr9-south",
                 "ls-dr9-north", "ls-dr10-model", "ls-dr10-resid", "sdss"}
HIPS_KNOWN = {"CDS/P/SDSS9/color", "CDS/P/DESI-Legacy-Surveys/DR10/color", "CDS/P/DSS2/red"}

FAULTS = ("latency", "429", "500", "503", "timeout", "truncate", "corrupt", "html200",
          "content_type", "reset", "footprint404", "footprint200", "404", "403", "400")


def pos_key(ra: float, dec: float) -> tuple[float, float]:
    """How faults and logs identify a sky position."""
    return (round(float(ra), 5), round(float(dec), 5))


@dataclass
class Fault:
    kind: str
    times: int | None = None  # None: every request
    retry_after: str = "1"
    delay: float = 2.0
    used: int = 0


@dataclass
class LogEntry:
    service: str
    path: str
    params: dict[str, str]
    key: tuple[float, float] | None
    status: int
    fault: str
    t: float
    user_agent: str
    t_end: float = 0.0


@dataclass
class _Answer:
    status: int
    body: bytes
    content_type: str
    reason: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


# --- real pixels ------------------------------------------------------------------------------

@functools.cache
def _sdss_image(i: int) -> np.ndarray:
    from PIL import Image

    with Image.open(SDSS_JPEGS[i % len(SDSS_JPEGS)]) as im:
        return np.asarray(im.convert("RGB"))


@functools.cache
def _decals_cube(i: int) -> np.ndarray:
    from astropy.io import fits

    with fits.open(DECALS_FITS[i % len(DECALS_FITS)], memmap=False) as h:
        return np.asarray(h[0].data, dtype=np.float32)


def _pick(ra: float, dec: float, n: int) -> int:
    return int(abs(round(ra * 1000) * 7 + round(dec * 1000) * 13)) % n


def _crop_native(h: int, w: int, field_px: float) -> tuple[int, int, int, int]:
    side = int(max(8, min(min(h, w), round(field_px))))
    y0, x0 = (h - side) // 2, (w - side) // 2
    return y0, x0, side, side


@functools.lru_cache(maxsize=4096)
def sdss_jpeg(idx: int, width: int, height: int, scale: float, quality: int = 90) -> bytes:
    """A real SDSS colour JPEG cut to the requested field and resized to width x height."""
    from PIL import Image

    img = _sdss_image(idx)
    y0, x0, sh, sw = _crop_native(*img.shape[:2], max(width, height) * scale / SDSS_NATIVE)
    im = Image.fromarray(img[y0:y0 + sh, x0:x0 + sw]).resize((width, height),
                                                              Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@functools.lru_cache(maxsize=1024)
def black_tile(width: int, height: int, fmt: str = "JPEG", text: bool = True) -> bytes:
    """An out-of-footprint tile: black, with SkyServer's message drawn on it."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (width, height))
    if text:
        ImageDraw.Draw(im).text((4, height // 2), "outside the SDSS footprint",
                                fill=(255, 255, 255))
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


@functools.lru_cache(maxsize=256)
def error_tile(width: int, height: int) -> bytes:
    """SkyServer's real diagnostic tile (HTTP 200 style), resized to width x height."""
    from PIL import Image

    with Image.open(SDSS_ERROR_TILE) as im:
        small = im.convert("RGB").resize((width, height), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _resize_plane(plane: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32)).resize(
        (size, size), Image.Resampling.BILINEAR), dtype=np.float32)


@functools.lru_cache(maxsize=1024)
def decals_cube(idx: int, size: int, pixscale: float, bands: str) -> np.ndarray:
    """Real DECaLS nanomaggies cut to size x size at pixscale, planes in ``bands`` order."""
    cube = _decals_cube(idx)
    y0, x0, sh, sw = _crop_native(cube.shape[1], cube.shape[2], size * pixscale / DECALS_NATIVE)
    planes = {"g": cube[0], "r": cube[1], "z": cube[2]}
    planes["i"] = 0.5 * (cube[1] + cube[2])
    planes["y"] = cube[2]
    return np.stack([_resize_plane(planes[b][y0:y0 + sh, x0:x0 + sw], size) for b in bands])


def fits_bytes(data: np.ndarray, ra: float, dec: float, pixscale: float, bands: str,
               survey: str = "LegacySurvey") -> bytes:
    """A FITS primary HDU with a TAN WCS like the Legacy viewer's cutouts."""
    from astropy.io import fits

    hdu = fits.PrimaryHDU(data.astype(np.float32))
    h = hdu.header
    h["SURVEY"] = survey
    h["VERSION"] = "DR10"
    h["IMAGETYP"] = "image"
    if data.ndim == 3:
        h["BANDS"] = bands
        for i, b in enumerate(bands):
            h[f"BAND{i}"] = b
    size = data.shape[-1]
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = ra, dec
    h["CRPIX1"] = h["CRPIX2"] = size / 2 + 0.5
    h["CD1_1"], h["CD2_2"] = -pixscale / 3600, pixscale / 3600
    h["CD1_2"] = h["CD2_1"] = 0.0
    buf = io.BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()


@functools.lru_cache(maxsize=1024)
def legacy_fits(idx: int, ra: float, dec: float, size: int, pixscale: float, bands: str,
                blank: bool) -> bytes:
    cube = decals_cube(idx, size, pixscale, bands)
    if blank:
        cube = np.zeros_like(cube)
    return fits_bytes(cube, ra, dec, pixscale, bands)


@functools.lru_cache(maxsize=1024)
def legacy_jpeg(idx: int, size: int, pixscale: float, blank: bool) -> bytes:
    from PIL import Image

    from galmerge.conventions import sdss_lupton_rgb

    if blank:
        return black_tile(size, size, text=False)
    rgb = sdss_lupton_rgb(decals_cube(idx, size, pixscale, "grz"), ("g", "r", "z"))
    buf = io.BytesIO()
    Image.fromarray(np.moveaxis(rgb, 0, -1).astype(np.uint8)).save(buf, format="JPEG",
                                                                   quality=90)
    return buf.getvalue()


@functools.lru_cache(maxsize=1024)
def hips_png(idx: int, width: int, height: int, scale: float, transparent: bool) -> bytes:
    from PIL import Image

    if transparent:
        im = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    else:
        with Image.open(io.BytesIO(sdss_jpeg(idx, width, height, scale))) as j:
            im = j.convert("RGBA")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


# --- the server ---------------------------------------------------------------------------------

def _json(status: int, payload: dict[str, Any], reason: str | None = None) -> _Answer:
    return _Answer(status, json.dumps(payload).encode(), "application/json", reason)


def _html(status: int, title: str, reason: str | None = None) -> _Answer:
    body = (f"<!DOCTYPE html><html><head><title>{title}</title></head>"
            f"<body><h1>{title}</h1><p>Please try again later.</p></body></html>")
    return _Answer(status, body.encode(), "text/html; charset=utf-8", reason)


def _sdss_error(status: int, message: str, etype: str) -> _Answer:
    # SkyServerWS CustomFilter: JSON body {ErrorCode, ErrorType, ErrorMessage, LogMessageID}.
    reason = ("BAD REQUEST. " if status == 400 else "INTERNAL SERVER ERROR. ") + message
    return _json(status, {"ErrorCode": status, "ErrorType": etype, "ErrorMessage": message,
                          "LogMessageID": 0}, reason=reason)


def _num(params: dict[str, str], name: str, default: float | None = None) -> float:
    if name not in params or params[name] == "":
        if default is None:
            raise KeyError(name)
        return default
    return float(params[name])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # listen backlog: many clients connect at once


class FakeServices:
    """The three fake services on one port. Use as a context manager or start()/stop()."""

    def __init__(self, *, latency: float = 0.0) -> None:
        self.latency = latency
        self.faults: dict[tuple[float, float], Fault] = {}
        self.log: list[LogEntry] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, port: int = 0) -> FakeServices:
        handler = _make_handler(self)
        server = _Server(("127.0.0.1", port), handler)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-services", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeServices:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def sdss_url(self) -> str:
        return self.base + "/{release}/SkyServerWS/ImgCutout/getjpeg"

    @property
    def legacy_url(self) -> str:
        return self.base + "/viewer"

    @property
    def hips_url(self) -> str:
        return self.base + "/hips-image-services/hips2fits"

    # -- faults and the log ------------------------------------------------------------------------

    def add_fault(self, ra: float, dec: float, kind: str, *, times: int | None = None,
                  retry_after: str = "1", delay: float = 2.0) -> None:
        """Answer requests at (ra, dec) with ``kind`` (the first ``times`` ones, or all)."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}")
        with self.lock:
            self.faults[pos_key(ra, dec)] = Fault(kind, times, retry_after, delay)

    def reset(self) -> None:
        """Forget faults and the log; latency back to zero."""
        with self.lock:
            self.faults.clear()
            self.log.clear()
            self.latency = 0.0

    def requests_at(self, ra: float, dec: float) -> list[LogEntry]:
        key = pos_key(ra, dec)
        with self.lock:
            return [e for e in self.log if e.key == key]

    def count(self, service: str | None = None) -> int:
        with self.lock:
            return sum(1 for e in self.log if service is None or e.service == service)

    def _take_fault(self, key: tuple[float, float] | None) -> Fault | None:
        if key is None:
            return None
        with self.lock:
            f = self.faults.get(key)
            if f is None or (f.times is not None and f.used >= f.times):
                return None
            f.used += 1
            return f

    # -- answers -----------------------------------------------------------------------------------

    def answer(self, path: str, params: dict[str, str]) -> tuple[str, _Answer]:
        """(service name, normal answer) for a request path and parameters."""
        m = re.fullmatch(r"/(dr\d+)/skyserverws/imgcutout/getjpeg", path.lower())
        if m:
            return "sdss", self._sdss(m.group(1), params)
        if path.startswith("/viewer/"):
            return "legacy", self._legacy(path[len("/viewer/"):], params)
        if path == "/hips-image-services/hips2fits":
            return "hips", self._hips(params)
        return "unknown", _html(404, "404 - File or directory not found.")

    def _sdss(self, release: str, p: dict[str, str]) -> _Answer:
        try:
            ra, dec, scale = _num(p, "ra"), _num(p, "dec"), _num(p, "scale")
        except KeyError as exc:
            return _sdss_error(400, f"Missing parameter {exc.args[0]}", "ArgumentException")
        except ValueError as exc:
            return _sdss_error(400, f"Bad parameter: {exc}", "ArgumentException")
        try:
            width = int(_num(p, "width", 128))
            height = int(_num(p, "height", 128))
        except ValueError as exc:
            return _sdss_error(400, f"Bad parameter: {exc}", "ArgumentException")
        # ImgCutout validates ranges and throws a generic Exception -> HTTP 500.
        if not (0 <= ra <= 360 and -90 <= dec <= 90):
            return _sdss_error(500, "ra must be in [0,360] and dec in [-90,90]", "Exception")
        if not 0.015 <= scale <= 60:
            return _sdss_error(500, "scale must be in [0.015, 60]", "Exception")
        if not (64 <= width <= 2048 and 64 <= height <= 2048):
            return _sdss_error(500, "width and height must be in [64, 2048]", "Exception")
        if dec < -30:
            return self._sdss_out_of_footprint(width, height, "404")
        idx = _pick(ra, dec, len(SDSS_JPEGS))
        return _Answer(200, sdss_jpeg(idx, width, height, round(scale, 6)), "image/jpeg")

    @staticmethod
    def _sdss_out_of_footprint(width: int, height: int, style: str) -> _Answer:
        if style == "404":
            return _Answer(404, black_tile(width, height), "image/jpeg",
                           "NOT FOUND. Requested (ra, dec) is outside the SDSS footprint.")
        return _Answer(200, error_tile(width, height), "image/jpeg")

    def _legacy(self, what: str, p: dict[str, str]) -> _Answer:
        kinds = {"jpeg-cutout": "jpeg", "cutout.jpg": "jpeg", "fits-cutout": "fits",
                 "cutout.fits": "fits"}
        if what not in kinds:
            return _html(404, "Not Found")
        try:
            ra, dec = _num(p, "ra"), _num(p, "dec")
            pixscale = _num(p, "pixscale", 0.262)
            size = int(_num(p, "size", 256))
        except (KeyError, ValueError) as exc:
            return _Answer(400, f"Bad request: {exc}".encode(), "text/plain")
        layer = p.get("layer", "ls-dr10")
        bands = p.get("bands", "grz")
        if layer not in LEGACY_LAYERS:
            return _Answer(400, f"Unknown layer {layer}".encode(), "text/plain")
        if not bands or any(b not in "grizy" for b in bands):
            return _Answer(400, f"Bad bands {bands}".encode(), "text/plain")
        if not (0 <= ra <= 360 and -90 <= dec <= 90) or pixscale <= 0 or size < 1:
            return _Answer(400, b"Bad request", "text/plain")
        size = min(size, 3000)  # silently clipped, as users report
        blank = dec > 80
        idx = _pick(ra, dec, len(DECALS_FITS))
        if kinds[what] == "fits":
            return _Answer(200, legacy_fits(idx, ra, dec, size, round(pixscale, 6), bands, blank),
                           "image/fits")
        return _Answer(200, legacy_jpeg(idx, size, round(pixscale, 6), blank), "image/jpeg")

    def _hips(self, p: dict[str, str]) -> _Answer:
        hips = p.get("hips", "")
        if hips not in HIPS_KNOWN:
            return _json(400, {"title": "HiPS not found",
                               "description": f"no HiPS matches {hips!r}"})
        try:
            width, height = int(_num(p, "width")), int(_num(p, "height"))
            ra, dec, fov = _num(p, "ra"), _num(p, "dec"), _num(p, "fov")
        except (KeyError, ValueError) as exc:
            return _json(400, {"title": "Bad request", "description": f"parameter {exc}"})
        fmt = p.get("format", "fits")
        if fmt not in ("fits", "jpg", "png") or not (1 <= width <= 5000 and 1 <= height <= 5000):
            return _json(400, {"title": "Bad request", "description": "format or size"})
        if p.get("projection", "") == "" or fov <= 0:
            return _json(400, {"title": "Bad request", "description": "projection and fov"})
        scale = round(fov * 3600 / max(width, height), 6)
        out = dec < -30 if "SDSS" in hips else dec > 80
        idx = _pick(ra, dec, len(SDSS_JPEGS))
        if fmt == "jpg":
            body = black_tile(width, height, text=False) if out else sdss_jpeg(idx, width,
                                                                               height, scale)
            return _Answer(200, body, "image/jpeg")
        if fmt == "png":
            return _Answer(200, hips_png(idx, width, height, scale, out), "image/png")
        plane = decals_cube(_pick(ra, dec, len(DECALS_FITS)), width, scale, "r")[0]
        if out:
            plane = np.full_like(plane, np.nan)
        return _Answer(200, fits_bytes(plane, ra, dec, scale, "r", survey="HiPS"),
                       "application/fits")


def _make_handler(fake: FakeServices) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeSurvey/1.0"
        # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's
        # algorithm and the client's delayed ACK add ~40 ms to every answer.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            t0 = time.monotonic()
            url = urlparse(self.path)
            params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            try:
                key: tuple[float, float] | None = pos_key(float(params["ra"]),
                                                          float(params["dec"]))
                if not all(math.isfinite(v) for v in key):
                    key = None
            except (KeyError, ValueError):
                key = None
            service, normal = fake.answer(url.path, params)
            fault = fake._take_fault(key)
            kind = fault.kind if fault else ""
            entry = LogEntry(service, url.path, params, key, 0, kind, t0,
                             self.headers.get("User-Agent", ""))
            with fake.lock:  # logged on arrival, so a client that gave up still counts
                fake.log.append(entry)
            if fake.latency:
                time.sleep(fake.latency)
            answer = normal if fault is None else self._faulty(fault, normal, params)
            entry.status = answer.status if answer is not None else 0
            entry.t_end = time.monotonic()
            if answer is None:  # connection reset
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            self._send(answer, truncate=kind == "truncate")

        def _faulty(self, fault: Fault, normal: _Answer, params: dict[str, str]
                    ) -> _Answer | None:
            k = fault.kind
            width = int(float(params.get("width", params.get("size", 128)) or 128))
            height = int(float(params.get("height", params.get("size", 128)) or 128))
            if k == "latency":
                time.sleep(fault.delay)
                return normal
            if k == "timeout":
                time.sleep(fault.delay)
                return normal
            if k == "429":
                return _Answer(429, b"Too many requests", "text/plain", "Too Many Requests",
                               {"Retry-After": fault.retry_after})
            if k == "500":
                return _sdss_error(500, "Database connection timed out", "SqlException")
            if k == "503":
                return _html(503, "503 Service Unavailable", "Service Unavailable")
            if k == "truncate":
                return normal
            if k == "corrupt":
                return _Answer(200, normal.body[: max(1, len(normal.body) * 3 // 5)],
                               normal.content_type)
            if k == "html200":
                return _html(200, "SkyServer is down for maintenance")
            if k == "content_type":
                return _Answer(200, b"Service temporarily overloaded, try later",
                               "text/plain")
            if k == "reset":
                return None
            if k == "footprint404":
                return FakeServices._sdss_out_of_footprint(width, height, "404")
            if k == "footprint200":
                return FakeServices._sdss_out_of_footprint(width, height, "200")
            if k == "404":
                return _html(404, "404 - File or directory not found.", "Not Found")
            if k == "403":
                return _html(403, "403 - Forbidden", "Forbidden")
            if k == "400":
                return _sdss_error(400, "Bad request", "ArgumentException")
            raise AssertionError(k)

        def _send(self, a: _Answer, *, truncate: bool = False) -> None:
            try:
                self.send_response(a.status, a.reason)
                self.send_header("Content-Type", a.content_type)
                self.send_header("Content-Length", str(len(a.body)))
                for k, v in a.headers.items():
                    self.send_header(k, v)
                if truncate:
                    self.send_header("Connection", "close")
                self.end_headers()
                if truncate:
                    self.wfile.write(a.body[: len(a.body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    self.wfile.write(a.body)
            except (BrokenPipeError, ConnectionResetError, OSError):
                self.close_connection = True

    return Handler


#: The read timeout of the done-when runs (``--timeout``). The "timeout" fault answers after
#: 3x it and "latency" after 0.3x it: margins a loaded 2-core CI machine keeps (at 0.3 s a
#: plain row once timed out three times).
FAULT_READ_TIMEOUT = 1.0
#: Faults of the done-when runs: (kind, times, options); times=None: every request.
FAULT_MIX = [
    ("429", 1, {"retry_after": "0"}), ("429", None, {"retry_after": "0"}),
    ("500", 1, {}), ("500", None, {}), ("503", None, {}),
    ("timeout", None, {"delay": 3 * FAULT_READ_TIMEOUT}), ("truncate", None, {}),
    ("truncate", 1, {}),
    ("corrupt", None, {}), ("html200", None, {}), ("content_type", None, {}),
    ("reset", None, {}), ("404", None, {}), ("403", None, {}), ("400", None, {}),
    ("footprint404", None, {}), ("footprint200", None, {}),
    ("latency", None, {"delay": 0.3 * FAULT_READ_TIMEOUT}),
]
#: What a row with each permanent fault ends as (faults "-once" end ok; others fetch_failed).
FAULT_OUTCOME = {"footprint404": "no_coverage", "footprint200": "no_coverage", "latency": "ok"}


def faulty_catalog(fake: FakeServices, n: int, every: int = 10
                   ) -> tuple[list[tuple[str, float, float]], dict[int, str]]:
    """``n`` rows (id, ra, dec) with distinct positions; every ``every``-th row gets a
    fault of :data:`FAULT_MIX` in turn. Returns the rows and {row: fault}
    (``kind-once`` for faults that clear after their first answers)."""
    rows = [(f"id{i}", 100.0 + i * 0.01, 10.0 + (i % 7) * 0.01) for i in range(n)]
    planned: dict[int, str] = {}
    for j, i in enumerate(range(0, n, every)):
        kind, times, extra = FAULT_MIX[j % len(FAULT_MIX)]
        fake.add_fault(rows[i][1], rows[i][2], kind, times=times, **extra)
        planned[i] = kind if times is None else f"{kind}-once"
    return rows, planned


def expected_status(fault: str | None) -> str:
    """The status a row with ``fault`` (from :func:`faulty_catalog`) must end with."""
    if fault is None or fault.endswith("-once"):
        return "ok"
    return FAULT_OUTCOME.get(fault, "fetch_failed")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    fake = FakeServices(latency=args.latency)
    fake.start(args.port)
    print(f"READY {fake.base}", flush=True)
    try:
        sys.stdin.read()  # serve until the parent closes our stdin or kills us
    except KeyboardInterrupt:
        pass
    fake.stop()


if __name__ == "__main__":
    main()
