"""Back-pressure on real decoding: a camera faster than its consumer costs frames, never memory.

The shared clip is replayed as a camera at 4x its fps (120 frames/s) through the freshest-frame
slot, and the consumer really is slow (it sleeps a tenth of a second per frame, as a loaded
machine's pipeline would take). Frames it never sees must be dropped and counted, and what the
reader holds must stay at its one slot: a queue would instead hold every unconsumed frame. The
test waits until a queue would have held far more than the bound; no assertion is about time."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import pytest

from yingyan.video.frames import Frame
from yingyan.video.source import SourceSpec, open_source

from .conftest import shared_path

FRAME_BYTES = 640 * 360 * 3  # one decoded RGB frame of the clip
# what the reader may add to the process while the consumer lags: decoder threads, their malloc
# arenas and FFmpeg buffers, which after a long suite measured up to 50 MB (a queue: 4x this bound)
RSS_BOUND = 96 * 1024 * 1024
QUEUE_FACTOR = 4  # a queue would have held at least this many times the bound
CEILING_S = 30.0  # only how long a broken source may take to hand out a frame
MAX_STEPS = 400


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _live_frames() -> int:
    """Frames alive anywhere in this process (Frame instances are tracked by the collector)."""
    return sum(1 for obj in gc.get_objects() if isinstance(obj, Frame))


@pytest.mark.shared
def test_a_slow_consumer_drops_frames_and_the_reader_holds_one() -> None:
    clip = shared_path("datasets", "video", "short_hamilton_clip.mp4")
    spec = SourceSpec(str(clip), realtime=True, speed=4.0, loop=True)
    indices: list[int] = []
    live: list[int] = []
    with open_source(spec) as reader:
        reader.start()
        first = reader.latest(timeout=CEILING_S)
        assert first is not None and gc.is_tracked(first)
        reader.mark_processed(first)
        del first
        before = _rss()  # decoder threads and buffers exist by now
        growth = 0
        for _ in range(MAX_STEPS):
            frame = reader.latest(timeout=CEILING_S)
            assert frame is not None, reader.stats()
            indices.append(frame.index)
            time.sleep(0.1)  # the slow consumer
            live.append(_live_frames())
            growth = max(growth, _rss() - before)
            reader.mark_processed(frame)
            del frame
            stats = reader.stats()
            if (stats.decoded - stats.processed) * FRAME_BYTES > QUEUE_FACTOR * RSS_BOUND:
                break
        running = reader.stats()
    stats = reader.stats()  # after close: the decoding thread has stopped

    unconsumed = running.decoded - running.processed
    assert unconsumed * FRAME_BYTES > QUEUE_FACTOR * RSS_BOUND, running  # a queue would be big
    assert running.dropped > 0 and running.processed == len(indices) + 1
    # every decoded frame was handed out, dropped (counted) or is the one in the slot
    assert stats.decoded - stats.dropped - stats.processed in (0, 1), stats
    # the consumer always got the freshest frame: it skipped ahead, never back
    assert indices == sorted(set(indices)) and indices[-1] - indices[0] > len(indices)
    # the reader holds its slot and the frame being decoded; the consumer holds one
    assert max(live) <= 3, live
    assert growth < RSS_BOUND, f"RSS grew {growth / 2**20:.1f} MB while {unconsumed} waited"
    assert running.input_fps > running.processed_fps > 0
    assert running.state == "connected" and running.errors == 0
