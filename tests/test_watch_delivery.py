"""Webhook delivery against a real local HTTP receiver, the outbox worker and the SSE stream."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from yingyan.errors import ConfigError
from yingyan.watch.delivery import (
    HEARTBEAT,
    DeliveryWorker,
    Webhook,
    deliver,
    encode_event,
    resume_id,
    sign,
    signature_header,
    sse_event,
    stream_events,
    verify,
)

SECRET = b"0123456789abcdef-webhook-secret"
EVENT = {"alert_id": 42, "camera": "gate-3", "state": "pending", "note": "línea\nzwei"}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool


@dataclass
class Receiver:
    """A webhook receiver: verifies each request with `verify`, answers from a script."""

    script: list[Any] = field(default_factory=list)  # int status, "reset", ("sleep", s), (st, hdrs)
    received: list[Received] = field(default_factory=list)
    port: int = 0

    def url(self, path: str = "/hook", userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}{path}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            ok = verify(
                SECRET,
                self.headers["X-Yingyan-Timestamp"],
                body,
                self.headers["X-Yingyan-Signature"],
            )
            with lock:
                state.received.append(Received(self.path, dict(self.headers), body, ok))
                action = state.script.pop(0) if state.script else 200
            if action == "reset":  # close with RST, no answer
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
                self.close_connection = True
                return
            if isinstance(action, tuple) and action[0] == "sleep":
                time.sleep(action[1])
                action = 200
            status, headers = action if isinstance(action, tuple) else (action, {})
            if not ok:
                status = 401
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.handle_error = lambda *a: None  # type: ignore[method-assign]
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def hook(url: str, **kw: Any) -> Webhook:
    return Webhook(url, SECRET, **kw)


# --- signatures ---------------------------------------------------------------------------


def test_signature_is_hmac_over_timestamp_and_body() -> None:
    import hashlib
    import hmac

    body = encode_event(EVENT)
    expected = hmac.new(SECRET, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1700000000, body) == expected
    assert verify(SECRET, 1700000000, body, f"v1={expected}", now=1700000010)
    assert verify(SECRET, "1700000000", body, expected, now=1700000010)  # bare hex, str header


def test_tampered_body_wrong_secret_and_garbage_fail() -> None:
    body = encode_event(EVENT)
    sig = signature_header(SECRET, 1000, body)
    assert not verify(SECRET, 1000, body.replace(b"42", b"43"), sig, now=1000)
    assert not verify(b"another-secret-of-16+b", 1000, body, sig, now=1000)
    assert not verify(SECRET, 1001, body, sig, now=1000)  # timestamp is signed
    assert not verify(SECRET, "soon", body, sig, now=1000)
    assert not verify(SECRET, 1000, body, "v1=zz", now=1000)
    assert not verify(SECRET, 1000, body, "", now=1000)
    assert not verify(SECRET, 1000, body, "v0=" + sig[3:], now=1000)
    assert verify(SECRET, 1000, body, "v1=deadbeef, " + sig, now=1000)  # rotation


def test_old_or_future_timestamps_fail() -> None:
    body = encode_event(EVENT)
    sig = signature_header(SECRET, 1000, body)
    assert verify(SECRET, 1000, body, sig, now=1300)
    assert not verify(SECRET, 1000, body, sig, now=1301)
    assert not verify(SECRET, 1000, body, sig, now=699)
    assert verify(SECRET, 1000, body, sig, now=5000, tolerance_s=4000)
    assert not verify(SECRET, int(time.time()) - 3600, body, sig)  # default clock


# --- webhooks -----------------------------------------------------------------------------


def test_retries_5xx_then_delivers_with_the_same_key_and_body(receiver: Receiver) -> None:
    receiver.script = [503, 503]
    sleeps = Sleeps()
    result = deliver(hook(receiver.url()), EVENT, "alert-42-v1", sleep=sleeps)
    assert result.delivered and result.attempts == 3 and result.status == 200
    assert result.error is None
    assert sleeps == [1.0, 2.0]  # exponential backoff, never after the last attempt
    assert len(receiver.received) == 3
    assert all(r.verified for r in receiver.received)
    assert {r.headers["Idempotency-Key"] for r in receiver.received} == {"alert-42-v1"}
    assert [r.headers["X-Yingyan-Attempt"] for r in receiver.received] == ["1", "2", "3"]
    assert {r.body for r in receiver.received} == {encode_event(EVENT)}
    assert json.loads(receiver.received[-1].body) == EVENT
    assert receiver.received[0].headers["Content-Type"].startswith("application/json")


def test_connection_reset_and_retry_after_are_retried(receiver: Receiver) -> None:
    receiver.script = ["reset", (429, {"Retry-After": "7"}), (503, {"Retry-After": "3600"})]
    sleeps = Sleeps()
    result = deliver(hook(receiver.url(), backoff_max_s=30), EVENT, "k-1", sleep=sleeps)
    assert result.delivered and result.attempts == 4
    assert sleeps == [1.0, 7.0, 30.0]  # backoff, Retry-After, Retry-After capped
    assert {r.headers["Idempotency-Key"] for r in receiver.received} == {"k-1"}


def test_timeout_is_retried(receiver: Receiver) -> None:
    receiver.script = [("sleep", 0.6)]
    sleeps = Sleeps()
    result = deliver(hook(receiver.url(), timeout_s=0.2), EVENT, "k-2", sleep=sleeps)
    assert result.delivered and result.attempts == 2 and sleeps == [1.0]


def test_fresh_timestamp_each_attempt(receiver: Receiver) -> None:
    receiver.script = [500]
    now = iter([time.time() - 100, time.time()])
    result = deliver(hook(receiver.url()), EVENT, "k-3", sleep=Sleeps(), clock=lambda: next(now))
    assert result.delivered
    stamps = [int(r.headers["X-Yingyan-Timestamp"]) for r in receiver.received]
    assert stamps[1] - stamps[0] == 100


def test_4xx_is_not_retried(receiver: Receiver) -> None:
    receiver.script = [400]
    sleeps = Sleeps()
    result = deliver(hook(receiver.url()), EVENT, "k-4", sleep=sleeps)
    assert not result.delivered and result.attempts == 1 and result.status == 400
    assert result.error == "HTTP 400" and sleeps == []


def test_redirect_is_not_followed(receiver: Receiver) -> None:
    receiver.script = [(307, {"Location": f"http://127.0.0.1:{receiver.port}/elsewhere"})]
    result = deliver(hook(receiver.url()), EVENT, "k-5", sleep=Sleeps())
    assert not result.delivered and result.status == 307 and result.attempts == 1
    assert [r.path for r in receiver.received] == ["/hook"]


def test_gives_up_after_max_attempts(receiver: Receiver) -> None:
    receiver.script = [502] * 10
    sleeps = Sleeps()
    result = deliver(
        hook(receiver.url(), max_attempts=4, backoff_max_s=3), EVENT, "k", sleep=sleeps
    )
    assert not result.delivered and result.attempts == 4 and result.status == 502
    assert sleeps == [1.0, 2.0, 3.0]


def test_url_credentials_become_basic_auth_and_are_redacted(receiver: Receiver) -> None:
    result = deliver(hook(receiver.url(userinfo="ops:s%40cret@")), EVENT, "k-6", sleep=Sleeps())
    assert result.delivered
    auth = receiver.received[0].headers["Authorization"]
    assert base64.b64decode(auth.removeprefix("Basic ")) == b"ops:s@cret"

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    dead = hook(f"http://ops:hunter2@127.0.0.1:{closed}/hook?token=tok123", max_attempts=2)
    result = deliver(dead, EVENT, "k-7", sleep=Sleeps())
    assert not result.delivered and result.attempts == 2 and result.status is None
    assert result.error and "refused" in result.error.lower()
    shown = repr(dead) + dead.display_url + result.error
    assert "hunter2" not in shown and "tok123" not in shown and "ops:***@" in shown


@pytest.mark.parametrize(
    "url", ["ftp://example.org/hook", "file:///etc/passwd", "example.org/hook", "http:///x"]
)
def test_only_http_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        hook(url)


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigError):
        Webhook("https://example.org/h", b"short")
    with pytest.raises(ConfigError):
        hook("https://example.org/h", max_attempts=0)
    with pytest.raises(ConfigError, match="idempotency"):
        deliver(hook("https://example.org/h"), EVENT, "bad\r\nX-Injected: 1")


# --- worker -------------------------------------------------------------------------------


def test_worker_queue_refuses_when_full_and_delivers_the_rest(receiver: Receiver) -> None:
    other = hook(receiver.url("/second"))
    worker = DeliveryWorker([hook(receiver.url()), other], capacity=2, sleep=Sleeps())
    assert worker.submit({"alert_id": 1}, "a-1")
    assert worker.submit({"alert_id": 2}, "a-2")
    assert not worker.submit({"alert_id": 3}, "a-3")  # full: refused, not dropped silently
    stats = worker.stats()
    assert (stats.submitted, stats.refused, stats.queued) == (2, 1, 2)

    receiver.script = [503]  # the first delivery is retried once
    worker.start()
    assert worker.stop(drain=True, timeout=20)
    stats = worker.stats()
    assert (stats.delivered, stats.failed, stats.retried, stats.queued) == (4, 0, 1, 0)
    got = [(r.path, r.headers["Idempotency-Key"]) for r in receiver.received if r.verified]
    assert sorted(set(got)) == [
        ("/hook", "a-1"),
        ("/hook", "a-2"),
        ("/second", "a-1"),
        ("/second", "a-2"),
    ]


def test_worker_counts_failures_and_stop_interrupts_backoff(receiver: Receiver) -> None:
    receiver.script = [400, 503, 503, 503]
    with DeliveryWorker([hook(receiver.url(), backoff_initial_s=30, backoff_max_s=60)]) as w:
        assert w.submit({"alert_id": 1}, "f-1")  # 400: failed at once
        assert w.submit({"alert_id": 2}, "f-2")  # 503: waits 30 s (real, interruptible)
        deadline = time.monotonic() + 10
        while len(receiver.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert w.stop(drain=False, timeout=10)  # does not wait out the backoff
    stats = w.stats()
    assert stats.failed == 2 and stats.delivered == 0 and stats.retried == 0
    assert len(receiver.received) == 2  # no attempt after the stop


# --- SSE ----------------------------------------------------------------------------------


def test_sse_event_format() -> None:
    raw = sse_event("alert", {"b": 1, "a": "x\ny"}, "17")
    assert raw == b'id: 17\nevent: alert\ndata: {"a":"x\\ny","b":1}\n\n'
    assert sse_event("alert", {}, None) == b"event: alert\ndata: {}\n\n"
    assert HEARTBEAT == b": keep-alive\n\n"
    with pytest.raises(ConfigError):
        sse_event("alert\ndata: forged", {})
    with pytest.raises(ConfigError):
        sse_event("alert", {}, "1\n2")
    assert resume_id("12") == 12 and resume_id(None) == 0 and resume_id("x", 5) == 5


def parse_sse(chunks: list[bytes]) -> list[dict[str, str]]:
    out = []
    for chunk in chunks:
        text = chunk.decode()
        assert text.endswith("\n\n")
        msg = {}
        for line in text.strip("\n").split("\n"):
            name, _, value = line.partition(": ")
            msg[name] = value
        out.append(msg)
    return out


class Feed:
    """Rows as a table would hold them, written 'by another process' while streaming."""

    def __init__(self, rows: list[tuple[int, dict[str, Any]]]) -> None:
        self.rows = rows
        self.calls: list[int] = []

    def __call__(self, after: int) -> list[tuple[int, dict[str, Any]]]:
        self.calls.append(after)
        page = sorted((r for r in self.rows if r[0] > after), key=lambda r: r[0])[:2]
        return page[::-1]  # ORDER BY id LIMIT 2, handed over in any order


def run_stream(feed: Any, last_id: int, *, polls: int, **kw: Any) -> list[bytes]:
    async def scenario() -> list[bytes]:
        now = [0.0]

        async def fake_sleep(s: float) -> None:
            now[0] += s
            if not any(r[0] == 9 for r in feed.rows):
                feed.rows.append((9, {"alert_id": 9}))  # a new alert arrives meanwhile

        def disconnected() -> bool:
            return len(feed.calls) >= polls

        gen = stream_events(
            feed,
            last_id,
            interval_s=1.0,
            sleep=fake_sleep,
            clock=lambda: now[0],
            is_disconnected=disconnected,
            **kw,
        )
        return [chunk async for chunk in gen]

    return asyncio.run(scenario())


def test_stream_yields_in_order_resumes_and_heartbeats() -> None:
    rows = [(5, {"alert_id": 5}), (3, {"alert_id": 3}), (7, {"alert_id": 7})]
    chunks = run_stream(Feed(list(rows)), 0, polls=8, heartbeat_s=2.0, retry_ms=3000)
    assert chunks[0] == b"retry: 3000\n\n"
    msgs = parse_sse([c for c in chunks[1:] if c != HEARTBEAT])
    assert [m["id"] for m in msgs] == ["3", "5", "7", "9"]
    assert all(m["event"] == "alert" for m in msgs)
    assert [json.loads(m["data"])["alert_id"] for m in msgs] == [3, 5, 7, 9]
    assert HEARTBEAT in chunks

    feed = Feed(list(rows))
    resumed = parse_sse([c for c in run_stream(feed, 5, polls=4, heartbeat_s=99) if c != HEARTBEAT])
    assert [m["id"] for m in resumed] == ["7", "9"]  # Last-Event-ID 5: nothing repeated
    assert feed.calls[0] == 5


def test_stream_accepts_async_poll_and_ends_on_disconnect() -> None:
    async def scenario() -> list[bytes]:
        async def poll(after: int) -> list[tuple[int, dict[str, Any]]]:
            return [(i, {"n": i}) for i in (1, 2) if i > after]

        seen = 0

        async def disconnected() -> bool:
            return seen >= 2

        out = []
        async for chunk in stream_events(poll, 0, interval_s=0.001, is_disconnected=disconnected):
            out.append(chunk)
            seen += 1
        return out

    chunks = asyncio.run(scenario())
    assert [m["id"] for m in parse_sse(chunks)] == ["1", "2"]


def test_stream_skips_ids_already_sent_and_waits_when_nothing_is_new() -> None:
    rows = [(1, {"n": 1}), (2, {"n": 2}), (2, {"n": 2})]
    calls: list[int] = []
    sleeps: list[float] = []

    def sloppy_poll(after: int) -> list[tuple[int, dict[str, Any]]]:
        calls.append(after)
        return rows  # ignores `after`: the stream must not repeat what it sent

    async def fake_sleep(s: float) -> None:
        sleeps.append(s)

    async def scenario() -> list[bytes]:
        gen = stream_events(
            sloppy_poll,
            0,
            interval_s=0.5,
            heartbeat_s=1e9,
            sleep=fake_sleep,
            is_disconnected=lambda: len(calls) >= 4,
        )
        return [chunk async for chunk in gen]

    msgs = parse_sse(asyncio.run(scenario()))
    assert [m["id"] for m in msgs] == ["1", "2"]
    assert calls == [0, 2, 2, 2] and sleeps == [0.5, 0.5, 0.5]
