"""The per-camera pipeline on the shared Hamilton clip (640x360, 275 frames, 9.18 s).

Who is where (checked by eye): Alex Lacamoire at the piano, small, from 0 to ~0.7 s, then in
profile close-up to ~2.7 s; Lin-Manuel Miranda frontal on stage from ~2.7 to ~7.3 s; the
audience (several faces) from ~7.3 s to the end. Times are from the clip's first frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest

from yingyan import Engine, EngineConfig
from yingyan.types import Detection, RGBImage, Template
from yingyan.video.frames import Frame
from yingyan.video.pipeline import (
    AdaptiveStride,
    CameraPipeline,
    PipelineSettings,
    TrackEvent,
    TrackQuery,
)
from yingyan.watch.threshold import threshold_for_fpir

ALEX_SPAN = (0.0, 2.7)
SETTINGS = PipelineSettings(adaptive=False, searches_per_track=2)


@pytest.fixture(scope="module")
def clip_frames(stills: Path) -> list[Frame]:
    with av.open(str(stills / "short_hamilton_clip.mp4")) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        decoded = [
            (f.time, np.asarray(f.to_ndarray(format="rgb24"), dtype=np.uint8))
            for f in container.decode(stream)
        ]
    t0 = decoded[0][0] or 0.0
    return [Frame(img, i, (t or 0.0) - t0, 0.0) for i, (t, img) in enumerate(decoded)]


@pytest.fixture(scope="module")
def alex(stills: Path) -> Template:
    engine = Engine(EngineConfig())
    photo = stills / "knn" / "train" / "alex_lacamoire" / "img1.jpg"
    (template,) = engine.templates(engine.load(photo))
    return template


@dataclass
class Watch:
    """A one-person watchlist search at the FPIR 1e-3 threshold; it records every query."""

    alex: Template
    threshold: float
    queries: list[tuple[TrackQuery, float]] = field(default_factory=list)

    def __call__(self, query: TrackQuery) -> dict[str, float] | None:
        score = float(np.dot(query.template.vector, self.alex.vector))
        self.queries.append((query, score))
        return {"alex": score} if score >= self.threshold else None


def run(
    engine: Engine, frames: list[Frame], settings: PipelineSettings, alex: Template
) -> tuple[CameraPipeline, Watch, list[TrackEvent]]:
    threshold = threshold_for_fpir(engine.model_id.name, 1, 1e-3).score
    watch = Watch(alex, threshold)
    pipeline = CameraPipeline(engine, settings, watch, camera="cam1")
    events: list[TrackEvent] = []
    for frame in frames:
        events += pipeline.process(frame)
    events += pipeline.finish()
    return pipeline, watch, events


def check_one_decision_per_track(events: list[TrackEvent], searches_per_track: int) -> None:
    closed = [e.track_id for e in events if e.kind == "closed"]
    assert len(closed) == len(set(closed)), "a track closed twice"
    for e in events:
        if e.kind != "closed":
            assert e.track_id in closed, "a searched track never closed"
    for tid in set(closed):
        searches = [e for e in events if e.track_id == tid and e.kind != "closed"]
        assert len(searches) <= searches_per_track
        assert [e.query.reason for e in searches if e.query][:1] in ([], ["early"], ["final"])
        # A track's closing decision is its last search's result.
        (close,) = [e for e in events if e.track_id == tid and e.kind == "closed"]
        assert close.match == (searches[-1].match if searches else None)


def test_video_default_tracks_lin_and_alerts_nobody(
    clip_frames: list[Frame], alex: Template
) -> None:
    """HOG on the frame (no upsampling), detection every 2nd frame: what the camera worker runs."""
    engine = Engine(EngineConfig(detector="hog", upsample=0))
    assert engine.model_id.name == "dlib_resnet_v1"
    pipeline, watch, events = run(engine, clip_frames, SETTINGS, alex)

    check_one_decision_per_track(events, SETTINGS.searches_per_track)
    assert pipeline.tracks_seen >= 2
    assert not [e for e in events if e.kind == "match"]  # Lin and the audience are not Alex
    # Lin is tracked on stage; each search is one query with a unit template and a real crop.
    lin = [q for q, _ in watch.queries if q.first_pts >= 2.5 and q.last_pts <= 7.5]
    assert lin and max(q.best_quality for q in lin) >= SETTINGS.search_quality
    for q, _ in watch.queries:
        assert q.camera == "cam1" and q.first_pts <= q.last_pts
        assert float(np.linalg.norm(q.template.vector)) == pytest.approx(1.0, abs=1e-5)
        assert q.best_crop.ndim == 3 and min(q.best_crop.shape[:2]) >= SETTINGS.min_face_px
        assert q.box is not None and q.box.width >= SETTINGS.min_face_px  # the track's face
        assert 0 <= q.box.x1 < q.box.x2 <= 640 and 0 <= q.box.y1 < q.box.y2 <= 360
        assert not any(np.shares_memory(q.best_crop, f.image) for f in clip_frames[::25])
    # Samples are embedded sparingly: far fewer embeddings than detections.
    assert 0 < pipeline.embeddings <= pipeline.detections // 2
    assert pipeline.embeddings <= pipeline.tracks_seen * SETTINGS.max_samples_per_track


def test_alex_track_ranks_first_in_his_span(clip_frames: list[Frame], alex: Template) -> None:
    """dlib's CNN (embedded) finds Alex's close-up, which HOG misses; his track is the best
    candidate for his photo and lies in his span, and nobody else's track matches."""
    engine = Engine(EngineConfig(detector="cnn", upsample=0))
    settings = PipelineSettings(adaptive=False, detect_every=4)
    _, watch, events = run(engine, clip_frames, settings, alex)

    check_one_decision_per_track(events, settings.searches_per_track)
    best_query, best_score = max(watch.queries, key=lambda qs: qs[1])
    assert ALEX_SPAN[0] <= best_query.first_pts and best_query.last_pts <= ALEX_SPAN[1]
    others = [(q, s) for q, s in watch.queries if q.track_id != best_query.track_id]
    assert others and all(s < best_score for _, s in others)
    matched = {e.track_id for e in events if e.kind == "match"}
    assert matched <= {best_query.track_id}


