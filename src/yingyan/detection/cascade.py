"""A fast detector backed by a stronger one: the second runs only on images where the first
finds no face. HOG then MMOD CNN keeps HOG's speed on most images while removing most of its
failures to acquire, which are not evenly spread across demographic groups (HOG misses dark
and low-contrast faces more often; see the fairness report)."""

from __future__ import annotations

from yingyan.detection.base import Detector
from yingyan.types import Detection, RGBImage


class CascadeDetector:
    def __init__(self, first: Detector, fallback: Detector) -> None:
        self.first, self.fallback = first, fallback
        self.name = f"{first.name}+{fallback.name}"

    def detect(self, image: RGBImage) -> list[Detection]:
        return self.first.detect(image) or self.fallback.detect(image)
