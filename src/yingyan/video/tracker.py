"""A small ByteTrack-style multi-object tracker for face boxes.

Why our own: `trackers` (roboflow, Apache-2.0) requires the GUI `opencv-python`, whose `cv2`
clobbers the project's `opencv-python-headless`; norfair (BSD-3) requires numpy<2 while the
project runs numpy 2; boxmot and Ultralytics' trackers are AGPL-3.0. ByteTrack's association is
small: a constant-velocity Kalman filter per track on (cx, cy, w, h), an IoU cost, two-stage
matching (high-score detections first against every live track, then low-score detections
against the confirmed tracks left over) solved by `scipy.optimize.linear_sum_assignment`. A
track is born after `min_hits` matched detections and, once lost, is kept for `max_age_s`
seconds of stream time and can be re-matched. Time is the stream clock (pts), so frames skipped
by the detector stride or dropped under load only widen the prediction step; `predict` moves
the tracks to a frame where detection was skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from yingyan.errors import ConfigError
from yingyan.extras import lazy
from yingyan.types import Box, Detection

F64 = npt.NDArray[np.float64]
_optimize = lazy("scipy.optimize", "video", "the video tracker")  # linear_sum_assignment

# Process and measurement noise relative to the box height (ByteTrack's weights, per second
# of stream time at ~30 fps: its per-frame weights times sqrt(30)).
_POS_STD = 1.0 / 20
_VEL_STD = 1.0 / 160 * 30
_MEAS_STD = 1.0 / 20


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    high_score: float = 0.5  # detections at or above this match first and may start tracks
    low_score: float = 0.0  # detections below this are ignored
    min_iou: float = 0.15  # a pair with a lower IoU is never matched
    min_hits: int = 2  # matched detections before a track is reported
    max_age_s: float = 1.0  # how long a lost track waits to be re-matched

    def __post_init__(self) -> None:
        if not 0.0 < self.min_iou < 1.0:
            raise ConfigError("tracker min_iou must lie in (0, 1)")
        if self.min_hits < 1:
            raise ConfigError("tracker min_hits must be >= 1")
        if self.max_age_s < 0:
            raise ConfigError("tracker max_age_s must be >= 0")
        if self.low_score > self.high_score:
            raise ConfigError("tracker low_score must not exceed high_score")


@dataclass(frozen=True, slots=True)
class TrackedBox:
    track_id: int
    box: Box
    score: float  # score of the last matched detection
    detection: Detection | None  # the detection matched at this update, None when predicted


class _Kalman:
    """Constant-velocity filter on (cx, cy, w, h) with time steps in seconds."""

    def __init__(self, box: Box) -> None:
        cx, cy = box.center
        self.x: F64 = np.array([cx, cy, box.width, box.height, 0, 0, 0, 0], dtype=np.float64)
        h = max(box.height, 1.0)
        std = [2 * _POS_STD * h] * 4 + [10 * _VEL_STD * h] * 4
        self.p: F64 = np.diag(np.square(std))

    def predict(self, dt: float) -> None:
        if dt <= 0:
            return
        f = np.eye(8)
        f[:4, 4:] = np.eye(4) * dt
        h = max(self.x[3], 1.0)
        q = np.diag(np.square([_POS_STD * h] * 4 + [_VEL_STD * h] * 4)) * dt
        self.x = f @ self.x
        self.x[2:4] = np.maximum(self.x[2:4], 1.0)
        self.p = f @ self.p @ f.T + q

    def update(self, box: Box) -> None:
        cx, cy = box.center
        z = np.array([cx, cy, box.width, box.height])
        hm = np.zeros((4, 8))
        hm[:4, :4] = np.eye(4)
        r = np.diag(np.square([_MEAS_STD * max(box.height, 1.0)] * 4))
        s = hm @ self.p @ hm.T + r
        k = np.linalg.solve(s, hm @ self.p).T
        self.x = self.x + k @ (z - hm @ self.x)
        self.p = (np.eye(8) - k @ hm) @ self.p

    @property
    def box(self) -> Box:
        cx, cy, w, h = (float(v) for v in self.x[:4])
        return Box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


class _Track:
    def __init__(self, track_id: int, detection: Detection, pts: float) -> None:
        self.track_id = track_id
        self.kf = _Kalman(detection.box)
        self.hits = 1
        self.confirmed = False
        self.pts = pts  # time the filter's state refers to
        self.last_seen = pts
        self.score = detection.score

    def advance(self, pts: float) -> None:
        self.kf.predict(pts - self.pts)
        self.pts = max(self.pts, pts)

    def hit(self, detection: Detection, pts: float, min_hits: int) -> None:
        self.kf.update(detection.box)
        self.hits += 1
        self.last_seen = pts
        self.score = detection.score
        self.confirmed = self.confirmed or self.hits >= min_hits


def _iou_matrix(tracks: list[_Track], dets: list[Detection]) -> F64:
    out = np.zeros((len(tracks), len(dets)))
    for i, t in enumerate(tracks):
        tb = t.kf.box
        for j, d in enumerate(dets):
            out[i, j] = tb.iou(d.box)
    return out


def _assign(
    tracks: list[_Track], dets: list[Detection], min_iou: float
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Optimal IoU matching: (pairs, unmatched track indices, unmatched detection indices)."""
    if not tracks or not dets:
        return [], list(range(len(tracks))), list(range(len(dets)))
    iou = _iou_matrix(tracks, dets)
    rows, cols = _optimize.linear_sum_assignment(-iou)
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= min_iou]
    used_t = {r for r, _ in pairs}
    used_d = {c for _, c in pairs}
    return (
        pairs,
        [i for i in range(len(tracks)) if i not in used_t],
        [j for j in range(len(dets)) if j not in used_d],
    )


