"""Getting alerts to the people who review them: signed webhooks and Server-Sent Events.

Nothing here is the truth: the alert rows are. A delivery is a notification that can always be
re-derived from them, so a receiver that was down, a full queue or a dropped SSE connection loses
no alert, only its timeliness (an SSE client resumes with `Last-Event-ID`; an operator can
re-send from the rows).

**Webhooks** (the scheme follows Stripe's). Each attempt is a `POST` of the event as compact JSON
(sorted keys, UTF-8) with the headers

- `X-Yingyan-Timestamp: <unix seconds>`, taken at that attempt;
- `X-Yingyan-Signature: v1=<hex>`, the HMAC-SHA256 under the webhook's secret of
  `f"{timestamp}.".encode() + body` (the raw body bytes as received, not a re-serialisation);
- `Idempotency-Key: <key>`, the same on every attempt of one event: a receiver that saw the key
  already acknowledges and does nothing;
- `X-Yingyan-Attempt: <n>` (informative, not signed).

A receiver calls `verify(secret, timestamp, body, signature)`: constant-time comparison, and a
timestamp more than `tolerance_s` (300 s) from its clock is refused, so a captured request cannot
be replayed later. Several `v1=` values separated by commas are accepted (secret rotation).
Connection errors, timeouts, 408, 429 and 5xx are retried with exponential backoff (a
`Retry-After` is honoured, capped at `backoff_max_s`); any other answer is final. Redirects are
not followed: a signed alert goes only to the configured URL. Credentials in a URL's user-info
are sent as HTTP Basic auth and never appear in errors or logs (`redact_url`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.client
import inspect
import json
import logging
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from yingyan.errors import ConfigError
from yingyan.privacy.redaction import redact_url

log = logging.getLogger("yingyan.watch.delivery")

SIGNATURE_VERSION: Final = "v1"
TIMESTAMP_HEADER: Final = "X-Yingyan-Timestamp"
SIGNATURE_HEADER: Final = "X-Yingyan-Signature"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
ATTEMPT_HEADER: Final = "X-Yingyan-Attempt"
USER_AGENT: Final = "yingyan-webhook/1"
MIN_SECRET_BYTES: Final = 16
MAX_KEY_LENGTH: Final = 200
RETRY_STATUSES: Final = frozenset({408, 429})
HEARTBEAT: Final = b": keep-alive\n\n"

Sleep = Callable[[float], object]
Clock = Callable[[], float]
Event = Mapping[str, Any]


# --- signatures ---------------------------------------------------------------------------


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of `"<timestamp>." + body`: binding the time stops a replay later."""
    return hmac.new(secret, f"{int(timestamp)}.".encode() + body, hashlib.sha256).hexdigest()


def verify(
    secret: bytes,
    timestamp: int | str,
    body: bytes,
    signature: str,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """For receivers: True when `signature` (the `X-Yingyan-Signature` header: `v1=<hex>`,
    possibly several comma-separated, or a bare hex digest) signs `body` at `timestamp`, and
    the timestamp lies within `tolerance_s` of `now` (default: the local clock)."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        return False
    expected = sign(secret, ts, body).encode()
    found = False
    for part in signature.split(","):
        scheme, _, value = part.strip().rpartition("=")
        if scheme not in ("", SIGNATURE_VERSION):
            continue
        # Every candidate is compared (no early exit), each in constant time.
        found |= hmac.compare_digest(expected, value.strip().encode("ascii", "replace"))
    return found


def signature_header(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `X-Yingyan-Signature` value for `body` sent at `timestamp`."""
    return f"{SIGNATURE_VERSION}={sign(secret, timestamp, body)}"


def encode_event(event: Event) -> bytes:
    """The one serialisation of an event: compact, sorted keys, UTF-8 (what is signed)."""
    return json.dumps(
        dict(event), separators=(",", ":"), sort_keys=True, ensure_ascii=False
    ).encode("utf-8")


# --- webhooks -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Webhook:
    """One receiver. The secret is shared with it out of band (at least 16 random bytes)."""

    url: str
    secret: bytes = field(repr=False)
    timeout_s: float = 5.0
    max_attempts: int = 6
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0

    def __post_init__(self) -> None:
        _split_url(self.url)  # raises ConfigError for anything but http(s)://host
        if not isinstance(self.secret, bytes) or len(self.secret) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"webhook {self.display_url}: the secret must be at least {MIN_SECRET_BYTES} bytes"
            )
        if not self.timeout_s > 0:
            raise ConfigError(f"webhook {self.display_url}: timeout_s must be > 0")
        if self.max_attempts < 1:
            raise ConfigError(f"webhook {self.display_url}: max_attempts must be >= 1")
        if not 0 <= self.backoff_initial_s <= self.backoff_max_s:
            raise ConfigError(
                f"webhook {self.display_url}: need 0 <= backoff_initial_s <= backoff_max_s"
            )

    @property
    def display_url(self) -> str:
        """The URL as it may be shown or logged: credentials masked."""
        return redact_url(self.url) or ""

    def __repr__(self) -> str:
        return f"Webhook(url={self.display_url!r}, max_attempts={self.max_attempts})"

    def backoff(self, attempt: int) -> float:
        """Delay after failed attempt number `attempt` (1-based): initial · 2^(attempt-1)."""
        return float(min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1)))


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    delivered: bool
    attempts: int
    status: int | None  # the last HTTP status received, None if none was
    error: str | None  # why the last attempt failed (credentials redacted), None on success


