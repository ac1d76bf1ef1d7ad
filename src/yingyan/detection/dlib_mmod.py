"""dlib's MMOD CNN detector: finds harder faces than HOG, at a far higher CPU cost."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from yingyan.models import dlib_model
from yingyan.types import Box, Detection, RGBImage


class MmodDetector:
    name = "dlib-mmod"

    def __init__(self, upsample: int = 1, min_score: float = 0.0) -> None:
        self.upsample = upsample
        self.min_score = min_score

    @cached_property
    def _model(self) -> Any:
        import dlib

        return dlib.cnn_face_detection_model_v1(str(dlib_model("dlib_mmod").path))

    def detect(self, image: RGBImage) -> list[Detection]:
        found = []
        for d in self._model(image, self.upsample):
            if d.confidence < self.min_score:
                continue
            r = d.rect
            box = Box(r.left(), r.top(), r.right() + 1, r.bottom() + 1)
            found.append(Detection(box, float(d.confidence), self.name))
        return sorted(found, key=lambda d: -d.score)
