"""A camera worker's memory over a long run: the shared clip in a loop through the real worker,
against a process that only loaded the same models, in the same run.

    python benchmarks/video_memory.py [--minutes 10] [--pace K] [--every 2] [--warmup 60]
                                      [--detector cnn|hog|yunet] [--stride 4]

The worker is `watch.camera:run_camera`, spawned by the `Supervisor` as in service: source →
`CameraPipeline` → `WatchMatcher` → `record_match`, against a watchlist holding Alex
Lacamoire's photo (the session threshold is the clip test's explicit 0.885; CNN detector at
stride 4 by default, as there, since HOG without upsampling never finds him), so alerts, sealed
crops and audit entries are written all along. Without `--pace` the clip is processed flat out
(every frame, in order); `--pace K` replays it as a camera at K x its 29.97 fps through the
freshest-frame slot, so a worker that cannot keep up drops frames (counted) instead of queueing.

RSS is read from /proc/<pid>/status (VmRSS) every `--every` s. The baseline, sampled the same
way and at the same times, is a second spawned process that loads exactly what a worker holds
before its first frame (interpreter, models, gallery service and index, database), runs one
frame and one watchlist search, then idles: its RSS is the floor, its slope the measurement's
own noise. Printed: RSS after the warm-up (`--warmup` s of the run, at least one pass of the
clip) and at the end, the maximum and the kernel's peak (VmHWM), the least-squares slope after
the warm-up in MB/min, frames, drops, searches and alerts (Alex looping is one alert extended
within the 60 s cooldown, not one alert per pass).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from yingyan.engine import Engine
from yingyan.errors import ConfigError
from yingyan.gallery.factory import open_gallery_service
from yingyan.gallery.service import EnrollItem
from yingyan.settings import Settings
from yingyan.store import create_gallery
from yingyan.store.tables import AuditEntryRow
from yingyan.video.pipeline import PipelineSettings
from yingyan.video.source import SourceSpec, open_source
from yingyan.watch.alerts import Alert, list_alerts
from yingyan.watch.camera import video_engine_config
from yingyan.watch.matching import WatchMatcher
from yingyan.watch.sessions import add_camera, create_session
from yingyan.watch.supervisor import StatusChannel, Supervisor, WorkerSpec, WorkerStatus

from _common import SHARED

CLIP = SHARED / "datasets" / "video" / "short_hamilton_clip.mp4"
ALEX = SHARED / "datasets" / "video" / "knn" / "train" / "alex_lacamoire"
YUNET = SHARED / "models" / "yunet" / "face_detection_yunet_2023mar.onnx"
CLIP_FRAMES = 275
CLIP_FPS = 2997 / 100
THRESHOLD = 0.885  # as in tests/test_watch_clip.py: dlib's model scores Alex 0.888-0.900
ACTOR = "bench:memory"
MB = 1024 * 1024


def engine_overrides(detector: str) -> dict[str, Any]:
    overrides: dict[str, Any] = {"detector": detector, "upsample": 0}
    if detector == "yunet":
        overrides["yunet_model"] = str(YUNET)
    return overrides


def prepare(settings: Settings, engine: Engine) -> int:
    """A watchlist with Alex's photo, a session over it and one camera; the camera's row id."""
    service = open_gallery_service(settings)
    try:
        service.write(
            lambda s: create_gallery(
                s,
                name="sought",
                kind="watchlist",
                purpose="find the people named in warrant W-1",
                legal_basis="court order W-1",
                model=str(engine.model_id),
            )
        )
        service.enroll("sought", [_enrolment(engine, p) for p in sorted(ALEX.glob("*.jpg"))])
        create_session(
            service.db,
            name="concert",
            purpose="find the people named in warrant W-1 at the entrances",
            case_ref="W-1",
            legal_basis="court order W-1",
            expires_at=datetime.now(UTC) + timedelta(days=1),
            galleries=["sought"],
            actor=ACTOR,
            threshold=THRESHOLD,
        )
        camera = add_camera(service.db, "concert", name="gate-1", url=str(CLIP), actor=ACTOR)
        return camera.id
    finally:
        service.close()
        service.db.close()


def _enrolment(engine: Engine, photo: Path) -> EnrollItem:
    face = max(engine.faces(engine.load(photo)), key=lambda f: f.detection.box.area)
    assert face.template is not None, photo
    sha = hashlib.sha256(photo.read_bytes()).hexdigest()
    return EnrollItem("alex_lacamoire", face.template, face.quality.score, sha)


def models_only(camera_id: str, config: dict[str, Any], status: StatusChannel) -> None:
    """The baseline worker: what `run_camera` holds before its first frame, used once (one
    frame through the engine, one watchlist search), then idle, heartbeating."""
    settings = Settings(**config["settings"])
    service = open_gallery_service(settings)
    try:
        matcher = WatchMatcher(service, config["session"])
        engine = Engine(video_engine_config(settings, config.get("engine")))
        with open_source(SourceSpec(url=config["source"]["url"])) as reader:
            frame = next(iter(reader.frames()))
        faces = engine.faces(frame.image)
        for face in faces[:1]:
            if face.template is not None:
                matcher.search(face.template)
        while not status.closed:
            status.heartbeat({"faces": len(faces)})
            time.sleep(1.0)
    finally:
        service.close()
        service.db.close()


def rss_mb(pid: int, field_name: str = "VmRSS") -> float | None:
    """Resident set size of `pid` in MB from /proc (None once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024 / MB
    return None


@dataclass
class Series:
    """RSS samples of one process: (seconds since the worker's first heartbeat, MB)."""

    name: str
    pid: int | None = None
    times: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    peak: float | None = None  # VmHWM just before the end

    def add(self, t: float) -> None:
        if self.pid is not None and (value := rss_mb(self.pid)) is not None:
            self.times.append(t)
            self.rss.append(value)

    def after(self, warmup: float) -> tuple[np.ndarray, np.ndarray]:
        t = np.array(self.times)
        keep = t >= warmup
        return t[keep], np.array(self.rss)[keep]

    def slope(self, warmup: float) -> tuple[float, float]:
        """Least-squares slope after the warm-up and its standard error, in MB/min."""
        t, rss = self.after(warmup)
        if len(t) < 3:
            return float("nan"), float("nan")
        x = t / 60.0 - (t / 60.0).mean()
        spread = float(np.sum(x**2))
        if spread == 0:
            return float("nan"), float("nan")
        slope = float(np.sum(x * (rss - rss.mean())) / spread)
        residuals = rss - rss.mean() - slope * x
        return slope, float(np.sqrt(np.sum(residuals**2) / (len(t) - 2) / spread))

    def at(self, seconds: float) -> float:
        """RSS at the first sample at or after `seconds` (nan if none)."""
        return next((r for t, r in zip(self.times, self.rss, strict=True) if t >= seconds), np.nan)

    def report(self, warmup: float) -> str:
        t, rss = self.after(warmup)
        if not len(t):
            return f"{self.name}: no samples after the warm-up"
        slope, err = self.slope(warmup)
        return (
            f"{self.name}: RSS {rss[0]:.1f} MB after the warm-up, {rss[-1]:.1f} MB at the end, "
            f"max {max(self.rss):.1f} MB (peak VmHWM {self.peak or float('nan'):.1f} MB); "
            f"slope {slope:+.3f} ± {err:.3f} MB/min over {len(t)} samples "
            f"({slope * 60:+.1f} MB/hour); warm-up: "
            + ", ".join(f"{self.at(x):.1f} MB at {x:g} s" for x in (0, 10, 30, warmup))
        )


def _wait_first_heartbeat(sup: Supervisor, names: tuple[str, ...], ceiling: float) -> None:
    deadline = time.monotonic() + ceiling
    while time.monotonic() < deadline:
        status = sup.status()
        if all(status[n].last_heartbeat is not None for n in names):
            return
        dead = [n for n in names if not status[n].alive and status[n].last_exit is not None]
        if dead:
            raise SystemExit(f"worker {dead[0]} exited with {status[dead[0]].last_exit}")
        time.sleep(0.2)
    raise SystemExit(f"no heartbeat within {ceiling:.0f} s")


def alert_outcome(settings: Settings) -> tuple[list[Alert], int, int]:
    """The session's alerts and how many times one was raised and extended (audit entries)."""
    service = open_gallery_service(settings)
    try:
        alerts = list_alerts(service.db, session="concert")
        with service.db.read() as s:
            counts = dict(
                s.execute(
                    select(AuditEntryRow.operation, func.count())
                    .where(AuditEntryRow.operation.in_(("watch.alert.raise", "watch.alert.update")))
                    .group_by(AuditEntryRow.operation)
                ).all()
            )
        return alerts, counts.get("watch.alert.raise", 0), counts.get("watch.alert.update", 0)
    finally:
        service.close()
        service.db.close()


def alert_gaps(settings: Settings) -> list[float]:
    """Seconds between consecutive raise/update audit entries (the subject's sightings)."""
    service = open_gallery_service(settings)
    try:
        with service.db.read() as s:
            times = s.scalars(
                select(AuditEntryRow.at)
                .where(AuditEntryRow.operation.in_(("watch.alert.raise", "watch.alert.update")))
                .order_by(AuditEntryRow.seq)
            ).all()
    finally:
        service.close()
        service.db.close()
    return [(b - a).total_seconds() for a, b in itertools.pairwise(times)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--pace", type=float, default=None, help="replay at K x the clip's fps")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between RSS samples")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds left out of the slope")
    parser.add_argument("--detector", choices=("hog", "cnn", "yunet"), default="cnn")
    parser.add_argument("--stride", type=int, default=4, help="base detection stride")
    args = parser.parse_args()
    if args.minutes * 60 <= args.warmup + 10 * args.every:
        parser.error("--minutes must leave at least ten samples after --warmup")
    if args.pace is not None and not 0 < args.pace <= 100:
        parser.error("--pace must lie in (0, 100]")
    try:
        PipelineSettings(detect_every=args.stride)
    except ConfigError as error:
        parser.error(f"--stride: {error.message}")
    overrides = engine_overrides(args.detector)
    with tempfile.TemporaryDirectory(prefix="yy-memory-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", workers=0)
        camera_row = prepare(settings, Engine(video_engine_config(settings, overrides)))
        source: dict[str, Any] = {"url": str(CLIP), "loop": True}
        if args.pace is not None:
            source |= {"realtime": True, "speed": args.pace}
        config = {
            "settings": settings.model_dump(mode="json"),
            "session": "concert",
            "camera_row": camera_row,
            "source": source,
            "pipeline": {"detect_every": args.stride},
            "engine": overrides,
        }
        run(settings, config, args)


def run(settings: Settings, config: dict[str, Any], args: argparse.Namespace) -> None:
    load_before = os.getloadavg()
    sup = Supervisor(max_restarts_per_window=1, heartbeat_timeout_s=60.0, startup_timeout_s=180)
    sup.add(WorkerSpec("gate-1", "yingyan.watch.camera:run_camera", config))
    sup.add(WorkerSpec("models-only", "video_memory:models_only", config))
    sup.start()
    worker, base = Series("camera worker"), Series("models-only baseline")
    try:
        _wait_first_heartbeat(sup, ("gate-1", "models-only"), 180.0)
        status = sup.status()
        worker.pid, base.pid = status["gate-1"].pid, status["models-only"].pid
        started = time.monotonic()
        end = started + args.minutes * 60
        while (now := time.monotonic()) < end:
            for series in (worker, base):
                series.add(now - started)
            time.sleep(max(0.0, min(args.every, end - time.monotonic())))
        elapsed = time.monotonic() - started
        for series in (worker, base):
            series.add(elapsed)
            series.peak = rss_mb(series.pid or 0, "VmHWM")
        final = sup.status()
    finally:
        sup.stop()
    load_after = os.getloadavg()
    report(settings, args, worker, base, final["gate-1"], elapsed, (load_before, load_after))


def report(
    settings: Settings,
    args: argparse.Namespace,
    worker: Series,
    base: Series,
    status: WorkerStatus,
    elapsed: float,
    loads: tuple[tuple[float, ...], tuple[float, ...]],
) -> None:
    stats = status.stats
    decoded = int(stats.get("decoded", 0))  # type: ignore[call-overload]
    processed = int(stats.get("processed", 0))  # type: ignore[call-overload]
    dropped = int(stats.get("dropped", 0))  # type: ignore[call-overload]
    alerts, raised, updated = alert_outcome(settings)
    mode = "flat out" if args.pace is None else f"paced at {args.pace:g}x the clip's fps"
    frame_mb = 640 * 360 * 3 / MB
    print(
        f"clip {CLIP.name} in a loop, {mode}; detector {args.detector}, stride {args.stride}; "
        f"{elapsed / 60:.1f} min after the first heartbeat, RSS every {args.every:g} s, "
        f"warm-up {args.warmup:g} s"
    )
    print(
        f"load average (1/5/15 min): {'/'.join(f'{x:.2f}' for x in loads[0])} before, "
        f"{'/'.join(f'{x:.2f}' for x in loads[1])} after, on {os.cpu_count()} cores"
    )
    print(worker.report(args.warmup))
    print(base.report(args.warmup))
    if worker.rss and base.rss:
        print(
            f"worker above the baseline at the end: {worker.rss[-1] - base.rss[-1]:+.1f} MB "
            f"(decoder, frames, tracker, samples, alert writes)"
        )
    offered = CLIP_FPS * (args.pace or 0.0)
    rate = (
        f"{processed / CLIP_FPS / elapsed:.2f}x the clip's real time"
        if args.pace is None
        else f"of {offered:.0f} fps offered, {processed / max(decoded, 1):.0%} of the frames"
    )
    print(
        f"frames: {decoded} decoded ({decoded / CLIP_FRAMES:.1f} passes), {processed} processed "
        f"({processed / elapsed:.1f} fps, {rate}), {dropped} dropped by the freshest-frame "
        f"slot; {stats.get('searches', 0)} searches; worker restarts {status.restarts}"
    )
    if dropped:
        print(
            f"a FIFO instead of the slot would hold {dropped} frames = "
            f"{dropped * frame_mb:.0f} MB by the end"
        )
    tracks = sum(a.tracks for a in alerts)
    subjects = sorted({a.candidates[0]["external_id"] for a in alerts if a.candidates})
    print(
        f"alerts: {len(alerts)} ({raised} raised, {updated} extensions; {tracks} tracks; "
        f"subjects {', '.join(subjects) or 'none'})"
    )
    if alerts:
        origin = min(a.first_seen_at for a in alerts)
        for a in sorted(alerts, key=lambda a: a.first_seen_at):
            first = (a.first_seen_at - origin).total_seconds()
            last = (a.last_seen_at - origin).total_seconds()
            print(f"  alert {a.id}: {a.tracks} tracks, seen from {first:.0f} s to {last:.0f} s")
    gaps = alert_gaps(settings)
    if gaps:
        print(
            f"  longest wait between two sightings of the alert's subject: {max(gaps):.0f} s "
            f"(a gap over the 60 s cooldown would start a new alert)"
        )


if __name__ == "__main__":
    main()