@dataclass(frozen=True, slots=True)
class _Target:
    url: str  # without user-info
    authorization: str | None


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: int | None
    error: str | None
    retry: bool
    retry_after: float | None = None


def _split_url(url: str) -> _Target:
    """The request URL without user-info, and the Basic auth header the user-info stands for."""
    if not isinstance(url, str):
        raise ConfigError("a webhook URL must be a string")
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError as exc:
        raise ConfigError(f"webhook URL {shown} does not parse") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"webhook URL {shown}: only http:// and https:// URLs with a host")
    if any(c in url for c in "\r\n\t "):
        raise ConfigError(f"webhook URL {shown} contains whitespace")
    if "@" not in parts.netloc:
        return _Target(url, None)
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    bare = parts._replace(netloc=host).geturl()
    return _Target(bare, f"Basic {token}")


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH or not all(33 <= ord(c) <= 126 for c in key):
        raise ConfigError(
            f"an idempotency key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters"
        )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx is an answer, not an instruction: the signed body goes to the configured URL only."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER: Final = urllib.request.build_opener(_NoRedirect())


def deliver(
    webhook: Webhook,
    event: Event,
    idempotency_key: str,
    *,
    sleep: Sleep = time.sleep,
    clock: Clock = time.time,
    cancelled: Callable[[], bool] | None = None,
) -> DeliveryResult:
    """POST `event` to `webhook`, retrying transient failures with backoff.

    Every attempt carries the same body and idempotency key and a fresh timestamp and
    signature (a receiver's tolerance window applies to each attempt, not to the first).
    `cancelled` is checked before each retry (a stopping worker gives up waiting)."""
    _check_key(idempotency_key)
    target = _split_url(webhook.url)
    body = encode_event(event)
    outcome = _Outcome(None, "not attempted", retry=False)
    attempt = 0
    while attempt < webhook.max_attempts:
        attempt += 1
        outcome = _attempt(webhook, target, body, idempotency_key, attempt, int(clock()))
        if outcome.error is None:
            return DeliveryResult(True, attempt, outcome.status, None)
        if not outcome.retry or attempt >= webhook.max_attempts:
            break
        delay = webhook.backoff(attempt)
        if outcome.retry_after is not None:
            delay = min(webhook.backoff_max_s, outcome.retry_after)
        log.info(
            "webhook %s attempt %d failed (%s); retrying in %.1f s",
            webhook.display_url,
            attempt,
            outcome.error,
            delay,
        )
        if cancelled is not None and cancelled():
            return DeliveryResult(False, attempt, outcome.status, f"cancelled: {outcome.error}")
        sleep(delay)
        if cancelled is not None and cancelled():  # woken early by a stopping worker
            return DeliveryResult(False, attempt, outcome.status, f"cancelled: {outcome.error}")
    log.warning(
        "webhook %s: event %s not delivered after %d attempt(s): %s",
        webhook.display_url,
        idempotency_key,
        attempt,
        outcome.error,
    )
    return DeliveryResult(False, attempt, outcome.status, outcome.error)


