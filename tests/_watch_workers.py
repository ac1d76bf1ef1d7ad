"""Camera workers for the supervisor tests: they heartbeat like a real one and misbehave on
request (exit, crash, hang, ignore SIGTERM, flood the status channel)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from yingyan.video.frames import SourceStats
from yingyan.watch.supervisor import StatusChannel

TARGET = "tests._watch_workers:demo_worker"


def demo_worker(camera_id: str, config: dict[str, Any], status: StatusChannel) -> None:
    """config: mode = run | exit | crash | hang | flood; interval_s; after (heartbeats before
    misbehaving); code (exit code); ignore_term; log (a file each start appends to);
    count and result (flood)."""
    if config.get("ignore_term"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "log" in config:
        with open(config["log"], "a", encoding="utf-8") as file:
            file.write(f"{time.time()!r} {os.getpid()}\n")
    mode = config.get("mode", "run")
    if mode == "flood":
        _flood(status, int(config["count"]), Path(config["result"]))
        return
    interval = float(config.get("interval_s", 0.05))
    after = int(config.get("after", 1))
    stats = SourceStats(state="connected", connected=True)
    while not status.closed:  # the parent is gone: end rather than linger as an orphan
        stats.decoded += 1
        stats.processed += 1
        status.heartbeat({"camera": camera_id, **stats.as_dict()})
        if stats.processed >= after:
            if mode == "exit":
                raise SystemExit(int(config.get("code", 3)))
            if mode == "crash":
                raise RuntimeError(f"camera {camera_id} crashed on purpose")
            if mode == "hang":
                while True:
                    time.sleep(3600)
        time.sleep(interval)


def _flood(status: StatusChannel, count: int, result: Path) -> None:
    stats = SourceStats(state="connected", connected=True)
    for _ in range(count):
        stats.processed += 1
        status.heartbeat(stats.as_dict())
    partial = result.with_suffix(".tmp")
    partial.write_text(json.dumps({"sent": status.sent, "dropped": status.dropped}))
    partial.rename(result)
