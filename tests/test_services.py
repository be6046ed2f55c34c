"""Cutout services against the local fake servers (real HTTP, real image bytes)."""

from __future__ import annotations

import email.utils
import io
import time

import numpy as np
import pytest
import requests
from PIL import Image

from galmerge.conventions import (
    DISPLAY_RGB8,
    FLUX_NANOMAGGIES,
    SDSS_COLOUR_JPEG,
    ModelConvention,
    to_convention,
)
from galmerge.data.images import blank_fraction
from galmerge.errors import GalmergeError
from galmerge.inference.cache import CutoutCache
from galmerge.inference.cutouts import (
    BAD_COORDINATES,
    FETCH_FAILED,
    MISSING_FILE,
    NO_COVERAGE,
    OK,
    CutoutRequest,
)
from galmerge.inference.http import USER_AGENT, HttpSettings, RateLimiter, parse_retry_after
from galmerge.inference.services import (
    Geometry,
    HipsCutoutSource,
    LegacyCutoutSource,
    SdssCutoutSource,
    fetch_geometry,
    make_source,
    open_cached_source,
)
from tests.fake_services import SDSS_ERROR_TILE, SDSS_JPEGS, _pick, decals_cube, sdss_jpeg

FAST = HttpSettings(backoff_base=0.02, backoff_max=0.2, connect_timeout=2.0, read_timeout=2.0,
                    max_attempts=4)


def req(ra: float, dec: float, row: int = 0, scale: float | None = None) -> CutoutRequest:
    return CutoutRequest(row=row, id=f"r{row}", ra=ra, dec=dec, scale=scale)


def sdss(fake, geometry: Geometry = Geometry(75, 0.4), **kw) -> SdssCutoutSource:
    kw.setdefault("settings", FAST)
    return SdssCutoutSource(geometry, url=fake.sdss_url, **kw)


# --- geometry ----------------------------------------------------------------------------------

def test_geometry_from_model_convention_keeps_the_field_of_view() -> None:
    conv = ModelConvention(SDSS_COLOUR_JPEG, ("i", "r", "g"), size=75, crop_fraction=0.5,
                           pixel_scale_arcsec=0.8)
    g = fetch_geometry(conv)
    # The model sees 75 px x 0.8" = 60" = the central half of the stored cutout (120").
    assert g.pixels == 150
    assert g.pixels * g.scale == pytest.approx(75 * 0.8 / 0.5)
    assert fetch_geometry(conv, scale=0.3).scale == 0.3
    assert fetch_geometry(None, scale=0.25, pixels=96) == Geometry(96, 0.25)
    with pytest.raises(GalmergeError, match="--scale"):
        fetch_geometry(None)
    petro = ModelConvention(SDSS_COLOUR_JPEG, ("i", "r", "g"), petro_scale_factor=0.02,
                            extra={"cutout_pixels": "424"})
    assert fetch_geometry(petro) == Geometry(424, None)


def test_sdss_query_below_64_pixels_keeps_the_field(fake) -> None:
    src = sdss(fake, Geometry(32, 0.8))
    cut = src.get(req(150.0, 2.0))
    assert cut.status == OK and cut.raw is not None
    assert cut.raw.pixels.shape == (3, 64, 64)
    (entry,) = fake.log
    assert entry.params["width"] == entry.params["height"] == "64"
    assert float(entry.params["scale"]) == pytest.approx(0.4)  # 32 x 0.8" = 64 x 0.4"
    assert entry.params["opt"] == ""
    assert entry.user_agent == USER_AGENT and "galmerge/" in USER_AGENT


def test_fake_sdss_rejects_what_skyserver_rejects(fake) -> None:
    url = fake.sdss_url.format(release="dr17")
    small = requests.get(url, params={"ra": 150, "dec": 2, "scale": 0.4, "width": 32,
                                      "height": 32}, timeout=5)
    assert small.status_code == 500 and "[64, 2048]" in small.json()["ErrorMessage"]
    missing = requests.get(url, params={"ra": 150, "dec": 2}, timeout=5)
    assert missing.status_code == 400 and missing.json()["ErrorType"] == "ArgumentException"
    scale = requests.get(url, params={"ra": 150, "dec": 2, "scale": 100}, timeout=5)
    assert scale.status_code == 500


