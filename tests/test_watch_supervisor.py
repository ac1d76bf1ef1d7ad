"""Camera worker supervision with real spawned processes and real signals.

No timed assertions: every wait is a polling loop with a generous deadline; the only time
comparisons are lower bounds the supervisor enforces (back-off delays between starts)."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest

from tests._watch_workers import TARGET
from yingyan.errors import ConfigError
from yingyan.watch.supervisor import (
    MAX_MESSAGE_BYTES,
    Backoff,
    DuplicateCameraError,
    StatusChannel,
    StatusMessageError,
    Supervisor,
    SupervisorError,
    UnknownCameraError,
    WorkerSpec,
    WorkerStatus,
    _Inbox,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 30.0
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None]) -> T:
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def gone(pid: int) -> bool:
    """No such process; a zombie (dead, not reaped) still counts as present."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def gone_or_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def spec(camera: str, **config: object) -> WorkerSpec:
    return WorkerSpec(camera, TARGET, dict(config))


@pytest.fixture
def make_supervisor() -> Iterator[Callable[..., Supervisor]]:
    made: list[Supervisor] = []

    def make(max_restarts: int = 5, **options: float) -> Supervisor:
        options.setdefault("poll_interval_s", 0.05)
        supervisor = Supervisor(max_restarts, **options)
        made.append(supervisor)
        return supervisor

    yield make
    for supervisor in made:
        supervisor.stop(timeout_s=1.0)


def heartbeating(supervisor: Supervisor, camera: str) -> WorkerStatus | None:
    status = supervisor.status().get(camera)
    if status and status.alive and status.last_heartbeat is not None and status.stats:
        return status
    return None


def test_spec_is_validated_and_copied() -> None:
    config = {"url": "rtsp://cam/1", "fps": 10}
    made = WorkerSpec("gate-1", TARGET, config)
    config["fps"] = 99
    assert made.config == {"url": "rtsp://cam/1", "fps": 10}
    with pytest.raises(ConfigError):
        WorkerSpec("gate-1", "tests._watch_workers.demo_worker", {})
    with pytest.raises(ConfigError):
        WorkerSpec("", TARGET, {})
    with pytest.raises(ConfigError):
        WorkerSpec("gate-1", TARGET, {"frame": b"\x00" * 3})
    with pytest.raises(ConfigError):
        WorkerSpec("gate-1", TARGET, {}, restart="never")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Supervisor(0)
    with pytest.raises(ConfigError):
        Supervisor(3, backoff_initial_s=5, backoff_max_s=1)


