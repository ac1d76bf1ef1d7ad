"""Prometheus metrics (one registry per app, no process-global collectors) and structured JSON
logs. A request log line names the route template, never a path with ids in it, and never
carries image data."""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from yingyan.api.errors import COMPREFACE_PREFIXES

log = logging.getLogger("yingyan.access")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The service's series. None carries a gallery label (names would leak into the scraper
    and grow without bound), so every series sums all galleries: /metrics is for keys scoped
    to no gallery."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "yingyan_http_requests",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "yingyan_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "yingyan_inference_seconds",
            "time in the inference workers per image",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.faces = Counter(
            "yingyan_faces_detected", "faces detected in request images", registry=self.registry
        )
        self.audit = Counter(
            "yingyan_audit_entries", "audit entries appended", ["outcome"], registry=self.registry
        )
        # Set by the app once its database is open: read at each scrape.
        self.camera_source: Callable[[], Iterable[CameraSample]] | None = None
        self.registry.register(CameraCollector(self))

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True, slots=True)
class CameraSample:
    """One camera as a scrape sees it: its worker's last heartbeat in the database (written on
    whichever host runs the worker) and, when this process supervises the worker, its state."""

    session: str
    camera: str
    stats: Mapping[str, Any] = field(default_factory=dict)
    heartbeat_age_s: float | None = None
    restarts: int | None = None  # None: the worker is not supervised by this process
    running: bool | None = None


# (metric name, help, stats key): gauges from the heartbeat's source statistics.
CAMERA_GAUGES: Final = (
    ("yingyan_camera_connected", "1 when the camera's source is connected", "connected"),
    ("yingyan_camera_input_fps", "frames decoded per second", "input_fps"),
    ("yingyan_camera_processed_fps", "frames the pipeline handled per second", "processed_fps"),
    ("yingyan_camera_lag_seconds", "age of the frame being processed", "lag_s"),
    ("yingyan_camera_dropped_frames", "frames skipped to stay live (since start)", "dropped"),
    ("yingyan_camera_reconnects", "source reconnections (since the worker started)", "reconnects"),
)
CAMERA_LABELS: Final = ("session", "camera")


