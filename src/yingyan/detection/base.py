"""The detector contract, the factory that picks a backend from configuration, and the
selection helpers shared by every backend."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from yingyan.config import EngineConfig
from yingyan.types import Box, Detection, RGBImage


class Detector(Protocol):
    name: str

    def detect(self, image: RGBImage) -> list[Detection]:
        """Faces in the image, highest score first."""
        ...


def make_detector(config: EngineConfig) -> Detector:
    """Build the configured backend; model files load lazily on first use."""
    work = config.limits.max_work_pixels
    if config.detector == "hog+cnn":
        from yingyan.detection.cascade import CascadeDetector

        return CascadeDetector(
            make_detector(config.with_(detector="hog")), make_detector(config.with_(detector="cnn"))
        )
    if config.detector == "hog":
        from yingyan.detection.dlib_hog import HogDetector

        return HogDetector(config.pyramid_upsample, config.min_detection_score, work)
    if config.detector == "cnn" and config.backend == "onnx":
        from yingyan.detection.mmod_onnx import MmodOnnxDetector

        return MmodOnnxDetector(
            config.pyramid_upsample, config.min_detection_score, config.threads, work
        )
    if config.detector == "cnn":
        from yingyan.detection.dlib_mmod import MmodDetector

        return MmodDetector(config.pyramid_upsample, config.min_detection_score, work)
    from yingyan.detection.yunet import YuNetDetector

    assert config.yunet_model is not None  # checked by EngineConfig
    return YuNetDetector(
        config.yunet_model, config.pyramid_upsample, config.yunet_score_threshold, work
    )


Size = tuple[int, int]  # rows, cols


def dlib_up_size(rows: int, cols: int) -> Size:
    """The size of dlib's pyramid_up (pyramid_down<2>'s rounded rect_up): 2h + 1 by 2w + 2."""
    return 2 * rows + 1, 2 * cols + 2


def area(rows: int, cols: int) -> int:
    return rows * cols


def doubled_size(rows: int, cols: int) -> Size:
    return 2 * rows, 2 * cols


@dataclass(frozen=True, slots=True)
class WorkPlan:
    """How a detector scans one image within the work bound: resized to `size` first (the
    image's own size unless even that is over the bound), then upsampled `levels` times."""

    size: Size
    levels: int


def plan_work(
    rows: int,
    cols: int,
    levels: int,
    max_pixels: int,
    work: Callable[[int, int], int],
    grow: Callable[[int, int], Size] = dlib_up_size,
    *,
    shrink: bool = False,
) -> WorkPlan:
    """The most upsampling passes (up to `levels`) whose work (`work(rows, cols)` of the
    upsampled size: the largest array the detector builds) fits `max_pixels`. With `shrink`,
    an image over the bound with no upsampling is scaled down until it fits; without it, the
    image itself is accepted (the input limit already bounds it)."""
    for k in range(levels, -1, -1):
        r, c = rows, cols
        for _ in range(k):
            r, c = grow(r, c)
        if work(r, c) <= max_pixels:
            return WorkPlan((rows, cols), k)
    if not shrink:
        return WorkPlan((rows, cols), 0)
    scale = math.sqrt(max_pixels / work(rows, cols))
    while True:
        size = (max(1, math.floor(rows * scale)), max(1, math.floor(cols * scale)))
        if work(*size) <= max_pixels:
            return WorkPlan(size, 0)
        scale *= 0.99


# Where dlib's HOG detector puts the face in a 250x250 deep-funneled LFW image (median box over
# the LFW images it detects, as fractions of the image side). LFW guarantees one face centred by
# its own Viola-Jones detector, so when ours finds none the protocol falls back to this box, as
# dlib's own LFW evaluation did.
_CENTRE_BOX = (0.27, 0.31, 0.71, 0.75)


def centre_detection(width: int, height: int) -> Detection:
    x1, y1, x2, y2 = _CENTRE_BOX
    box = Box(x1 * width, y1 * height, x2 * width, y2 * height)
    return Detection(box=box, score=float("nan"), detector="centre-fallback")


def most_central(detections: list[Detection], width: int, height: int) -> Detection | None:
    """The face nearest the image centre, ties broken by size: the subject of a portrait or
    of an LFW image, which often shows other people at its edges."""
    if not detections:
        return None
    cx, cy = width / 2, height / 2

    def key(d: Detection) -> tuple[float, float]:
        x, y = d.box.center
        return ((x - cx) ** 2 + (y - cy) ** 2, -d.box.area)

    return min(detections, key=key)


def largest(detections: list[Detection]) -> Detection | None:
    return max(detections, key=lambda d: d.box.area, default=None)