def test_backoff_doubles_to_its_cap_and_a_long_run_resets_it() -> None:
    backoff = Backoff(initial_s=0.5, max_s=4.0, max_restarts=3, window_s=60.0)
    assert [backoff.delay_after_exit(ran_s=1.0) for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert backoff.delay_after_exit(ran_s=61.0) == 0.5
    backoff.restarts.extend([100.0, 110.0, 120.0])
    assert backoff.window_wait(130.0) == pytest.approx(30.0)  # full: wait for 100 to expire
    assert backoff.window_wait(161.0) == 0.0  # 100 has left the window
    assert list(backoff.restarts) == [110.0, 120.0]


def test_status_channel_drops_instead_of_blocking_and_stays_bounded() -> None:
    reader, writer = multiprocessing.Pipe(duplex=False)
    channel, inbox = StatusChannel(writer), _Inbox(reader)
    stats = {"state": "connected", "processed": 0, "lag_s": 0.25}
    while channel.heartbeat(stats):  # a parent that does not read: the pipe fills, then drops
        stats["processed"] = channel.sent
    assert channel.dropped == 1
    for _ in range(100):
        assert not channel.heartbeat(stats)
    assert channel.dropped == 101
    assert channel.sent * 40 <= 1 << 20  # the kernel buffer (64 KiB by default) bounds it
    count, newest = inbox.read()
    assert count == channel.sent
    assert newest is not None and newest["stats"]["processed"] == channel.sent - 1
    assert channel.heartbeat(stats)  # room again once the parent has read
    assert inbox.read()[0] == 1
    with pytest.raises(StatusMessageError):
        channel.heartbeat({"frame": "x" * MAX_MESSAGE_BYTES})
    with pytest.raises(StatusMessageError):
        channel.heartbeat({"frame": b"raw"})
    inbox.close()
    assert not channel.heartbeat(stats)
    assert channel.closed  # the parent is gone: the worker can tell and end
    channel.close()


def test_sigkilled_worker_is_restarted_with_a_new_pid(
    make_supervisor: Callable[..., Supervisor],
) -> None:
    supervisor = make_supervisor(backoff_initial_s=0.1)
    supervisor.add(spec("gate-1"))
    supervisor.start()
    first = wait_for("a heartbeat", lambda: heartbeating(supervisor, "gate-1"))
    assert first.restarts == 0 and first.last_exit is None and first.pid is not None
    assert first.stats["camera"] == "gate-1" and first.stats["state"] == "connected"
    os.kill(first.pid, signal.SIGKILL)

    def restarted() -> WorkerStatus | None:
        status = heartbeating(supervisor, "gate-1")
        return status if status and status.pid != first.pid else None

    second = wait_for("the restarted worker's heartbeat", restarted)
    assert second.restarts == 1
    assert second.last_exit == -signal.SIGKILL
    assert second.hangs == 0
    assert gone(first.pid)  # reaped, not a zombie


def test_worker_that_keeps_exiting_backs_off_within_its_window(
    make_supervisor: Callable[..., Supervisor], tmp_path: Path
) -> None:
    starts = tmp_path / "starts.log"
    supervisor = make_supervisor(
        3, backoff_initial_s=0.2, backoff_max_s=0.8, restart_window_s=300.0
    )
    supervisor.add(spec("gate-2", mode="exit", code=3, log=str(starts)))
    supervisor.start()

    def held() -> WorkerStatus | None:
        status = supervisor.status()["gate-2"]
        return status if status.restarts == 3 and status.state == "backoff" else None

    status = wait_for("three restarts, then a hold", held)
    assert not status.alive and status.last_exit == 3
    assert status.backoff_s == 0.8  # 0.2, 0.4, 0.8, then capped
    assert status.next_restart_in_s is not None and status.next_restart_in_s > 200  # the window
    times = [float(line.split()[0]) for line in starts.read_text().splitlines()]
    pids = {line.split()[1] for line in starts.read_text().splitlines()}
    assert len(times) == 4 and len(pids) == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    for gap, delay in zip(gaps, [0.2, 0.4, 0.8], strict=True):
        assert gap >= delay  # each restart waited at least its (growing) delay
    assert supervisor.status()["gate-2"].restarts == 3


def test_hung_worker_is_killed_and_restarted(
    make_supervisor: Callable[..., Supervisor],
) -> None:
    supervisor = make_supervisor(backoff_initial_s=0.1, heartbeat_timeout_s=1.0)
    supervisor.add(spec("gate-3", mode="hang", after=3, ignore_term=True))
    supervisor.start()
    first = wait_for("a heartbeat", lambda: heartbeating(supervisor, "gate-3"))
    assert first.pid is not None

    def replaced() -> WorkerStatus | None:
        status = supervisor.status()["gate-3"]
        return status if status.restarts >= 1 and status.pid not in (None, first.pid) else None

    second = wait_for("the hung worker's replacement", replaced)
    assert second.hangs >= 1
    assert second.last_exit == -signal.SIGKILL
    assert gone(first.pid)


def test_cameras_are_added_and_removed_at_run_time(
    make_supervisor: Callable[..., Supervisor],
) -> None:
    supervisor = make_supervisor()
    supervisor.add(spec("north"))
    supervisor.start()
    north = wait_for("north", lambda: heartbeating(supervisor, "north"))
    supervisor.add(spec("south"))
    supervisor.add(spec("stubborn", ignore_term=True))
    south = wait_for("south", lambda: heartbeating(supervisor, "south"))
    stubborn = wait_for("stubborn", lambda: heartbeating(supervisor, "stubborn"))
    with pytest.raises(DuplicateCameraError):
        supervisor.add(spec("south"))
    assert north.pid and south.pid and stubborn.pid

    final = supervisor.remove("north", timeout_s=5.0)
    assert gone(north.pid)
    assert final.state == "stopped" and final.last_exit == -signal.SIGTERM
    final = supervisor.remove("stubborn", timeout_s=0.5)  # ignores SIGTERM: killed
    assert gone(stubborn.pid) and final.last_exit == -signal.SIGKILL
    with pytest.raises(UnknownCameraError):
        supervisor.remove("north")

    assert set(supervisor.status()) == {"south"}
    still = wait_for("south again", lambda: heartbeating(supervisor, "south"))
    assert still.pid == south.pid and still.restarts == 0
    supervisor.add(spec("north"))  # the same camera can come back
    back = wait_for("north back", lambda: heartbeating(supervisor, "north"))
    assert back.pid != north.pid and back.restarts == 0


def test_stop_leaves_no_child_alive(make_supervisor: Callable[..., Supervisor]) -> None:
    supervisor = make_supervisor()
    supervisor.add(spec("a"))
    supervisor.add(spec("b", mode="hang", after=1))
    supervisor.add(spec("c", ignore_term=True))
    supervisor.start()
    pids = [wait_for(camera, partial(heartbeating, supervisor, camera)).pid for camera in "abc"]
    supervisor.stop(timeout_s=1.0)
    for pid in pids:
        assert pid is not None and gone(pid)
    assert not {p.pid for p in multiprocessing.active_children()} & set(pids)
    assert supervisor.status() == {}
    with pytest.raises(SupervisorError):
        supervisor.add(spec("d"))


def test_a_flooding_worker_is_not_blocked_by_a_parent_that_does_not_read(
    make_supervisor: Callable[..., Supervisor], tmp_path: Path
) -> None:
    result = tmp_path / "flood.json"
    count = 20_000
    supervisor = make_supervisor()  # never started, not polled: nobody reads the pipe
    supervisor.add(
        WorkerSpec(
            "flood",
            TARGET,
            {"mode": "flood", "count": count, "result": str(result)},
            restart="on_failure",
        )
    )
    flooded = json.loads(
        wait_for("the flood to end", lambda: (result.exists() and result.read_text()) or None)
    )
    assert flooded["sent"] + flooded["dropped"] == count
    assert flooded["dropped"] > 0 and flooded["sent"] < count // 4

    def finished() -> WorkerStatus | None:
        supervisor.poll()
        status = supervisor.status()["flood"]
        return status if status.state == "finished" else None

    status = wait_for("the worker's exit", finished)
    assert status.last_exit == 0 and status.restarts == 0
    assert status.messages == flooded["sent"]  # everything in the pipe, nothing more


def _run_parent(script: str) -> subprocess.Popen[str]:
    code = textwrap.dedent(
        f"""
        import time
        from yingyan.watch.supervisor import Supervisor, WorkerSpec
        supervisor = Supervisor(3, poll_interval_s=0.05)
        supervisor.add(WorkerSpec("cam", {TARGET!r}, {{}}))
        supervisor.start()
        while not supervisor.status()["cam"].last_heartbeat:
            time.sleep(0.05)
        print(supervisor.status()["cam"].pid, flush=True)
        """
    )
    return subprocess.Popen(
        [sys.executable, "-c", code + script], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True
    )


def test_a_parent_that_exits_normally_leaves_no_orphan() -> None:
    with _run_parent("") as parent:  # no stop(): the interpreter's exit must end the worker
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert parent.wait(timeout=DEADLINE_S) == 0
    assert wait_for("the worker to end", lambda: gone(pid))


def test_a_worker_ends_when_its_parent_is_killed() -> None:
    with _run_parent("time.sleep(600)\n") as parent:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert not gone(pid)
        parent.kill()  # no atexit, no cleanup: the worker sees the broken pipe and returns
        parent.wait(timeout=DEADLINE_S)
    assert wait_for("the orphaned worker to end", lambda: gone_or_zombie(pid))
