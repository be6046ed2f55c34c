"""The SQLite cutout cache: keys, checksums, threads, processes, and a SIGKILL mid-write."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from galmerge.errors import GalmergeError
from galmerge.inference.cache import CACHE_FILE, CacheKey, CutoutCache, is_cache_dir
from galmerge.inference.cutouts import FETCH_FAILED, NO_COVERAGE, OK
from tests.conftest import EXAMPLE, ROOT

JPEG = next(iter(sorted((EXAMPLE / "cutouts").glob("*.jpeg")))).read_bytes()


def key(ra: float, dec: float = 1.0, **kw) -> CacheKey:
    base = {"service": "sdss", "release": "dr17", "scale": 0.4, "pixels": 75, "bands": "gri",
            "fmt": "jpeg"}
    return CacheKey(ra=ra, dec=dec, **{**base, **kw})


def test_round_trip_and_key_rounding(tmp_path) -> None:
    with CutoutCache(tmp_path / "c") as cache:
        assert is_cache_dir(tmp_path / "c") and len(cache) == 0
        cache.put(key(10.0), status=OK, body=JPEG, content_type="image/jpeg", url="http://x")
        hit = cache.get(key(10.0 + 4e-7))  # rounds to the same 1e-6 deg
        assert hit is not None and hit.body == JPEG and hit.status == OK
        assert cache.get(key(10.0 + 2e-6)) is None
        assert cache.get(key(10.0, scale=0.41)) is None
        assert cache.get(key(10.0, bands="grz")) is None
        assert key(360.0).text == key(0.0).text
        assert key(0.0, dec=-0.0).text == key(0.0, dec=0.0).text
        cache.put(key(11.0), status=NO_COVERAGE, detail="outside the SDSS footprint")
        neg = cache.get(key(11.0))
        assert neg is not None and neg.body is None and neg.status == NO_COVERAGE
        with pytest.raises(ValueError, match="permanent"):
            cache.put(key(12.0), status=FETCH_FAILED)
        assert set(cache.get_many([key(10.0), key(11.0), key(13.0)])) == {key(10.0).text,
                                                                           key(11.0).text}
        assert cache.summary()["by"] == {"sdss/ok": 1, "sdss/no_coverage": 1}


def test_damaged_entry_reads_as_a_miss(tmp_path) -> None:
    with CutoutCache(tmp_path) as cache:
        cache.put(key(1.0), status=OK, body=JPEG)
    con = sqlite3.connect(tmp_path / CACHE_FILE)
    con.execute("UPDATE cutouts SET body = ? WHERE key = ?", (JPEG[:-10], key(1.0).text))
    con.commit()
    con.close()
    with CutoutCache(tmp_path) as cache:
        assert cache.get(key(1.0)) is None and len(cache) == 0


def test_not_a_cache(tmp_path) -> None:
    with pytest.raises(GalmergeError, match="not a galmerge cutout cache"):
        CutoutCache(tmp_path / "nothing", create=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CACHE_FILE).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GalmergeError, match="not a readable cutout cache"):
        CutoutCache(tmp_path / "bad")


def test_threads_share_one_cache(tmp_path) -> None:
    cache = CutoutCache(tmp_path)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(100):
                body = JPEG + f"{t}-{i}".encode()
                cache.put(key(t * 10 + i * 0.01), status=OK, body=body)
                got = cache.get(key(t * 10 + i * 0.01))
                assert got is not None and got.body == body
                cache.get(key((t + 1) % 8 * 10 + i * 0.01))  # read what others write
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(cache) == 800 and cache.check() == "ok"
    cache.close()


WRITER = """
import hashlib, sys, time
from galmerge.inference.cache import CacheKey, CutoutCache
directory, first, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cache = CutoutCache(directory)
for i in range(first, first + n):
    body = hashlib.sha256(str(i).encode()).digest() * (size // 32)
    cache.put(CacheKey("sdss", "dr17", i * 0.001, 1.0, 0.4, 75, "gri", "jpeg"), status="ok",
              body=body)
    print(i, flush=True)
"""


def _writer(directory: Path, first: int, n: int, size: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(directory), str(first), str(n),
                             str(size)], cwd=ROOT, stdout=subprocess.PIPE, text=True)


def _body(i: int, size: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest() * (size // 32)


def test_several_processes_write_one_cache(tmp_path) -> None:
    CutoutCache(tmp_path).close()
    # Three writers at once, with overlapping keys (the same cutout fetched twice).
    procs = [_writer(tmp_path, first, 150, 4096) for first in (0, 100, 200)]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0 and len(out.split()) == 150
    with CutoutCache(tmp_path) as cache:
        assert cache.check() == "ok"
        assert len(cache) == 350
        for i in range(350):
            got = cache.get(CacheKey("sdss", "dr17", i * 0.001, 1.0, 0.4, 75, "gri", "jpeg"))
            assert got is not None and got.body == _body(i, 4096)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_write_leaves_entries_absent_or_complete(tmp_path) -> None:
    size = 2 * 2**20  # 2 MB bodies: a kill most likely lands inside a write
    proc = _writer(tmp_path, 0, 10_000, size)
    assert proc.stdout is not None
    done = [int(proc.stdout.readline()) for _ in range(5)]
    time.sleep(0.03)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with CutoutCache(tmp_path) as cache:  # opens, recovers the write-ahead log
        assert cache.check() == "ok"
        stored = len(cache)
        assert len(done) <= stored < 10_000  # killed mid-run; acknowledged writes survived
        for i in range(stored + 2):
            got = cache.get(CacheKey("sdss", "dr17", i * 0.001, 1.0, 0.4, 75, "gri", "jpeg"))
            if i < stored:
                assert got is not None and got.body == _body(i, size)  # complete
            else:
                assert got is None  # absent, never partial
        cache.put(key(99.0), status=OK, body=JPEG)  # and it is writable again
        assert cache.get(key(99.0)) is not None


def test_specs_are_recorded(tmp_path) -> None:
    with CutoutCache(tmp_path) as cache:
        a = {"service": "sdss", "release": "dr17", "pixels": 150, "scale": 0.4}
        cache.record_spec(a)
        cache.record_spec(a)
        cache.record_spec({**a, "release": "dr16"})
        assert len(cache.specs()) == 2 and cache.specs()[0]["release"] == "dr16"
