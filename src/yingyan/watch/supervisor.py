"""One supervised worker process per camera: restarted when it dies or hangs, with back-off.

Workers are spawned, never forked: the parent holds threads, database connections and
onnxruntime sessions that a fork would copy in a broken state. A worker is called in the child
as ``target(camera_id, config, status)`` and reports through a ``StatusChannel``: small JSON
lines (a heartbeat and the camera's ``SourceStats.as_dict()``), never frames, over a pipe whose
write end is non-blocking. Each message is one ``write`` of at most ``PIPE_BUF`` bytes, so it is
atomic: it lands whole or, when the pipe is full because the parent is slow, is dropped and
counted. The child never blocks on the parent and neither side's memory grows (the kernel
buffer, 64 KiB, is the bound; the parent keeps only the newest message).

A SIGKILLed child cannot leave a lock held (there is none) nor half a message (writes are
atomic), and the parent's copy of the write end is closed, so a dead child reads as end of file.
"""

from __future__ import annotations

import atexit
import importlib
import json
import logging
import multiprocessing
import os
import re
import select
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from typing import Any, Literal

from yingyan.errors import ConfigError, YingyanError

log = logging.getLogger("yingyan.watch.supervisor")

MAX_MESSAGE_BYTES = select.PIPE_BUF  # a pipe write of at most PIPE_BUF bytes is atomic
_READ_LIMIT = 1 << 20  # bytes read from one worker per poll (the pipe itself holds 64 KiB)
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

RestartPolicy = Literal["always", "on_failure"]
WorkerTarget = Callable[[str, dict[str, Any], "StatusChannel"], object]


class SupervisorError(YingyanError):
    code = "supervisor_error"


class DuplicateCameraError(SupervisorError):
    code = "camera_exists"


class UnknownCameraError(SupervisorError):
    code = "camera_not_found"


class StatusMessageError(SupervisorError):
    """A worker tried to send a status that is not a small JSON object (a bug in the worker)."""

    code = "invalid_status_message"


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What to run for one camera. ``config`` is copied through JSON: what the child receives
    is exactly what was validated, and later changes by the caller do not leak in."""

    camera_id: str
    target: str  # "package.module:function", imported in the child
    config: dict[str, Any] = field(default_factory=dict)
    restart: RestartPolicy = "always"  # "on_failure": an exit with code 0 is final (a file ended)

    def __post_init__(self) -> None:
        if not isinstance(self.camera_id, str) or not self.camera_id.strip():
            raise ConfigError("a camera id must be a non-empty string")
        if len(self.camera_id) > 128 or not self.camera_id.isprintable():
            raise ConfigError("a camera id must be at most 128 printable characters")
        if not isinstance(self.target, str) or not _TARGET.match(self.target):
            raise ConfigError(f"worker target must be 'module:function', not {self.target!r}")
        if self.restart not in ("always", "on_failure"):
            raise ConfigError(f"restart must be 'always' or 'on_failure', not {self.restart!r}")
        try:
            copied = json.loads(json.dumps(self.config, allow_nan=False))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"camera {self.camera_id}: config is not JSON: {error}") from None
        if not isinstance(copied, dict):
            raise ConfigError(f"camera {self.camera_id}: config must be a JSON object")
        object.__setattr__(self, "config", copied)


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One camera's worker as the API shows it. Times are epoch seconds."""

    pid: int | None
    alive: bool
    restarts: int
    last_exit: int | None  # exit code; negative: killed by that signal (-9: SIGKILL)
    started_at: float | None
    last_heartbeat: float | None  # None until the current process has reported
    stats: dict[str, object]  # the newest SourceStats.as_dict() of the current process
    state: str = "running"  # running | backoff | finished | stopped
    hangs: int = 0  # times killed for not heartbeating
    backoff_s: float = 0.0  # the delay chosen after the last exit
    next_restart_in_s: float | None = None
    messages: int = 0  # status messages received from the current process
    dropped_messages: int = 0  # dropped by the current process (as it last reported)