class CameraCollector(Collector):
    """Camera gauges labelled by session and camera (operator-chosen names, a handful per
    deployment, not galleries), read at scrape time; a failed read leaves them out for that
    scrape rather than failing /metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        source = self.metrics.camera_source
        families = self._families()
        if source is not None:
            try:
                samples = list(source())
            except Exception:
                log.exception("camera metrics: reading camera status failed")
                samples = []
            for sample in samples:
                self._add(families, sample)
        yield from families

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        gauges = [GaugeMetricFamily(n, h, labels=CAMERA_LABELS) for n, h, _ in CAMERA_GAUGES]
        return [
            *gauges,
            GaugeMetricFamily(
                "yingyan_camera_heartbeat_age_seconds",
                "seconds since the camera's worker last reported",
                labels=CAMERA_LABELS,
            ),
            GaugeMetricFamily(
                "yingyan_camera_worker_restarts",
                "restarts of the camera's worker by this process's supervisor",
                labels=CAMERA_LABELS,
            ),
            GaugeMetricFamily(
                "yingyan_camera_worker_running",
                "1 when this process's worker for the camera runs",
                labels=CAMERA_LABELS,
            ),
        ]

    @staticmethod
    def _add(families: list[GaugeMetricFamily], sample: CameraSample) -> None:
        labels = [sample.session, sample.camera]
        for family, (_, _, key) in zip(families, CAMERA_GAUGES, strict=False):
            value = sample.stats.get(key)
            if isinstance(value, bool | int | float):
                family.add_metric(labels, float(value))
        age, restarts, running = families[len(CAMERA_GAUGES) :]
        if sample.heartbeat_age_s is not None:
            age.add_metric(labels, sample.heartbeat_age_s)
        if sample.restarts is not None:
            restarts.add_metric(labels, float(sample.restarts))
        if sample.running is not None:
            running.add_metric(labels, float(sample.running))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `time` (UTC, ISO-8601 with milliseconds, e.g.
    `2026-12-03T13:14:51.123Z`), `level`, `logger`, `message`, then the record's extras, and
    `exception` / `stack` when there is one. The fixed fields always win: an extra with one of
    their names is kept as `extra_<name>` (prefixed again while that is taken). The standard
    library already refuses extras named like LogRecord attributes, `message` among them."""

    FIXED: Final = frozenset({"time", "level", "logger", "message", "exception", "stack"})
    _STANDARD: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extras = {k: v for k, v in record.__dict__.items() if k not in self._STANDARD}
        entry.update({k: v for k, v in extras.items() if k not in self.FIXED})
        for key in sorted(extras.keys() & self.FIXED):  # renamed after every own name is in
            name = f"extra_{key}"
            while name in entry or name in self.FIXED:
                name = f"extra_{name}"
            entry[name] = extras[key]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def utc_timestamp(created: float) -> str:
    """A `LogRecord.created` as UTC ISO-8601 with milliseconds and a `Z`."""
    moment = datetime.fromtimestamp(created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class UtcTextFormatter(logging.Formatter):
    """The plain-text format (`LOG_JSON=false`), its time in UTC like the JSON lines'."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_timestamp(record.created)


def configure_logging(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else UtcTextFormatter())
    root = logging.getLogger("yingyan")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class ObservabilityMiddleware:
    """Times each request, counts it by route template and status, logs one line, and gives
    it a request id (taken from `x-request-id` if the caller sent a sane one)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": method,
                    "route": route,
                    "status": status,
                    "ms": round(elapsed * 1000, 1),
                    "key": scope["state"].get("key_prefix"),
                },
            )


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id" and 0 < len(value) <= 64 and value.isascii():
            text = bytes(value).decode()
            if text.replace("-", "").isalnum():
                return text
    return uuid.uuid4().hex


class BodyLimitMiddleware:
    """Refuses a request body over `limit` bytes with 413, whether it announces its length or
    streams it chunked, before the application buffers it. The body is the route's error
    shape: `{"error": {"code": "payload_too_large", "message", "request_id"}}`, on the
    CompreFace routes `{"message", "code"}`.

    Why not the framework's own limit (`FastAPI(max_body_size=...)`, Starlette's
    `RequestBodyLimitMiddleware`, both in the installed FastAPI 0.165 / Starlette 1.10;
    uvicorn has none): it lets the application run, and with an announced `Content-Length`
    over the limit it replaces whatever the application answered with a plain-text
    `Content Too Large`, no JSON, on every route. A route that reads no body (an unknown path,
    a DELETE) runs to its end first, its side effects committed while the caller is told
    413. Only a chunked body gets a JSON 413 from the app's handlers, which does not give the
    limit. `tests/test_body_limit.py` runs it on the service and keeps these findings, so an
    upgrade that changes them shows. Here an announced length over the limit is refused
    before the application runs, and a chunked body is cut off at the first chunk past it
    (the route has then run only as far as reading it)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(scope, send)
                return
        received = 0
        too_large = False
        refused = False

        async def limited() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    too_large = True
                    raise PayloadTooLargeError(self.limit)
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever the application made of the interrupted body (FastAPI turns a body
            # read error into a 400), the caller gets the 413 that explains it.
            nonlocal refused
            if not too_large:
                await send(message)
            elif not refused:
                refused = True
                await self._refuse(scope, send)

        try:
            await self.app(scope, limited, guarded_send)
        except PayloadTooLargeError:
            if not refused:
                await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        code, message = "payload_too_large", f"request body over the {self.limit} byte limit"
        content: dict[str, object]
        if str(scope.get("path", "")).startswith(COMPREFACE_PREFIXES):
            content = {"message": message, "code": code}
        else:
            request_id = scope.get("state", {}).get("request_id")
            content = {"error": {"code": code, "message": message, "request_id": request_id}}
        body = json.dumps(content).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class PayloadTooLargeError(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")
