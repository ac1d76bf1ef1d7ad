"""dlib's DNN file reader and the ONNX ResNet: parsing both shipped networks, and descriptors
that match dlib's own on real LFW face chips."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tests.conftest import shared_path
from yingyan import load_image
from yingyan.models import dlib_model
from yingyan.runtime.dlib_format import (
    Activation,
    BatchNorm,
    Conv,
    DlibFormatError,
    DlibNet,
    Fc,
    LossMetric,
    LossMMOD,
    Merge,
    Skip,
    Tag,
    apply_structure,
    load_resnet_v1,
    parse_dnn,
    parse_dnn_bytes,
    resnet_v1_structure,
)
from yingyan.runtime.onnx_convert import cached_resnet_onnx, resnet_to_onnx
from yingyan.runtime.onnx_session import OnnxSession
from yingyan.types import RGBImage

N_PEOPLE = 20
TOLERANCE = 1e-4
Descriptors = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def resnet() -> DlibNet:
    return load_resnet_v1(dlib_model("dlib_resnet_v1").path)


@pytest.fixture(scope="module")
def session(resnet: DlibNet) -> OnnxSession:
    return OnnxSession(resnet_to_onnx(resnet).SerializeToString(), intra_op_threads=2)


@pytest.fixture(scope="module")
def chips() -> list[RGBImage]:
    """Chips of 20 different people, made the way dlib's recognizer was trained: HOG box,
    5-point shape, get_face_chip(size=150, padding=0.25)."""
    import dlib

    root = shared_path("datasets", "lfw") / "lfw-deepfunneled"
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dlib_model("dlib_5_landmarks").path))
    people = sorted(p for p in root.iterdir() if p.is_dir())
    out: list[RGBImage] = []
    for person in people[:: len(people) // (3 * N_PEOPLE)]:
        img = load_image(sorted(person.glob("*.jpg"))[0])
        boxes = detector(img, 1)
        if len(boxes) == 0:
            continue
        box = max(boxes, key=lambda b: b.area())
        chip = dlib.get_face_chip(img, predictor(img, box), size=150, padding=0.25)
        out.append(np.ascontiguousarray(chip, dtype=np.uint8))
        if len(out) == N_PEOPLE:
            return out
    pytest.fail(f"only {len(out)} LFW faces found")


@pytest.fixture(scope="module")
def dlib_descriptors(chips: list[RGBImage]) -> Descriptors:
    import dlib

    net: Any = dlib.face_recognition_model_v1(str(dlib_model("dlib_resnet_v1").path))
    vectors = net.compute_face_descriptor(chips)
    return np.asarray([np.asarray(v) for v in vectors], dtype=np.float32)


def test_parses_the_resnet_with_its_structure(resnet: DlibNet) -> None:
    assert resnet.input.kind == "rgb_image_sized" and resnet.input.size == (150, 150)
    assert resnet.input.mean_rgb == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert isinstance(resnet.loss, LossMetric)
    assert (resnet.loss.margin, resnet.loss.distance_threshold) == pytest.approx((0.04, 0.6))
    assert [resnet.count(k) for k in ("con", "affine", "relu", "avg_pool", "max_pool")] == [
        29,
        29,
        29,
        5,
        1,
    ]
    first, fc = resnet.layers[0], resnet.layers[-1]
    assert isinstance(first, Conv) and first.weights.shape == (32, 3, 7, 7)
    assert first.stride == (2, 2) and first.padding == (0, 0)
    assert isinstance(fc, Fc) and fc.weights.shape == (256, 128) and fc.bias is None
    assert sum(isinstance(x, Tag) for x in resnet.layers) == 18
    assert [x.id for x in resnet.layers if isinstance(x, Skip)] == [1, 1, 1, 1]
    assert {x.tag for x in resnet.layers if isinstance(x, Merge)} == {1, 2}
    assert all(np.isfinite(x.weights).all() for x in resnet.layers if isinstance(x, Conv))


def test_parses_the_mmod_detector_options_and_layers() -> None:
    net = parse_dnn(dlib_model("dlib_mmod").path)
    assert net.input.kind == "rgb_image_pyramid"
    assert (net.input.pyramid_padding, net.input.pyramid_outer_padding) == (10, 11)
    assert isinstance(net.loss, LossMMOD)
    opts = net.loss.options
    assert [(w.width, w.height) for w in opts.detector_windows] == [(80, 80)]
    assert 0 < opts.overlaps_nms.match < 1 and opts.assume_image_pyramid
    assert not opts.use_bounding_box_regression
    convs = [x for x in net.layers if isinstance(x, Conv)]
    assert [c.num_filters for c in convs] == [16, 32, 32, 45, 45, 45, 1]
    assert all(a.num_filters == b.weights.shape[1] for a, b in itertools.pairwise(convs))
    assert convs[-1].num_filters == len(opts.detector_windows)
    bns = [x for x in net.layers if isinstance(x, BatchNorm)]
    assert len(bns) == 6 and all(b.mode == "conv" and b.eps > 0 for b in bns)
    assert all((b.running_variance > 0).all() for b in bns)
    assert sum(isinstance(x, Activation) for x in net.layers) == 6


def test_rejects_damaged_files_and_wrong_structures(resnet: DlibNet) -> None:
    data = dlib_model("dlib_mmod").path.read_bytes()
    with pytest.raises(DlibFormatError, match="end of file"):
        parse_dnn_bytes(data[:-100])
    with pytest.raises(DlibFormatError, match="trailing"):
        parse_dnn_bytes(data + b"\x00")
    wrong = resnet_v1_structure()
    wrong[-1] = "con"
    with pytest.raises(DlibFormatError, match="layer 129"):
        apply_structure(parse_dnn(dlib_model("dlib_resnet_v1").path), wrong)


@pytest.mark.parametrize("fold", [True, False])
def test_onnx_descriptors_match_dlib(
    resnet: DlibNet, chips: list[RGBImage], dlib_descriptors: Descriptors, fold: bool
) -> None:
    """Folding affines into convs keeps the result within tolerance, like the plain graph."""
    session = OnnxSession(resnet_to_onnx(resnet, fold_affine=fold).SerializeToString())
    assert session.provider == "CPUExecutionProvider"
    out = session.run(np.stack(chips))
    assert out.shape == (N_PEOPLE, 128)
    assert np.abs(out - dlib_descriptors).max() <= TOLERANCE
    # Raw descriptors, not unit vectors; and distinct people give distinct descriptors.
    assert not np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-3)
    assert np.linalg.norm(out[0] - out[1]) > 0.3


def test_float_input_gives_the_same_descriptors(
    resnet: DlibNet, chips: list[RGBImage], dlib_descriptors: Descriptors
) -> None:
    session = OnnxSession(resnet_to_onnx(resnet, input_dtype="float32").SerializeToString())
    out = session.run(np.stack(chips[:3]).astype(np.float32))
    assert np.abs(out - dlib_descriptors[:3]).max() <= TOLERANCE


def test_a_batch_equals_one_chip_at_a_time(session: OnnxSession, chips: list[RGBImage]) -> None:
    batch = session.run(np.stack(chips[:6]))
    single = np.concatenate([session.run(c[None]) for c in chips[:6]])
    assert np.abs(batch - single).max() <= 1e-5


def test_cache_builds_once_and_reuses(tmp_path: Path) -> None:
    source = dlib_model("dlib_resnet_v1").path
    path = cached_resnet_onnx(source, cache_dir=tmp_path)
    stamp = path.stat().st_mtime_ns
    assert cached_resnet_onnx(source, cache_dir=tmp_path) == path
    assert path.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left behind
    assert path.name.startswith("dlib_resnet_v1-") and path.suffix == ".onnx"
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 150, 150, 3), dtype=np.uint8)
    assert OnnxSession(path, intra_op_threads=1).run(x).shape == (2, 128)
