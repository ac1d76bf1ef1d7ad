"""dlib's 5-point shape predictor and its face-chip alignment.

dlib's ResNet was trained on chips made by `get_face_chip(size=150, padding=0.25)` from this
predictor's points, so the recognizer only reaches its published accuracy with exactly this
alignment. Points are converted to Yingyan's fixed landmark order at this edge.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from yingyan.models import dlib_model
from yingyan.types import Detection, Landmarks, RGBImage

CHIP_SIZE = 150
CHIP_PADDING = 0.25


def _to_landmarks(shape: Any) -> Landmarks:
    p = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], dtype=np.float64)
    # dlib order: image-right eye corners (0, 1), image-left eye corners (2, 3), nose base (4).
    points = np.full((5, 2), np.nan)
    points[0] = p[2:4].mean(axis=0)
    points[1] = p[0:2].mean(axis=0)
    points[2] = p[4]
    return Landmarks(points, "dlib-5")


class DlibAligner:
    @cached_property
    def _predictor(self) -> Any:
        import dlib

        return dlib.shape_predictor(str(dlib_model("dlib_5_landmarks").path))

    name = "dlib-5-point-150"
    size = CHIP_SIZE

    def align(self, image: RGBImage, detection: Detection) -> tuple[Landmarks, RGBImage]:
        """Five points inside the detection box and the 150x150 chip they define."""
        import dlib

        box = detection.box
        rect = dlib.rectangle(round(box.x1), round(box.y1), round(box.x2) - 1, round(box.y2) - 1)
        shape = self._predictor(image, rect)
        chip = dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        return _to_landmarks(shape), np.ascontiguousarray(chip, dtype=np.uint8)
