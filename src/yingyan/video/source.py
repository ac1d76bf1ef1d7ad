"""Video sources: files, network streams, V4L2 devices and image sequences, decoded with PyAV
inside the calling process (decoded frames never cross a process boundary).

Why the shape:
- a camera that accepts a connection and then sends nothing must not hang a worker: network
  inputs get FFmpeg's own socket timeout *and* PyAV's interrupt-callback watchdog on the open and
  on every read (`av.open(timeout=(open_s, read_s))`);
- a camera that drops is reopened with exponential backoff, and its timestamps keep increasing
  across the gap (a rebooted camera restarts its clock at zero);
- a slow pipeline reads the freshest frame (`start` + `latest`): a background thread keeps one
  slot, frames overwritten unread are counted as dropped, so memory stays at one frame whatever
  the load.
"""

from __future__ import annotations

import dataclasses
import glob
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, Literal, Protocol, cast

import numpy as np

from yingyan.errors import ConfigError, ImageError, SourceError
from yingyan.extras import lazy, require
from yingyan.io import load_image
from yingyan.privacy.redaction import redact_url
from yingyan.types import RGBImage
from yingyan.video.frames import Frame, SourceStats

if TYPE_CHECKING:
    import av
    from av.container import InputContainer
    from av.video.stream import VideoStream
else:  # PyAV is the [video] extra: imported when a source is first opened
    av = lazy("av", "video", "a video source")

SourceKind = Literal["file", "stream", "device", "images"]

