"""Decoded frames and per-camera source statistics: what a source hands the pipeline.

Frames are decoded inside the worker process and never cross a process boundary (PyAV frames
cannot be pickled, and a 720p frame is 2.7 MB)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from yingyan.types import RGBImage


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    image: RGBImage  # (H, W, 3) uint8 RGB
    index: int  # frame number in the source, counting frames dropped before the pipeline
    pts: float  # seconds on the stream's own clock (its timestamps), from its first frame
    received: float  # time.monotonic() when it was decoded, for lag


@dataclass(slots=True)
class SourceStats:
    """One camera's health, as shown in the API and in Prometheus metrics."""

    state: str = "starting"  # starting | connected | reconnecting | ended | failed
    connected: bool = False
    input_fps: float = 0.0  # frames decoded per second (recent window)
    processed_fps: float = 0.0  # frames the pipeline handled per second
    lag_s: float = 0.0  # now - the processed frame's decode time
    decoded: int = 0
    processed: int = 0
    dropped: int = 0  # decoded but skipped by the freshest-frame policy
    reconnects: int = 0
    errors: int = 0
    last_error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)
