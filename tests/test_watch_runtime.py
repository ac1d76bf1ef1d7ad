"""The watch runtime: camera workers follow the database, with real spawned camera workers.

Cameras added, changed, disabled and removed, sessions stopped and expired: the workers follow
at the next sync (and by themselves, through the periodic one). Then a real RTSP camera
(GStreamer, started by the test) serving the clip with Alex Lacamoire on the watchlist: an
alert for him; the server killed and restarted, the worker reconnects and says so; the worker
SIGKILLed, the runtime restarts it; and through all of it one alert, extended, not duplicated.
Waits poll with generous ceilings; nothing is timed."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from yingyan.errors import ConfigError
from yingyan.gallery.factory import open_gallery_service
from yingyan.settings import Settings
from yingyan.store import Database, create_gallery
from yingyan.watch.alerts import list_alerts
from yingyan.watch.runtime import CameraRuntime, SyncResult, WatchRuntime, worker_config
from yingyan.watch.sessions import (
    WatchCamera,
    WatchSession,
    add_camera,
    change_camera,
    create_session,
    remove_camera,
    stop_session,
)
from yingyan.watch.supervisor import Supervisor

from ._rtsp import free_port, require_rtsp_server, start_rtsp
from ._watch_clip import (
    ACTOR,
    ALEX,
    ENGINE,
    PIPELINE,
    THRESHOLD,
    WATCHLIST,
    alex_photos,
    enroll_watchlist,
    slowed_clip,
)

MODEL = "dlib_resnet_v1@55533b28a958"
CEILING_S = 90.0  # never a timing bound: how long a broken runtime may take to fail a test
T = TypeVar("T")
# A camera that is down: nothing listens there, so its worker reconnects (and heartbeats).
CHEAP = {"engine": {"detector": "hog"}, "source": {"open_timeout_s": 1, "read_timeout_s": 1}}
LIVE_SOURCE = {
    "open_timeout_s": 3.0,
    "read_timeout_s": 1.0,
    "backoff_initial_s": 0.2,
    "backoff_max_s": 1.0,
}


def wait_for(what: str, probe: Callable[[], T | None], ceiling: float = CEILING_S) -> T:
    end = time.monotonic() + ceiling
    while time.monotonic() < end:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def gone(pid: int) -> bool:
    """No such process, or a zombie (dead, not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _session(db: Database, name: str, expires_at: datetime | None = None) -> None:
    create_session(
        db,
        name=name,
        purpose="find the people named in warrant W-1",
        case_ref="W-1",
        legal_basis="court order W-1",
        expires_at=expires_at or datetime.now(UTC) + timedelta(days=1),
        galleries=[WATCHLIST],
        actor=ACTOR,
        threshold=THRESHOLD,
    )


def _down_camera() -> str:
    return f"rtsp://127.0.0.1:{free_port()}/cam"


def _supervisor() -> Supervisor:
    return Supervisor(
        5, backoff_initial_s=0.2, backoff_max_s=2.0, poll_interval_s=0.1, startup_timeout_s=120
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", workers=0)


@pytest.fixture
def make_runtime(settings: Settings) -> Iterator[Callable[[float], WatchRuntime]]:
    made: list[WatchRuntime] = []

    def make(sync_every_s: float) -> WatchRuntime:
        runtime = WatchRuntime(settings, supervisor=_supervisor(), sync_every_s=sync_every_s)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.stop(timeout_s=2.0)


def _by_id(runtime: WatchRuntime) -> dict[str, CameraRuntime]:
    return {f"{c.session}/{c.camera}": c for c in runtime.status()}


def _alive(runtime: WatchRuntime, worker: str) -> CameraRuntime | None:
    camera = _by_id(runtime).get(worker)
    return camera if camera is not None and camera.pid is not None else None


def test_worker_config_splits_a_cameras_settings(settings: Settings) -> None:
    session = _view_session()
    camera = WatchCamera(
        7,
        "concert",
        "gate-1",
        "rtsp://viewer:secret@10.0.0.21/stream1",
        {
            "detect_every": 3,
            "read_timeout_s": 2.0,
            "source": {"backoff_max_s": 4.0},
            "engine": {"detector": "cnn", "upsample": 0},
            "crowd": {"tile_px": 512},
            "note": "kept for the worker",
        },
        True,
    )
    config, restart = worker_config(settings, session, camera)
    assert restart == "always"  # a stream is restarted whatever its exit
    assert config["source"] == {
        "url": camera.url,
        "read_timeout_s": 2.0,
        "backoff_max_s": 4.0,
    }
    assert config["pipeline"] == {"detect_every": 3}
    assert config["engine"] == {"detector": "cnn", "upsample": 0}
    assert config["crowd"] == {"tile_px": 512} and config["note"] == "kept for the worker"
    assert (config["session"], config["camera"], config["camera_row"]) == ("concert", "gate-1", 7)
    assert Settings(**config["settings"]) == settings

    recording = WatchCamera(8, "concert", "file", "/srv/rec.mp4", {}, True)
    assert worker_config(settings, session, recording)[1] == "on_failure"  # done at its end
    looping = WatchCamera(9, "concert", "loop", "/srv/rec.mp4", {"loop": True}, True)
    assert worker_config(settings, session, looping)[1] == "always"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"pipeline": {"detect_evry": 2}}, "unknown pipeline setting"),
        ({"engine": {"detector": "sift"}}, "unknown detector"),
        ({"engine": {"upsample": "x"}}, "engine"),
        ({"read_timeout_s": 0}, "read_timeout_s"),
        ({"session": "other"}, "may not set session"),
        ({"crowd": {"tile": 512}}, "unknown crowd setting"),
        ({"source": [1]}, "must be a table"),
    ]
    for bad, message in cases:
        wrong = WatchCamera(10, "concert", "bad", "rtsp://cam/1", bad, True)
        with pytest.raises(ConfigError, match=message):
            worker_config(settings, session, wrong)


