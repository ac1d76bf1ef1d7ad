"""Model inference off the event loop: a pool of worker processes, each with its own Engine.

Processes rather than threads because dlib's HOG detector holds the GIL: in a thread it would
stall every request while it scans an image. Workers are spawned (not forked: the server has
threads) and load their models in the initializer, so the first request does not pay for it.
Images cross as bytes and faces come back as picklable dataclasses; nothing is kept.

Each worker holds one engine per model the deployment can probe with (the main recognizer and
`Settings.also_recognizers`): a job names the model its gallery holds, so a gallery moved to
another recognizer is served with probes of that model at once, and never compared across two.

A worker that dies (killed, out of memory, a crash in native code) breaks the whole
ProcessPoolExecutor: every job in it fails and it accepts no more. The pool is then replaced
by a new one (at most once per broken pool, however many requests saw it break) and the
requests that were in it are run again once: inference is idempotent, so a retry is safe.
While the replacement loads its models the pool is not ready (`/ready` answers 503).

The pool admits at most `max_jobs` jobs at once, running or waiting: the bound is checked
before a job (and its image bytes) is handed to the executor, whose own queue is unbounded,
and one more is refused at once with `overloaded` (503, `Retry-After`) instead of waiting. So
the images the pool holds stay under `max_jobs × max_upload_bytes` whatever the load (see
api/backpressure.py for the other bounds).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from yingyan.api.errors import ApiError
from yingyan.config import EngineConfig
from yingyan.detection.base import largest
from yingyan.engine import Engine
from yingyan.errors import NoFaceError, SeveralFacesError, TooManyFacesError
from yingyan.gallery.factory import EnginesByModel
from yingyan.types import Face, ModelId

T = TypeVar("T")
# Set while a request holds an admission (taken when it arrived, before its body was read):
# its jobs run without being admitted again, so a two-image verify counts once.
_holds_admission: ContextVar[bool] = ContextVar("holds_admission", default=False)
log = logging.getLogger("yingyan.api")
ATTEMPTS = 2  # a job whose pool broke is run once more on the replacement
RETRY_AFTER_S = 1  # told to a request refused for a full pool: a slot frees within a job's time

# The engines of this worker process, set once by `_start_worker`. Module state is how a
# process pool hands per-process resources to its jobs; the server process never reads it
# except when workers=0 (one in-process thread).
_engines: EnginesByModel | None = None


@dataclass(frozen=True, slots=True)
class EngineInfo:
    model: ModelId  # the main recognizer's: new galleries are of this model
    description: dict[str, str]
    models: tuple[str, ...] = ()  # every model the workers can make probes of, main first


def _start_worker(configs: Sequence[EngineConfig]) -> None:
    global _engines
    _engines = EnginesByModel(configs)
    for engine in _engines.all():
        engine.describe()  # loads detector and recognizer now, not on the first request


def _worker_engine(model: str | None = None) -> Engine:
    """The engine making probes of `model` (None: the main one); ModelMismatchError if this
    deployment has no recognizer of that model."""
    if _engines is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("inference worker used before its initializer ran")
    return _engines.main if model is None else _engines.engine_for(model)


def _info() -> EngineInfo:
    engine = _worker_engine()
    assert _engines is not None
    models = tuple(str(e.model_id) for e in _engines.all())
    return EngineInfo(engine.model_id, engine.describe(), models)


def _faces(data: bytes, embed: bool, max_faces: int, policy: str, engine: Engine) -> list[Face]:
    """Decode, detect, refuse too many faces before embedding any, then align/assess/embed
    with `engine`.

    policy: "all" (every face), "largest" (one), "single" (exactly one, else an error)."""
    image = engine.load(data)
    detections = engine.detect(image)
    if len(detections) > max_faces:
        raise TooManyFacesError(f"{len(detections)} faces found; the limit is {max_faces}")
    if policy != "all":
        if not detections:
            raise NoFaceError("no face found in the image")
        if policy == "single" and len(detections) > 1:
            raise SeveralFacesError(f"{len(detections)} faces found; exactly one is required")
        chosen = largest(detections)
        assert chosen is not None
        detections = [chosen]
    return engine.faces(image, detections, embed=embed)


def _with_engine(job: Callable[[Engine], T], model: str | None) -> T:
    return job(_worker_engine(model))


class InferencePool:
    """`await pool.faces(image_bytes)` runs the engine in a worker and returns its faces."""

    def __init__(
        self,
        configs: EngineConfig | Sequence[EngineConfig],
        workers: int,
        max_faces: int,
        max_jobs: int | None = None,
    ) -> None:
        self.configs = (configs,) if isinstance(configs, EngineConfig) else tuple(configs)
        self.workers = workers
        self.max_faces = max_faces
        self.max_jobs = max_jobs  # jobs admitted at once, running or waiting (None: no bound)
        self.admitted = 0  # jobs admitted now
        self.peak_admitted = 0  # the most admitted at once since start
        self.overloaded = 0  # jobs refused for a full pool since start
        self.info: EngineInfo | None = None
        self.replacements = 0  # pools replaced since start (each after a worker died)
        self._executor = self._new_executor()
        self._generation = 0  # bumped with each replacement: who saw which pool break
        self._replacing = asyncio.Lock()
        self._warming = False
        self._healing: asyncio.Task[None] | None = None

    def _new_executor(self) -> Executor:
        if self.workers == 0:
            return ThreadPoolExecutor(1, "inference", _start_worker, (self.configs,))
        context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(self.workers, context, _start_worker, (self.configs,))

    async def start(self) -> EngineInfo:
        """Start every worker (models loaded) and learn which model they run."""
        self.info = await self._warm(self._executor)
        return self.info

    async def _warm(self, executor: Executor) -> EngineInfo:
        loop = asyncio.get_running_loop()
        jobs = (loop.run_in_executor(executor, _info) for _ in range(max(1, self.workers)))
        infos = await asyncio.gather(*jobs)
        return infos[0]

    @property
    def model(self) -> ModelId:
        if self.info is None:
            raise RuntimeError("the inference pool has not started")
        return self.info.model

    def unready_reason(self) -> str | None:
        """Why the pool cannot answer now (None: it can). A pool found broken while idle
        is replaced in the background, so a probe alone brings it back."""
        if self.info is None:
            return "the inference workers are starting"
        if self._warming:
            return "an inference worker died; its replacement is loading the models"
        if self._broken():
            self._heal()
            return "an inference worker died; it is being replaced"
        return None

    def _broken(self) -> bool:
        # Set by the executor's manager thread as soon as a worker process dies, even with no
        # job running; there is no public accessor.
        return bool(getattr(self._executor, "_broken", False))

    def _heal(self) -> None:
        if self._healing is None or self._healing.done():
            self._healing = asyncio.get_running_loop().create_task(self._replace(self._generation))

    async def faces(
        self, data: bytes, *, embed: bool = True, policy: str = "all", model: str | None = None
    ) -> list[Face]:
        """The image's faces, embedded by the engine of `model` (a gallery's: its probes must
        be of its model) or the main one. ApiError `overloaded` at once if the pool has
        `max_jobs` jobs already."""
        return await self.call(partial(_faces, data, embed, self.max_faces, policy), model)

    async def call(self, job: Callable[[Engine], T], model: str | None = None) -> T:
        """`job(engine)` in a worker, with the engine of `model` (None: the main one), under
        the same admission as `faces`. `job` must pickle: a module-level function or a
        partial of one."""
        with self.admission():
            return await self._run(partial(_with_engine, job, model))

    @contextmanager
    def admission(self) -> Iterator[None]:
        """Hold one of the pool's `max_jobs` places (ApiError `overloaded` when none is free)
        for the block; nested holds in the same request take no second place. Routes that
        receive images take it before reading the body, so a refusal costs no parsing."""
        if _holds_admission.get():
            yield
            return
        self._admit()
        token = _holds_admission.set(True)
        try:
            yield
        finally:
            _holds_admission.reset(token)
            self.admitted -= 1

    def _admit(self) -> None:
        # No await between the check and the count: on the event loop they are one step.
        if self.max_jobs is not None and self.admitted >= self.max_jobs:
            self.overloaded += 1
            raise ApiError(
                "overloaded",
                f"the service is at capacity ({self.max_jobs} images being analysed or "
                f"waiting): retry in {RETRY_AFTER_S} s",
                retry_after=RETRY_AFTER_S,
            )
        self.admitted += 1
        self.peak_admitted = max(self.peak_admitted, self.admitted)

    async def _run(self, job: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        for _ in range(ATTEMPTS):
            executor, generation = self._executor, self._generation
            try:
                return await loop.run_in_executor(executor, job)
            except BrokenExecutor:
                await self._replace(generation)
        raise ApiError(
            "inference_unavailable",
            "inference workers died while handling this request; retry later",
        )

    async def _replace(self, generation: int) -> None:
        """Replace the pool that broke under `generation`, unless another request already
        did; every request waits here until the replacement has loaded its models."""
        async with self._replacing:
            if self._generation != generation:
                return
            log.warning(
                "inference worker died; replacing the pool", extra={"workers": self.workers}
            )
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()
            self._generation += 1
            self.replacements += 1
            self._warming = True
            try:
                await self._warm(self._executor)
            except BrokenExecutor:
                log.error("the replacement inference pool broke while starting")
            finally:
                self._warming = False

    def close(self) -> None:
        if self._healing is not None:
            self._healing.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)
