"""Face detection: image → list[Detection] (boxes in image pixels, best first)."""

from yingyan.detection.base import Detector, centre_detection, make_detector, most_central

__all__ = ["Detector", "centre_detection", "make_detector", "most_central"]
