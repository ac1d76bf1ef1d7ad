"""One camera's worker: source → pipeline → watchlist search → alert, in its own process.

The supervisor starts `run_camera` (spawned, one process per camera). Frames are decoded here
and never leave the process; the worker opens the deployment's gallery service itself (the
database is the truth, its index a cache kept fresh by the change log), and reports its source
statistics as heartbeats and to the `camera_status` table for the API and metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from yingyan.config import EngineConfig
from yingyan.detection.base import Detector
from yingyan.engine import Engine
from yingyan.gallery.factory import engine_config_for, open_gallery_service
from yingyan.gallery.service import GalleryService
from yingyan.settings import Settings
from yingyan.video.crowd import crowd_detector, crowd_tiling
from yingyan.video.frames import Frame
from yingyan.video.pipeline import CameraPipeline, PipelineSettings, TrackQuery
from yingyan.video.source import FrameReader, SourceSpec, open_source
from yingyan.watch.alerts import record_match
from yingyan.watch.matching import WatchMatch, WatchMatcher
from yingyan.watch.sessions import report_camera_status
from yingyan.watch.supervisor import StatusChannel

STATUS_EVERY_S = 2.0


def video_engine_config(
    settings: Settings, overrides: Mapping[str, Any] | None = None, model: str | None = None
) -> EngineConfig:
    """The service's models (the recognizer of `model`, the watchlists' model, when given:
    see `engine_config_for`), with the detector video needs: HOG on the frame as it is (no
    upsampling), fast enough for every other frame (3.5x real time on the shared clip, but it
    misses faces under ~80 px); YuNet when the service has it (by path or installed by
    `yingyan models`); `overrides` (a camera's `engine` settings, e.g.
    `{"detector": "cnn", "upsample": 0}`) win."""
    base = settings.engine_config() if model is None else engine_config_for(settings, model)
    # The recognizer and the work bound are the service's whatever the detector: the track
    # templates must be comparable with the watchlist's.
    config = EngineConfig(
        detector="hog",
        upsample=0,
        recognizer_model=base.recognizer_model,
        recognizer_manifest=base.recognizer_manifest,
        fusion=base.fusion,
        threads=1,
        limits=base.limits,
    )
    yunet = base.yunet_model
    if yunet is None:
        from yingyan.modelstore import installed_model

        yunet = installed_model("yunet", base.model_dir)
    if yunet is not None:
        config = replace(config, detector="yunet", upsample=None, yunet_model=yunet)
    return replace(config, **dict(overrides or {}))


def camera_detector(engine: Engine, crowd: Any) -> Detector | None:
    """The detector of a camera whose "crowd" setting asks for tiling (the engine's detector
    in tiles, regions and an optional motion gate: `video.crowd.crowd_tiling`), else None (the
    pipeline uses the engine's). Bad settings raise `ConfigError` before any frame is read."""
    detector = crowd_detector(engine.detector, crowd, engine.config.limits.max_work_pixels)
    return None if detector is engine.detector else detector


@dataclass(slots=True)
class CameraRun:
    """What a camera's run produced: its alert ids and how many tracks were searched."""

    alerts: list[int] = field(default_factory=list)
    searches: int = 0


def make_search(
    service: GalleryService, matcher: WatchMatcher, camera: str, run: CameraRun, actor: str
) -> Any:
    """The pipeline's search callable: a match is stored as (or extends) an alert at once."""

    def search(query: TrackQuery) -> WatchMatch | None:
        run.searches += 1
        match = matcher.search(query.template)
        if match is None:
            return None
        alert = record_match(
            service.db,
            matcher.session.id,
            camera,
            query,
            match.candidates,
            match.threshold,
            audit=actor,
            cipher=service.cipher,
        )
        if alert not in run.alerts:
            run.alerts.append(alert)
        return match

    return search


def _frames(reader: FrameReader, spec: SourceSpec, status: StatusChannel) -> Iterator[Frame | None]:
    """Live sources (streams, devices, files paced in real time) through the freshest-frame
    slot, so a slow machine skips frames instead of queueing them; a recorded file processed
    flat out gives every frame. None: no frame within a second (time for a heartbeat)."""
    if not (spec.reconnects or spec.realtime):
        yield from reader.frames()
        return
    reader.start()
    while not reader.done and not status.closed:
        yield reader.latest(timeout=1.0)


def run_camera(camera_id: str, config: Mapping[str, Any], status: StatusChannel) -> None:
    """The supervisor's target. `config`: settings (the service's, as JSON), session, camera_row
    (the camera's id in `watch_cameras`), source (SourceSpec fields), pipeline
    (PipelineSettings fields), engine (EngineConfig overrides), crowd (tiling, regions and
    motion gate for small faces: `video.crowd.crowd_tiling`; absent = whole frames)."""
    settings = Settings(**config["settings"])
    crowd_tiling(config.get("crowd"))  # bad settings fail here, before anything is opened
    service = open_gallery_service(settings)
    try:
        matcher = WatchMatcher(service, config["session"])
        # Track templates of the watchlists' model; a migration of a watchlist ends this worker
        # (ModelChangedError from the search) and its restart takes the new model.
        engine = Engine(video_engine_config(settings, config.get("engine"), matcher.model))
        detector = camera_detector(engine, config.get("crowd"))
        run = CameraRun()
        pipeline = CameraPipeline(
            engine,
            PipelineSettings(**config.get("pipeline", {})),
            make_search(service, matcher, camera_id, run, f"worker:{camera_id}"),
            camera=camera_id,
            detector=detector,
        )
        spec = SourceSpec(**config["source"])
        last = 0.0
        with open_source(spec, retry_first=True) as reader:
            for frame in _frames(reader, spec, status):
                if frame is not None:
                    pipeline.process(frame)
                    reader.mark_processed(frame)
                now = time.monotonic()
                if now - last >= STATUS_EVERY_S:
                    last = now
                    stats = reader.stats().as_dict() | {"searches": run.searches}
                    status.heartbeat(stats)
                    report_camera_status(service.db, int(config["camera_row"]), stats)
        pipeline.finish()
    finally:
        service.close()
        service.db.close()
