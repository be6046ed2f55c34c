"""The on-disk cutout cache: one SQLite file per cache directory.

Every cutout fetched from a service is stored as the service's own response
bytes (a JPEG of a few KB, or a FITS cube) in ``<dir>/cutouts.sqlite``, keyed
by what determines the pixels: service, release/layer/HiPS, RA and Dec
(rounded to 1e-6 deg = 3.6 mas), scale (1e-6 arcsec/px), size, bands and
format (:class:`CacheKey`). Permanent negative answers (``no_coverage``) are
stored too, without bytes; transient failures never are. See ``docs/cache.md``.

Why SQLite: one compact file instead of millions of small files; atomic
transactions, so a process killed mid-write leaves the entry either absent or
complete (the write-ahead log is rolled back on the next open); WAL mode lets
many threads and processes on one host read while one writes, and
``busy_timeout`` queues writers. Each body also carries its SHA-256, checked on
every read, so a damaged entry reads as a miss instead of bad pixels.

Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from galmerge.errors import GalmergeError
from galmerge.inference.status import NO_COVERAGE, OK

__all__ = [
    "BUSY_TIMEOUT_MS",
    "CACHE_FILE",
    "CACHE_FORMAT",
    "CacheEntry",
    "CacheKey",
    "CutoutCache",
    "is_cache_dir",
]

#: File name of the index+store inside a cache directory.
CACHE_FILE = "cutouts.sqlite"
#: Bumped when the schema changes incompatibly.
CACHE_FORMAT = "1"
#: SQLite waits this long (ms) for another writer before giving up.
BUSY_TIMEOUT_MS = 120_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cutouts (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    service TEXT NOT NULL,
    release TEXT NOT NULL,
    ra REAL NOT NULL,
    dec REAL NOT NULL,
    scale REAL NOT NULL,
    pixels INTEGER NOT NULL,
    bands TEXT NOT NULL,
    format TEXT NOT NULL,
    status TEXT NOT NULL,
    content_type TEXT NOT NULL DEFAULT '',
    body BLOB,
    sha256 TEXT,
    detail TEXT NOT NULL DEFAULT '',
    url TEXT NOT NULL DEFAULT '',
    fetched_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS specs (
    spec TEXT PRIMARY KEY,
    first_used REAL NOT NULL,
    last_used REAL NOT NULL
);
"""


def _fmt(value: float) -> str:
    # Rounded to 6 decimals; "+0.0" for -0.0 so that one position has one key.
    return f"{round(value, 6) + 0.0:.6f}"


@dataclass(frozen=True)
class CacheKey:
    """What determines a fetched cutout's bytes.

    Attributes:
        service: ``sdss``, ``legacy`` or ``hips``.
        release: SDSS data release (``dr17``), Legacy layer (``ls-dr10``) or HiPS id.
        ra, dec: degrees (rounded to 1e-6 in :attr:`text`).
        scale: arcsec per pixel of the requested cutout.
        pixels: width = height of the requested cutout.
        bands: band string as requested (``gri``, ``grz``; '' when not selectable).
        fmt: ``jpeg``, ``png`` or ``fits``.
    """

    service: str
    release: str
    ra: float
    dec: float
    scale: float
    pixels: int
    bands: str
    fmt: str

    @property
    def text(self) -> str:
        """Canonical string form (the primary key)."""
        ra = float(self.ra) % 360.0
        if _fmt(ra) == "360.000000":
            ra = 0.0
        return "|".join((self.service, self.release, _fmt(ra), _fmt(self.dec),
                         _fmt(self.scale), str(int(self.pixels)), self.bands, self.fmt))


@dataclass
class CacheEntry:
    """A stored cutout (``status == 'ok'``, with ``body``) or a stored negative answer."""

    status: str
    content_type: str
    body: bytes | None
    detail: str
    url: str
    fetched_at: float