def test_adaptive_stride_follows_the_load() -> None:
    settings = PipelineSettings(detect_every=2, adaptive=True, max_detect_every=5)
    stride = AdaptiveStride(settings)
    pts = 0.0
    for _ in range(60):  # 50 ms a frame against a 33 ms frame interval: behind real time
        pts += 1 / 30
        stride.observe(pts, 0.05)
    assert stride.value == 5
    for _ in range(300):  # 2 ms a frame: headroom, back to the base stride, never below
        pts += 1 / 30
        stride.observe(pts, 0.002)
    assert stride.value == 2
    fixed = AdaptiveStride(PipelineSettings(detect_every=3, adaptive=False))
    for _ in range(60):
        pts += 1 / 30
        fixed.observe(pts, 0.05)
    assert fixed.value == 3


def test_a_given_detector_replaces_the_engines(clip_frames: list[Frame]) -> None:
    """A camera's own detector (e.g. the engine's in tiles: the "crowd" setting) finds the
    faces; the engine still aligns and embeds them."""
    engine = Engine(EngineConfig(detector="hog", upsample=0))
    shapes: list[tuple[int, ...]] = []

    class Counting:
        name = "counting"

        def detect(self, image: RGBImage) -> list[Detection]:
            shapes.append(image.shape)
            return engine.detector.detect(image)

    settings = PipelineSettings(adaptive=False, detect_every=2)
    pipeline = CameraPipeline(engine, settings, detector=Counting())
    for frame in clip_frames[100:120]:  # Lin on stage
        pipeline.process(frame)
    assert shapes == [(360, 640, 3)] * 10
    assert pipeline.detections > 0 and pipeline.embeddings > 0