class StatusChannel:
    """The child's end of the status pipe. Sending never blocks: a full pipe drops the message."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection  # owns the file descriptor
        self._fd = connection.fileno()
        os.set_blocking(self._fd, False)
        self.sent = 0
        self.dropped = 0
        self.closed = False  # the parent is gone: the worker should return

    def heartbeat(self, stats: Mapping[str, object] | None = None) -> bool:
        """Report liveness and, optionally, the camera's stats. False: dropped or parent gone."""
        if self.closed:
            return False
        message: dict[str, object] = {"time": time.time(), "dropped": self.dropped}
        if stats is not None:
            message["stats"] = dict(stats)
        try:
            data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        except (TypeError, ValueError) as error:
            raise StatusMessageError(f"status is not JSON: {error}") from None
        if len(data) > MAX_MESSAGE_BYTES:
            raise StatusMessageError(f"status of {len(data)} bytes > {MAX_MESSAGE_BYTES}")
        try:
            os.write(self._fd, data)
        except BlockingIOError:
            self.dropped += 1
            return False
        except (BrokenPipeError, OSError):
            self.closed = True
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self.closed = True
        self._connection.close()


class _Inbox:
    """The parent's end: non-blocking reads, only the newest message is kept."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._fd = connection.fileno()
        os.set_blocking(self._fd, False)
        self._partial = b""
        self.eof = False

    def read(self) -> tuple[int, dict[str, Any] | None]:
        """(messages received, the newest one)."""
        chunks: list[bytes] = []
        total = 0
        while not self.eof and total < _READ_LIMIT:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
                break
            chunks.append(chunk)
            total += len(chunk)
        if not chunks:
            return 0, None
        *lines, partial = (self._partial + b"".join(chunks)).split(b"\n")
        self._partial = partial if len(partial) <= MAX_MESSAGE_BYTES else b""
        for line in reversed(lines):
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                return len(lines), message
        return len(lines), None

    def close(self) -> None:
        self._connection.close()


@dataclass(slots=True)
class Backoff:
    """Exponential delay after each exit, reset by a long enough run, and at most
    ``max_restarts`` restarts in any ``window_s``."""

    initial_s: float
    max_s: float
    max_restarts: int
    window_s: float
    failures: int = 0  # consecutive short runs
    restarts: deque[float] = field(default_factory=deque)  # monotonic times of restarts

    def delay_after_exit(self, ran_s: float) -> float:
        if ran_s >= self.window_s:
            self.failures = 0
        self.failures += 1
        return min(self.max_s, self.initial_s * 2.0 ** min(self.failures - 1, 60))

    def window_wait(self, now: float) -> float:
        """Seconds until a restart fits in the window (0: it fits now)."""
        while self.restarts and self.restarts[0] <= now - self.window_s:
            self.restarts.popleft()
        if len(self.restarts) < self.max_restarts:
            return 0.0
        return self.restarts[0] + self.window_s - now


@dataclass(slots=True)
class _Worker:
    spec: WorkerSpec
    backoff: Backoff
    process: SpawnProcess | None = None
    inbox: _Inbox | None = None
    restarts: int = 0
    hangs: int = 0
    last_exit: int | None = None
    state: str = "running"
    backoff_s: float = 0.0
    next_start: float | None = None  # monotonic
    started: float = 0.0  # monotonic
    started_at: float | None = None  # epoch
    heartbeat: float | None = None  # monotonic, when the parent received it
    last_heartbeat: float | None = None  # epoch
    stats: dict[str, object] = field(default_factory=dict)
    messages: int = 0
    dropped: int = 0


def _run_child(camera_id: str, target: str, config: dict[str, Any], writer: Connection) -> None:
    """Entry point in the spawned child."""
    status = StatusChannel(writer)
    try:
        _resolve(target)(camera_id, config, status)
    except YingyanError as error:
        print(f"camera {camera_id}: {error.code}: {error.message}", file=sys.stderr)
        raise SystemExit(2) from None


def _resolve(target: str) -> WorkerTarget:
    module_name, _, name = target.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"worker target {target!r} cannot be imported: {error}") from None
    if not callable(function):
        raise ConfigError(f"worker target {target!r} is not callable")
    return function  # type: ignore[no-any-return]


class Supervisor:
    """Runs, watches and restarts one worker process per camera. Thread-safe; ``start()`` runs
    ``poll()`` in a background thread, ``stop()`` (or the parent's normal exit) ends every child.

    A worker must heartbeat within ``startup_timeout_s`` of its start (models load first), then
    at least every ``heartbeat_timeout_s``; otherwise it is SIGKILLed and restarted. Children are
    daemonic (multiprocessing ends them if the parent exits), so a worker cannot start processes
    of its own."""

    def __init__(
        self,
        max_restarts_per_window: int,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        heartbeat_timeout_s: float = 30.0,
        *,
        restart_window_s: float = 60.0,
        startup_timeout_s: float = 60.0,
        poll_interval_s: float = 0.25,
    ) -> None:
        if max_restarts_per_window < 1:
            raise ConfigError("max_restarts_per_window must be at least 1")
        for name, value in (
            ("backoff_initial_s", backoff_initial_s),
            ("backoff_max_s", backoff_max_s),
            ("heartbeat_timeout_s", heartbeat_timeout_s),
            ("restart_window_s", restart_window_s),
            ("startup_timeout_s", startup_timeout_s),
            ("poll_interval_s", poll_interval_s),
        ):
            if not value > 0:
                raise ConfigError(f"{name} must be positive, not {value}")
        if backoff_initial_s > backoff_max_s:
            raise ConfigError("backoff_initial_s must not exceed backoff_max_s")
        self.max_restarts_per_window = max_restarts_per_window
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.restart_window_s = restart_window_s
        self.startup_timeout_s = startup_timeout_s
        self.poll_interval_s = poll_interval_s
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._atexit = _stop_at_exit(weakref.ref(self))
        atexit.register(self._atexit)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def add(self, spec: WorkerSpec) -> None:
        """Start a camera's worker now."""
        with self._lock:
            if self._closed:
                raise SupervisorError("the supervisor has stopped")
            if spec.camera_id in self._workers:
                raise DuplicateCameraError(f"camera {spec.camera_id} is already supervised")
            backoff = Backoff(
                self.backoff_initial_s,
                self.backoff_max_s,
                self.max_restarts_per_window,
                self.restart_window_s,
            )
            worker = _Worker(spec, backoff)
            self._workers[spec.camera_id] = worker
            self._spawn(worker, time.monotonic())

    def remove(self, camera_id: str, timeout_s: float = 5.0) -> WorkerStatus:
        """Stop a camera's worker: SIGTERM, then SIGKILL after ``timeout_s``. Returns its last
        status."""
        with self._lock:
            worker = self._workers.pop(camera_id, None)
            if worker is None:
                raise UnknownCameraError(f"camera {camera_id} is not supervised")
        _end([worker], timeout_s)
        return _status(worker, time.monotonic())

    def status(self) -> dict[str, WorkerStatus]:
        with self._lock:
            now = time.monotonic()
            return {camera: _status(worker, now) for camera, worker in self._workers.items()}

    def start(self) -> None:
        """Poll in a background thread every ``poll_interval_s``."""
        with self._lock:
            if self._closed:
                raise SupervisorError("the supervisor has stopped")
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._loop, name="yingyan-supervisor", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        while not self._wake.wait(self.poll_interval_s):
            try:
                self.poll()
            except Exception:  # a bug here must not end supervision of every camera
                log.exception("supervisor poll failed")

    def poll(self) -> None:
        """Read status, restart dead workers whose back-off has passed, kill hung ones."""
        with self._lock:
            now = time.monotonic()
            for worker in self._workers.values():
                self._check(worker, now)

    def stop(self, timeout_s: float = 5.0) -> None:
        """End every worker (SIGTERM, SIGKILL after ``timeout_s``) and reap them. Final."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
            workers = list(self._workers.values())
            self._workers.clear()
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        _end(workers, timeout_s)
        atexit.unregister(self._atexit)

    def _check(self, worker: _Worker, now: float) -> None:
        process = worker.process
        if process is None:
            if worker.next_start is not None and now >= worker.next_start:
                wait = worker.backoff.window_wait(now)
                if wait > 0:
                    worker.next_start = now + wait
                else:
                    worker.backoff.restarts.append(now)
                    worker.restarts += 1
                    try:
                        self._spawn(worker, now)
                    except OSError as error:  # out of processes or memory: try again later
                        log.error("camera %s: cannot start: %s", worker.spec.camera_id, error)
                        worker.next_start = now + self.backoff_max_s
            return
        self._read(worker, now)
        if not process.is_alive():  # reaps it: no zombie
            self._exited(worker, now)
            return
        since = worker.heartbeat if worker.heartbeat is not None else worker.started
        limit = self.heartbeat_timeout_s if worker.heartbeat is not None else self.startup_timeout_s
        if now - since > limit:
            camera = worker.spec.camera_id
            log.warning("camera %s: no heartbeat for %.1f s, killing it", camera, now - since)
            worker.hangs += 1
            process.kill()
            process.join(5.0)
            if not process.is_alive():
                self._exited(worker, time.monotonic())

    def _read(self, worker: _Worker, now: float) -> None:
        if worker.inbox is None:
            return
        count, message = worker.inbox.read()
        if message is None:
            return
        worker.messages += count
        worker.heartbeat = now
        sent = message.get("time")
        worker.last_heartbeat = float(sent) if isinstance(sent, int | float) else time.time()
        dropped = message.get("dropped")
        worker.dropped = dropped if isinstance(dropped, int) else worker.dropped
        stats = message.get("stats")
        if isinstance(stats, dict):
            worker.stats = stats

    def _exited(self, worker: _Worker, now: float) -> None:
        process = worker.process
        assert process is not None
        self._read(worker, now)  # what it said before dying
        worker.last_exit = process.exitcode
        process.close()
        worker.process = None
        if worker.inbox is not None:
            worker.inbox.close()
            worker.inbox = None
        camera = worker.spec.camera_id
        if worker.last_exit == 0 and worker.spec.restart == "on_failure":
            worker.state = "finished"
            log.info("camera %s: worker finished", camera)
            return
        worker.backoff_s = worker.backoff.delay_after_exit(now - worker.started)
        delay = max(worker.backoff_s, worker.backoff.window_wait(now))
        worker.next_start = now + delay
        worker.state = "backoff"
        code = worker.last_exit
        log.warning("camera %s: worker exited with %s; restart in %.1f s", camera, code, delay)

    def _spawn(self, worker: _Worker, now: float) -> None:
        reader, writer = self._context.Pipe(duplex=False)
        spec = worker.spec
        process = self._context.Process(
            target=_run_child,
            args=(spec.camera_id, spec.target, spec.config, writer),
            name=f"yingyan-camera-{spec.camera_id}",
            daemon=True,
        )
        try:
            process.start()
        except BaseException:
            reader.close()
            raise
        finally:
            writer.close()  # the child holds the only write end: its death reads as EOF
        worker.process = process
        worker.inbox = _Inbox(reader)
        worker.state = "running"
        worker.next_start = None
        worker.started = now
        worker.started_at = time.time()
        worker.heartbeat = None
        worker.last_heartbeat = None
        worker.stats = {}
        worker.messages = 0
        worker.dropped = 0


def _stop_at_exit(ref: weakref.ref[Supervisor]) -> Callable[[], None]:
    def stop() -> None:
        supervisor = ref()
        if supervisor is not None:
            supervisor.stop()

    return stop


def _end(workers: list[_Worker], timeout_s: float) -> None:
    """SIGTERM every live worker, wait up to ``timeout_s`` in all, SIGKILL the rest, reap."""
    running = [w for w in workers if w.process is not None]
    for worker in running:
        assert worker.process is not None
        if worker.process.is_alive():
            worker.process.terminate()
    deadline = time.monotonic() + timeout_s
    for worker in running:
        assert worker.process is not None
        worker.process.join(max(0.0, deadline - time.monotonic()))
    for worker in running:
        process = worker.process
        assert process is not None
        if process.is_alive():
            process.kill()
        process.join()
        worker.last_exit = process.exitcode
        process.close()
        worker.process = None
    for worker in workers:
        if worker.inbox is not None:
            worker.inbox.close()
            worker.inbox = None
        worker.state = "stopped"
        worker.next_start = None


def _status(worker: _Worker, now: float) -> WorkerStatus:
    process = worker.process
    alive = process is not None and process.is_alive()
    return WorkerStatus(
        pid=process.pid if process is not None else None,
        alive=alive,
        restarts=worker.restarts,
        last_exit=worker.last_exit,
        started_at=worker.started_at,
        last_heartbeat=worker.last_heartbeat,
        stats=dict(worker.stats),
        state=worker.state,
        hangs=worker.hangs,
        backoff_s=worker.backoff_s,
        next_restart_in_s=None if worker.next_start is None else max(0.0, worker.next_start - now),
        messages=worker.messages,
        dropped_messages=worker.dropped,
    )
