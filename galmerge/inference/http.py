"""Polite, fault-tolerant HTTP for the cutout services.

One :class:`HttpClient` per cutout source. It sends GET requests with a
descriptive User-Agent, (connect, read) timeouts and an optional
requests-per-second cap shared by all its threads (:class:`RateLimiter`, a
token bucket), and retries what may succeed later:

* connection errors, timeouts and truncated bodies,
* HTTP 429 (waiting at least ``Retry-After``, given in seconds or as an HTTP
  date; the wait pauses *every* thread of the client, since the server asked
  the client to slow down, not one request),
* HTTP 408 and 5xx,
* and whatever the source's ``interpret`` callback marks as retryable (e.g. an
  HTML error page or a corrupt image served with status 200).

Back-off is exponential with "equal jitter": attempt ``n`` waits
``d/2 + uniform(0, d/2)`` with ``d = min(backoff_max, backoff_base * 2**n)``,
so concurrent clients that failed together do not retry together. Other 4xx
answers are final: asking again would get the same answer.

HTTP client: ``requests`` (already required through astroquery), one
:class:`requests.Session` per worker thread (a session's connection pool gives
keep-alive; sessions are not documented as thread-safe, so none is shared).

Torch-free.
"""

from __future__ import annotations

import email.utils
import json
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from galmerge import __version__
from galmerge.errors import GalmergeError

__all__ = [
    "RETRY_STATUSES",
    "USER_AGENT",
    "Attempt",
    "ClientStats",
    "HttpClient",
    "HttpSettings",
    "RateLimiter",
    "Response",
    "TransientError",
    "error_message",
    "generic_attempt",
    "looks_like_html",
    "parse_retry_after",
]

#: Sent with every request so that service operators can see who is calling.
USER_AGENT = f"galmerge/{__version__} (+https://github.com/galmerge/galmerge)"

#: HTTP statuses worth asking again (besides 5xx): request timeout, rate limit.
RETRY_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class HttpSettings:
    """How a cutout source talks to its service.

    Attributes:
        concurrency: worker threads, i.e. requests in flight at once.
        max_rps: cap on requests per second over all threads (``None``: no cap).
        connect_timeout, read_timeout: seconds (``read`` is per socket read).
        max_attempts: tries per cutout, the first included.
        backoff_base, backoff_max: seconds; see the module docstring.
        max_retry_after: a ``Retry-After`` longer than this (seconds) ends the
            attempt as failed instead of stalling the run.
        max_body_bytes: larger bodies are refused (a cutout is KB to a few MB);
            counted after any ``Content-Encoding`` is undone.
        total_timeout: seconds one request may take from sending to the last
            body byte, however the server trickles it (``None``: connect + read
            timeout).
        user_agent: the ``User-Agent`` header.
    """

    concurrency: int = 8
    max_rps: float | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_attempts: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    max_retry_after: float = 300.0
    max_body_bytes: int = 64 * 2**20
    total_timeout: float | None = None
    user_agent: str = USER_AGENT

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise GalmergeError(f"--concurrency must be at least 1, got {self.concurrency}")
        if self.max_rps is not None and not self.max_rps > 0:
            raise GalmergeError(f"--max-rps must be positive, got {self.max_rps}")
        if self.max_attempts < 1:
            raise GalmergeError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not (self.connect_timeout > 0 and self.read_timeout > 0):
            raise GalmergeError("timeouts must be positive")
        if self.total_timeout is not None and not self.total_timeout > 0:
            raise GalmergeError("timeouts must be positive")

    @property
    def deadline(self) -> float:
        """Seconds one request may take in all."""
        if self.total_timeout is not None:
            return self.total_timeout
        return self.connect_timeout + self.read_timeout

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        d = min(self.backoff_max, self.backoff_base * 2.0**attempt)
        return d / 2 + rng.uniform(0.0, d / 2)


class RateLimiter:
    """Token bucket shared by threads, plus a pause that every thread honours.

    ``rate`` tokens per second with a bucket of ``burst`` tokens (default 1:
    requests evenly spaced, never more than ``rate`` in any second);
    ``rate=None`` never limits but still honours :meth:`pause_until`.
    """

    def __init__(self, rate: float | None, burst: float = 1.0) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._tokens = self.burst
        self._last = time.monotonic()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def pause_until(self, t: float) -> None:
        """No request starts before monotonic time ``t`` (extends, never shortens)."""
        with self._lock:
            self._paused_until = max(self._paused_until, t)

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Block until a request may start; False when ``stop`` was set meanwhile."""
        while True:
            with self._lock:
                now = time.monotonic()
                wait = self._paused_until - now
                if wait <= 0 and self.rate is None:
                    return True
                if wait <= 0 and self.rate is not None:
                    self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                    self._last = now
                    if self._tokens >= 1.0:
                        self._tokens -= 1.0
                        return True
                    wait = (1.0 - self._tokens) / self.rate
            if stop is not None:
                if stop.wait(wait):
                    return False
            else:
                time.sleep(wait)


@dataclass
class Response:
    """An HTTP answer with its whole body."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes
    url: str

    @property
    def content_type(self) -> str:
        """Media type without parameters, lower case ('' when absent)."""
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()


