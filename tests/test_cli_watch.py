"""`yingyan watch --config` and `yingyan alerts`: the cameras file checked and applied (on SQLite
and PostgreSQL), bad files refused with a message and exit 2, and the command end to end on the
shared clip: a file camera watched in a real process until an alert for Alex Lacamoire, stopped
by SIGTERM (its workers ended, exit 0), the alert listed and confirmed by two reviewers."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from yingyan.audit.log import entries
from yingyan.cli.audit import cli_actor
from yingyan.cli.main import app
from yingyan.errors import ConfigError
from yingyan.gallery.factory import open_gallery_service
from yingyan.settings import Settings
from yingyan.store import Database, create_gallery
from yingyan.watch.config import apply_watch_config, load_watch_config, parse_duration
from yingyan.watch.sessions import SessionClosedError, get_session, list_cameras, stop_session

from ._watch_clip import (
    ALEX,
    ENGINE,
    PIPELINE,
    THRESHOLD,
    WATCHLIST,
    alex_photos,
    clip_path,
    enroll_watchlist,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODEL = "dlib_resnet_v1@55533b28a958"
CEILING_S = 180.0  # how long a broken command may take to fail the test, never a bound
runner = CliRunner()

SESSION = """
[session]
name = "concert"
purpose = "find the people named in warrant W-1"
case_ref = "W-1"
legal_basis = "court order W-1"
expires_in = "12h"
watchlists = ["sought"]
threshold = 0.885
"""
CAMERAS = """
[[camera]]
name = "gate-1"
url = "rtsp://viewer:secret@10.0.0.21/stream1"
detect_every = 3
[camera.engine]
detector = "cnn"
upsample = 0