def test_sdss_pixels_are_the_served_jpeg(fake) -> None:
    src = sdss(fake, release="DR16")
    cut = src.get(req(150.0, 2.0))
    assert cut.ok and cut.raw is not None
    assert cut.raw.kind == SDSS_COLOUR_JPEG and cut.raw.bands == ("i", "r", "g")
    expected = np.asarray(Image.open(io.BytesIO(
        sdss_jpeg(_pick(150.0, 2.0, len(SDSS_JPEGS)), 75, 75, 0.4))).convert("RGB"))
    np.testing.assert_array_equal(cut.raw.pixels, np.moveaxis(expected, -1, 0).astype(np.float32))
    assert fake.log[0].path.startswith("/dr16/")


def test_service_url_from_environment(fake, monkeypatch) -> None:
    monkeypatch.setenv("GALMERGE_SDSS_URL", fake.sdss_url)
    src = SdssCutoutSource(Geometry(64, 0.4), settings=FAST)
    assert src.get(req(151.0, 3.0)).status == OK
    assert fake.count("sdss") == 1
    with pytest.raises(GalmergeError, match="not an http"):
        SdssCutoutSource(Geometry(64, 0.4), url="ftp://example.org")


def test_bad_coordinates_are_not_requested(fake) -> None:
    src = sdss(fake)
    for ra, dec in [(float("nan"), 1.0), (-5.0, 1.0), (10.0, 95.0), (None, None)]:
        cut = src.get(CutoutRequest(0, "x", ra, dec))
        assert cut.status == BAD_COORDINATES
    assert fake.count() == 0
    cut = src.get(req(150.0, 2.0, scale=500.0))  # per-row scale out of SkyServer's range
    assert cut.status == FETCH_FAILED and "outside" in cut.detail and fake.count() == 0


# --- faults --------------------------------------------------------------------------------------

TRANSIENT = [  # fault, words in detail
    ("429", "HTTP 429"),
    ("500", "HTTP 500"),
    ("503", "HTTP 503"),
    ("truncate", "truncated body"),
    ("corrupt", "corrupt jpeg body"),
    ("html200", "HTML page served with HTTP 200"),
    ("content_type", "unexpected content type 'text/plain'"),
    ("reset", "connection error"),
]
FINAL = [("404", "HTTP 404"), ("403", "HTTP 403"), ("400", "HTTP 400")]


@pytest.mark.parametrize(("kind", "words"), TRANSIENT)
def test_transient_fault_is_retried_then_reported(fake, kind: str, words: str) -> None:
    ra, dec = 20.0 + TRANSIENT.index((kind, words)), 4.0
    fake.add_fault(ra, dec, kind, retry_after="0")
    cut = sdss(fake).get(req(ra, dec))
    assert cut.status == FETCH_FAILED and cut.raw is None
    assert words in cut.detail and "gave up after 4 attempts" in cut.detail
    assert len(fake.requests_at(ra, dec)) == FAST.max_attempts


@pytest.mark.parametrize(("kind", "words"), TRANSIENT)
def test_transient_fault_recovers_on_retry(fake, kind: str, words: str) -> None:
    ra, dec = 30.0 + TRANSIENT.index((kind, words)), 4.0
    fake.add_fault(ra, dec, kind, times=2, retry_after="0")
    cut = sdss(fake).get(req(ra, dec))
    assert cut.status == OK and cut.raw is not None and cut.raw.pixels.shape == (3, 75, 75)
    assert len(fake.requests_at(ra, dec)) == 3


@pytest.mark.parametrize(("kind", "words"), FINAL)
def test_client_errors_are_not_retried(fake, kind: str, words: str) -> None:
    ra, dec = 40.0 + FINAL.index((kind, words)), 4.0
    fake.add_fault(ra, dec, kind)
    cut = sdss(fake).get(req(ra, dec))
    assert cut.status == FETCH_FAILED and words in cut.detail and "not retried" in cut.detail
    assert len(fake.requests_at(ra, dec)) == 1


def test_timeout_is_retried_and_reported(fake) -> None:
    fake.add_fault(50.0, 4.0, "timeout", delay=1.5)
    settings = HttpSettings(read_timeout=0.2, max_attempts=2, backoff_base=0.01)
    t0 = time.monotonic()
    cut = sdss(fake, settings=settings).get(req(50.0, 4.0))
    assert cut.status == FETCH_FAILED and "read timeout after 0.2 s" in cut.detail
    assert time.monotonic() - t0 < 1.2  # gave up long before the server answered
    assert len(fake.requests_at(50.0, 4.0)) == 2


