"""Backpressure: what keeps the service answering, and its memory bounded, past its capacity.

Three bounds, outermost first:

- connections: `yingyan serve` has uvicorn serve at most `Settings.max_connections`
  connections (and requests) at once (its `limit_concurrency`): a request on one more is
  answered 503 by uvicorn itself, before the application runs (uvicorn's plain-text body, no
  `Retry-After`); uvicorn reads no more than 64 KiB of a body the application has not asked for;
- per-key rate limits: each API key may make so many requests per period, by its role
  (`Settings.rate_limits`, the `limits` library's notation, moving windows kept in memory of
  this process; default 50/second, admin keys none): over it a request is answered 429 with
  `Retry-After` (the seconds until the window frees a request) in the route's error shape,
  before its body is read. /health, /ready, /metrics and the docs are not limited;
- inference jobs: the pool admits at most `job_limit(settings)` jobs at once, running or
  waiting (`InferencePool.faces`): one more is answered 503 `overloaded` with `Retry-After`
  at once, and its image is dropped rather than queued.

The request body is already bounded (`max_upload_bytes`), so the images held by admitted jobs
stay under `job_limit × max_upload_bytes`, and the bodies being read under `max_connections ×
max_upload_bytes`: memory no longer grows with the load. Refusals for overload are not
audited (they say nothing of the key: the service is full, as for `inference_unavailable`);
a key refused for its rate limit is audited, at most once a minute per key with the number of
refusals since its last entry, so that a flood does not become a flood of audit writes.
"""

import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Annotated, Final

from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from yingyan.access.keys import ApiKey
from yingyan.api.errors import ApiError, error_response, status_of
from yingyan.api.inference import InferencePool
from yingyan.api.observability import Metrics
from yingyan.api.security import current_key
from yingyan.api.state import AppState, get_state
from yingyan.settings import Settings

JOBS_PER_WORKER: Final = 4  # default bound: jobs admitted per worker process...
MIN_JOBS: Final = 16  # ...and never fewer (workers=0 runs one thread)
AUDIT_EVERY_S: Final = 60.0  # a rate-limited key's refusals are audited once per this


def job_limit(settings: Settings) -> int:
    """Inference jobs admitted at once: `max_queued_jobs`, else 4 per worker, at least 16."""
    if settings.max_queued_jobs is not None:
        return settings.max_queued_jobs
    return max(MIN_JOBS, JOBS_PER_WORKER * settings.workers)


def parse_limits(text: str) -> list[RateLimitItem]:
    """`"20/second; 600/minute"` as limits items ([] for ""); ValueError if malformed."""
    return list(parse_many(text)) if text.strip() else []


class RateLimiter:
    """Requests per API key within moving windows, with the limits of the key's role. A request
    counts only when every limit of its role has room: a refused one uses no quota, so a key
    that waits `Retry-After` seconds gets through."""

    def __init__(self, by_role: Mapping[str, str]) -> None:
        self.limits: dict[str, list[RateLimitItem]] = {
            role: parse_limits(text) for role, text in by_role.items()
        }
        self._windows = MovingWindowRateLimiter(MemoryStorage())
        self.refused: dict[str, int] = {}  # refusals by role, since start
        self._audited: dict[int, tuple[float, int]] = {}  # key id: (last entry, refused since)

    def acquire(self, key: ApiKey) -> tuple[RateLimitItem, int] | None:
        """None if `key` may make one more request now (it is counted), else the limit it is
        over and the whole seconds until that limit has room again (at least 1)."""
        items = self.limits.get(key.role, [])
        ident = str(key.id)
        # No await in here: on the event loop, testing then hitting every window is atomic.
        for item in items:
            if not self._windows.test(item, ident):
                reset = self._windows.get_window_stats(item, ident).reset_time
                self.refused[key.role] = self.refused.get(key.role, 0) + 1
                return item, max(1, math.ceil(reset - time.time()))
        for item in items:
            self._windows.hit(item, ident)
        return None

    def audit_due(self, key: ApiKey) -> int | None:
        """The refusals of `key` not yet audited (this one included) if an entry is due now,
        else None (the refusal is counted for the next entry)."""
        now = time.monotonic()
        last, since = self._audited.get(key.id, (-math.inf, 0))
        if now - last >= AUDIT_EVERY_S:
            self._audited[key.id] = (now, 0)
            return since + 1
        self._audited[key.id] = (last, since + 1)
        return None