[[camera]]
name = "gate-2"
url = "rtsp://10.0.0.22/stream1"
enabled = false
"""


def _write(tmp_path: Path, text: str, name: str = "cameras.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _operations(db: Database, after: int = 0) -> list[tuple[str, str]]:
    with db.read() as s:
        return [(e.operation, e.actor) for e in entries(s, after=after, limit=1000)]


def _head(db: Database) -> int:
    with db.read() as s:
        listed = entries(s, limit=1000)
    return listed[-1].seq if listed else 0


def test_durations() -> None:
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2d 6h") == timedelta(days=2, hours=6)
    assert parse_duration("1.5h") == timedelta(minutes=90)
    for bad in ("", "12", "h", "12x", "-1h", "0s", "1h30", "tomorrow"):
        with pytest.raises(ConfigError):
            parse_duration(bad)


def test_the_documented_example_is_valid(tmp_path: Path) -> None:
    text = (PROJECT_ROOT / "docs" / "cameras.example.toml").read_text(encoding="utf-8")
    later = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = re.sub(r"(?m)^expires_at = \S+", f"expires_at = {later}", text)
    cfg = load_watch_config(_write(tmp_path, text), Settings(workers=0))
    assert [c.name for c in cfg.cameras] == ["gate-1", "gate-2", "recording"]
    assert [c.enabled for c in cfg.cameras] == [True, False, True]
    assert cfg.cameras[0].settings["engine"] == {"detector": "cnn", "upsample": 0}
    assert cfg.session.expires_at is not None and cfg.session.threshold is None


def test_load_names_every_problem(tmp_path: Path) -> None:
    cases = [
        ("[session\nname = 1", "not valid TOML"),
        (SESSION + "\n[[cameras]]\nname = 'x'\n", "cameras: unknown key"),
        (SESSION.replace('purpose = "find the people named in warrant W-1"\n', ""), "purpose is"),
        (SESSION.replace('"12h"', '"12 hours"'), "not a duration"),
        (SESSION.replace('expires_in = "12h"', 'expires_at = "2020-01-01T00:00Z"'), "has passed"),
        (SESSION.replace('expires_in = "12h"\n', ""), "exactly one of expires_at"),
        (SESSION.replace("0.885", "1.5"), "session.threshold must be a number in [-1, 1]"),
        (SESSION.replace('["sought"]', "[]"), "non-empty list of gallery names"),
        (SESSION + CAMERAS.replace('"gate-2"', '"gate-1"'), "used by camera #1 too"),
        (SESSION + CAMERAS.replace("detect_every = 3", "detect_evry = 3"), "detect_evry"),
        (SESSION + CAMERAS.replace('"cnn"', '"sift"'), "unknown detector"),
        (SESSION + CAMERAS.replace("enabled = false", "enabled = 'no'"), "true or false"),
        (SESSION + "[[camera]]\nname = 'x'\n", "camera 'x': url is missing"),
        (SESSION + "[[camera]]\nurl = 'rtsp://a/b'\n[camera.crowd]\ntile = 3\n", "crowd"),
        (CAMERAS, "[session] is missing"),
        (
            SESSION.replace('"concert"', f'"{"x" * 100}"') + f"[[camera]]\nname = '{'y' * 40}'\n",
            "together have at most 127 characters",
        ),
    ]
    for text, message in cases:
        with pytest.raises(ConfigError) as caught:
            load_watch_config(_write(tmp_path, text), Settings(workers=0))
        assert message in caught.value.message, (message, caught.value.message)
    many = SESSION.replace('"12h"', '"soon"').replace("0.885", "2") + "[[camera]]\nname='a/b'\n"
    with pytest.raises(ConfigError) as caught:
        load_watch_config(_write(tmp_path, many))
    assert caught.value.message.count("\n  ") == 4  # every problem, each on its own line
    with pytest.raises(ConfigError, match="no such watch config file"):
        load_watch_config(tmp_path / "missing.toml")


def test_apply_makes_the_database_match_the_file(db: Database, tmp_path: Path) -> None:
    with db.session() as s:
        for name in (WATCHLIST, "also-sought"):
            create_gallery(
                s, name=name, kind="watchlist", purpose="warrant", legal_basis="order", model=MODEL
            )
    actor = "cli:tester"
    cfg = load_watch_config(_write(tmp_path, SESSION + CAMERAS))
    session = apply_watch_config(db, cfg, actor)
    assert session.threshold == THRESHOLD and session.galleries == (WATCHLIST,)
    expires_at = session.expires_at
    cameras = {c.name: c for c in list_cameras(db, "concert")}
    assert cameras["gate-1"].settings == {"detect_every": 3, "engine": ENGINE}
    assert not cameras["gate-2"].enabled
    assert _operations(db) == [
        ("watch.session.start", actor),
        ("watch.camera.add", actor),
        ("watch.camera.add", actor),
    ]
    with db.read() as s:
        logged = json.dumps([e.details for e in entries(s, limit=1000)])
    assert "secret" not in logged and "rtsp://viewer:***@10.0.0.21" in logged  # redacted
    head = _head(db)
    assert apply_watch_config(db, cfg, actor) == get_session(db, "concert")
    assert _operations(db, head) == []  # already as the file says: nothing is done

    changed = SESSION.replace("threshold = 0.885", "target_fpir = 1e-4").replace(
        '["sought"]', '["sought", "also-sought"]'
    ).replace('"12h"', '"1h"') + CAMERAS.replace("detect_every = 3", "detect_every = 2").replace(
        '"gate-2"', '"gate-3"'
    ).replace("enabled = false", "")
    session = apply_watch_config(db, load_watch_config(_write(tmp_path, changed)), actor)
    assert session.threshold is None and session.target_fpir == 1e-4
    assert set(session.galleries) == {WATCHLIST, "also-sought"}
    assert session.expires_at == expires_at  # expires_in counts from the start only
    cameras = {c.name: c for c in list_cameras(db, "concert")}
    assert set(cameras) == {"gate-1", "gate-3"} and cameras["gate-3"].enabled
    assert cameras["gate-1"].settings["detect_every"] == 2
    assert [op for op, _ in _operations(db, head)] == [
        "watch.session.change",
        "watch.camera.remove",
        "watch.camera.change",
        "watch.camera.add",
    ]
    stop_session(db, "concert", actor=actor)
    with pytest.raises(SessionClosedError, match="name a new session"):
        apply_watch_config(db, cfg, actor)


def test_bad_config_exits_2_with_a_message_and_no_traceback(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    cases = [
        (_write(tmp_path, SESSION.replace('"12h"', '"12x"'), "a.toml"), "not a duration"),
        (_write(tmp_path, SESSION + CAMERAS + CAMERAS, "b.toml"), "used by camera #1 too"),
        (_write(tmp_path, SESSION + "colour = 'red'\n", "c.toml"), "colour: unknown key"),
        (_write(tmp_path, SESSION.replace("sought", "nobody"), "d.toml"), "nobody"),
        (tmp_path / "missing.toml", "no such watch config file"),
    ]
    for path, message in cases:
        r = runner.invoke(app, ["watch", "--config", str(path), *data])
        assert r.exit_code == 2, (path, r.output)
        assert message in r.stderr, (message, r.stderr)
        assert "Traceback" not in r.output
    r = runner.invoke(app, ["alerts", "list", "--state", "maybe", *data])
    assert r.exit_code == 2 and "state must be one of" in r.stderr
    r = runner.invoke(app, ["alerts", "list", "--since", "yesterday", *data])
    assert r.exit_code == 2 and "ISO 8601" in r.stderr
    args = ["alerts", "review", "99", "--verdict", "confirm", "--note", "n", "--reviewer", "ana"]
    r = runner.invoke(app, [*args, *data])
    assert r.exit_code == 2 and "no alert with id 99" in r.stderr


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found |= {int(child) for child in text}
    return found


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _until(lines: queue.Queue[str], pattern: str, seen: list[str]) -> str:
    """The next line of output that starts with the regular expression `pattern`."""
    end = time.monotonic() + CEILING_S
    while time.monotonic() < end:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        seen.append(line)
        if re.match(pattern, line):
            return line
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(seen)}")


def _wait(what: str, condition: Callable[[], bool]) -> None:
    end = time.monotonic() + CEILING_S
    while not condition():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.1)


@pytest.mark.shared
def test_watch_a_file_camera_to_an_alert_then_list_and_review_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    service = open_gallery_service(Settings(data_dir=data, workers=0))
    try:
        enroll_watchlist(service, {ALEX: alex_photos()})
    finally:
        service.close()
        service.db.close()
    camera = f"""
