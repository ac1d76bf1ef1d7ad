"""The detector contract, the factory that picks a backend from configuration, and the
selection helpers shared by every backend."""

from __future__ import annotations

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
    if config.detector == "hog+cnn":
        from yingyan.detection.cascade import CascadeDetector

        return CascadeDetector(
            make_detector(config.with_(detector="hog")), make_detector(config.with_(detector="cnn"))
        )
    if config.detector == "hog":
        from yingyan.detection.dlib_hog import HogDetector

        return HogDetector(config.pyramid_upsample, config.min_detection_score)
    if config.detector == "cnn" and config.backend == "onnx":
        from yingyan.detection.mmod_onnx import MmodOnnxDetector

        return MmodOnnxDetector(config.pyramid_upsample, config.min_detection_score, config.threads)
    if config.detector == "cnn":
        from yingyan.detection.dlib_mmod import MmodDetector

        return MmodDetector(config.pyramid_upsample, config.min_detection_score)
    from yingyan.detection.yunet import YuNetDetector

    assert config.yunet_model is not None  # checked by EngineConfig
    return YuNetDetector(config.yunet_model, config.pyramid_upsample, config.yunet_score_threshold)


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
