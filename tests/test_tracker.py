"""The ByteTrack-style tracker on synthetic boxes with known identities."""

from __future__ import annotations

import pytest

from yingyan.errors import ConfigError
from yingyan.types import Box, Detection
from yingyan.video.bestshot import clipped, crop, fuse
from yingyan.video.tracker import Tracker, TrackerSettings

FPS = 30.0
SIZE = 60.0


def det(x: float, y: float, score: float = 1.0) -> Detection:
    return Detection(Box(x, y, x + SIZE, y + SIZE), score, "synthetic")


def run(
    tracker: Tracker, frames: list[dict[str, Detection]]
) -> tuple[dict[str, set[int]], list[list[int]]]:
    """Feed frames of labelled detections; map each true identity to the track ids it got."""
    ids: dict[str, set[int]] = {}
    ended: list[list[int]] = []
    for i, labelled in enumerate(frames):
        names = list(labelled)
        boxes = tracker.update([labelled[n] for n in names], i / FPS)
        ended.append(list(tracker.ended))
        for tb in boxes:
            assert tb.detection is not None
            name = names[[labelled[n] for n in names].index(tb.detection)]
            ids.setdefault(name, set()).add(tb.track_id)
    return ids, ended


def test_crossing_paths_keep_their_ids() -> None:
    """Two faces walk through each other (full overlap at the middle frame)."""
    frames = [{"a": det(10 + 8 * i, 100), "b": det(410 - 8 * i, 104)} for i in range(51)]
    ids, _ = run(Tracker(), frames)
    assert len(ids["a"]) == 1 and len(ids["b"]) == 1
    assert ids["a"] != ids["b"]


def test_missed_detections_and_occlusion_gap_keep_the_id() -> None:
    """One detection missed, then a 0.5 s occlusion while moving: the same track comes back."""
    frames: list[dict[str, Detection]] = []
    for i in range(60):
        labelled = {"b": det(400, 50 + 2 * i)}
        if i != 10 and not 30 <= i < 45:
            labelled["a"] = det(20 + 5 * i, 200)
        frames.append(labelled)
    ids, ended = run(Tracker(), frames)
    assert len(ids["a"]) == 1 and len(ids["b"]) == 1
    assert not any(ended)


def test_an_occlusion_longer_than_max_age_ends_the_track() -> None:
    tracker = Tracker(TrackerSettings(max_age_s=0.3))
    frames = [{"a": det(100, 100)} for _ in range(10)] + [{} for _ in range(12)]
    frames += [{"a": det(100, 100)} for _ in range(5)]
    ids, ended = run(tracker, frames)
    flat = [tid for e in ended for tid in e]
    assert len(flat) == 1  # the first track ended once, when it aged out
    assert len(ids["a"]) == 2 and flat[0] == min(ids["a"])


def test_birth_needs_min_hits_and_low_scores_only_continue_tracks() -> None:
    tracker = Tracker(TrackerSettings(min_hits=3, high_score=0.5))
    assert tracker.update([det(0, 0)], 0.0) == []
    assert tracker.update([det(1, 0)], 1 / FPS) == []
    born = tracker.update([det(2, 0)], 2 / FPS)
    assert len(born) == 1
    # A low-score detection continues the track; alone it starts nothing.
    kept = tracker.update([det(3, 0, 0.1), det(300, 300, 0.1)], 3 / FPS)
    assert [tb.track_id for tb in kept] == [born[0].track_id]
    for k in range(4, 10):
        tracker.update([det(300, 300, 0.1)], k / FPS)
    assert tracker.active_ids == [born[0].track_id]


def test_predict_moves_tracks_between_detections() -> None:
    tracker = Tracker()
    for i in range(10):
        tracker.update([det(10 * i, 50)], i / FPS)
    (moved,) = tracker.predict(12 / FPS)
    assert moved.detection is None
    assert moved.box.x1 == pytest.approx(120, abs=6)  # 10 px a frame carried on
    # The next detection where the motion says it is still matches the same track.
    (again,) = tracker.update([det(130, 50)], 13 / FPS)
    assert again.track_id == moved.track_id
    assert tracker.finish() == [moved.track_id] and tracker.active_ids == []


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError):
        TrackerSettings(min_iou=0.0)
    with pytest.raises(ConfigError):
        TrackerSettings(low_score=0.9, high_score=0.5)


def test_bestshot_helpers() -> None:
    import numpy as np

    from yingyan.types import ModelId, Template

    assert clipped(Box(0, 10, 50, 60), 640, 360)
    assert clipped(Box(600, 10, 641, 60), 640, 360)
    assert not clipped(Box(10, 10, 50, 60), 640, 360)
    image = np.zeros((100, 200, 3), np.uint8)
    out = crop(image, Box(90, 40, 110, 60), 0.5)
    assert out.shape == (40, 40, 3) and not np.shares_memory(out, image)
    model = ModelId("m", "1")
    a = Template(np.array([1, 0, 0], np.float32), model)
    b = Template(np.array([0, 1, 0], np.float32), model)
    fused = fuse([a, b])
    assert np.allclose(fused.vector, [2**-0.5, 2**-0.5, 0], atol=1e-6)
