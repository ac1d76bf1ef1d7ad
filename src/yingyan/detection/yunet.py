"""OpenCV's YuNet ONNX detector (configured model path): fast, finds small and turned faces,
and returns five landmarks."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from yingyan.config import MAX_WORK_PIXELS
from yingyan.detection.base import area, doubled_size, plan_work
from yingyan.models import configured_model
from yingyan.types import Box, Detection, Landmarks, RGBImage


class YuNetDetector:
    name = "yunet"

    def __init__(
        self,
        model_path: Path,
        upsample: int = 0,
        score_threshold: float = 0.8,
        max_work_pixels: int = MAX_WORK_PIXELS,
    ) -> None:
        self.model = configured_model("yunet", model_path)
        self.upsample = upsample
        self.score_threshold = score_threshold
        self.max_work_pixels = max_work_pixels

    @cached_property
    def _net(self) -> Any:
        # OpenCV 5 warns on every create that its new graph engine ignores the target; harmless.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        return cv2.FaceDetectorYN.create(
            str(self.model.path), "", (320, 320), self.score_threshold, 0.3, 5000
        )

    def scale_for(self, rows: int, cols: int) -> float:
        """2 ** upsampling passes, as many as fit the work bound."""
        levels = plan_work(rows, cols, self.upsample, self.max_work_pixels, area, doubled_size)
        return 2.0**levels.levels

    def detect(self, image: RGBImage) -> list[Detection]:
        bgr: npt.NDArray[np.uint8] = np.ascontiguousarray(image[:, :, ::-1])
        scale = self.scale_for(*image.shape[:2])
        if scale != 1.0:
            bgr = cv2.resize(  # type: ignore[assignment]
                bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR
            )
        net = self._net
        net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, faces = net.detect(bgr)
        found = []
        for row in faces if faces is not None else []:
            x, y, w, h = (float(v) / scale for v in row[:4])
            # YuNet order: subject's right eye (image left), left eye, nose, mouth corners.
            points = np.asarray(row[4:14], dtype=np.float64).reshape(5, 2) / scale
            found.append(
                Detection(
                    Box(x, y, x + w, y + h), float(row[14]), self.name, Landmarks(points, self.name)
                )
            )
        return sorted(found, key=lambda d: -d.score)