def _attempt(
    webhook: Webhook, target: _Target, body: bytes, key: str, attempt: int, timestamp: int
) -> _Outcome:
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": USER_AGENT,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature_header(webhook.secret, timestamp, body),
        IDEMPOTENCY_HEADER: key,
        ATTEMPT_HEADER: str(attempt),
    }
    if target.authorization is not None:
        headers["Authorization"] = target.authorization
    request = urllib.request.Request(target.url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=webhook.timeout_s) as response:
            status = int(response.status)
            response.read(65536)  # let the receiver finish writing; the content is ignored
    except urllib.error.HTTPError as exc:
        status = int(exc.code)
        retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
        exc.close()
        retry = status >= 500 or status in RETRY_STATUSES
        return _Outcome(status, f"HTTP {status}", retry, retry_after if retry else None)
    except urllib.error.URLError as exc:
        return _Outcome(None, _describe(webhook, exc.reason), retry=True)
    except (OSError, http.client.HTTPException) as exc:  # resets, timeouts mid-response
        return _Outcome(None, _describe(webhook, exc), retry=True)
    if 200 <= status < 300:
        return _Outcome(status, None, retry=False)
    return _Outcome(status, f"HTTP {status}", retry=False)  # 1xx/3xx that urllib let through


def _describe(webhook: Webhook, reason: object) -> str:
    if isinstance(reason, socket.timeout | TimeoutError):
        text = f"timed out after {webhook.timeout_s:g} s"
    else:
        text = (
            f"{type(reason).__name__}: {reason}"
            if isinstance(reason, BaseException)
            else str(reason)
        )
    # The reason never should name the URL, but mask it in case a library puts it there.
    if webhook.url in text:
        text = text.replace(webhook.url, webhook.display_url)
    return text


def _retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date), None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# --- the outbox worker --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    submitted: int  # events accepted into the queue
    refused: int  # events refused because the queue was full (re-derive them from the rows)
    queued: int  # events waiting now
    delivered: int  # (event, webhook) pairs delivered
    failed: int  # (event, webhook) pairs given up on
    retried: int  # attempts beyond the first, over all deliveries


@dataclass(frozen=True, slots=True)
class _Job:
    event: Event
    key: str


class DeliveryWorker:
    """A thread delivering submitted events to every configured webhook, in order.

    Back-pressure: the queue is bounded and `submit` never blocks and never drops an accepted
    event: when the queue is full it returns False and counts the refusal. The caller (which has
    the alert row) logs it or re-sends later; the alert itself is already stored. Webhooks are
    served one after the other, so a dead receiver delays the others by its retries: give
    each receiver its own worker when that matters.
    """

    def __init__(
        self,
        webhooks: Sequence[Webhook],
        *,
        capacity: int = 1000,
        sleep: Sleep | None = None,
        clock: Clock = time.time,
        poll_s: float = 0.2,
    ) -> None:
        if capacity < 1:
            raise ConfigError("the delivery queue capacity must be >= 1")
        self._webhooks = tuple(webhooks)
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=capacity)
        self._halt = threading.Event()  # stop now, interrupt backoff
        self._drain = threading.Event()  # stop once the queue is empty
        self._sleep: Sleep = sleep if sleep is not None else self._halt.wait
        self._clock = clock
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._counts = {"submitted": 0, "refused": 0, "delivered": 0, "failed": 0, "retried": 0}
        self._thread = threading.Thread(target=self._run, name="yingyan-delivery", daemon=True)

    def __enter__(self) -> DeliveryWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def submit(self, event: Event, idempotency_key: str) -> bool:
        """Queue `event` for every webhook; False (counted) when the queue is full."""
        _check_key(idempotency_key)
        encode_event(event)  # a non-serialisable event fails here, in the caller, not later
        try:
            self._queue.put_nowait(_Job(event, idempotency_key))
        except queue.Full:
            self._count("refused")
            log.warning("delivery queue full: event %s refused", idempotency_key)
            return False
        self._count("submitted")
        return True

    def stop(self, *, drain: bool = True, timeout: float | None = 30.0) -> bool:
        """Stop the thread: after the queued events (`drain`) or at once (what is left stays
        queued, counted in `queued`). True if the thread ended within `timeout`."""
        (self._drain if drain else self._halt).set()
        if not self._thread.is_alive():
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stats(self) -> DeliveryStats:
        with self._lock:
            return DeliveryStats(queued=self._queue.qsize(), **self._counts)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                job = self._queue.get(timeout=self._poll_s)
            except queue.Empty:
                if self._drain.is_set():
                    return
                continue
            try:
                self._deliver(job)
            finally:
                self._queue.task_done()

    def _deliver(self, job: _Job) -> None:
        for webhook in self._webhooks:
            try:
                result = deliver(
                    webhook,
                    job.event,
                    job.key,
                    sleep=self._sleep,
                    clock=self._clock,
                    cancelled=self._halt.is_set,
                )
            except Exception:  # a bug must not end the thread and strand the queue
                log.exception("webhook %s: delivery of %s raised", webhook.display_url, job.key)
                self._count("failed")
                continue
            self._count("retried", result.attempts - 1)
            self._count("delivered" if result.delivered else "failed")


