"""dlib's ResNet recognizer on onnxruntime: the same weights (converted once from dlib's file
and cached), the same descriptors to ~1e-7, and an order of magnitude faster than dlib.

Templates carry the same model id as the dlib backend's, since they come from the same
weights and match to within float rounding, so galleries can mix the two backends."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import numpy.typing as npt

from yingyan.models import dlib_model
from yingyan.runtime.onnx_session import OnnxSession
from yingyan.types import ModelId, RGBImage


class OnnxDlibResNet:
    name = "dlib_resnet_v1"
    backend = "onnxruntime"
    dimension = 128

    def __init__(self, threads: int | None = None, batch_size: int = 32) -> None:
        self.threads = threads
        self.batch_size = batch_size

    @cached_property
    def model_id(self) -> ModelId:
        return dlib_model(self.name).id

    @cached_property
    def _session(self) -> OnnxSession:
        from yingyan.runtime.onnx_convert import cached_resnet_onnx

        return OnnxSession(
            cached_resnet_onnx(dlib_model(self.name).path), intra_op_threads=self.threads
        )

    @property
    def provider(self) -> str:
        return self._session.provider

    def embed(self, chips: list[RGBImage]) -> npt.NDArray[np.float32]:
        """Raw descriptors, one row per 150x150 RGB chip, in batches of `batch_size`."""
        if not chips:
            return np.zeros((0, self.dimension), dtype=np.float32)
        batch = np.stack(chips).astype(np.uint8, copy=False)
        parts = [
            self._session.run(batch[i : i + self.batch_size])
            for i in range(0, len(batch), self.batch_size)
        ]
        return np.concatenate(parts)