async def rate_limit(
    request: Request,
    state: Annotated[AppState, Depends(get_state)],
    key: Annotated[ApiKey, Depends(current_key)],
) -> None:
    """Dependency of every route under a key (added to their routers): 429 over the key's
    quota. The key is authenticated once per request (FastAPI caches `current_key`)."""
    limiter: RateLimiter = request.app.state.rate_limiter
    over = limiter.acquire(key)
    if over is None:
        return
    item, retry_after = over
    refusals = limiter.audit_due(key)
    if refusals is not None:
        route = getattr(request.scope.get("route"), "path", request.url.path)
        details = {"reason": "rate_limited", "role": key.role, "limit": str(item)}
        await state.record(
            key,
            f"{request.method} {route}",
            outcome="refused",
            details=details | {"refusals": refusals},
        )
    raise ApiError(
        "rate_limited",
        f"this key is over its rate limit ({item} for role {key.role!r}); retry in {retry_after} s",
        retry_after=retry_after,
    )


PER_KEY: Final = [Depends(rate_limit)]  # `include_router(..., dependencies=PER_KEY)`


async def hold_admission(state: Annotated[AppState, Depends(get_state)]) -> AsyncIterator[None]:
    """Dependency of the routes that receive images: their place in the inference pool is
    taken when the request arrives, before its body is read, so under overload a refusal
    (503) costs neither the upload's parsing nor its memory; the jobs of the request then
    run in that one place."""
    with state.inference.admission():
        yield


ADMITTED: Final = [Depends(hold_admission)]  # `@router.post(..., dependencies=ADMITTED)`


def _admitting(route: BaseRoute) -> bool:
    return isinstance(route, APIRoute) and any(
        d.dependency is hold_admission for d in route.dependencies
    )


class AdmissionMiddleware:
    """Takes the place of a request for an image route (one with `ADMITTED`) before anything
    else runs: under overload the refusal then costs no key lookup (a database read in a
    thread), no rate-limit check and no body, only this. Refusing before authenticating
    tells a stranger only that the service is busy. The route's own dependency finds the place
    held and takes no second one."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self._routes = [r for r in routes if _admitting(r)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = getattr(scope.get("app"), "state", None)
        yingyan = getattr(state, "yingyan", None)
        if scope["type"] != "http" or not isinstance(yingyan, AppState) or not self._wants(scope):
            await self.app(scope, receive, send)
            return
        try:
            admission = yingyan.inference.admission()
            admission.__enter__()
        except ApiError as refused:
            response = error_response(
                Request(scope),
                status_of(refused.code),
                refused.code,
                refused.message,
                retry_after=refused.retry_after,
            )
            await response(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            admission.__exit__(None, None, None)

    def _wants(self, scope: Scope) -> bool:
        return any(r.matches(scope)[0] is Match.FULL for r in self._routes)


class LoadCollector(Collector):
    """Gauges of the inference pool's admissions and counters of the refusals, read at each
    scrape from the running app (nothing while it starts)."""

    def __init__(self, pool: Callable[[], InferencePool | None], limiter: RateLimiter) -> None:
        self.pool = pool
        self.limiter = limiter

    def describe(self) -> Iterator[Metric]:
        yield from self._families(None)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self.pool())

    def _families(self, pool: InferencePool | None) -> Sequence[Metric]:
        admitted = GaugeMetricFamily(
            "yingyan_inference_jobs", "inference jobs admitted now (running or waiting)"
        )
        peak = GaugeMetricFamily(
            "yingyan_inference_jobs_peak", "most inference jobs admitted at once since start"
        )
        bound = GaugeMetricFamily(
            "yingyan_inference_jobs_limit", "inference jobs admitted at most (max_queued_jobs)"
        )
        overloaded = CounterMetricFamily(
            "yingyan_inference_overloaded", "inference jobs refused: the pool was full (503)"
        )
        limited = CounterMetricFamily(
            "yingyan_rate_limited",
            "requests refused over their key's rate limit (429), by role",
            labels=["role"],
        )
        if pool is not None:
            admitted.add_metric([], pool.admitted)
            peak.add_metric([], pool.peak_admitted)
            if pool.max_jobs is not None:
                bound.add_metric([], pool.max_jobs)
            overloaded.add_metric([], pool.overloaded)
        for role, count in sorted(self.limiter.refused.items()):
            limited.add_metric([role], count)
        return [admitted, peak, bound, overloaded, limited]


def install(app: FastAPI, settings: Settings, metrics: Metrics) -> RateLimiter:
    """The app's rate limiter (`app.state.rate_limiter`, read by `rate_limit`) and the load
    series in its metrics. The routers under a key take `PER_KEY` as dependencies."""
    limiter = RateLimiter(settings.rate_limits)
    app.state.rate_limiter = limiter

    def pool() -> InferencePool | None:
        state = getattr(app.state, "yingyan", None)
        return state.inference if isinstance(state, AppState) else None

    metrics.registry.register(LoadCollector(pool, limiter))
    return limiter