class Tracker:
    """Tracks of one camera. Not thread-safe: one per pipeline."""

    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self.settings = settings or TrackerSettings()
        self._tracks: list[_Track] = []
        self._next_id = 1
        self.ended: list[int] = []  # confirmed tracks removed by the last update

    def update(self, detections: list[Detection], pts: float) -> list[TrackedBox]:
        """Associate this frame's detections; confirmed tracks seen now, with their detection."""
        s = self.settings
        for t in self._tracks:
            t.advance(pts)
        dets = [d for d in detections if d.score >= s.low_score]
        high = [d for d in dets if d.score >= s.high_score]
        low = [d for d in dets if d.score < s.high_score]
        matched: dict[int, Detection] = {}

        # Stage 1: high-score detections against every established track (confirmed or lost).
        established = [t for t in self._tracks if t.confirmed]
        pairs, left_t, left_d = _assign(established, high, s.min_iou)
        for ti, di in pairs:
            self._hit(established[ti], high[di], pts, matched)
        # Stage 2: low-score detections against established tracks seen in the last frame.
        recent = [established[i] for i in left_t if established[i].last_seen >= pts - 0.5]
        pairs, _, _ = _assign(recent, low, s.min_iou)
        for ti, di in pairs:
            self._hit(recent[ti], low[di], pts, matched)
        # Stage 3: tentative tracks against the high-score detections still free.
        rest = [high[j] for j in left_d]
        tentative = [t for t in self._tracks if not t.confirmed]
        pairs, left_tent, left_new = _assign(tentative, rest, s.min_iou)
        for ti, di in pairs:
            self._hit(tentative[ti], rest[di], pts, matched)
        dead = {id(tentative[i]) for i in left_tent}
        for j in left_new:
            self._tracks.append(_Track(self._next_id, rest[j], pts))
            self._next_id += 1

        self.ended = []
        kept = []
        for t in self._tracks:
            if id(t) in dead:
                continue
            if pts - t.last_seen > s.max_age_s:
                if t.confirmed:
                    self.ended.append(t.track_id)
                continue
            kept.append(t)
        self._tracks = kept
        return [
            TrackedBox(t.track_id, t.kf.box, t.score, matched[t.track_id])
            for t in self._tracks
            if t.confirmed and t.track_id in matched
        ]

    def _hit(self, t: _Track, d: Detection, pts: float, matched: dict[int, Detection]) -> None:
        t.hit(d, pts, self.settings.min_hits)
        matched[t.track_id] = d

    def predict(self, pts: float) -> list[TrackedBox]:
        """Move the tracks to a frame without detection: confirmed tracks seen recently."""
        for t in self._tracks:
            t.advance(pts)
        return [
            TrackedBox(t.track_id, t.kf.box, t.score, None)
            for t in self._tracks
            if t.confirmed and pts - t.last_seen <= self.settings.max_age_s
        ]

    @property
    def active_ids(self) -> list[int]:
        return [t.track_id for t in self._tracks if t.confirmed]

    def finish(self) -> list[int]:
        """End every track (the source ended): the ids of the confirmed ones."""
        ids = self.active_ids
        self._tracks = []
        self.ended = []
        return ids
