"""dlib's MMOD CNN face detector on onnxruntime: dlib's boxes and scores, many times faster.

The network runs as a converted ONNX graph (`yingyan.runtime.mmod_onnx`); everything around
it follows dlib's `cnn_face_detection_model_v1` step by step, because that is what makes the
output match: `pyramid_up` for upsampling, the tiled pyramid, windows centred on score-map
positions, the integer rectangles dlib rounds to, its greedy NMS, and `rect_down` back to the
original image.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from yingyan.config import MAX_WORK_PIXELS
from yingyan.detection.base import WorkPlan, dlib_up_size, plan_work
from yingyan.models import dlib_model
from yingyan.runtime.dlib_format import BoxOverlap
from yingyan.runtime.mmod_onnx import (
    MmodSpec,
    build_canvas,
    cached_mmod_onnx,
    canvas_to_image,
    load_mmod,
    mmod_spec,
    resize_rgb,
    tile_pyramid,
)
from yingyan.runtime.onnx_session import OnnxSession
from yingyan.types import Box, Detection, RGBImage

F64 = npt.NDArray[np.float64]
# pyramid_down<2> (the Python binding's upsampler): point_up(p) = (p + shift) * 2
_UP_SHIFT = np.array([1.25, 0.75, 1.25, 0.75])


@dataclass(frozen=True, slots=True)
class _Model:
    session: OnnxSession
    spec: MmodSpec


class MmodOnnxDetector:
    """`min_score` plays dlib's adjust_threshold: score-map values above it are candidates
    for NMS (dlib's default is 0; a positive value gives dlib's faces minus the weaker ones,
    a negative one finds more). `upsample` doubles the image that many times first, like
    `upsample_num_times` in dlib's Python binding, as far as `max_work_pixels` allows: the
    tiled pyramid canvas of the upsampled image must fit it, else fewer passes are made, and
    an image whose canvas is over it without upsampling is first shrunk (boxes are mapped back
    to the original pixels). `threads`: onnxruntime intra-op threads (default: every core
    this process may use)."""

    name = "mmod-onnx"

    def __init__(
        self,
        upsample: int = 0,
        min_score: float = 0.0,
        threads: int | None = None,
        max_work_pixels: int = MAX_WORK_PIXELS,
    ) -> None:
        if upsample < 0:
            raise ValueError("upsample must be >= 0")
        self.upsample = upsample
        self.min_score = min_score
        self.threads = threads
        self.max_work_pixels = max_work_pixels

    @cached_property
    def _model(self) -> _Model:
        source = dlib_model("dlib_mmod").path
        session = OnnxSession(cached_mmod_onnx(source), intra_op_threads=self.threads)
        return _Model(session, mmod_spec(load_mmod(source)))

    def canvas_pixels(self, rows: int, cols: int) -> int:
        """Pixels of the tiled pyramid canvas built for an image of this size."""
        spec = self._model.spec
        layout = tile_pyramid(rows, cols, spec.padding, spec.outer_padding)
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
        for _ in range(plan.levels):
            image = pyramid_up(image)
        boxes, scores = self._detect_rects(image)
        boxes = rect_down(boxes, plan.levels)
        if plan.size != (rows, cols):
            boxes = scale_back(boxes, plan.size, (rows, cols))
        return [
            Detection(Box(x1, y1, x2 + 1, y2 + 1), score, self.name)  # dlib rects are inclusive
            for (x1, y1, x2, y2), score in zip(boxes.tolist(), scores.tolist(), strict=True)
        ]

    def _detect_rects(self, image: RGBImage) -> tuple[F64, F64]:
        """Inclusive integer rectangles and scores, best first, as dlib's net(image)."""
        spec = self._model.spec
        rows, cols = image.shape[:2]
        layout = tile_pyramid(rows, cols, spec.padding, spec.outer_padding)
        if min(layout.rows, layout.cols) < spec.min_canvas:
            return np.empty((0, 4)), np.empty(0)
        mean = np.array(spec.mean_rgb, dtype=np.float32)
        score_map = self._model.session.run(build_canvas(image, layout, mean))[0, 0]
        ys, xs = np.nonzero(score_map.astype(np.float64) > self.min_score)
        scores = score_map[ys, xs].astype(np.float64)
        order = np.argsort(-scores, kind="stable")
        windows = _windows(ys[order], xs[order], spec)
        scores = scores[order]
        rects = np.floor(canvas_to_image(layout, windows) + 0.5)  # drectangle -> rectangle
        keep = non_max_suppression(rects, spec.nms)
        return rects[keep], scores[keep]


def _windows(rows: npt.NDArray[np.intp], cols: npt.NDArray[np.intp], spec: MmodSpec) -> F64:
    """The detector window centred on each score-map position, in canvas coordinates
    (dlib's centered_drect: a width-w box spans centre +- (w - 1) / 2)."""
    x = cols * spec.stride + spec.offset
    y = rows * spec.stride + spec.offset
    half_w, half_h = (spec.window.width - 1) / 2, (spec.window.height - 1) / 2
    return np.stack([x - half_w, y - half_h, x + half_w, y + half_h], axis=1).astype(np.float64)


def non_max_suppression(rects: F64, rule: BoxOverlap) -> list[int]:
    """dlib's greedy NMS over score-sorted inclusive rectangles: a box is dropped when it
    overlaps a kept one by dlib's test_box_overlap, whose "IoU" divides the intersection by
    the area of the two boxes' bounding box, not of their union."""
    kept: list[int] = []
    for i, box in enumerate(rects):
        if not any(_overlap(rects[j], box, rule) for j in kept):
            kept.append(i)
    return kept


def _overlap(a: F64, b: F64, rule: BoxOverlap) -> bool:
    inner = _area(max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    if inner == 0:
        return False
    outer = _area(min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
    return (
        inner / outer > rule.match
        or inner / _area(*a) > rule.overlap
        or inner / _area(*b) > rule.overlap
    )


def _area(left: float, top: float, right: float, bottom: float) -> float:
    if left > right or top > bottom:
        return 0.0
    return float((right - left + 1) * (bottom - top + 1))


def pyramid_up(image: RGBImage) -> RGBImage:
    """dlib's pyramid_up with pyramid_down<2>: the size of the rounded rect_up of the image
    rectangle (2w + 2 by 2h + 1), filled by dlib's bilinear resize."""
    return resize_rgb(image, *dlib_up_size(*image.shape[:2]))


def scale_back(rects: F64, scanned: tuple[int, int], original: tuple[int, int]) -> F64:
    """Inclusive rectangles of a resized image back in the original's pixels: the resize
    samples output pixel p at p * (n_in - 1) / (n_out - 1)."""
    (rows, cols), (orig_rows, orig_cols) = scanned, original
    sx = (orig_cols - 1) / max(cols - 1, 1)
    sy = (orig_rows - 1) / max(rows - 1, 1)
    out: F64 = np.floor(rects * np.array([sx, sy, sx, sy]) + 0.5)
    return out


def rect_down(rects: F64, levels: int) -> F64:
    """pyramid_down<2>::rect_down applied `levels` times, then rounded to whole pixels."""
    out = rects.astype(np.float64)
    for _ in range(levels):
        out = out / 2.0 - _UP_SHIFT
    return np.floor(out + 0.5)