[[camera]]
name = "gate-1"
url = "{clip_path()}"
loop = true  # every frame, again and again: the worker is still at work when it is stopped
[camera.engine]
detector = "{ENGINE["detector"]}"
upsample = {ENGINE["upsample"]}
[camera.pipeline]
adaptive = {str(PIPELINE["adaptive"]).lower()}
detect_every = {PIPELINE["detect_every"]}
"""
    config = _write(tmp_path, SESSION + camera)
    env = {k: v for k, v in os.environ.items() if not k.startswith("YINGYAN_")}
    env["YINGYAN_SHARED"] = os.environ.get("YINGYAN_SHARED", "")
    command = [sys.executable, "-m", "yingyan.cli.main", "watch", "--config", str(config)]
    process = subprocess.Popen(
        [*command, "--data-dir", str(data), "--status-every", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    seen: list[str] = []
    try:
        lines = _lines(process)
        assert _until(lines, "session concert:", seen).endswith("1 subject(s)\n")
        _until(lines, "  camera gate-1: ", seen)
        status = _until(lines, r"\d\d:\d\d:\d\d  concert/gate-1  ", seen)
        assert "restarts 0" in status
        alert = _until(lines, "ALERT ", seen)
        assert f"{ALEX} score" in alert and "explicit threshold" in alert
        workers = _children(process.pid)
        assert workers  # the camera's worker process
        process.send_signal(signal.SIGTERM)
        assert process.wait(CEILING_S) == 0, process.stderr.read() if process.stderr else ""
        _until(lines, "stopped: 1 camera worker", seen)
        _wait("the workers to end", lambda: all(_gone(pid) for pid in workers))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in (process.stderr.read() if process.stderr else "")

    where = ["--data-dir", str(data)]
    r = runner.invoke(app, ["alerts", "list", "--json", "--session", "concert", *where])
    assert r.exit_code == 0, r.output
    listed = json.loads(r.stdout)
    assert len(listed) == 1 and listed[0]["camera"] == "gate-1"
    assert [c["external_id"] for c in listed[0]["candidates"]] == [ALEX]
    assert listed[0]["state"] == "pending" and listed[0]["threshold"]["score"] == THRESHOLD
    alert_id = str(listed[0]["id"])
    r = runner.invoke(app, ["alerts", "list", "--state", "confirmed", "--json", *where])
    assert r.exit_code == 0 and json.loads(r.stdout) == []

    def review(reviewer: str, note: str) -> str:
        args = ["--verdict", "confirm", "--note", note, "--reviewer", reviewer, *where]
        r = runner.invoke(app, ["alerts", "review", alert_id, *args])
        assert r.exit_code in (0, 2), r.output
        return r.stdout if r.exit_code == 0 else "exit 2: " + r.stderr

    assert "pending (1 confirmation(s)" in review("ana", "same face as the warrant photo")
    assert "already reviewed" in review("ana", "still the same")
    assert "confirmed (2 confirmation(s)" in review("ben", "agree: same person")
    assert "already confirmed" in review("cy", "late")
    r = runner.invoke(app, ["alerts", "list", *where])
    assert r.exit_code == 0 and "confirmed" in r.stdout and ALEX in r.stdout

    from yingyan.store import open_database

    with open_database(None, data) as db:
        done = _operations(db)
    me = cli_actor()
    assert ("watch.session.start", me) in done and ("watch.camera.add", me) in done
    assert ("watch.alert.raise", "worker:gate-1") in done
    reviews = [actor for op, actor in done if op == "watch.alert.review"]
    assert reviews == [f"{me}(ana)", f"{me}(ben)"]
    assert [op for op, _ in done].count("watch.alert.list") == 3