def test_connection_refused_then_mirror(fake) -> None:
    dead = "http://127.0.0.1:9/{release}/SkyServerWS/ImgCutout/getjpeg"
    cut = SdssCutoutSource(Geometry(64, 0.4), url=dead, settings=FAST).get(req(1.0, 1.0))
    assert cut.status == FETCH_FAILED and "connection error" in cut.detail
    both = SdssCutoutSource(Geometry(64, 0.4), url=f"{dead},{fake.sdss_url}", settings=FAST)
    assert both.get(req(1.0, 1.0)).status == OK  # second attempt went to the mirror
    assert fake.count() == 1


def test_retry_after_seconds_is_honoured(fake) -> None:
    fake.add_fault(60.0, 4.0, "429", times=1, retry_after="1")
    cut = sdss(fake).get(req(60.0, 4.0))
    assert cut.status == OK
    first, second = fake.requests_at(60.0, 4.0)
    assert first.status == 429 and second.status == 200
    assert second.t - first.t >= 0.99


def test_retry_after_http_date_is_honoured(fake) -> None:
    when = email.utils.formatdate(time.time() + 2.0, usegmt=True)
    fake.add_fault(61.0, 4.0, "429", times=1, retry_after=when)
    assert sdss(fake).get(req(61.0, 4.0)).status == OK
    first, second = fake.requests_at(61.0, 4.0)
    assert second.t - first.t >= 0.9  # HTTP dates have 1 s resolution
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("120") == 120.0 and parse_retry_after("soon") is None


def test_retry_after_beyond_the_limit_gives_up_at_once(fake) -> None:
    fake.add_fault(62.0, 4.0, "429", retry_after="3600")
    cut = sdss(fake).get(req(62.0, 4.0))
    assert cut.status == FETCH_FAILED and "exceeds" in cut.detail
    assert len(fake.requests_at(62.0, 4.0)) == 1


def test_retry_after_pauses_every_thread(fake) -> None:
    # Row 0 is rate limited once; row 1 must not be sent while the pause lasts.
    fake.add_fault(63.0, 4.0, "429", times=1, retry_after="1")
    fake.add_fault(64.0, 4.0, "latency", delay=0.3)  # starts after row 0's 429
    src = sdss(fake, settings=HttpSettings(concurrency=1, backoff_base=0.01))
    cuts = list(src.get_many([req(63.0, 4.0, 0), req(64.0, 4.0, 1)]))
    assert [c.status for c in cuts] == [OK, OK]
    t429 = fake.requests_at(63.0, 4.0)[0].t
    assert fake.requests_at(64.0, 4.0)[0].t - t429 >= 0.99


def test_backoff_grows_exponentially_with_jitter(fake) -> None:
    fake.add_fault(65.0, 4.0, "503")
    settings = HttpSettings(max_attempts=5, backoff_base=0.1, backoff_max=10)
    sdss(fake, settings=settings).get(req(65.0, 4.0))
    t = [e.t for e in fake.requests_at(65.0, 4.0)]
    gaps = np.diff(t)
    assert len(gaps) == 4
    for n, gap in enumerate(gaps):
        d = 0.1 * 2**n
        assert d / 2 - 0.01 <= gap <= d + 0.15, (n, gap)
    assert gaps[3] > gaps[0] * 2


def test_rate_cap_spaces_requests(fake) -> None:
    src = sdss(fake, settings=HttpSettings(concurrency=4, max_rps=20))
    list(src.get_many([req(70.0 + i, 4.0, i) for i in range(8)]))
    t = sorted(e.t for e in fake.log)
    # 7 gaps of 50 ms; arrival times at the server jitter by its thread scheduling (a loaded
    # 2-core machine delayed the first by 27 ms once), so allow 50 ms. Without the cap the
    # 8 requests take two round trips of a few ms each.
    assert t[-1] - t[0] >= 7 / 20 - 0.05
    lim = RateLimiter(None)
    lim.pause_until(time.monotonic() + 0.2)
    t0 = time.monotonic()
    assert lim.acquire() and time.monotonic() - t0 >= 0.19


# --- out of footprint -------------------------------------------------------------------------

