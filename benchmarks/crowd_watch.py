"""A watchlist over a moving crowd: 50 sought people among thousands of passers, end to end.

Frames are composed from real faces (benchmarks/_crowd_scene.py): 1280x720 at 10 fps, about
ten people on screen walking towards the camera with a sideways drift, faces of 24-120 px,
motion blur, defocus, sensor noise and partial occlusion; every passer is another identity
(LFW people and UTKFace chips). The sought people are LFW people with >= 2 photos: one photo is
enrolled into a real watchlist gallery (SQLite + FAISS through the gallery service), and they
pass with another. Each camera runs in its own process, as the camera worker does: the real
`CameraPipeline` (the camera's "crowd" setting through `watch.camera.camera_detector`),
`WatchMatcher` at the session's automatic threshold (target FPIR over the watchlist's size)
and `record_match_outcome` (alerts and audit entries in the database).

Printed: passers, tracks, suspects found, false alerts, tracks per second, time from a face's
first appearance to its alert (p50/p95, stream and wall seconds), processing fps and the number
of 720p 10 fps cameras the machine sustains; and, in the same run on the first share of every
stream, the baseline (detection on every frame) and the camera's "crowd" setting (the far band
in tiles at 1.5x).

    .venv/bin/python benchmarks/crowd_watch.py [--passers 5000] [--workers 2] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _crowd_scene import (
    CrowdScene,
    FaceSource,
    FaceTruth,
    Passer,
    approaching_passers,
    lfw_sources,
    utk_sources,
)
from yingyan.config import EngineConfig
from yingyan.detection import most_central
from yingyan.engine import Engine
from yingyan.gallery.factory import open_gallery_service
from yingyan.gallery.service import EnrollItem, GalleryService
from yingyan.settings import Settings
from yingyan.store import create_gallery
from yingyan.types import Box
from yingyan.video.crowd import TiledDetector
from yingyan.video.frames import Frame
from yingyan.video.pipeline import CameraPipeline, PipelineSettings, TrackQuery
from yingyan.watch.alerts import record_match_outcome
from yingyan.watch.camera import camera_detector, video_engine_config
from yingyan.watch.matching import WatchMatch, WatchMatcher
from yingyan.watch.sessions import add_camera, create_session, session_threshold

from _common import SHARED

F32 = npt.NDArray[np.float32]
FPS = 10.0
SIZE = (1280, 720)
YUNET = SHARED / "models" / "yunet" / "face_detection_yunet_2023mar.onnx"
SESSION, WATCHLIST, ACTOR = "crowd", "sought", "bench:crowd_watch"
BUCKETS = ((24.0, 40.0), (40.0, 60.0), (60.0, 121.0))
VARIANTS = ("whole", "tiled", "every-frame")
# Far faces (small, upper part of the scene) in tiles at 1.5x, near ones on the frame as it is.
# One tile per band (tile_px = the frame's width): two detector calls a frame.
CROWD: dict[str, Any] = {
    "tile_px": 1280,
    "regions": [[0.0, 0.0, 1.0, 0.45, 1.5], [0.0, 0.4, 1.0, 1.0, 1.0]],
}


@dataclass(frozen=True, slots=True)
class Variant:
    """A camera configuration under test: its "crowd" setting and pipeline settings."""

    name: str
    crowd: dict[str, Any] | None
    pipeline: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CameraJob:
    """What one camera process needs (picklable: spawned processes get it)."""

    camera: str
    settings: dict[str, Any]
    seed: int
    passers: tuple[Passer, ...]
    variant: Variant
    stop_s: float  # stream seconds to process
    watch_ids: tuple[str, ...]  # the watchlist's identities and vectors, for the score sweep
    watch_vectors: F32
    progress: bool = True
    checkpoint_s: float | None = None  # also note the counters at this stream time


@dataclass(frozen=True, slots=True)
class SearchRecord:
    """One track search: when (stream and wall), which passer the track was (by IoU with the
    truth at the track's last box), the best watchlist score, and the alert if it matched."""

    pts: float
    frame_wall: float  # perf_counter when the frame's processing began
    wall: float  # perf_counter after the search (and the alert's commit)
    track: int
    passer: int | None
    top_id: str
    top_score: float
    alerted: str | None  # the alert's first candidate
    created: bool  # a new alert (False: extended, or no alert)
    reason: str = ""  # early | better | final
    quality: float = 0.0  # the track's best sample score


@dataclass
class CameraResult:
    camera: str
    variant: str
    frames: int = 0
    stream_s: float = 0.0
    busy_s: float = 0.0  # inside CameraPipeline.process/finish: detection, tracking, search
    compose_s: float = 0.0  # composing the synthetic frames (stands in for decoding)
    wall_s: float = 0.0
    tracks: int = 0
    detections: int = 0
    embeddings: int = 0
    searches: int = 0
    tiles_run: int = 0
    tiles: int = 0
    first_seen: dict[int, tuple[float, float]] = field(default_factory=dict)  # pid: (pts, wall)
    records: list[SearchRecord] = field(default_factory=list)
    checkpoint: CameraResult | None = None  # the counters at the job's checkpoint_s

    def counters(self, pipeline: CameraPipeline) -> CameraResult:
        """A copy of the counters so far (no records)."""
        return CameraResult(
            self.camera,
            self.variant,
            self.frames,
            self.frames / FPS,
            self.busy_s,
            self.compose_s,
            self.wall_s,
            pipeline.tracks_seen,
            pipeline.detections,
            pipeline.embeddings,
            pipeline.searches,
            self.tiles_run,
            self.tiles,
        )


# -- the scene and the watchlist ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cast:
    suspects: tuple[tuple[FaceSource, FaceSource], ...]  # (enrolment photo, passing photo)
    others: tuple[FaceSource, ...]  # one photo each of distinct people not sought


def cast(seed: int, passers: int, suspects: int) -> Cast:
    """Sought people (LFW, >= 2 photos: one enrolled, another passing) and distinct others."""
    lfw = SHARED / "datasets" / "lfw" / "lfw-deepfunneled"
    utk = SHARED / "datasets" / "utkface-balanced"
    if not lfw.is_dir() or not utk.is_dir():
        raise SystemExit(f"LFW or UTKFace not found under {SHARED}; set YINGYAN_SHARED")
    rng = np.random.default_rng(seed)
    people: dict[str, list[FaceSource]] = {}
    for src in lfw_sources(lfw) + utk_sources(utk):
        people.setdefault(src.identity, []).append(src)
    names = sorted(people)
    multi = [n for n in names if len(people[n]) >= 2]
    sought = [multi[i] for i in rng.permutation(len(multi))[:suspects]]
    pairs = []
    for name in sought:
        a, b = rng.permutation(len(people[name]))[:2]
        pairs.append((people[name][a], people[name][b]))
    rest = [n for n in names if n not in set(sought)]
    if passers - suspects > len(rest):
        raise SystemExit(f"{passers} passers asked, {len(rest) + suspects} identities available")
    chosen = [rest[i] for i in rng.permutation(len(rest))[: passers - suspects]]
    others = [people[n][int(rng.integers(0, len(people[n])))] for n in chosen]
    return Cast(tuple(pairs), tuple(others))


def camera_passers(
    seed: int,
    crowd: Cast,
    cameras: int,
    on_screen: float,
    sizes: tuple[float, float] = (24.0, 100.0),
) -> list[list[Passer]]:
    """The passers split over `cameras` streams, each entering at a rate that keeps about
    `on_screen` people in view (a passer stays ~3 s); face widths start in `sizes` and grow
    by up to 1.2x."""
    rng = np.random.default_rng(seed + 1)
    photos = [p for _, p in crowd.suspects] + list(crowd.others)
    order = rng.permutation(len(photos))
    out = []
    for c in range(cameras):
        mine = [photos[i] for i in order[c::cameras]]
        span = len(mine) * 3.0 / on_screen
        first = int(sum(len(order[k::cameras]) for k in range(c)))
        out.append(
            approaching_passers(seed + 10 + c, mine, span, sizes=sizes, first_id=first, frame=SIZE)
        )
    return out


def enrol(service: GalleryService, crowd: Cast) -> tuple[tuple[str, ...], F32]:
    """The sought people's enrolment photos into a watchlist gallery (the default engine, as
    an enrolment does): one template each."""
    engine = Engine(EngineConfig())

    def work(s: Any) -> None:
        create_gallery(
            s,
            name=WATCHLIST,
            kind="watchlist",
            purpose="find the people named in warrant W-7",
            legal_basis="court order W-7",
            model=str(engine.model_id),
        )

    service.write(work)
    items = []
    for photo, _ in crowd.suspects:
        image = engine.load(photo.path)
        faces = engine.faces(image)
        centre = most_central([f.detection for f in faces], image.shape[1], image.shape[0])
        face = next(f for f in faces if f.detection is centre)
        assert face.template is not None
        sha = hashlib.sha256(photo.path.read_bytes()).hexdigest()
        items.append(EnrollItem(photo.identity, face.template, face.quality.score, sha))
    service.enroll(WATCHLIST, items)
    ids = tuple(i.external_id for i in items)
    return ids, np.stack([i.template.vector for i in items]).astype(np.float32)


def open_session(service: GalleryService, cameras: Sequence[str], target_fpir: float) -> None:
    create_session(
        service.db,
        name=SESSION,
        purpose="find the people named in warrant W-7 in the concourse",
        case_ref="W-7",
        legal_basis="court order W-7",
        expires_at=datetime.now(UTC) + timedelta(days=1),
        galleries=[WATCHLIST],
        actor=ACTOR,
        target_fpir=target_fpir,
    )
    for name in cameras:
        add_camera(service.db, SESSION, name=name, url=f"synthetic://{name}", actor=ACTOR)


# -- one camera -----------------------------------------------------------------------------------


def passer_of(box: Box | None, truth: list[FaceTruth]) -> int | None:
    if box is None:
        return None
    best = max(truth, key=lambda t: box.iou(t.box), default=None)
    return best.passer_id if best is not None and box.iou(best.box) >= 0.3 else None


def run_camera_job(job: CameraJob) -> CameraResult:
    """One camera: compose its frames, run the pipeline, search and record alerts."""
    settings = Settings(**job.settings)
    service = open_gallery_service(settings)
    result = CameraResult(job.camera, job.variant.name)
    try:
        engine = Engine(video_engine_config(settings))
        detector = camera_detector(engine, job.variant.crowd)
        matcher = WatchMatcher(service, SESSION)
        truth_at: dict[float, list[FaceTruth]] = {}
        now = {"pts": 0.0, "wall": 0.0}
        # Alerts are stamped on the stream's clock, so the 60 s same-subject merge means 60 s of
        # stream however fast this offline run goes.
        clock = datetime.now(UTC)

        def search(query: TrackQuery) -> WatchMatch | None:
            match = matcher.search(query.template)
            scores = job.watch_vectors @ query.template.vector.astype(np.float32)
            top = int(np.argmax(scores))
            created, alerted = False, None
            if match is not None:
                out = record_match_outcome(
                    service.db,
                    matcher.session.id,
                    job.camera,
                    query,
                    match.candidates,
                    match.threshold,
                    audit=f"worker:{job.camera}",
                    cipher=service.cipher,
                    now=clock + timedelta(seconds=now["pts"]),
                )
                created, alerted = out.created, match.candidates[0].external_id
            passer = passer_of(query.box, truth_at.get(round(query.last_pts, 3), []))
            result.records.append(
                SearchRecord(
                    now["pts"],
                    now["wall"],
                    time.perf_counter(),
                    query.track_id,
                    passer,
                    job.watch_ids[top],
                    float(scores[top]),
                    alerted,
                    created,
                    query.reason,
                    query.best_quality,
                )
            )
            return match

        pipeline = CameraPipeline(
            engine,
            PipelineSettings(**job.variant.pipeline),
            search,
            camera=job.camera,
            detector=detector,
        )
        engine.faces(np.zeros((64, 64, 3), np.uint8))  # load the models before timing
        scene = CrowdScene(job.seed, list(job.passers), FPS, SIZE)
        stop = min(scene.n_frames, math.ceil(job.stop_s * FPS))
        start = time.perf_counter()
        mark = start
        composed = start
        for index, image, truth in scene.frames(0, stop):
            pts = index / FPS
            now["pts"], now["wall"] = pts, time.perf_counter()
            result.compose_s += now["wall"] - composed
            truth_at[round(pts, 3)] = truth
            truth_at.pop(round(pts - 3.0, 3), None)
            for t in truth:
                result.first_seen.setdefault(t.passer_id, (pts, now["wall"]))
            pipeline.process(Frame(image, index, pts, time.monotonic()))
            if isinstance(detector, TiledDetector):
                result.tiles += detector.last_run.tiles
                result.tiles_run += detector.last_run.run
            composed = time.perf_counter()
            result.busy_s += composed - now["wall"]
            result.frames += 1
            if (
                job.checkpoint_s is not None
                and result.checkpoint is None
                and pts >= job.checkpoint_s
            ):
                result.wall_s = composed - start
                result.checkpoint = result.counters(pipeline)
            if job.progress and composed - mark >= 30:
                mark = composed
                print(
                    f"  {job.camera} [{job.variant.name}]: {pts:.0f}/{stop / FPS:.0f} s of "
                    f"stream, {pipeline.tracks_seen} tracks, {pipeline.searches} searches, "
                    f"{sum(r.created for r in result.records)} alerts",
                    flush=True,
                )
        t = time.perf_counter()
        now["wall"] = t
        pipeline.finish()
        result.busy_s += time.perf_counter() - t
        result.wall_s = time.perf_counter() - start
        result.stream_s = result.frames / FPS
        result.tracks, result.detections = pipeline.tracks_seen, pipeline.detections
        result.embeddings, result.searches = pipeline.embeddings, pipeline.searches
    finally:
        service.close()
        service.db.close()
    return result


def run_cameras(jobs: list[CameraJob], workers: int) -> list[CameraResult]:
    """Each camera in its own spawned process (as the supervisor runs camera workers), or in
    this one with a single camera."""
    if workers <= 1 or len(jobs) == 1:
        return [run_camera_job(j) for j in jobs]
    # An executor, not a Pool: a worker that dies fails the run instead of hanging it.
    context = mp.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
        return list(pool.map(run_camera_job, jobs))


# -- figures --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figures:
    variant: str
    passers: int
    suspects: int
    found: int
    found_by_size: tuple[tuple[int, int], ...]  # (found, passed) per size bucket
    false_alerts: int  # alerts raised that are not a sought person's own track
    false_tracks: int  # tracks that matched someone they are not
    tracks: int
    searches: int
    stream_s: float
    busy_s: float
    wall_s: float
    frames: int
    latency_stream: tuple[float, float]  # p50, p95
    latency_live: tuple[float, float]
    latency_wall: tuple[float, float]
    fps: tuple[float, ...]  # per camera process: frames / busy seconds
    tile_share: float
    compose_s: float


def _pct(values: list[float]) -> tuple[float, float]:
    if not values:
        return (math.nan, math.nan)
    return (float(np.percentile(values, 50)), float(np.percentile(values, 95)))


def figures(
    variant: str,
    results: list[CameraResult],
    passers: dict[int, Passer],
    sought: dict[str, str],
    *,
    until_s: float | None = None,
) -> Figures:
    """Counts over passers whose pass ended before `until_s` (all by default). `sought` maps a
    sought person's identity to itself (membership)."""

    def counted(p: Passer) -> bool:
        return until_s is None or p.enter_s + p.duration_s <= until_s

    people = [p for p in passers.values() if counted(p)]
    suspects = [p for p in people if p.identity in sought]
    records = [r for res in results for r in res.records if until_s is None or r.pts <= until_s]
    hits: dict[int, SearchRecord] = {}
    false_alerts = 0
    false_tracks: set[tuple[str, int]] = set()
    for res in results:
        for r in res.records:
            if r.alerted is None or (until_s is not None and r.pts > until_s):
                continue
            who = passers.get(r.passer) if r.passer is not None else None
            if who is not None and who.identity == r.alerted:
                hits.setdefault(who.passer_id, r)
            else:
                false_tracks.add((res.camera, r.track))
                false_alerts += r.created
    found = [p for p in suspects if p.passer_id in hits]
    by_size = []
    for lo, hi in BUCKETS:
        passed = [p for p in suspects if lo <= p.face_px < hi]
        by_size.append((sum(p.passer_id in hits for p in passed), len(passed)))
    seen = {pid: fs for res in results for pid, fs in res.first_seen.items()}
    stream, live, wall = [], [], []
    for p in found:
        r = hits[p.passer_id]
        pts0, wall0 = seen[p.passer_id]
        stream.append(r.pts - pts0)
        live.append(r.pts - pts0 + (r.wall - r.frame_wall))
        wall.append(r.wall - wall0)
    frames = sum(r.frames for r in results)
    return Figures(
        variant=variant,
        passers=len(people),
        suspects=len(suspects),
        found=len(found),
        found_by_size=tuple(by_size),
        false_alerts=false_alerts,
        false_tracks=len(false_tracks),
        tracks=sum(r.tracks for r in results),
        searches=len(records),
        stream_s=sum(r.stream_s for r in results),
        busy_s=sum(r.busy_s for r in results),
        wall_s=max(r.wall_s for r in results),
        frames=frames,
        latency_stream=_pct(stream),
        latency_live=_pct(live),
        latency_wall=_pct(wall),
        fps=tuple(r.frames / max(r.busy_s, 1e-9) for r in results),
        tile_share=sum(r.tiles_run for r in results) / max(sum(r.tiles for r in results), 1),
        compose_s=sum(r.compose_s for r in results),
    )


def threshold_sweep(
    results: list[CameraResult], passers: dict[int, Passer], thresholds: Sequence[float]
) -> list[tuple[float, int, int]]:
    """(threshold, suspects found, tracks falsely matched) had the session used that explicit
    threshold: a track matches when one of its searches' best score reaches it."""
    out = []
    for th in thresholds:
        found: set[int] = set()
        false: set[tuple[str, int]] = set()
        for res in results:
            for r in res.records:
                if r.top_score < th:
                    continue
                who = passers.get(r.passer) if r.passer is not None else None
                if who is not None and who.identity == r.top_id:
                    found.add(who.passer_id)
                else:
                    false.add((res.camera, r.track))
        out.append((th, len(found), len(false)))
    return out


def decode_ms(frames: list[npt.NDArray[np.uint8]]) -> float | None:
    """Milliseconds to decode one 720p H.264 frame with PyAV (what a real camera adds per
    frame), from frames of the scene encoded here; None when no H.264 encoder is available."""
    import av

    buffer = io.BytesIO()
    try:
        with av.open(buffer, "w", format="mp4") as out:
            stream = out.add_stream("libx264", rate=int(FPS))
            stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
            for image in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
    except (av.error.FFmpegError, ValueError):  # a build of FFmpeg without libx264
        return None
    buffer.seek(0)
    start = time.perf_counter()
    n = 0
    with av.open(buffer) as container:
        video = container.streams.video[0]
        video.thread_count = 1
        for frame in container.decode(video):
            frame.to_ndarray(format="rgb24")
            n += 1
    return 1000 * (time.perf_counter() - start) / max(n, 1)


def cameras_sustained(f: Figures, decode: float | None) -> float:
    """Cameras at 10 fps one machine keeps up with: each camera process ran on its own core
    (all at once), so the machine handles sum(fps_i) frames a second, less decoding."""
    per_frame = [1.0 / fps + (decode or 0.0) / 1000 for fps in f.fps]
    return sum(1.0 / c for c in per_frame) / FPS


def print_figures(f: Figures, decode: float | None, label: str = "") -> None:
    sizes = ", ".join(
        f"{lo:.0f}-{min(hi, 120):.0f} px {k}/{n}"
        for (lo, hi), (k, n) in zip(BUCKETS, f.found_by_size, strict=True)
    )
    fps = " + ".join(f"{v:.1f}" for v in f.fps)
    print(f"[{f.variant}]{label}")
    print(
        f"  passers {f.passers}, tracks {f.tracks} ({f.tracks / max(f.passers, 1):.2f} per passer)"
    )
    print(f"  suspects found {f.found}/{f.suspects} (by face size: {sizes})")
    print(f"  false alerts {f.false_alerts} (tracks falsely matched: {f.false_tracks})")
    print(
        f"  tracks/s {f.tracks / max(f.busy_s, 1e-9):.1f} per core busy "
        f"({f.tracks / max(f.stream_s, 1e-9):.2f} per stream second); searches {f.searches}"
    )
    s, live, w = f.latency_stream, f.latency_live, f.latency_wall
    print(
        f"  first appearance -> alert: stream p50 {s[0]:.1f} s, p95 {s[1]:.1f} s; live "
        f"(stream + processing of the alerting frame) p50 {live[0]:.1f} s, p95 {live[1]:.1f} s; "
        f"wall in this offline run p50 {w[0]:.1f} s, p95 {w[1]:.1f} s"
    )
    print(
        f"  {f.frames} frames, {f.stream_s:.0f} s of stream; processing {fps} fps per camera "
        f"process (pipeline only; composing frames {1000 * f.compose_s / max(f.frames, 1):.0f} "
        f"ms/frame besides); wall {f.wall_s:.0f} s"
        + (f"; tiles run {f.tile_share:.0%}" if f.tile_share else "")
    )
    print(f"  720p 10 fps cameras sustained: {cameras_sustained(f, decode):.1f}")


def summary(
    args: argparse.Namespace,
    main_f: Figures,
    compared: list[Figures],
    decode: float | None,
    threshold: float,
    sweep: list[tuple[float, int, int]],
    elapsed: float,
    load: tuple[float, float],
) -> str:
    m = main_f
    lines = [
        "```",
        f"crowd_watch: {m.passers} passers, {m.suspects} sought (one LFW photo enrolled, "
        f"another passing), seed {args.seed}, {args.workers} camera process(es), "
        f"{os.cpu_count()} cores, load {load[0]:.1f} before / {load[1]:.1f} after",
        f"config: {args.variant} (YuNet, detect every "
        f"{variants(args.detect_every)[args.variant].pipeline['detect_every']}, crowd "
        f"{variants(args.detect_every)[args.variant].crowd}), automatic threshold "
        f"{threshold:.4f} (target FPIR {args.target_fpir:g} over {args.suspects})",
        f"suspects found {m.found}/{m.suspects}; by size "
        + ", ".join(f"{k}/{n}" for k, n in m.found_by_size)
        + " (24-40/40-60/60-120 px)",
        f"false alerts {m.false_alerts} (tracks falsely matched {m.false_tracks})",
        f"tracks {m.tracks}, {m.tracks / max(m.busy_s, 1e-9):.1f} tracks/s per busy core",
        f"latency first appearance -> alert p50/p95: stream {m.latency_stream[0]:.1f}/"
        f"{m.latency_stream[1]:.1f} s, live {m.latency_live[0]:.1f}/{m.latency_live[1]:.1f} s, "
        f"wall (offline run) {m.latency_wall[0]:.1f}/{m.latency_wall[1]:.1f} s",
        "processing fps per camera process "
        + " + ".join(f"{v:.1f}" for v in m.fps)
        + f"; decode {decode:.1f} ms/frame" * (decode is not None)
        + f"; cameras sustained {cameras_sustained(m, decode):.1f}",
        "explicit thresholds (found/falsely matched tracks): "
        + ", ".join(f"{t:.3f}: {k}/{n}" for t, k, n in sweep),
    ]
    for f in compared:
        lines.append(
            f"first {args.baseline_share:.0%} [{f.variant}]: found {f.found}/{f.suspects}, "
            f"false alerts {f.false_alerts}, tracks {f.tracks}, stream latency p50/p95 "
            f"{f.latency_stream[0]:.1f}/{f.latency_stream[1]:.1f} s, fps "
            + " + ".join(f"{v:.1f}" for v in f.fps)
            + f", cameras {cameras_sustained(f, decode):.1f}"
        )
    if args.compare:
        lines.append(f"crowd setting of 'tiled': {CROWD}")
    lines += [f"total time {elapsed:.0f} s", "```"]
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------


def variants(detect_every: int) -> dict[str, Variant]:
    """The configurations: whole frames (YuNet on the frame as it is), the crowd setting
    (far band in tiles at 1.5x) and detect-every-frame on whole frames (the baseline). All
    share a fixed stride (an offline run has no real-time clock to adapt to), four embeddings
    per track at most, and an early search from a sample score of 0.35 (small faces rarely
    reach the default 0.5 and would be searched only when their track ends)."""
    pipeline = {
        "detect_every": detect_every,
        "adaptive": False,
        "max_samples_per_track": 4,
        "search_quality": 0.35,
    }
    return {
        "whole": Variant("whole", None, pipeline),
        "tiled": Variant("tiled", CROWD, pipeline),
        "every-frame": Variant("every-frame", None, pipeline | {"detect_every": 1}),
    }


def jobs_for(
    variant: Variant,
    groups: list[list[Passer]],
    settings: dict[str, Any],
    watch: tuple[tuple[str, ...], F32],
    seed: int,
    share: float = 1.0,
    progress: bool = True,
) -> list[CameraJob]:
    out = []
    for c, passers in enumerate(groups):
        end = max(p.enter_s + p.duration_s for p in passers)
        out.append(
            CameraJob(
                f"cam-{c + 1}",
                settings,
                seed + c,
                tuple(passers),
                variant,
                end * share if share < 1 else end + 1.5,
                watch[0],
                watch[1],
                progress,
            )
        )
    return out


@dataclass
class Outcome:
    main: Figures
    compared: list[Figures]  # the main run over the first share, then each comparison
    threshold: float
    sweep: list[tuple[float, int, int]]
    results: list[CameraResult]
    groups: list[list[Passer]]
    sought: tuple[str, ...]  # the watchlist's identities


def run(args: argparse.Namespace, data_dir: Path, say: Callable[[str], None] = print) -> Outcome:
    """The whole benchmark in `data_dir` (a fresh folder)."""
    settings = Settings(data_dir=data_dir, workers=0, yunet_model=YUNET)
    crowd = cast(args.seed, args.passers, args.suspects)
    groups = camera_passers(args.seed, crowd, args.workers, args.on_screen, args.face_px)
    passers = {p.passer_id: p for g in groups for p in g}
    sought = {a.identity: a.identity for a, _ in crowd.suspects}
    service = open_gallery_service(settings)
    try:
        watch = enrol(service, crowd)
        names = [f"cam-{c + 1}" for c in range(args.workers)]
        names += [f"{n}-{v}" for n in names for v in args.compare]
        open_session(service, names, args.target_fpir)
        threshold = session_threshold(service.db, SESSION).score
    finally:
        service.close()
        service.db.close()
    say(
        f"{len(passers)} passers over {args.workers} camera(s), {args.suspects} sought enrolled; "
        f"automatic threshold {threshold:.4f}"
    )
    configs = variants(args.detect_every)
    main_v = configs[args.variant]
    dumped = settings.model_dump(mode="json")
    jobs = jobs_for(main_v, groups, dumped, watch, args.seed)
    # The comparisons: over the first share of every stream (the same stretch for all), their
    # alerts on other camera names of the same session; the main run notes its counters there.
    until = min(j.stop_s for j in jobs_for(main_v, groups, dumped, watch, 0, args.baseline_share))
    if args.compare:
        jobs = [replace(j, checkpoint_s=until) for j in jobs]
    results = run_cameras(jobs, args.workers)
    main_f = figures(main_v.name, results, passers, sought)
    compared: list[Figures] = []
    if args.compare:
        prefix = [_prefix(r, until) for r in results]
        compared.append(figures(main_v.name, prefix, passers, sought, until_s=until))
    for name in args.compare:
        say(f"compared: {name} on the first {until:.0f} s of each stream")
        other = [
            replace(j, camera=f"{j.camera}-{name}", stop_s=until, variant=configs[name])
            for j in jobs_for(main_v, groups, dumped, watch, args.seed)
        ]
        found = run_cameras(other, args.workers)
        compared.append(figures(name, found, passers, sought, until_s=until))
    steps = (-0.03, -0.02, -0.01, 0.0, 0.01)
    sweep = threshold_sweep(results, passers, [threshold + d for d in steps])
    return Outcome(main_f, compared, threshold, sweep, results, groups, watch[0])


def _prefix(result: CameraResult, until_s: float) -> CameraResult:
    """A run's counters at its checkpoint and its records up to `until_s`."""
    out = result.checkpoint or replace(result)
    out.first_seen = result.first_seen
    out.records = [r for r in result.records if r.pts <= until_s]
    return out


def _pair(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI, got {text!r}") from None
    if not 16 <= lo <= hi <= 200:
        raise argparse.ArgumentTypeError("face widths must satisfy 16 <= LO <= HI <= 200")
    return lo, hi


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passers", type=int, default=5000)
    parser.add_argument("--suspects", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="camera processes (one per core)")
    parser.add_argument("--on-screen", type=float, default=10.0, help="people in view at once")
    parser.add_argument("--detect-every", type=int, default=3)
    parser.add_argument("--target-fpir", type=float, default=1e-3)
    parser.add_argument("--baseline-share", type=float, default=0.1)
    parser.add_argument("--variant", choices=VARIANTS, default="whole", help="the main run")
    parser.add_argument(
        "--compare",
        default="every-frame,tiled",
        help="configurations also run on the first --baseline-share of the stream ('' for none)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--face-px", type=_pair, default=(24.0, 100.0), help="face widths at entry: LO,HI"
    )
    parser.add_argument("--data-dir", type=Path, help="keep the database here (default: temp)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 150 passers, 10 sought")
    args = parser.parse_args(argv)
    if args.quick:
        args.passers, args.suspects = min(args.passers, 150), min(args.suspects, 10)
        args.baseline_share = 0.5 if args.baseline_share else 0.0
    args.compare = [c for c in args.compare.split(",") if c] if args.baseline_share else []
    unknown = [c for c in args.compare if c not in VARIANTS or c == args.variant]
    if unknown:
        parser.error(f"--compare: {unknown} not among {VARIANTS} other than --variant")
    if not 1 <= args.suspects < args.passers:
        parser.error("need 1 <= --suspects < --passers")
    if args.workers < 1 or args.detect_every < 1 or not 0 <= args.baseline_share <= 1:
        parser.error("--workers and --detect-every must be >= 1, --baseline-share in [0, 1]")
    if not YUNET.is_file():
        parser.error(f"YuNet not found at {YUNET}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    start = time.perf_counter()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        outcome = run(args, data_dir)
        probe = CrowdScene(args.seed, outcome.groups[0], FPS, SIZE)
        decode = decode_ms([img for _, img, _ in probe.frames(50, 80)])
    elapsed = time.perf_counter() - start
    print()
    print_figures(outcome.main, decode)
    for f in outcome.compared:
        print_figures(f, decode, f" first {args.baseline_share:.0%} of the stream")
    print(
        "cameras sustained = sum over camera processes (each on its own core, all running at "
        "once) of 1 / (pipeline seconds per frame + decode seconds per frame), / 10 fps"
    )
    print()
    load = (load0, os.getloadavg()[0])
    print(
        summary(
            args,
            outcome.main,
            outcome.compared,
            decode,
            outcome.threshold,
            outcome.sweep,
            elapsed,
            load,
        )
    )


if __name__ == "__main__":
    main()
