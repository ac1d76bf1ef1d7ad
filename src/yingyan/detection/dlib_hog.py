"""dlib's HOG + linear SVM frontal face detector: fast on a CPU, weak on profiles and
small faces."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from yingyan.config import MAX_WORK_PIXELS
from yingyan.detection.base import WorkPlan, area, plan_work
from yingyan.types import Box, Detection, RGBImage


class HogDetector:
    name = "dlib-hog"

    def __init__(
        self,
        upsample: int = 1,
        min_score: float = 0.0,
        max_work_pixels: int = MAX_WORK_PIXELS,
    ) -> None:
        self.upsample = upsample
        self.min_score = min_score
        self.max_work_pixels = max_work_pixels

    @cached_property
    def _model(self) -> Any:
        import dlib

        return dlib.get_frontal_face_detector()

    def plan(self, rows: int, cols: int) -> WorkPlan:
        """dlib upsamples inside `run`: pass it only as many passes as the bound allows (the
        image itself is bounded by the input limit)."""
        return plan_work(rows, cols, self.upsample, self.max_work_pixels, area)

    def detect(self, image: RGBImage) -> list[Detection]:
        levels = self.plan(*image.shape[:2]).levels
        rects, scores, _ = self._model.run(image, levels, self.min_score)
        found = [
            Detection(Box(r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(s), self.name)
            for r, s in zip(rects, scores, strict=True)
        ]
        return sorted(found, key=lambda d: -d.score)
