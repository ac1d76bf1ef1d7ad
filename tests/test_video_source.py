"""Video sources on real data: the shared clip, LFW images as a sequence, broken files, a server
that accepts and never answers, and a real RTSP camera (GStreamer) that is stalled, killed and
restarted. Waits have generous ceilings only so that a bug fails instead of hanging."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yingyan import load_image
from yingyan.errors import ConfigError, SourceError
from yingyan.video.frames import Frame
from yingyan.video.source import SourceSpec, open_source, source_kind

from ._rtsp import free_port, require_rtsp_server, start_rtsp

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CLIP_FRAMES = 275
CLIP_FPS = 2997 / 100
CEILING_S = 30.0  # never a timing bound: only how long a broken source may take to fail a test


@pytest.fixture(scope="module")
def clip(stills: Path) -> Path:
    return stills / "short_hamilton_clip.mp4"


def _wait_until(condition: Callable[[], bool], ceiling: float = CEILING_S) -> bool:
    deadline = time.monotonic() + ceiling
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


# -- files ----------------------------------------------------------------------------------


def test_clip_every_frame_in_order(clip: Path) -> None:
    with open_source(SourceSpec(str(clip))) as reader:
        assert reader.stats().state == "connected"
        seen = [(f.index, f.pts, f.image.shape, f.image.dtype) for f in reader.frames()]
        stats = reader.stats()
    assert len(seen) == CLIP_FRAMES
    assert {shape for _, _, shape, _ in seen} == {(360, 640, 3)}
    assert {dtype for *_, dtype in seen} == {np.dtype(np.uint8)}
    assert [i for i, *_ in seen] == list(range(CLIP_FRAMES))
    pts = np.array([p for _, p, *_ in seen])
    assert pts[0] == 0.0 and np.all(np.diff(pts) > 0)
    assert pts[-1] + 1 / CLIP_FPS == pytest.approx(9.18, abs=0.01)  # the clip's duration
    assert stats.state == "ended" and stats.decoded == CLIP_FRAMES
    assert stats.errors == 0 and stats.last_error is None


def test_looping_file_keeps_its_clock_increasing(clip: Path) -> None:
    reader = open_source(SourceSpec(str(clip), loop=True))
    with reader:
        frames = list(itertools.islice(reader.frames(), CLIP_FRAMES + 25))
        pts = np.array([f.pts for f in frames])
    assert [f.index for f in frames] == list(range(CLIP_FRAMES + 25))
    assert np.all(np.diff(pts) > 0)
    assert pts[CLIP_FRAMES] == pytest.approx(CLIP_FRAMES / CLIP_FPS, abs=1e-3)
    # the second pass decodes the same pictures
    assert np.array_equal(frames[CLIP_FRAMES].image, frames[0].image)
    assert reader.stats().state == "ended" and reader.stats().reconnects == 0


def test_speed_replays_a_file_as_a_faster_camera(clip: Path) -> None:
    with open_source(SourceSpec(str(clip), speed=4.0)) as reader:
        pts = np.array([f.pts for f in reader.frames()])
    assert len(pts) == CLIP_FRAMES and np.all(np.diff(pts) > 0)
    assert pts[-1] + 1 / (4 * CLIP_FPS) == pytest.approx(9.18 / 4, abs=0.01)  # its clock, 4x
    started = time.monotonic()
    with open_source(SourceSpec(str(clip), realtime=True, speed=2.0)) as reader:
        assert sum(1 for _ in itertools.islice(reader.frames(), 31)) == 31
    # paced at 2x: never faster (a lower bound only, which load cannot break)
    assert time.monotonic() - started >= 0.95 * 30 / (2 * CLIP_FPS)
    for bad in (0.0, -1.0, float("nan"), 1000.0):
        with pytest.raises(ConfigError):
            SourceSpec(str(clip), speed=bad)
    with pytest.raises(ConfigError):
        SourceSpec("rtsp://cam/x", speed=2.0)  # a live camera has its own clock


def test_truncated_and_garbage_files_are_reported(clip: Path, tmp_path: Path) -> None:
    data = clip.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: int(len(data) * 0.4)])  # the clip's index is at its end
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(11).bytes(200_000))
    for path in (truncated, garbage, tmp_path / "missing.mp4"):
        with pytest.raises(SourceError) as caught:
            open_source(SourceSpec(str(path)))
        assert str(path) in caught.value.message
        assert caught.value.code == "source_error"


def test_corruption_inside_a_file_is_counted_not_fatal(clip: Path, tmp_path: Path) -> None:
    data = bytearray(clip.read_bytes())
    start = len(data) // 3
    data[start : start + 20_000] = np.random.default_rng(3).bytes(20_000)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(data))
    with open_source(SourceSpec(str(corrupt))) as reader:
        count = sum(1 for _ in reader.frames())
        stats = reader.stats()
    assert 0 < count < CLIP_FRAMES  # frames before and after the damage still come
    assert stats.state in ("ended", "failed")
    assert stats.errors > 0 and stats.last_error is not None


def test_image_sequence_from_a_folder_and_a_glob(lfw_root: Path, tmp_path: Path) -> None:
    person = lfw_root / "lfw-deepfunneled" / "Aaron_Peirsol"
    photos = sorted(person.glob("*.jpg"))[:3]
    folder = tmp_path / "seq"
    folder.mkdir()
    for i, photo in enumerate(photos):
        shutil.copy(photo, folder / f"{i:03d}.jpg")
    Image.open(photos[0]).save(folder / "003.png")
    (folder / "004.jpg").write_bytes(b"not a jpeg")
    (folder / "notes.txt").write_text("ignored")
    with open_source(SourceSpec(str(folder))) as reader:
        frames = list(reader.frames())
        stats = reader.stats()
    assert len(frames) == 4
    expected = [load_image(folder / f"{i:03d}.{'png' if i == 3 else 'jpg'}") for i in range(4)]
    for frame, image in zip(frames, expected, strict=True):
        assert np.array_equal(frame.image, image)
    assert [f.pts for f in frames] == pytest.approx([0, 1 / 25, 2 / 25, 3 / 25])
    assert stats.errors == 1 and "004.jpg" in (stats.last_error or "")
    with open_source(SourceSpec(str(folder / "*.png"))) as reader:
        assert len(list(reader.frames())) == 1
    with pytest.raises(SourceError):
        open_source(SourceSpec(str(tmp_path / "*.jpg")))


def test_specs_are_validated_and_classified(tmp_path: Path) -> None:
    assert source_kind("rtsp://user:pw@cam/stream") == "stream"
    assert source_kind("https://example.org/live.m3u8") == "stream"
    assert source_kind("/dev/video0") == "device"
    assert source_kind(str(tmp_path)) == "images"
    assert source_kind("frames/*.jpg") == "images"
    assert source_kind("clip.mp4") == "file"
    assert SourceSpec("rtsp://cam/x").reconnects and not SourceSpec("clip.mp4").reconnects
    with pytest.raises(ConfigError):
        SourceSpec("clip.mp4", read_timeout_s=0)
    with pytest.raises(ConfigError):
        SourceSpec("clip.mp4", backoff_initial_s=5, backoff_max_s=1)
    with pytest.raises(SourceError):
        open_source(SourceSpec("/dev/video97", open_timeout_s=2))


# -- freshest frame -------------------------------------------------------------------------


def test_slow_consumer_gets_the_freshest_frame_and_drops_are_counted(clip: Path) -> None:
    taken: list[Frame] = []
    with open_source(SourceSpec(str(clip), realtime=True)) as reader:
        reader.start()
        for _ in range(8):
            frame = reader.latest(timeout=5.0)
            assert frame is not None
            taken.append(frame)
            time.sleep(0.12)  # a pipeline slower than the clip's 30 fps
            reader.mark_processed(frame)
        running = reader.stats()
    stats = reader.stats()  # after close: the decoding thread has stopped
    indices = [f.index for f in taken]
    assert indices == sorted(set(indices)) and max(np.diff(indices)) > 1
    assert stats.dropped > 0 and stats.processed == len(taken)
    # one slot: every decoded frame was handed out, counted as dropped, or is the one waiting
    assert stats.decoded - stats.dropped - len(taken) in (0, 1)
    assert running.processed_fps > 0 and running.input_fps > running.processed_fps
    assert running.lag_s >= 0 and running.state == "connected"


# -- network faults -------------------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts every connection and never sends a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_a_server_that_never_answers_times_out(silent_server: int, scheme: str) -> None:
    spec = SourceSpec(
        f"{scheme}://127.0.0.1:{silent_server}/cam", open_timeout_s=1.0, read_timeout_s=1.0
    )
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            open_source(spec).close()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(CEILING_S)
    assert not thread.is_alive(), "open_source hung on a silent server"
    assert len(outcome) == 1 and isinstance(outcome[0], SourceError)
    assert "cannot open" in outcome[0].message


@pytest.fixture(scope="module")
def rtsp_available() -> None:
    require_rtsp_server()


def _next_frame(reader_latest: Callable[[float], Frame | None], after: Frame) -> Frame:
    frame: Frame | None = None

    def newer() -> bool:
        nonlocal frame
        got = reader_latest(0.2)
        if got is not None and got.index > after.index:
            frame = got
        return frame is not None

    assert _wait_until(newer), "no frame came"
    assert frame is not None
    return frame


def test_rtsp_camera_stalled_killed_and_restarted(rtsp_available: None, clip: Path) -> None:
    port = free_port()
    spec = SourceSpec(
        f"rtsp://127.0.0.1:{port}/cam",
        open_timeout_s=3.0,
        read_timeout_s=1.0,
        backoff_initial_s=0.2,
        backoff_max_s=1.0,
    )
    with pytest.raises(SourceError):
        open_source(spec)  # no camera yet
    server: subprocess.Popen[str] | None = None
    try:
        with open_source(spec, retry_first=True) as reader:
            reader.start()
            assert reader.stats().state == "reconnecting"
            server = start_rtsp(port, clip)  # the camera comes up after its worker
            first = reader.latest(timeout=CEILING_S)
            assert first is not None and first.image.shape == (360, 640, 3)
            frame = _next_frame(reader.latest, first)
            assert frame.pts > first.pts and reader.stats().connected

            # the camera stops sending but keeps its connection: the read watchdog fires
            os.kill(server.pid, signal.SIGSTOP)
            assert _wait_until(lambda: reader.stats().state == "reconnecting")
            os.kill(server.pid, signal.SIGCONT)
            assert _wait_until(lambda: reader.stats().reconnects >= 1)
            after_stall = _next_frame(reader.latest, frame)
            assert after_stall.pts > frame.pts

            # the camera dies and comes back on the same port
            server.kill()
            down = time.monotonic()
            server.wait()
            assert _wait_until(lambda: reader.stats().state == "reconnecting")
            assert not reader.stats().connected
            reconnects = reader.stats().reconnects
            server = start_rtsp(port, clip)
            downtime = time.monotonic() - down
            assert _wait_until(lambda: reader.stats().reconnects > reconnects)
            after_restart = _next_frame(reader.latest, after_stall)
            stats = reader.stats()
        # the clock goes on across the gap, and the gap shows in it (a tracker must see it)
        assert after_restart.pts - after_stall.pts >= downtime
        assert after_restart.image.shape == (360, 640, 3)
        assert stats.reconnects >= 2 and stats.errors >= 2 and stats.last_error
    finally:
        if server is not None and server.poll() is None:
            os.kill(server.pid, signal.SIGCONT)
            server.kill()
            server.wait()
