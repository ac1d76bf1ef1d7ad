"""dlib's MMOD CNN detector: finds harder faces than HOG, at a far higher CPU cost."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from yingyan.config import MAX_WORK_PIXELS
from yingyan.detection.base import WorkPlan, plan_work
from yingyan.models import dlib_model
from yingyan.runtime.mmod_onnx import MmodSpec, load_mmod, mmod_spec, resize_rgb, tile_pyramid
from yingyan.types import Box, Detection, RGBImage


class MmodDetector:
    name = "dlib-mmod"

    def __init__(
        self, upsample: int = 1, min_score: float = 0.0, max_work_pixels: int = MAX_WORK_PIXELS
    ) -> None:
        self.upsample = upsample
        self.min_score = min_score
        self.max_work_pixels = max_work_pixels

    @cached_property
    def _model(self) -> Any:
        import dlib

        return dlib.cnn_face_detection_model_v1(str(dlib_model("dlib_mmod").path))

    @cached_property
    def _spec(self) -> MmodSpec:
        return mmod_spec(load_mmod(dlib_model("dlib_mmod").path))

    def canvas_pixels(self, rows: int, cols: int) -> int:
        """dlib builds the same tiled pyramid canvas as `MmodOnnxDetector`: the same bound."""
        layout = tile_pyramid(rows, cols, self._spec.padding, self._spec.outer_padding)
        return layout.rows * layout.cols

    def plan(self, rows: int, cols: int) -> WorkPlan:
        return plan_work(
            rows, cols, self.upsample, self.max_work_pixels, self.canvas_pixels, shrink=True
        )

    def detect(self, image: RGBImage) -> list[Detection]:
        rows, cols = image.shape[:2]
        plan = self.plan(rows, cols)
        if plan.size != (rows, cols):
            image = resize_rgb(image, *plan.size)
        sy = (rows - 1) / max(plan.size[0] - 1, 1)  # as resize_rgb samples
        sx = (cols - 1) / max(plan.size[1] - 1, 1)
        found = []
        for d in self._model(image, plan.levels):
            if d.confidence < self.min_score:
                continue
            r = d.rect
            box = Box(r.left() * sx, r.top() * sy, r.right() * sx + 1, r.bottom() * sy + 1)
            found.append(Detection(box, float(d.confidence), self.name))
        return sorted(found, key=lambda d: -d.score)
