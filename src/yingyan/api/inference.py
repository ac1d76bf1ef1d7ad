"""Model inference off the event loop: a pool of worker processes, each with its own Engine.

Processes rather than threads because dlib's HOG detector holds the GIL: in a thread it would
stall every request while it scans an image. Workers are spawned (not forked: the server has
threads) and load their models in the initializer, so the first request does not pay for it.
Images cross as bytes and faces come back as picklable dataclasses; nothing is kept.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from yingyan.config import EngineConfig
from yingyan.detection.base import largest
from yingyan.engine import Engine
from yingyan.errors import NoFaceError, SeveralFacesError, TooManyFacesError
from yingyan.types import Face, ModelId

T = TypeVar("T")

# The Engine of this worker process, set once by `_start_worker`. Module state is how a
# process pool hands per-process resources to its jobs; the server process never reads it
# except when workers=0 (one in-process thread).
_engine: Engine | None = None


@dataclass(frozen=True, slots=True)
class EngineInfo:
    model: ModelId
    description: dict[str, str]


def _start_worker(config: EngineConfig) -> None:
    global _engine
    _engine = Engine(config)
    _engine.describe()  # loads detector and recognizer now, not on the first request


def _worker_engine() -> Engine:
    if _engine is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("inference worker used before its initializer ran")
    return _engine


def _info() -> EngineInfo:
    engine = _worker_engine()
    return EngineInfo(engine.model_id, engine.describe())


def _faces(data: bytes, embed: bool, max_faces: int, policy: str) -> list[Face]:
    """Decode, detect, refuse too many faces before embedding any, then align/assess/embed.

    policy: "all" (every face), "largest" (one), "single" (exactly one, else an error)."""
    engine = _worker_engine()
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


class InferencePool:
    """`await pool.faces(image_bytes)` runs the engine in a worker and returns its faces."""

    def __init__(self, config: EngineConfig, workers: int, max_faces: int) -> None:
        self.workers = workers
        self.max_faces = max_faces
        self._executor: Executor
        if workers == 0:
            self._executor = ThreadPoolExecutor(1, "inference", _start_worker, (config,))
        else:
            context = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(workers, context, _start_worker, (config,))
        self.info: EngineInfo | None = None

    async def start(self) -> EngineInfo:
        """Start every worker (models loaded) and learn which model they run."""
        infos = await asyncio.gather(*(self._run(_info) for _ in range(max(1, self.workers))))
        self.info = infos[0]
        return self.info

    @property
    def model(self) -> ModelId:
        if self.info is None:
            raise RuntimeError("the inference pool has not started")
        return self.info.model

    async def faces(self, data: bytes, *, embed: bool = True, policy: str = "all") -> list[Face]:
        return await self._run(partial(_faces, data, embed, self.max_faces, policy))

    async def _run(self, job: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