def _view_session() -> WatchSession:
    now = datetime.now(UTC)
    return WatchSession(
        1, "concert", "p", "W-1", "order", now + timedelta(days=1), 1e-3, THRESHOLD, "active",
        ACTOR, now, None, (WATCHLIST,),
    )  # fmt: skip


def test_workers_follow_the_database(make_runtime: Callable[[float], WatchRuntime]) -> None:
    runtime = make_runtime(3600.0)  # syncs when asked (the periodic sync: the live test)
    db = runtime.db
    with db.session() as s:
        create_gallery(
            s, name=WATCHLIST, kind="watchlist", purpose="warrant", legal_basis="order", model=MODEL
        )
    _session(db, "concert")
    add_camera(db, "concert", name="gate-1", url=_down_camera(), actor=ACTOR, settings=CHEAP)
    runtime.start()  # syncs at once
    first = wait_for("gate-1 to heartbeat", lambda: _heartbeating(runtime, "concert/gate-1"))
    assert first.stats["state"] == "reconnecting" and first.stats["connected"] is False
    assert first.camera_row == 1 and first.restarts == 0

    add_camera(db, "concert", name="gate-2", url=_down_camera(), actor=ACTOR, settings=CHEAP)
    assert runtime.sync() == _result(started=("concert/gate-2",))
    assert runtime.sync() == _result()  # nothing changed: nothing restarted
    second = wait_for("gate-2 to start", lambda: _alive(runtime, "concert/gate-2"))

    # a camera with bad settings gets no worker, and says why
    typo = {"pipeline": {"detect_evry": 2}}
    add_camera(db, "concert", name="typo", url=_down_camera(), actor=ACTOR, settings=typo)
    result = runtime.sync()
    assert result.invalid == ("concert/typo",) and "concert/typo" not in _by_id(runtime)
    assert "detect_evry" in runtime.invalid()["concert/typo"]
    remove_camera(db, "concert", "typo", actor=ACTOR)

    # changed settings: a new worker with them; disabled: no worker; removed: no worker
    change_camera(db, "concert", "gate-2", actor=ACTOR, settings={**CHEAP, "detect_every": 3})
    assert runtime.sync() == _result(started=("concert/gate-2",), removed=("concert/gate-2",))
    assert gone(second.pid or 0)
    change_camera(db, "concert", "gate-2", actor=ACTOR, enabled=False)
    assert runtime.sync() == _result(removed=("concert/gate-2",))
    remove_camera(db, "concert", "gate-1", actor=ACTOR)
    assert runtime.sync() == _result(removed=("concert/gate-1",))
    assert gone(first.pid or 0) and runtime.status() == []

    # an expiring session: its workers end when it expires; a stopped one: at once
    change_camera(db, "concert", "gate-2", actor=ACTOR, enabled=True)
    soon = datetime.now(UTC) + timedelta(seconds=5)
    _session(db, "brief", expires_at=soon)
    add_camera(db, "brief", name="door", url=_down_camera(), actor=ACTOR, settings=CHEAP)
    assert set(runtime.sync().started) == {"brief/door", "concert/gate-2"}
    door = wait_for("brief/door to start", lambda: _alive(runtime, "brief/door"))
    wait_for("brief to expire", lambda: datetime.now(UTC) >= soon)
    assert runtime.sync() == _result(removed=("brief/door",))
    assert gone(door.pid or 0)
    gate = _by_id(runtime)["concert/gate-2"]
    stop_session(db, "concert", actor=ACTOR, reason="warrant served")
    assert runtime.sync().removed == ("concert/gate-2",)
    assert runtime.status() == [] and gone(gate.pid or 0)


