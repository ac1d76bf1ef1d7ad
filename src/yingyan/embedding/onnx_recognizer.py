"""Any ONNX face recognizer described by a manifest (ArcFace family, MobileFaceNet, a user's).

Pre-processing follows the manifest exactly (colour order, `pixel * scale`, per-channel mean and
std, layout); the graph's declared shapes are only checked against it. A graph whose batch is
fixed to 1 is rewritten on load to take any batch (its input and output batch axes made symbolic,
a leading 1 in its Reshape targets made "copy the batch"), and the rewrite is accepted only if a
batch of two gives the same rows as two single runs; otherwise chips run one at a time.

The model id is the manifest's name (with the file stem for a family) plus the file's sha256
prefix, so templates of different weights never mix in one gallery."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import numpy.typing as npt

from yingyan.embedding.manifest import RecognizerManifest
from yingyan.errors import ModelError
from yingyan.runtime.onnx_session import OnnxSession
from yingyan.types import ModelId, RGBImage


def rewrite_batch(model_bytes: bytes) -> bytes:
    """The graph with a symbolic batch axis, for graphs exported with a batch of 1."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "N"
    inits = {t.name: t for t in graph.initializer}
    constants = {
        n.output[0]: n for n in graph.node if n.op_type == "Constant" and len(n.output) == 1
    }
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        target = node.input[1]
        if target in inits:
            shape = numpy_helper.to_array(inits[target]).copy()
            if shape.ndim == 1 and len(shape) >= 2 and shape[0] == 1:
                shape[0] = 0
                inits[target].CopyFrom(numpy_helper.from_array(shape, target))
        elif target in constants:
            for attr in constants[target].attribute:
                if attr.name == "value":
                    shape = numpy_helper.to_array(attr.t).copy()
                    if shape.ndim == 1 and len(shape) >= 2 and shape[0] == 1:
                        shape[0] = 0
                        attr.t.CopyFrom(numpy_helper.from_array(shape, attr.t.name))
    del graph.value_info[:]  # stale inferred shapes would pin the batch again
    return bytes(model.SerializeToString())


class OnnxRecognizer:
    backend = "onnxruntime"

    def __init__(
        self,
        manifest: RecognizerManifest,
        path: Path,
        threads: int | None = None,
        batch_size: int = 32,
    ) -> None:
        if manifest.format != "onnx":
            raise ModelError(f"manifest {manifest.source} describes a {manifest.format} model")
        if not Path(path).is_file():
            raise ModelError(f"{manifest.name} model file not found: {path}")
        self.manifest = manifest
        self.path = Path(path)
        self.name = manifest.model_name(self.path)
        self.threads = threads
        self.batch_size = batch_size
        self.input_size = manifest.input_size
        self._scale = np.float32(manifest.scale)
        self._mean = np.asarray(manifest.mean, dtype=np.float32)
        self._std = np.asarray(manifest.std, dtype=np.float32)

    @cached_property
    def model_id(self) -> ModelId:
        return ModelId(self.name, self.manifest.check_file(self.path)[:12])

    @cached_property
    def _loaded(self) -> tuple[OnnxSession, bool]:
        """The session and whether it takes batches (see the module docstring)."""
        self.model_id  # noqa: B018 - refuse weights the manifest does not pin, before loading
        raw = self.path.read_bytes()
        try:
            if self.manifest.batch == "fixed-1":
                batched = OnnxSession(rewrite_batch(raw), intra_op_threads=self.threads)
                self._check_shapes(batched, fixed_batch=False)
                if self._batch_is_exact(batched):
                    return batched, True
            session = OnnxSession(raw, intra_op_threads=self.threads)
        except ModelError:
            raise
        except Exception as exc:  # onnx and onnxruntime raise their own exception types
            raise ModelError(f"{self.path}: not a loadable ONNX model ({exc})") from None
        self._check_shapes(session, fixed_batch=self.manifest.batch == "fixed-1")
        return session, self.manifest.batch == "dynamic"

    def _check_shapes(self, session: OnnxSession, *, fixed_batch: bool) -> None:
        shape = session.input_shape
        s = self.manifest.input_size
        expected = [None, 3, s, s] if self.manifest.layout == "NCHW" else [None, s, s, 3]
        declared = [d if isinstance(d, int) else None for d in shape]
        if len(shape) != 4 or declared[1:] != expected[1:]:
            raise ModelError(
                f"{self.path}: the graph takes {shape}, its manifest ({self.manifest.source}) "
                f"says {self.manifest.layout} {s}x{s}x3"
            )
        if fixed_batch and declared[0] not in (1, None):
            raise ModelError(f"{self.path}: manifest says batch fixed-1, graph has {shape[0]}")
        out = session.output_shape
        if out and isinstance(out[-1], int) and out[-1] != self.manifest.dimension:
            raise ModelError(
                f"{self.path}: the graph outputs {out}, its manifest says dimension "
                f"{self.manifest.dimension}"
            )

    def _batch_is_exact(self, session: OnnxSession) -> bool:
        rng = np.random.default_rng(0)
        chips = list(rng.integers(0, 256, (2, self.input_size, self.input_size, 3), np.uint8))
        x = self._prepare(chips)
        try:
            both = session.run(x).reshape(2, -1)
        except Exception:  # the rewrite did not free the batch: run chips one by one
            return False
        ones = np.concatenate([session.run(x[i : i + 1]).reshape(1, -1) for i in range(2)])
        return both.shape == ones.shape and bool(np.allclose(both, ones, atol=1e-4))

    @property
    def provider(self) -> str:
        return self._loaded[0].provider

    @property
    def batched(self) -> bool:
        return self._loaded[1]

    def _prepare(self, chips: list[RGBImage]) -> npt.NDArray[np.generic]:
        batch: npt.NDArray[np.generic] = np.stack(chips)
        if self.manifest.colour == "BGR":
            batch = batch[..., ::-1]
        if self.manifest.dtype == "float32":
            batch = (batch.astype(np.float32) * self._scale - self._mean) / self._std
        if self.manifest.layout == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(batch)

    def embed(self, chips: list[RGBImage]) -> npt.NDArray[np.float32]:
        """Raw embeddings, one row per aligned RGB chip of `input_size`."""
        if not chips:
            return np.zeros((0, self.manifest.dimension), dtype=np.float32)
        for chip in chips:
            if chip.shape != (self.input_size, self.input_size, 3):
                raise ModelError(f"{self.name} takes {self.input_size}px chips, not {chip.shape}")
        session, batched = self._loaded
        x = self._prepare(chips)
        step = self.batch_size if batched else 1
        parts = [
            session.run(x[i : i + step]).reshape(-1, self.manifest.dimension)
            for i in range(0, len(x), step)
        ]
        out = np.concatenate(parts)
        if out.shape != (len(chips), self.manifest.dimension):
            raise ModelError(f"{self.name}: {out.shape} output for {len(chips)} chips")
        return out
