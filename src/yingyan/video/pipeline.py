"""One camera's pipeline: detect every N-th frame, track between, sample, search per track.

Detection runs on every `detect_every`-th frame (the engine's detector; for video, HOG on the
frame as it is, `EngineConfig(detector="hog", upsample=0)`) and the tracker predicts the
frames between. With `adaptive`, the stride rises while processing falls behind the stream's
own clock and falls back when there is headroom. Only samples worth having are embedded: a
track's face is aligned and quality-scored (cheap) on detection frames, and embedded only when
it would enter the track's best few, at most `max_samples_per_track` times per track. Each
track is searched at most `searches_per_track` times (early, better, final): one decision per
track, never one per frame. The pipeline stores nothing: the `search` callable decides.

The detector is the engine's unless one is given: a camera over a crowd passes the engine's
detector wrapped in tiles (`video.crowd.crowd_detector`, the camera's "crowd" setting); the
engine still aligns, scores and embeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from yingyan.detection.base import Detector
from yingyan.engine import Engine
from yingyan.errors import ConfigError
from yingyan.types import Box, RGBImage, Template
from yingyan.video.bestshot import Reason, TrackState, sample_score
from yingyan.video.frames import Frame
from yingyan.video.tracker import TrackedBox, Tracker, TrackerSettings

EventKind = Literal["search", "match", "closed"]


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    # Base stride: detect on every N-th frame. 3 (10 detections/s at 30 fps; the tracker
    # bridges the gaps): on the shared clip the same tracks and searches as 2, and 3.3x real
    # time with HOG on one core instead of 2.7x (benchmarks/video_clip.py, quiet machine).
    detect_every: int = 3
    adaptive: bool = True  # raise the stride when behind real time, lower it with headroom
    max_detect_every: int = 8
    min_face_px: int = 20  # narrower detections are ignored
    max_samples_per_track: int = 8  # embeddings per track
    fuse_k: int = 3  # samples fused into the track template
    searches_per_track: int = 2
    search_quality: float = 0.5  # sample score for an early search
    better_margin: float = 0.1  # rise of the fused quality that earns another search
    final_quality: float = 0.1  # a track never searched is searched at its end above this
    crop_margin: float = 0.3
    track_high_score: float = 0.5
    track_min_hits: int = 2
    track_max_age_s: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.detect_every <= self.max_detect_every:
            raise ConfigError("detect_every must lie in [1, max_detect_every]")
        if self.min_face_px < 1 or self.max_samples_per_track < 1 or self.fuse_k < 1:
            raise ConfigError("min_face_px, max_samples_per_track and fuse_k must be >= 1")
        if self.searches_per_track < 1:
            raise ConfigError("searches_per_track must be >= 1")
        if self.crop_margin < 0:
            raise ConfigError("crop_margin must be >= 0")

    def tracker_settings(self) -> TrackerSettings:
        return TrackerSettings(
            high_score=self.track_high_score,
            low_score=0.0,
            min_hits=self.track_min_hits,
            max_age_s=self.track_max_age_s,
        )


@dataclass(frozen=True, slots=True, eq=False)
class TrackQuery:
    camera: str
    track_id: int
    first_pts: float
    last_pts: float
    template: Template  # fused from the best few samples
    best_crop: RGBImage  # the best shot: face box with margin, from the clean frame
    best_quality: float
    reason: Reason
    box: Box | None = None  # the track's last detected face box (frame pixels, at last_pts)


@dataclass(frozen=True, slots=True, eq=False)
class TrackEvent:
    """A search ("search": nothing matched, "match": the callable's result) or a track's end
    ("closed": `match` is the track's decision, the last search's result)."""

    kind: EventKind
    camera: str
    track_id: int
    pts: float
    query: TrackQuery | None = None
    match: object | None = None


SearchFn = Callable[[TrackQuery], object | None]


class AdaptiveStride:
    """The detection stride, adapted to the processing cost against the stream's frame rate."""

    def __init__(self, settings: PipelineSettings) -> None:
        self.settings = settings
        self.value = settings.detect_every
        self._cost = 0.0  # EMA of wall seconds per processed frame
        self._interval = 0.0  # EMA of stream seconds between processed frames
        self._last_pts: float | None = None
        self._since = 0

    def observe(self, pts: float, cost: float) -> None:
        if self._last_pts is not None and pts > self._last_pts:
            dt = pts - self._last_pts
            self._interval = dt if self._interval == 0 else 0.9 * self._interval + 0.1 * dt
        self._last_pts = pts
        self._cost = cost if self._cost == 0 else 0.9 * self._cost + 0.1 * cost
        self._since += 1
        s = self.settings
        if not s.adaptive or self._interval == 0 or self._since < 2 * self.value:
            return
        if self._cost > 0.9 * self._interval and self.value < s.max_detect_every:
            self.value += 1
            self._since = 0
        elif self._cost < 0.4 * self._interval and self.value > s.detect_every:
            self.value -= 1
            self._since = 0


class CameraPipeline:
    def __init__(
        self,
        engine: Engine,
        settings: PipelineSettings | None = None,
        search: SearchFn | None = None,
        *,
        camera: str = "camera",
        detector: Detector | None = None,
    ) -> None:
        self.engine = engine
        self.detector: Detector | None = detector  # None: the engine's
        self.settings = settings or PipelineSettings()
        self.search = search or (lambda _query: None)
        self.camera = camera
        self.tracker = Tracker(self.settings.tracker_settings())
        self.stride = AdaptiveStride(self.settings)
        self._tracks: dict[int, TrackState] = {}
        self._boxes: dict[int, Box] = {}  # each track's last detected box
        self._countdown = 0
        self.frames = 0
        self.detections = 0
        self.embeddings = 0
        self.searches = 0
        self.tracks_seen = 0

    @property
    def detect_every(self) -> int:
        return self.stride.value

    def process(self, frame: Frame) -> list[TrackEvent]:
        """Handle one frame (in stream order; frames may be missing)."""
        start = time.perf_counter()
        self.frames += 1
        events: list[TrackEvent] = []
        if self._countdown <= 0:
            self._countdown = self.stride.value
            events = self._detect(frame)
        else:
            self.tracker.predict(frame.pts)
        self._countdown -= 1
        self.stride.observe(frame.pts, time.perf_counter() - start)
        return events

    def finish(self) -> list[TrackEvent]:
        """Close every track (the source ended or the camera stops)."""
        events: list[TrackEvent] = []
        for tid in self.tracker.finish():
            events += self._close(tid)
        return events

    def _detect(self, frame: Frame) -> list[TrackEvent]:
        image = frame.image
        raw = self.engine.detect(image) if self.detector is None else self.detector.detect(image)
        found = [d for d in raw if d.box.width >= self.settings.min_face_px]
        self.detections += len(found)
        boxes = self.tracker.update(found, frame.pts)
        events: list[TrackEvent] = []
        for tid in self.tracker.ended:
            events += self._close(tid)
        for tb in boxes:
            events += self._sample(tb, frame)
        return events

    def _state(self, tb: TrackedBox, pts: float) -> TrackState:
        state = self._tracks.get(tb.track_id)
        if state is None:
            state = TrackState(tb.track_id, pts, pts, fuse_k=self.settings.fuse_k)
            self._tracks[tb.track_id] = state
            self.tracks_seen += 1
        state.last_pts = pts
        return state

    def _sample(self, tb: TrackedBox, frame: Frame) -> list[TrackEvent]:
        assert tb.detection is not None
        s = self.settings
        state = self._state(tb, frame.pts)
        self._boxes[tb.track_id] = tb.detection.box
        if state.embedded >= s.max_samples_per_track:
            return []
        h, w = frame.image.shape[:2]
        face = self.engine.faces(frame.image, [tb.detection], embed=False)[0]
        score = sample_score(face, w, h)
        if score is None or not state.wants(score):
            return []
        face = self.engine.faces(frame.image, [tb.detection])[0]
        self.embeddings += 1
        state.add(face, score, frame.pts, frame.image, s.crop_margin)
        reason = state.trigger(
            search_quality=s.search_quality,
            better_margin=s.better_margin,
            max_searches=s.searches_per_track,
        )
        return [] if reason is None else [self._search(state, reason, frame.pts)]

    def _search(self, state: TrackState, reason: Reason, pts: float) -> TrackEvent:
        assert state.best_crop is not None
        query = TrackQuery(
            self.camera,
            state.track_id,
            state.first_pts,
            state.last_pts,
            state.template(),
            state.best_crop,
            state.best_score,
            reason,
            self._boxes.get(state.track_id),
        )
        state.searches += 1
        state.searched_quality = state.fused_quality
        self.searches += 1
        match = self.search(query)
        if match is not None:
            state.match = match
        kind: EventKind = "match" if match is not None else "search"
        return TrackEvent(kind, self.camera, state.track_id, pts, query, match)

    def _close(self, track_id: int) -> list[TrackEvent]:
        state = self._tracks.pop(track_id, None)
        if state is None:  # confirmed but never sampled (e.g. only clipped faces)
            self._boxes.pop(track_id, None)
            return [TrackEvent("closed", self.camera, track_id, 0.0)]
        events: list[TrackEvent] = []
        if state.final_due(self.settings.final_quality):
            events.append(self._search(state, "final", state.last_pts))
        events.append(
            TrackEvent("closed", self.camera, track_id, state.last_pts, None, state.match)
        )
        self._boxes.pop(track_id, None)
        return events