def test_out_of_footprint_both_sdss_styles_and_negative_cache(fake, tmp_path) -> None:
    cache = CutoutCache(tmp_path / "c")
    src = sdss(fake, cache=cache)
    fake.add_fault(80.0, 4.0, "footprint200")  # older deployments: 200 + black tile
    cur, old = src.get(req(80.0, -45.0)), src.get(req(80.0, 4.0))
    assert cur.status == NO_COVERAGE and "HTTP 404" in cur.detail and cur.raw is None
    assert old.status == NO_COVERAGE and "no data" in old.detail and old.raw is None
    assert [e.status for e in fake.log] == [404, 200]
    again = [src.get(req(80.0, -45.0)), src.get(req(80.0, 4.0))]
    assert [c.status for c in again] == [NO_COVERAGE, NO_COVERAGE]
    assert all("cached" in c.detail for c in again)
    assert fake.count() == 2  # permanent negatives are not asked again


def test_real_fields_are_not_mistaken_for_no_coverage(fake) -> None:
    # One position per bundled real field, at two cutout sizes.
    positions: dict[int, float] = {}
    ra = 100.0
    while len(positions) < len(SDSS_JPEGS):
        positions.setdefault(_pick(ra, 10.0, len(SDSS_JPEGS)), ra)
        ra += 0.001
    for geometry in (Geometry(64, 0.4), Geometry(150, 0.8)):
        src = sdss(fake, geometry)
        assert [src.get(req(r, 10.0)).status for r in positions.values()] == [OK] * len(
            positions)


def test_skyservers_real_diagnostic_tile_is_no_coverage(fake) -> None:
    # A real SkyServer error tile served with HTTP 200 (bundled by accident as a GZ1 cutout).
    img = np.moveaxis(np.asarray(Image.open(SDSS_ERROR_TILE).convert("RGB")), -1, 0)
    assert blank_fraction(img.astype(np.float32)) > 0.5
    fake.add_fault(81.0, 4.0, "footprint200")
    for geometry in (Geometry(64, 0.4), Geometry(423, 0.4)):
        cut = sdss(fake, geometry).get(req(81.0, 4.0))
        assert cut.status == NO_COVERAGE and "HTTP 200" in cut.detail


# --- Legacy Surveys and hips2fits ----------------------------------------------------------------

def test_legacy_fits_is_nanomaggies_with_bands_and_converts(fake) -> None:
    src = LegacyCutoutSource(Geometry(75, 0.262), url=fake.legacy_url, settings=FAST)
    cut = src.get(req(150.0, 2.0))
    assert cut.ok and cut.raw is not None
    assert cut.raw.kind == FLUX_NANOMAGGIES and cut.raw.bands == ("g", "r", "z")
    np.testing.assert_allclose(cut.raw.pixels, decals_cube(_pick(150.0, 2.0, 3), 75, 0.262,
                                                           "grz"))
    p = fake.log[0].params
    assert fake.log[0].path == "/viewer/fits-cutout"
    assert (p["layer"], p["bands"], p["size"], float(p["pixscale"])) == ("ls-dr10", "grz",
                                                                         "75", 0.262)
    conv = ModelConvention(SDSS_COLOUR_JPEG, ("i", "r", "g"), size=75)
    rgb = to_convention(cut.raw.pixels, cut.raw.kind, cut.raw.bands, conv)
    assert rgb.shape == (3, 75, 75) and 0 <= rgb.min() and rgb.max() <= 255 and rgb.std() > 1
    out = src.get(req(150.0, 85.0))
    assert out.status == NO_COVERAGE


def test_legacy_jpeg_and_bad_layer(fake) -> None:
    src = LegacyCutoutSource(Geometry(64, 0.262), url=fake.legacy_url, settings=FAST,
                             fmt="jpeg", layer="ls-dr9")
    cut = src.get(req(150.0, 2.0))
    assert cut.ok and cut.raw is not None and cut.raw.kind == DISPLAY_RGB8
    assert fake.log[0].path == "/viewer/jpeg-cutout"
    bad = LegacyCutoutSource(Geometry(64, 0.262), url=fake.legacy_url, settings=FAST,
                             layer="ls-dr99")
    cut = bad.get(req(150.0, 2.0))
    assert cut.status == FETCH_FAILED and "Unknown layer" in cut.detail
    assert fake.count() == 2  # a 400 is not retried


@pytest.mark.parametrize("fmt", ["jpeg", "png", "fits"])
def test_hips_formats_and_transparent_or_nan_out_of_footprint(fake, fmt: str) -> None:
    src = HipsCutoutSource(Geometry(80, 0.5), url=fake.hips_url, settings=FAST, fmt=fmt)
    cut = src.get(req(150.0, 2.0))
    assert cut.ok and cut.raw is not None
    assert cut.raw.pixels.shape == ((1, 80, 80) if fmt == "fits" else (3, 80, 80))
    assert src.get(req(150.0, -45.0)).status == NO_COVERAGE


