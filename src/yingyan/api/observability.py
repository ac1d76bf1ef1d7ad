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
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
    """One JSON object per line: time, level, logger, message and the record's extras."""

    _STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in self._STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
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
    streams it chunked, before the application buffers it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(send)
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
                await self._refuse(send)

        try:
            await self.app(scope, limited, guarded_send)
        except PayloadTooLargeError:
            if not refused:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "payload_too_large",
                    "message": f"request body over the {self.limit} byte limit",
                },
                "message": f"request body over the {self.limit} byte limit",
            }
        ).encode()
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