class TransientError(Exception):
    """A request failed in a way that may not happen again (connection, timeout, truncation)."""


@dataclass
class Attempt:
    """What one answer means to the caller (the ``interpret`` callback of :meth:`HttpClient.fetch`).

    ``retry=True`` asks the client to try again (``detail`` says why). Otherwise the
    attempt is final: ``outcome`` is the caller's verdict on the answer (e.g. a row
    status) and ``value`` what it decoded, or ``outcome == ""`` when the request
    failed (the client's own verdict when it gives up or is interrupted: the caller
    says what a failure means for it); ``body``/``content_type`` what may be cached.
    This module knows bytes and HTTP, not what the caller makes of them.
    """

    outcome: str = ""
    value: Any = None
    detail: str = ""
    retry: bool = False
    retry_after: float | None = None
    body: bytes | None = None
    content_type: str = ""
    url: str = ""


@dataclass
class ClientStats:
    """Counters of one client (thread-safe updates through :meth:`add`)."""

    requests: int = 0
    retries: int = 0
    transient_errors: int = 0
    rate_limited: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        """Increment counters."""
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict[str, int]:
        """Plain counters."""
        return {"requests": self.requests, "retries": self.retries,
                "transient_errors": self.transient_errors, "rate_limited": self.rate_limited}


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def error_message(resp: Response, limit: int = 200) -> str:
    """A short human message from an error body (SDSS JSON, hips2fits JSON, HTML, text)."""
    text = resp.body[:4096].decode("utf-8", "replace").strip()
    if resp.content_type.endswith("json") or text.startswith("{"):
        try:
            data = json.loads(resp.body.decode("utf-8", "replace"))
        except ValueError:
            data = None
        if isinstance(data, dict):
            for keys in (("ErrorMessage",), ("title", "description"), ("message",), ("error",)):
                parts = [str(data[k]) for k in keys if data.get(k)]
                if parts:
                    return ": ".join(parts)[:limit]
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
    if title:
        return " ".join(title.group(1).split())[:limit]
    if text.startswith("<"):
        text = re.sub(r"<[^>]+>", " ", text)
    return " ".join(text.split())[:limit]