def test_hips_query_is_astroquerys_query(fake) -> None:
    pytest.importorskip("matplotlib")  # astroquery builds its payload with matplotlib
    import astropy.units as u
    from astropy.coordinates import Angle, Latitude, Longitude
    from astroquery.hips2fits import hips2fits

    src = HipsCutoutSource(Geometry(80, 0.5), url=fake.hips_url, settings=FAST,
                           hips="CDS/P/DESI-Legacy-Surveys/DR10/color")
    assert src.get(req(150.0, 2.0)).status == OK
    theirs = hips2fits.query(hips="CDS/P/DESI-Legacy-Surveys/DR10/color", width=80, height=80,
                             projection="TAN", ra=Longitude(150.0 * u.deg),
                             dec=Latitude(2.0 * u.deg), fov=Angle(80 * 0.5 / 3600 * u.deg),
                             format="jpg", get_query_payload=True)
    ours = fake.log[0].params
    assert set(ours) == set(theirs)
    for k, v in theirs.items():
        if isinstance(v, float):
            assert float(ours[k]) == pytest.approx(v, rel=1e-12), k
        else:
            assert ours[k] == str(v), k
    bad = HipsCutoutSource(Geometry(80, 0.5), url=fake.hips_url, settings=FAST, hips="X/none")
    cut = bad.get(req(150.0, 2.0))
    assert cut.status == FETCH_FAILED and "HiPS not found" in cut.detail


# --- many rows, cache, offline ------------------------------------------------------------------

def test_get_many_keeps_order_and_bounds_concurrency(fake) -> None:
    fake.latency = 0.05
    fake.add_fault(91.0, 4.0, "500")
    rows = [req(90.0 + i, 4.0, i) for i in range(16)] + [req(float("nan"), 0.0, 16)]
    src = sdss(fake, settings=HttpSettings(concurrency=4, backoff_base=0.01, max_attempts=2))
    cuts = list(src.get_many(rows))
    assert len(cuts) == 17
    assert [c.status for c in cuts] == [OK, FETCH_FAILED] + [OK] * 14 + [BAD_COORDINATES]
    spans = [(e.t, e.t_end) for e in fake.log]
    overlap = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)
    assert 2 <= overlap <= 4


def test_cache_serves_reruns_and_offline_reads(fake, tmp_path) -> None:
    cache = CutoutCache(tmp_path / "cache")
    fake.add_fault(101.0, 4.0, "503")
    rows = [req(100.0 + i, 4.0, i) for i in range(5)]
    first = list(sdss(fake, cache=cache).get_many(rows))
    assert [c.status for c in first] == [OK, FETCH_FAILED, OK, OK, OK]
    sent = fake.count()
    assert len(cache) == 4  # the transient failure is not cached
    fake.reset()
    src = sdss(fake, cache=cache)
    second = list(src.get_many(rows))
    assert [c.status for c in second] == [OK] * 5
    assert fake.count() == 1 and sent == 4 + FAST.max_attempts  # only the failed row again
    assert src.stats()["cache_hits"] == 4
    for a, b in zip(first, second, strict=True):
        if a.ok:
            np.testing.assert_array_equal(a.raw.pixels, b.raw.pixels)
    offline = open_cached_source(str(tmp_path / "cache"))
    assert offline.spec() == src.spec()
    assert offline.get(rows[2]).ok
    miss = offline.get(req(120.0, 4.0))
    assert miss.status == MISSING_FILE and "galmerge fetch" in miss.detail
    assert fake.count() == 1


def test_closing_get_many_early_stops_cleanly(fake) -> None:
    fake.latency = 0.05
    src = sdss(fake, settings=HttpSettings(concurrency=2))
    gen = src.get_many(req(130.0 + i * 0.01, 4.0, i) for i in range(1000))
    assert next(gen).status == OK
    gen.close()
    n = fake.count()
    time.sleep(0.2)
    assert fake.count() == n and n <= 2 * 4 + 2  # window = concurrency x prefetch


def test_make_source_drops_options_of_other_services(fake) -> None:
    src = make_source("legacy", Geometry(64, 0.262), url=fake.legacy_url, release=None,
                      layer="ls-dr10-south", bands="gz", fmt="fits", hips=None)
    assert isinstance(src, LegacyCutoutSource) and src.release == "ls-dr10-south"
    with pytest.raises(GalmergeError, match="unknown cutout service"):
        make_source("panstarrs", Geometry(64, 0.25))