STREAM_SCHEMES: Final = frozenset(
    {"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "hls", "srt", "udp", "tcp", "rtp"}
)
IMAGE_SUFFIXES: Final = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
DEFAULT_FPS: Final = 25.0
RATE_WINDOW_S: Final = 5.0  # input/processed fps are measured over this recent window
_RATE_SAMPLES: Final = 4096  # bound on the timestamps kept per window
_REANCHOR_S: Final = 1.0  # a realtime file this far behind its clock re-anchors, not bursts
MAX_BAD_PACKETS: Final = 25


def _decode_errors() -> tuple[type[Exception], ...]:
    return (av.FFmpegError, OSError, ValueError, EOFError)


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """Where frames come from and how hard to try. `reconnect=None` means: streams and devices
    reconnect, files and image sequences do not."""

    url: str  # file path, rtsp://, rtmp://, http(s)://, .m3u8, /dev/videoN, folder/glob of images
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    reconnect: bool | None = None
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    loop: bool = False  # files and image sequences: start again at the end
    realtime: bool = False  # files and image sequences: pace at their own fps, like a camera
    sequence_fps: float = DEFAULT_FPS  # the clock of an image sequence
    speed: float = 1.0  # files and image sequences: replay as a camera at speed x their fps

    def __post_init__(self) -> None:
        if not self.url:
            raise ConfigError("video source: empty url")
        require("av", "video", "a video source")  # the [video] extra: decoding and tracking
        require("scipy.optimize", "video", "the video tracker")
        for name in ("open_timeout_s", "read_timeout_s", "backoff_initial_s", "sequence_fps"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"video source: {name} must be > 0")
        if not 0 < self.speed <= 100:
            raise ConfigError("video source: speed must lie in (0, 100]")
        if self.speed != 1 and self.kind in ("stream", "device"):
            raise ConfigError("video source: speed applies to files and image sequences only")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError("video source: backoff_max_s must be >= backoff_initial_s")

    @property
    def kind(self) -> SourceKind:
        return source_kind(self.url)

    @property
    def reconnects(self) -> bool:
        if self.reconnect is not None:
            return self.reconnect
        return self.kind in ("stream", "device")

    @property
    def shown(self) -> str:
        """The url as it may be logged or shown: without credentials."""
        return redact_url(self.url) or ""


def source_kind(url: str) -> SourceKind:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in STREAM_SCHEMES:
        return "stream"
    if scheme:
        return "file"
    if url.startswith("/dev/video"):
        return "device"
    if any(ch in url for ch in "*?[") or Path(url).is_dir():
        return "images"
    return "file"


# -- sessions: one open container (or one pass over an image list) ---------------------------


class _Session(Protocol):
    fps: float
    expected: int  # frames the container declares, 0 when unknown

    def raw(self) -> Iterator[tuple[RGBImage, float | None]]:
        """Decoded RGB frames with their pts in seconds on the session's own clock."""
        ...

    def close(self) -> None: ...


class _AvSession:
    """Packets are decoded one by one so that one corrupt packet costs its frames, not the
    session; a run of MAX_BAD_PACKETS corrupt packets in a row fails it."""

    def __init__(
        self, container: InputContainer, stream: VideoStream, on_error: Callable[[str], None]
    ) -> None:
        self.container = container
        self.stream = stream
        self.on_error = on_error
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else DEFAULT_FPS
        self.expected = int(stream.frames or 0)

    def raw(self) -> Iterator[tuple[RGBImage, float | None]]:
        bad = 0
        for packet in self.container.demux(self.stream):
            try:
                frames = packet.decode()
            except av.InvalidDataError as exc:
                bad += 1
                if bad >= MAX_BAD_PACKETS:
                    raise
                self.on_error(f"corrupt packet skipped: {exc}")
                continue
            bad = 0
            for frame in frames:
                base: Fraction | None = frame.time_base
                pts = float(frame.pts * base) if frame.pts is not None and base else None
                yield cast(RGBImage, frame.to_ndarray(format="rgb24")), pts

    def close(self) -> None:
        self.container.close()


class _ImageSession:
    def __init__(self, files: list[Path], fps: float, on_error: Callable[[str], None]) -> None:
        self.files = files
        self.fps = fps
        self.expected = len(files)
        self.on_error = on_error

    def raw(self) -> Iterator[tuple[RGBImage, float | None]]:
        for i, path in enumerate(self.files):
            try:
                image = load_image(path)
            except ImageError as exc:  # one unreadable image is reported, not fatal
                self.on_error(exc.message)
                continue
            yield image, i / self.fps

    def close(self) -> None:
        pass


def _network_options(spec: SourceSpec) -> dict[str, str]:
    """FFmpeg's own socket timeouts (microseconds). rtmp's `timeout` would mean *listen*, so
    protocols other than rtsp/http get the generic `rw_timeout`."""
    micros = str(int(spec.read_timeout_s * 1_000_000))
    scheme = spec.url.split("://", 1)[0].lower()
    if scheme in ("rtsp", "rtsps"):
        return {"rtsp_transport": "tcp", "timeout": micros}
    if scheme in ("http", "https", "hls"):
        return {"timeout": micros, "rw_timeout": micros}
    return {"rw_timeout": micros}


def _open_av(spec: SourceSpec, kind: SourceKind, on_error: Callable[[str], None]) -> _AvSession:
    live = kind in ("stream", "device")
    options = _network_options(spec) if kind == "stream" else {}
    timeout = (spec.open_timeout_s, spec.read_timeout_s) if live else None
    if kind == "file" and "://" not in spec.url and not Path(spec.url).is_file():
        raise SourceError(f"no such video file: {spec.url}")
    started = time.monotonic()
    try:
        container = av.open(
            spec.url,
            "r",
            format="v4l2" if kind == "device" else None,
            options=options,
            timeout=timeout,
        )
    except _decode_errors() as exc:
        waited = time.monotonic() - started
        if live and waited >= 0.9 * min(spec.open_timeout_s, spec.read_timeout_s):
            raise SourceError(
                f"cannot open video source {spec.shown}: no answer within {waited:.1f} s ({exc})"
            ) from None
        raise SourceError(f"cannot open video source {spec.shown}: {exc}") from None
    if not container.streams.video:
        container.close()
        raise SourceError(f"video source {spec.shown} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return _AvSession(container, stream, on_error)


def _image_files(spec: SourceSpec) -> list[Path]:
    root = Path(spec.url)
    candidates = sorted(root.iterdir()) if root.is_dir() else sorted(map(Path, glob.glob(spec.url)))
    files = [p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise SourceError(f"no JPEG/PNG images in {spec.url}")
    return files


def _open_session(spec: SourceSpec, kind: SourceKind, on_error: Callable[[str], None]) -> _Session:
    if kind == "images":
        return _ImageSession(_image_files(spec), spec.sequence_fps, on_error)
    return _open_av(spec, kind, on_error)


# -- statistics ------------------------------------------------------------------------------


class _Rate:
    """Events per second over the last RATE_WINDOW_S (0 when events stop)."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.times: deque[float] = deque(maxlen=_RATE_SAMPLES)

    def add(self, now: float) -> None:
        self.times.append(now)

    def per_second(self, now: float) -> float:
        while self.times and now - self.times[0] > RATE_WINDOW_S:
            self.times.popleft()
        window = max(min(RATE_WINDOW_S, now - self.started), 1e-3)
        return len(self.times) / window


# -- the reader ------------------------------------------------------------------------------


class FrameReader:
    """One source, read either in order (`frames`) or freshest-first (`start` + `latest`).

    Use one mode per reader. It is a context manager; `close` stops the decoding thread and
    releases the container.
    """

    def __init__(self, spec: SourceSpec, kind: SourceKind) -> None:
        self.spec = spec
        self.kind = kind
        now = time.monotonic()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._stats = SourceStats()
        self._input = _Rate(now)
        self._processed = _Rate(now)
        self._pending: _Session | None = None
        self._slot: Frame | None = None
        self._mode: str | None = None
        self._thread: threading.Thread | None = None
        self._gen: Generator[Frame, None, None] | None = None
        self._done = False
        self._index = 0
        self._last_pts: float | None = None
        self._last_received: float | None = None
        self._offset: float | None = None
        self._interval = 1.0 / DEFAULT_FPS
        self._anchor: tuple[float, float] | None = None  # (monotonic, pts) for realtime pacing
        self._backoff = spec.backoff_initial_s
        self._connected_once = False  # the first connection is not a reconnect

    def _connect_first(self, *, retry: bool) -> None:
        try:
            self._pending = _open_session(self.spec, self.kind, self._record_error)
        except SourceError as exc:
            if not (retry and self.spec.reconnects):
                raise
            self._record_error(exc.message)
            self._set_state("reconnecting")
            return
        self._connected_once = True
        self._set_state("connected")

    # -- modes ------------------------------------------------------------------------------

    def frames(self) -> Iterator[Frame]:
        """Every decoded frame in order, in the caller's thread (files, retrospective search).
        It ends at the end of a file or when a source fails; `stats()` says which."""
        self._claim("iter")
        self._gen = self._generate()
        return self._gen

    def start(self) -> FrameReader:
        """Decode in a background thread that keeps only the newest frame (freshest-frame)."""
        self._claim("thread")
        self._thread = threading.Thread(
            target=self._pump, name=f"video-source {self.spec.shown}", daemon=True
        )
        self._thread.start()
        return self

    def latest(self, timeout: float) -> Frame | None:
        """The newest unread frame, waiting up to `timeout` s; None if none came or the source
        is done (`done`, `stats().state`)."""
        with self._cond:
            self._cond.wait_for(lambda: self._slot is not None or self._done, timeout)
            frame, self._slot = self._slot, None
            return frame

    @property
    def done(self) -> bool:
        """True once the source has ended or failed for good (no more frames will come)."""
        with self._lock:
            return self._done and self._slot is None

    def mark_processed(self, frame: Frame) -> None:
        now = time.monotonic()
        with self._lock:
            self._stats.processed += 1
            self._stats.lag_s = max(now - frame.received, 0.0)
            self._processed.add(now)

    def stats(self) -> SourceStats:
        now = time.monotonic()
        with self._lock:
            return dataclasses.replace(
                self._stats,
                input_fps=round(self._input.per_second(now), 2),
                processed_fps=round(self._processed.per_second(now), 2),
            )

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(self.spec.open_timeout_s + self.spec.read_timeout_s + 2.0)
        elif self._gen is not None:
            self._gen.close()
        if self._pending is not None:
            self._pending.close()
            self._pending = None
        with self._lock:
            if self._stats.state not in ("ended", "failed"):
                self._stats.state = "ended"
            self._stats.connected = False
            self._done = True

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _claim(self, mode: str) -> None:
        if self._mode is not None:
            raise RuntimeError(f"this reader is already used with {self._mode}()")
        self._mode = mode

    def _pump(self) -> None:
        try:
            for frame in self._generate():
                with self._cond:
                    if self._slot is not None:
                        self._stats.dropped += 1
                    self._slot = frame
                    self._cond.notify_all()
        except Exception as exc:  # the thread boundary: a bug here must not kill the worker
            self._record_error(f"{type(exc).__name__}: {exc}")
            self._set_state("failed")
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _generate(self) -> Generator[Frame, None, None]:
        session, self._pending = self._pending, None
        try:
            while not self._stop.is_set():
                if session is None:
                    session = self._reopen()
                    if session is None:
                        return
                problem = yield from self._play(session)
                session.close()
                session = None
                if self._stop.is_set():
                    return
                if problem is None and self.kind in ("file", "images"):
                    if not self.spec.loop:
                        self._set_state("ended")
                        return
                    session = self._open_again()
                    if session is None:
                        return
                    continue
                problem = problem or "stream ended"
                self._record_error(problem)
                if not self.spec.reconnects:
                    self._set_state("failed")
                    return
                self._set_state("reconnecting")
        finally:
            if session is not None:
                session.close()
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _play(self, session: _Session) -> Generator[Frame, None, str | None]:
        """Yield one session's frames; return None at a clean end, else what went wrong."""
        self._offset = None
        self._interval = 1.0 / (session.fps * self.spec.speed)
        count = 0
        try:
            for image, raw in session.raw():
                pts = self._pts(None if raw is None else raw / self.spec.speed)
                self._pace(pts)
                if self._stop.is_set():
                    return None
                frame = self._frame(image, pts)
                count += 1
                self._backoff = self.spec.backoff_initial_s
                yield frame
        except (av.ExitError, av.TimeoutError):
            return f"no data for {self.spec.read_timeout_s:.1f} s after {count} frames (stalled)"
        except _decode_errors() as exc:
            return f"decoding failed after {count} frames: {exc}"
        if self.kind == "file" and session.expected and count < session.expected:
            self._record_error(
                f"{self.spec.shown} ended after {count} of its {session.expected} frames "
                "(truncated or corrupt)"
            )
        return None

    def _pts(self, raw: float | None) -> float:
        """The stream's own clock from its first frame, carried on across reconnects and
        loops (each new session continues one frame interval after the last)."""
        last = self._last_pts
        follow = 0.0 if last is None else last + self._gap()
        if raw is None:
            pts = follow
        else:
            if self._offset is None:
                self._offset = follow - raw
            pts = raw + self._offset
        if last is not None and pts <= last:
            pts = last + self._interval
        self._last_pts = pts
        return pts

    def _gap(self) -> float:
        """Stream time between the last frame and a new session's first: one frame for a
        looping file; for a live source the outage itself, so a tracker sees it."""
        if self.kind in ("file", "images") or self._last_received is None:
            return self._interval
        return max(self._interval, time.monotonic() - self._last_received)

    def _frame(self, image: RGBImage, pts: float) -> Frame:
        now = time.monotonic()
        frame = Frame(image=np.ascontiguousarray(image), index=self._index, pts=pts, received=now)
        self._index += 1
        self._last_received = now
        with self._lock:
            self._stats.decoded += 1
            self._input.add(now)
        return frame

    def _pace(self, pts: float) -> None:
        if not self.spec.realtime or self.kind not in ("file", "images"):
            return
        now = time.monotonic()
        if self._anchor is None:
            self._anchor = (now, pts)
            return
        delay = self._anchor[0] + (pts - self._anchor[1]) - now
        if delay > 0:
            self._stop.wait(delay)
        elif delay < -_REANCHOR_S:
            self._anchor = (now, pts)

    def _reopen(self) -> _Session | None:
        """Reopen a lost source, waiting with exponential backoff between attempts."""
        while not self._stop.wait(self._backoff):
            self._backoff = min(self._backoff * 2.0, self.spec.backoff_max_s)
            try:
                session = _open_session(self.spec, self.kind, self._record_error)
            except SourceError as exc:
                self._record_error(exc.message)
                continue
            if self._connected_once:
                with self._lock:
                    self._stats.reconnects += 1
            self._connected_once = True
            self._set_state("connected")
            return session
        return None

    def _open_again(self) -> _Session | None:
        """The next pass of a looping file."""
        try:
            return _open_session(self.spec, self.kind, self._record_error)
        except SourceError as exc:
            self._record_error(exc.message)
            self._set_state("failed")
            return None

    def _record_error(self, message: str) -> None:
        with self._lock:
            self._stats.errors += 1
            self._stats.last_error = message

    def _set_state(self, state: str) -> None:
        with self._lock:
            self._stats.state = state
            self._stats.connected = state == "connected"


def open_source(spec: SourceSpec, *, retry_first: bool = False) -> FrameReader:
    """Open `spec` now, so a wrong path, URL or a dead camera is a `SourceError` here rather
    than a silent retry loop; once connected, a stream that drops is reconnected.

    `retry_first=True` (camera workers: a camera may come up after its worker) returns a
    reconnecting reader instead of raising when a source that reconnects cannot open yet."""
    reader = FrameReader(spec, spec.kind)
    reader._connect_first(retry=retry_first)
    return reader