class CutoutCache:
    """A directory holding ``cutouts.sqlite``; safe for threads and processes on one host.

    Args:
        directory: the cache directory (created unless ``create=False``).
        create: create the directory and file when missing; otherwise a
            missing cache raises :class:`GalmergeError`.
    """

    def __init__(self, directory: str | Path, *, create: bool = True) -> None:
        self.directory = Path(directory)
        self.path = self.directory / CACHE_FILE
        if not self.path.is_file():
            if not create:
                raise GalmergeError(
                    f"{self.directory}: not a galmerge cutout cache (no {CACHE_FILE})",
                    hint="create one with `galmerge fetch --out DIR`")
            if self.directory.exists() and not self.directory.is_dir():
                raise GalmergeError(f"{self.directory}: exists and is not a directory")
            self.directory.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._init_schema()

    # -- connections -------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                   isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # Durable against a killed process (not against power loss) and fast.
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            raise GalmergeError(f"{self.path}: not a readable cutout cache ({exc})") from None
        except sqlite3.Error as exc:
            raise GalmergeError(f"{self.path}: cannot open the cutout cache ({exc})") from None
        return conn

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise GalmergeError(f"{self.path}: the cutout cache was closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _init_schema(self) -> None:
        conn = self._conn()
        try:
            # WAL is a property of the file; switching needs a moment alone with it.
            for _ in range(100):
                try:
                    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                    break
                except sqlite3.OperationalError:
                    time.sleep(0.05)
            else:
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                raise GalmergeError(
                    f"{self.path}: SQLite refused write-ahead logging (journal mode {mode})",
                    hint="put the cache on a local disk, not a network file system")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                row = conn.execute("SELECT value FROM meta WHERE name='format'").fetchone()
                if row is None:
                    conn.execute("INSERT INTO meta VALUES ('format', ?)", (CACHE_FORMAT,))
                elif row[0] != CACHE_FORMAT:
                    raise GalmergeError(
                        f"{self.path}: cache format {row[0]} is not supported (this galmerge "
                        f"writes format {CACHE_FORMAT})", hint="use a new cache directory")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise GalmergeError(f"{self.path}: not a readable cutout cache ({exc})") from None

    def close(self) -> None:
        """Close every connection (of every thread)."""
        with self._lock:
            conns, self._conns = self._conns, []
            self._closed = True
        for c in conns:
            c.close()

    def __enter__(self) -> CutoutCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- entries ---------------------------------------------------------------------

    def get(self, key: CacheKey) -> CacheEntry | None:
        """The entry for ``key``, or None (also for an entry whose checksum fails)."""
        row = self._conn().execute(
            "SELECT status, content_type, body, sha256, detail, url, fetched_at "
            "FROM cutouts WHERE key = ?", (key.text,)).fetchone()
        return None if row is None else self._entry(key.text, row)

    def status(self, key: CacheKey) -> tuple[str, str] | None:
        """(status, detail) of a stored entry without reading its bytes, or None."""
        row = self._conn().execute("SELECT status, detail FROM cutouts WHERE key = ?",
                                   (key.text,)).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def get_many(self, keys: Iterable[CacheKey]) -> dict[str, CacheEntry]:
        """Entries for many keys at once, by :attr:`CacheKey.text` (misses left out)."""
        texts = list(dict.fromkeys(k.text for k in keys))
        out: dict[str, CacheEntry] = {}
        conn = self._conn()
        for i in range(0, len(texts), 500):
            part = texts[i:i + 500]
            q = ",".join("?" * len(part))
            for row in conn.execute(
                    "SELECT key, status, content_type, body, sha256, detail, url, fetched_at "
                    f"FROM cutouts WHERE key IN ({q})", part):
                entry = self._entry(row[0], row[1:])
                if entry is not None:
                    out[row[0]] = entry
        return out

    def _entry(self, key: str, row: tuple[Any, ...]) -> CacheEntry | None:
        status, ctype, body, sha, detail, url, at = row
        if body is not None and hashlib.sha256(body).hexdigest() != sha:
            self.delete(key)
            return None
        return CacheEntry(status, ctype, None if body is None else bytes(body), detail, url, at)

    def put(self, key: CacheKey, *, status: str, body: bytes | None = None,
            content_type: str = "", detail: str = "", url: str = "") -> None:
        """Store (or replace) one entry in its own transaction."""
        if status not in (OK, NO_COVERAGE):
            raise ValueError(f"only permanent outcomes are cached, not {status!r}")
        if status == OK and body is None:
            raise ValueError("an ok entry needs its body")
        sha = None if body is None else hashlib.sha256(body).hexdigest()
        ra = float(key.ra) % 360.0
        self._conn().execute(
            "INSERT OR REPLACE INTO cutouts (key, service, release, ra, dec, scale, pixels, "
            "bands, format, status, content_type, body, sha256, detail, url, fetched_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (key.text, key.service, key.release, ra, float(key.dec), float(key.scale),
             int(key.pixels), key.bands, key.fmt, status, content_type,
             None if body is None else sqlite3.Binary(body), sha, detail, url, time.time()))

    def delete(self, key: str | CacheKey) -> None:
        """Remove one entry (no error when absent)."""
        text = key.text if isinstance(key, CacheKey) else key
        self._conn().execute("DELETE FROM cutouts WHERE key = ?", (text,))

    def __contains__(self, key: CacheKey) -> bool:
        return self._conn().execute(
            "SELECT 1 FROM cutouts WHERE key = ?", (key.text,)).fetchone() is not None

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM cutouts").fetchone()[0])

    def keys(self) -> Iterator[str]:
        """Every stored key (canonical text)."""
        for (k,) in self._conn().execute("SELECT key FROM cutouts ORDER BY id"):
            yield k

    def summary(self) -> dict[str, Any]:
        """Entry counts by service and status, and bytes stored."""
        rows = self._conn().execute(
            "SELECT service, status, COUNT(*), COALESCE(SUM(LENGTH(body)), 0) "
            "FROM cutouts GROUP BY service, status").fetchall()
        return {"entries": sum(r[2] for r in rows), "bytes": sum(r[3] for r in rows),
                "by": {f"{r[0]}/{r[1]}": r[2] for r in rows}}

    def check(self) -> str:
        """SQLite's ``integrity_check`` result (``'ok'`` when sound)."""
        return str(self._conn().execute("PRAGMA integrity_check").fetchone()[0])

    # -- what was fetched into this cache ---------------------------------------------------

    def record_spec(self, spec: dict[str, Any]) -> None:
        """Remember a source configuration that wrote here (for ``classify --cutouts DIR``)."""
        text = json.dumps(spec, sort_keys=True)
        now = time.time()
        self._conn().execute(
            "INSERT INTO specs VALUES (?, ?, ?) ON CONFLICT(spec) DO UPDATE SET last_used=?",
            (text, now, now, now))

    def specs(self) -> list[dict[str, Any]]:
        """Source configurations recorded by :meth:`record_spec`, most recent first."""
        rows = self._conn().execute("SELECT spec FROM specs ORDER BY last_used DESC").fetchall()
        return [json.loads(r[0]) for r in rows]


def is_cache_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory holding a galmerge cutout cache."""
    return (Path(path) / CACHE_FILE).is_file()
