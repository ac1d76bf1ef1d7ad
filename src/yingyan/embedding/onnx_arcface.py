"""Any ArcFace-style ONNX recognizer from a configured path (InsightFace's buffalo/antelope
`w600k_r50.onnx`, `glintr100.onnx`, ...): NCHW RGB input of a fixed square size (112 for
these models), normalised as (pixel - 127.5) / 127.5, aligned to the standard 5-point
template. The output dimension is read from the graph.

The model id is the file's stem plus its sha256 prefix, so templates of different weights
never mix in one gallery."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import numpy.typing as npt

from yingyan.errors import ModelError
from yingyan.models import configured_model
from yingyan.runtime.onnx_session import OnnxSession
from yingyan.types import ModelId, RGBImage


class OnnxArcFace:
    backend = "onnxruntime"

    def __init__(
        self,
        path: Path,
        threads: int | None = None,
        mean: float = 127.5,
        std: float = 127.5,
        batch_size: int = 32,
    ) -> None:
        self.file = configured_model(f"arcface:{Path(path).stem}", path)
        self.name = self.file.name
        self.threads = threads
        self.mean, self.std = mean, std
        self.batch_size = batch_size

    @cached_property
    def model_id(self) -> ModelId:
        return self.file.id

    @cached_property
    def _session(self) -> OnnxSession:
        try:
            return OnnxSession(self.file.path, intra_op_threads=self.threads)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{self.file.path}: not a loadable ONNX model ({exc})") from None

    @cached_property
    def input_size(self) -> int:
        shape = self._session.input_shape
        if (
            len(shape) != 4
            or shape[1] != 3
            or shape[2] != shape[3]
            or not isinstance(shape[2], int)
        ):
            raise ModelError(f"{self.file.path}: expected input (N, 3, S, S), got {shape}")
        return int(shape[2])

    @property
    def provider(self) -> str:
        return self._session.provider

    def embed(self, chips: list[RGBImage]) -> npt.NDArray[np.float32]:
        """Raw embeddings, one row per aligned RGB chip of `input_size`."""
        if not chips:
            return np.zeros((0, 0), dtype=np.float32)
        batch = (np.stack(chips).astype(np.float32) - self.mean) / self.std
        nchw = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        parts = [
            self._session.run(nchw[i : i + self.batch_size])
            for i in range(0, len(nchw), self.batch_size)
        ]
        return np.concatenate(parts).reshape(len(chips), -1)
