"""An onnxruntime session with explicit threading.

onnxruntime's defaults size its thread pools to every core it sees, which oversubscribes a
machine shared with other work and makes benchmarks irreproducible. Here the caller states
the intra-op thread count; inter-op parallelism is off (one thread, sequential execution),
because these graphs are a single chain of large ops where it buys nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


def available_cores() -> int:
    """Cores this process may run on (respects CPU affinity, e.g. in containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class OnnxSession:
    """One model, one session. `provider` names the execution provider actually in use."""

    def __init__(
        self,
        model: Path | bytes,
        *,
        intra_op_threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads or available_cores()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        source = str(model) if isinstance(model, Path) else model
        self._session: Any = ort.InferenceSession(source, options, providers=list(providers))
        self.intra_op_threads: int = options.intra_op_num_threads
        self.input_name: str = self._session.get_inputs()[0].name
        self.output_name: str = self._session.get_outputs()[0].name

    @property
    def input_shape(self) -> list[int | str | None]:
        """Declared input shape; symbolic axes are names or None."""
        return list(self._session.get_inputs()[0].shape)

    @property
    def output_shape(self) -> list[int | str | None]:
        return list(self._session.get_outputs()[0].shape)

    @property
    def provider(self) -> str:
        return str(self._session.get_providers()[0])

    def run(self, batch: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """The first output for one input batch."""
        (out,) = self._session.run([self.output_name], {self.input_name: batch})
        return np.asarray(out, dtype=np.float32)
