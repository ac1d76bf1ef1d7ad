"""dlib's HOG + linear SVM frontal face detector: fast on a CPU, weak on profiles and
small faces."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from yingyan.types import Box, Detection, RGBImage


class HogDetector:
    name = "dlib-hog"

    def __init__(self, upsample: int = 1, min_score: float = 0.0) -> None:
        self.upsample = upsample
        self.min_score = min_score

    @cached_property
    def _model(self) -> Any:
        import dlib

        return dlib.get_frontal_face_detector()

    def detect(self, image: RGBImage) -> list[Detection]:
        rects, scores, _ = self._model.run(image, self.upsample, self.min_score)
        found = [
            Detection(Box(r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(s), self.name)
            for r, s in zip(rects, scores, strict=True)
        ]
        return sorted(found, key=lambda d: -d.score)