def _result(started: tuple[str, ...] = (), removed: tuple[str, ...] = ()) -> SyncResult:
    return SyncResult(started, removed)


def _heartbeating(runtime: WatchRuntime, worker: str) -> CameraRuntime | None:
    camera = _by_id(runtime).get(worker)
    if camera is not None and camera.state == "running" and camera.stats:
        return camera
    return None


def _connected(runtime: WatchRuntime, worker: str) -> CameraRuntime | None:
    camera = _heartbeating(runtime, worker)
    return camera if camera is not None and camera.stats.get("connected") else None


def _alex_alerts(db: Database) -> list[Any]:
    alerts = list_alerts(db, session="live")
    assert all(a.candidates[0]["external_id"] == ALEX for a in alerts), alerts
    return alerts


@pytest.mark.shared
def test_a_live_camera_survives_its_stream_and_its_worker_dying(
    settings: Settings, make_runtime: Callable[[float], WatchRuntime], tmp_path: Path
) -> None:
    require_rtsp_server()
    runtime = make_runtime(0.3)
    clip = slowed_clip(tmp_path / "alex-slow.mp4")
    service = open_gallery_service(settings)
    try:
        enroll_watchlist(service, {ALEX: alex_photos()})
    finally:
        service.close()
        service.db.close()
    db = runtime.db
    _session(db, "live")
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}/cam"
    # Every frame the worker takes is detected: a live worker skips frames, and Alex's scores
    # sit just above the explicit threshold, so each pass needs all of his frames it gets.
    camera = {"engine": ENGINE, "pipeline": PIPELINE | {"detect_every": 1}, "source": LIVE_SOURCE}
    server: subprocess.Popen[str] | None = start_rtsp(port, clip)
    worker = "live/gate-1"
    try:
        runtime.start()
        # the periodic sync picks up a camera added by another process, without being asked
        add_camera(db, "live", name="gate-1", url=url, actor=ACTOR, settings=camera)
        wait_for("the worker to connect", lambda: _connected(runtime, worker))
        alert = wait_for("an alert for Alex", lambda: _alex_alerts(db))[0]
        assert alert.camera == "gate-1" and alert.threshold["score"] == THRESHOLD

        # the camera dies: the worker says so and keeps trying; it comes back on the same port
        assert server is not None
        server.kill()
        server.wait()
        server = None
        killed = time.time()
        down = wait_for("the worker to see the camera down", lambda: _down(runtime, worker, killed))
        assert down.state == "running" and down.restarts == 0  # the worker itself lives on
        assert down.stats["state"] == "reconnecting" and down.stats["last_error"]
        server = start_rtsp(port, clip)
        back = wait_for(
            "a reconnection",
            lambda: _reconnected(runtime, worker, int(down.stats["reconnects"])),
        )
        assert back.pid == down.pid
        tracks = _alex_alerts(db)[0].tracks
        seen = wait_for("Alex seen again", lambda: _seen_again(db, tracks))
        assert [a.id for a in seen] == [alert.id]  # extended, not a second alert

        # the worker is SIGKILLed: the runtime restarts it, it connects again
        os.kill(back.pid or 0, signal.SIGKILL)
        restarted = wait_for(
            "the restarted worker to connect",
            lambda: _restarted(runtime, worker, back.pid or 0),
        )
        assert restarted.restarts == 1 and restarted.last_exit == -signal.SIGKILL
        final = _alex_alerts(db)
        assert [a.id for a in final] == [alert.id] and final[0].state == "pending"
    finally:
        if server is not None:
            server.kill()
            server.wait()


def _down(runtime: WatchRuntime, worker: str, killed: float) -> CameraRuntime | None:
    """Disconnected, as a heartbeat sent well after the kill says (a read timeout later)."""
    camera = _heartbeating(runtime, worker)
    if camera is None or camera.heartbeat_age_s is None or camera.stats.get("connected"):
        return None
    return camera if time.time() - camera.heartbeat_age_s > killed + 2.0 else None


def _reconnected(runtime: WatchRuntime, worker: str, before: int) -> CameraRuntime | None:
    camera = _connected(runtime, worker)
    if camera is not None and int(camera.stats["reconnects"]) > before:
        return camera
    return None


def _restarted(runtime: WatchRuntime, worker: str, old_pid: int) -> CameraRuntime | None:
    camera = _connected(runtime, worker)
    return camera if camera is not None and camera.pid not in (None, old_pid) else None


def _seen_again(db: Database, tracks: int) -> list[Any] | None:
    alerts = _alex_alerts(db)
    return alerts if len(alerts) > 1 or (alerts and alerts[0].tracks > tracks) else None
