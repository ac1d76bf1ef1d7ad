"""dlib's ResNet-29 face recognizer (128-d, trained on ~3M faces; LFW 99.38% per dlib), run by
dlib itself: the reference backend that the ONNX backend is checked against."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from yingyan.models import dlib_model
from yingyan.types import ModelId, RGBImage


class DlibResNet:
    name = "dlib_resnet_v1"
    backend = "dlib"
    provider = "dlib-cpu"
    dimension = 128

    @cached_property
    def model_id(self) -> ModelId:
        return dlib_model(self.name).id

    @cached_property
    def _net(self) -> Any:
        import dlib

        return dlib.face_recognition_model_v1(str(dlib_model(self.name).path))

    def embed(self, chips: list[RGBImage]) -> npt.NDArray[np.float32]:
        """Raw descriptors, one row per 150x150 chip (batched through dlib's net)."""
        if not chips:
            return np.zeros((0, 128), dtype=np.float32)
        out = self._net.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
        return np.asarray([np.asarray(v) for v in out], dtype=np.float32)