def looks_like_html(resp: Response) -> bool:
    """True for an HTML page (by media type or by content)."""
    if resp.content_type in ("text/html", "application/xhtml+xml"):
        return True
    head = resp.body[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def generic_attempt(resp: Response) -> Attempt | None:
    """The meaning of a non-200 answer that needs no service knowledge, or None."""
    if resp.status == 200:
        return None
    msg = error_message(resp)
    what = f"HTTP {resp.status} {resp.reason}".strip()
    if msg and msg.lower() not in resp.reason.lower():
        what += f": {msg}"
    if resp.status == 429:
        return Attempt(detail=what, retry=True,
                       retry_after=parse_retry_after(resp.headers.get("Retry-After")))
    if resp.status in RETRY_STATUSES or 500 <= resp.status < 600:
        return Attempt(detail=what, retry=True,
                       retry_after=parse_retry_after(resp.headers.get("Retry-After")))
    if resp.status == 404:
        what += " (not retried; check --service-url)"
    else:
        what += " (not retried)"
    return Attempt(detail=what)


class HttpClient:
    """GET with retries, back-off, a rate cap, and per-thread sessions."""

    def __init__(self, settings: HttpSettings, *, seed: int | None = None) -> None:
        self.settings = settings
        self.limiter = RateLimiter(settings.max_rps)
        self.stats = ClientStats()
        self.stop = threading.Event()
        # At most `concurrency` requests on the wire, however many threads call
        # fetch() (e.g. a chunk being classified and the next one being prefetched).
        self._slots = threading.BoundedSemaphore(settings.concurrency)
        self._local = threading.local()
        self._sessions: list[Any] = []
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    # -- sessions --------------------------------------------------------------

    def _session(self) -> Any:
        s = getattr(self._local, "session", None)
        if s is None:
            import requests

            s = requests.Session()
            s.headers["User-Agent"] = self.settings.user_agent
            s.headers["Accept-Encoding"] = "identity"
            self._local.session = s
            with self._lock:
                self._sessions.append(s)
        return s

    def close(self) -> None:
        """Stop retries that are waiting and close every session."""
        self.stop.set()
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for s in sessions:
            s.close()

    # -- one request -------------------------------------------------------------

    def get(self, url: str, params: Mapping[str, Any]) -> Response:
        """One GET; any HTTP status is returned, transport failures raise TransientError.

        The body is read as it arrives (``read1``), so a server that trickles
        bytes is cut off at :attr:`HttpSettings.deadline`; a compressed body
        (``Content-Encoding: gzip``) is decoded on the fly, its decoded size
        capped, and its length checked against the bytes on the wire.
        """
        import requests
        import urllib3.exceptions as u3

        st = self.settings
        self.stats.add(requests=1)
        t_end = time.monotonic() + st.deadline
        try:
            with self._session().get(url, params=params, stream=True, allow_redirects=True,
                                     timeout=(st.connect_timeout, st.read_timeout)) as r:
                chunks, size = [], 0
                while True:
                    if time.monotonic() > t_end:
                        raise TransientError(f"no complete answer within {st.deadline:g} s")
                    chunk = r.raw.read1(65536, decode_content=True)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > st.max_body_bytes:
                        raise TransientError(f"body larger than {st.max_body_bytes} bytes")
                    chunks.append(chunk)
                body = b"".join(chunks)
                declared = r.headers.get("Content-Length")
                on_wire = r.raw.tell()
                if declared is not None and declared.isdigit() and int(declared) != on_wire:
                    raise TransientError(
                        f"truncated body: got {on_wire} of {declared} bytes")
                return Response(r.status_code, r.reason or "", r.headers, body, r.url)
        except (requests.exceptions.ChunkedEncodingError, u3.ProtocolError,
                u3.IncompleteRead) as exc:
            raise TransientError(f"truncated body: {_short(exc)}") from None
        except u3.DecodeError:
            raise TransientError("body does not decode (Content-Encoding)") from None
        except requests.exceptions.ConnectTimeout:
            raise TransientError(f"connect timeout after {st.connect_timeout:g} s") from None
        except (requests.exceptions.ReadTimeout, u3.ReadTimeoutError):
            raise TransientError(f"read timeout after {st.read_timeout:g} s") from None
        except requests.exceptions.ConnectionError as exc:
            if "Read timed out" in str(exc):
                raise TransientError(f"read timeout after {st.read_timeout:g} s") from None
            raise TransientError(f"connection error ({_short(exc)})") from None
        except requests.exceptions.InvalidURL as exc:
            raise GalmergeError(f"invalid service URL {url!r}: {exc}") from None
        except (OSError, u3.HTTPError) as exc:  # e.g. a reset mid-body
            raise TransientError(f"connection error ({_short(exc)})") from None

    # -- with retries -------------------------------------------------------------

    def fetch(self, urls: str | tuple[str, ...], params: Mapping[str, Any],
              interpret: Callable[[Response], Attempt]) -> Attempt:
        """GET until ``interpret`` accepts the answer or the attempts run out.

        ``urls`` may list mirrors: attempt ``n`` goes to ``urls[n % len(urls)]``.
        Returns the final :class:`Attempt`; never raises for per-row problems.
        """
        st = self.settings
        mirrors = (urls,) if isinstance(urls, str) else tuple(urls)
        reason = ""
        for attempt in range(st.max_attempts):
            if attempt:
                self.stats.add(retries=1)
            url = mirrors[attempt % len(mirrors)]
            retry_after: float | None = None
            try:
                with self._slots:
                    if not self.limiter.acquire(self.stop):
                        return Attempt(detail=f"interrupted ({reason or 'closed'})")
                    resp = self.get(url, params)
            except TransientError as exc:
                self.stats.add(transient_errors=1)
                reason = str(exc)
            else:
                result = interpret(resp)
                if not result.retry:
                    result.url = resp.url
                    return result
                reason, retry_after = result.detail, result.retry_after
                if resp.status == 429:
                    self.stats.add(rate_limited=1)
            if attempt == st.max_attempts - 1:
                break
            if retry_after is not None and retry_after > st.max_retry_after:
                return Attempt(detail=(
                    f"{reason}; Retry-After {retry_after:g} s exceeds the "
                    f"{st.max_retry_after:g} s limit (not retried)"))
            with self._lock:
                delay = st.backoff(attempt, self._rng)
            if retry_after is not None:
                # Honour the server's wait for every thread of this client.
                delay = max(delay, retry_after)
                self.limiter.pause_until(time.monotonic() + retry_after)
            if self.stop.wait(delay):
                return Attempt(detail=f"interrupted ({reason})")
        n = st.max_attempts
        return Attempt(detail=f"{reason} (gave up after {n} attempt{'s' if n > 1 else ''})")


def _short(exc: BaseException, limit: int = 160) -> str:
    """The informative core of a requests/urllib3 exception message (no object addresses)."""
    text = re.sub(r"<[^<>']* at 0x[0-9a-fA-F]+>:? ?", "", str(exc))
    m = re.search(r"IncompleteRead\(([^)]*)\)", text)
    if m:
        return m.group(1)
    m = re.search(r"\[Errno [^\]]+\][^'\")]*", text)
    if m:
        return m.group(0).strip()
    found = re.findall(r"(\w+)\('([^']+)'", text)
    if found:
        name, msg = found[-1]
        return f"{name}: {msg}"[:limit]
    return " ".join(text.split())[:limit]
