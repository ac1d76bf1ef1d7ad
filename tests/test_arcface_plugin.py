"""The pluggable ArcFace-style path, tested with a small ONNX network the test builds itself
(no ArcFace weights can be downloaded here): alignment onto the 112x112 template, batching,
model ids that keep galleries apart, and clear errors for bad model files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from yingyan import Engine, EngineConfig, compare
from yingyan.alignment import ARCFACE_112, similarity_transform
from yingyan.errors import ModelError, ModelMismatchError
from yingyan.types import RGBImage

Loader = Callable[[str], RGBImage]


def _tiny_recognizer(path: Path, dim: int = 64) -> Path:
    """Conv(3→8, 5x5, stride 4) → ReLU → flatten → MatMul(→dim): an ArcFace-shaped graph
    (N, 3, 112, 112) → (N, dim) with fixed random weights."""
    rng = np.random.default_rng(7)
    w = numpy_helper.from_array(rng.normal(0, 0.1, (8, 3, 5, 5)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(0, 0.05, (8 * 27 * 27, dim)).astype(np.float32), "fc")
    shape = numpy_helper.from_array(np.array([-1, 8 * 27 * 27], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["data", "w"], ["c"], strides=[4, 4]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])],
        [w, fc, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


TINY_MANIFEST = """
[model]
name = "tiny"
format = "onnx"
licence = "test weights"
training_data = "none: fixed random weights"
[input]
size = 112
colour = "RGB"
layout = "NCHW"
dtype = "float32"
mean = [127.5, 127.5, 127.5]
std = [127.5, 127.5, 127.5]
batch = "dynamic"
[alignment]
template = "arcface-112"
[output]
dimension = 64
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny graph with a family manifest beside it (no pinned sha256: the file names it)."""
    path = _tiny_recognizer(tmp_path_factory.mktemp("models") / "tiny_arcface.onnx")
    path.with_suffix(".toml").write_text(TINY_MANIFEST)
    return path


def test_arcface_path_with_yunet_landmarks(
    tiny: Path, yunet_model: Path, load_still: Loader
) -> None:
    e = Engine(
        EngineConfig(
            detector="yunet", yunet_model=yunet_model, recognizer_model=tiny, keep_chips=True
        )
    )
    faces = e.faces(load_still("two_people.jpg"))
    assert len(faces) == 2
    for f in faces:
        assert f.chip is not None and f.chip.shape == (112, 112, 3)
        assert f.template is not None and f.template.vector.shape == (64,)
        assert f.template.model.name == "tiny:tiny_arcface"
        # The warp puts the detector's five points onto the template within a few pixels.
        m = similarity_transform(f.landmarks.points, ARCFACE_112)
        mapped = f.landmarks.points @ m[:, :2].T + m[:, 2]
        assert np.abs(mapped - ARCFACE_112).max() < 6
    assert e.describe()["alignment"] == "similarity-112"
    a, b = (f.template for f in faces)
    assert a is not None and b is not None and compare(a, b).score < 0.9999


def test_arcface_path_with_dlib_points_uses_eyes_and_nose(tiny: Path, load_still: Loader) -> None:
    e = Engine(EngineConfig(recognizer_model=tiny, keep_chips=True))
    (face,) = e.faces(load_still("obama.jpg"))
    assert face.chip is not None and face.chip.shape == (112, 112, 3)
    assert np.isnan(face.landmarks.points[3:]).all()  # dlib gives no mouth corners


def test_templates_of_plugged_and_dlib_models_never_compare(
    tiny: Path, engine: Engine, load_still: Loader
) -> None:
    img = load_still("obama.jpg")
    plugged = Engine(EngineConfig(recognizer_model=tiny)).templates(img)[0]
    dlib_t = engine.templates(img)[0]
    with pytest.raises(ModelMismatchError):
        compare(plugged, dlib_t)


def test_a_file_that_is_not_onnx_is_a_clear_error(tmp_path: Path, load_still: Loader) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        Engine(EngineConfig(recognizer_model=bad, recognizer_manifest="arcface")).templates(
            load_still("obama.jpg")
        )
