"""Run a per-image job over many files in worker processes, with a progress bar.

dlib holds the GIL, so throughput on several cores needs processes. Each worker builds its own
Engine once (models load lazily inside the worker) and keeps it for every image it is given.
Jobs take a batch of paths, so a job can push all the faces of a batch through the
recognizer at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from yingyan.config import EngineConfig
from yingyan.engine import Engine

R = TypeVar("R")
Job = Callable[[Engine, str], R]
BatchJob = Callable[[Engine, list[str]], list[R]]

# Process-local: the engine of this worker process (set by the pool initializer).
_worker_engine: Engine | None = None


def _init_worker(config: EngineConfig) -> None:
    global _worker_engine
    _worker_engine = Engine(config)


def _call(job: BatchJob[R], paths: list[str]) -> list[R]:
    assert _worker_engine is not None
    return job(_worker_engine, paths)


def each(job: Job[R], engine: Engine, paths: list[str]) -> list[R]:
    return [job(engine, p) for p in paths]


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def iter_batches(
    job: BatchJob[R],
    paths: Sequence[str],
    config: EngineConfig,
    *,
    batch_size: int = 16,
    workers: int | None = None,
) -> Iterator[tuple[list[str], list[R]]]:
    """(batch, results) for consecutive batches of paths, in order, as they complete, so a
    caller can commit each batch before the next one arrives. `job` must be a module-level
    function (or a partial of one): it is sent to worker processes."""
    workers = workers or default_workers()
    if workers > 1 and config.threads is None:
        config = config.with_(threads=1)  # one process per core, one thread each
    batches = [list(paths[i : i + batch_size]) for i in range(0, len(paths), batch_size)]
    if workers == 1:
        engine = Engine(config)
        for b in batches:
            yield b, job(engine, b)
        return
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(config,)) as pool:
        yield from zip(batches, pool.map(_call, [job] * len(batches), batches), strict=True)


def progress_bar(show: bool = True) -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not show,
    )


def map_batches(
    job: BatchJob[R],
    paths: Sequence[str],
    config: EngineConfig,
    *,
    batch_size: int = 16,
    workers: int | None = None,
    description: str = "images",
    show_progress: bool = True,
) -> list[R]:
    """All results of `iter_batches`, in path order, with a progress bar."""
    results: list[R] = []
    with progress_bar(show_progress) as progress:
        task = progress.add_task(description, total=len(paths))
        for _, out in iter_batches(job, paths, config, batch_size=batch_size, workers=workers):
            results.extend(out)
            progress.advance(task, len(out))
    return results


def map_images(
    job: Job[R],
    paths: Sequence[str],
    config: EngineConfig,
    *,
    workers: int | None = None,
    description: str = "images",
    show_progress: bool = True,
) -> list[R]:
    """`job(engine, path)` for every path, in order."""
    return map_batches(
        partial(each, job),
        paths,
        config,
        batch_size=8,
        workers=workers,
        description=description,
        show_progress=show_progress,
    )