# --- Server-Sent Events -------------------------------------------------------------------


def _field(name: str, value: str) -> str:
    if not value or any(c in value for c in "\r\n\0"):
        raise ConfigError(f"an SSE {name} must be non-empty, on one line, without NUL")
    return value


def sse_event(event: str, data: Event, id: str | int | None = None) -> bytes:
    """One SSE message: `id:`, `event:`, the data as JSON on one `data:` line, a blank line.
    (JSON escapes newlines inside strings, so the data never spans lines.)"""
    lines = []
    if id is not None:
        lines.append(f"id: {_field('id', str(id))}")
    lines.append(f"event: {_field('event name', event)}")
    lines.append(f"data: {encode_event(data).decode('utf-8')}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def sse_retry(milliseconds: int) -> bytes:
    """Tells the browser how long to wait before reconnecting."""
    return f"retry: {max(0, int(milliseconds))}\n\n".encode()


def resume_id(last_event_id: str | None, default: int = 0) -> int:
    """The id to resume after, from a `Last-Event-ID` header. The stream only ever sends
    non-negative integers, so anything else is ignored (the stream starts from `default`)."""
    if last_event_id is None:
        return default
    text = last_event_id.strip()
    return int(text) if text.isascii() and text.isdigit() else default


Poll = Callable[[int], Awaitable[Sequence[tuple[int, Event]]] | Sequence[tuple[int, Event]]]


async def stream_events(
    poll: Poll,
    last_id: int = 0,
    *,
    event: str = "alert",
    interval_s: float = 1.0,
    heartbeat_s: float = 15.0,
    is_disconnected: Callable[[], Awaitable[bool] | bool] | None = None,
    retry_ms: int | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> AsyncIterator[bytes]:
    """SSE bytes for the items `poll(after_id)` returns, in id order, from `last_id` on.

    The database is the truth (camera workers write alerts from other processes), so the
    stream polls it rather than listening in this process. `poll` may be async or sync (a sync
    one runs in a thread, off the event loop); it returns `(id, data)` pairs with ids above
    its argument. After a batch it polls again at once; when nothing is new it waits
    `interval_s`, and sends a `: keep-alive` comment when nothing was sent for `heartbeat_s`
    (proxies close idle connections). It ends when `is_disconnected()` is true. A client that
    reconnects sends `Last-Event-ID`: pass `resume_id(header)` as `last_id`."""
    if retry_ms is not None:
        yield sse_retry(retry_ms)
    last_sent = clock()
    while not await _maybe_await(is_disconnected() if is_disconnected else False):
        items = await _call_poll(poll, last_id)
        fresh = sorted((item for item in items if item[0] > last_id), key=lambda item: item[0])
        for item_id, data in fresh:
            if item_id <= last_id:  # a repeated id within one batch
                continue
            yield sse_event(event, data, item_id)
            last_id = item_id
            last_sent = clock()
        if fresh:
            continue
        if clock() - last_sent >= heartbeat_s:
            yield HEARTBEAT
            last_sent = clock()
        await sleep(interval_s)


async def _maybe_await(value: Awaitable[bool] | bool) -> bool:
    return bool(await value) if inspect.isawaitable(value) else bool(value)


async def _call_poll(poll: Poll, after: int) -> Sequence[tuple[int, Event]]:
    result: Awaitable[Sequence[tuple[int, Event]]] | Sequence[tuple[int, Event]]
    if inspect.iscoroutinefunction(poll):
        result = poll(after)
    else:
        result = await asyncio.to_thread(_call, poll, after)
    if inspect.isawaitable(result):
        return await result
    return result


def _call(
    poll: Poll, after: int
) -> Awaitable[Sequence[tuple[int, Event]]] | Sequence[tuple[int, Event]]:
    return poll(after)
