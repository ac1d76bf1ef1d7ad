"""dlib's MMOD face detector on onnxruntime: the same faces, boxes and scores as dlib's own
`cnn_face_detection_model_v1`, on real photos; and the dlib pieces it reimplements (resize,
pyramid tiling, NMS rule) checked directly.

Measured on these images: every box identical to dlib's (IoU 1.0), scores within 2.7e-6.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import shared_path
from yingyan import load_image
from yingyan.detection.dlib_mmod import MmodDetector
from yingyan.detection.mmod_onnx import MmodOnnxDetector, non_max_suppression
from yingyan.models import dlib_model
from yingyan.runtime.dlib_format import BoxOverlap
from yingyan.runtime.mmod_onnx import (
    Tile,
    cached_mmod_onnx,
    load_mmod,
    mmod_spec,
    resize_planes,
    resize_rgb,
    tile_pyramid,
)
from yingyan.runtime.onnx_session import OnnxSession
from yingyan.types import Detection, RGBImage

MIN_IOU = 0.9
SCORE_TOL = 1e-5  # measured: 2.7e-6 at most
STILLS = ["obama.jpg", "two_people.jpg", "biden.jpg", "knn/test/obama_and_biden.jpg"]
LFW = [
    "AJ_Cook",
    "Ben_Curtis",
    "Christian_Fittipaldi",
    "Drew_Gooden",
    "Gina_Torres",
    "Jane_Walker_Wood",
    "Josh_Kronfeld",
    "Lloyd_Novick",
    "Micky_Ward",
    "Pedro_Solbes",
]


def _shrink(image: RGBImage, side: int = 640) -> RGBImage:
    """dlib's MMOD needs ~10 s per megapixel here: shrink the long side (both backends)."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return image
    size = (round(w * scale), round(h * scale))
    return np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))


def _lfw(name: str) -> RGBImage:
    return load_image(shared_path("datasets", "lfw", "lfw-deepfunneled", name, f"{name}_0001.jpg"))


def _assert_same(ref: list[Detection], got: list[Detection]) -> None:
    assert ref, "dlib found no face: the comparison would be vacuous"
    assert len(got) == len(ref)
    left = list(got)
    for r in ref:
        best = max(left, key=lambda d: d.box.iou(r.box))
        assert best.box.iou(r.box) >= MIN_IOU
        assert abs(best.score - r.score) <= SCORE_TOL
        left.remove(best)
    assert [d.score for d in got] == sorted((d.score for d in got), reverse=True)
    assert all(d.detector == "mmod-onnx" for d in got)


@pytest.fixture(scope="module")
def onnx_detector() -> MmodOnnxDetector:
    return MmodOnnxDetector(threads=2)


@pytest.fixture(scope="module")
def dlib_detector() -> MmodDetector:
    return MmodDetector(upsample=0)


@pytest.mark.parametrize("name", STILLS)
def test_matches_dlib_on_stills(
    dlib_detector: MmodDetector, onnx_detector: MmodOnnxDetector, name: str
) -> None:
    image = _shrink(load_image(shared_path("datasets", "video") / name))
    _assert_same(dlib_detector.detect(image), onnx_detector.detect(image))


@pytest.mark.parametrize("name", LFW)
def test_matches_dlib_on_lfw(
    dlib_detector: MmodDetector, onnx_detector: MmodOnnxDetector, name: str
) -> None:
    image = _lfw(name)
    _assert_same(dlib_detector.detect(image), onnx_detector.detect(image))


def test_matches_dlib_when_upsampling(dlib_detector: MmodDetector) -> None:
    """One pyramid_up doubles the image; boxes come back through rect_down. Here upsampling
    also finds a second, smaller face."""
    image = _lfw("Ben_Curtis")
    ref = MmodDetector(upsample=1).detect(image)
    assert len(ref) > len(dlib_detector.detect(image))
    _assert_same(ref, MmodOnnxDetector(upsample=1, threads=2).detect(image))


def test_min_score_drops_weaker_faces(onnx_detector: MmodOnnxDetector) -> None:
    image = _shrink(load_image(shared_path("datasets", "video") / "two_people.jpg"))
    both = onnx_detector.detect(image)
    assert len(both) == 2
    strict = MmodOnnxDetector(min_score=(both[0].score + both[1].score) / 2, threads=2)
    assert [d.box for d in strict.detect(image)] == [both[0].box]


def test_blank_and_tiny_images_give_no_faces(onnx_detector: MmodOnnxDetector) -> None:
    assert onnx_detector.detect(np.full((200, 300, 3), 128, np.uint8)) == []
    assert onnx_detector.detect(np.zeros((6, 6, 3), np.uint8)) == []


def test_resize_is_bit_identical_to_dlib() -> None:
    """The pyramid levels and pyramid_up rely on reproducing dlib's resize_image exactly."""
    import dlib

    rng = np.random.default_rng(0)
    for h, w in [(7, 9), (250, 250), (123, 461), (480, 37)]:
        planes = ((rng.integers(0, 256, (h, w)) - 117.0) / 256).astype(np.float32)
        rows, cols = 5 * h // 6, 5 * w // 6
        out = np.empty((1, rows, cols), np.float32)
        resize_planes(planes[None], out)
        assert np.array_equal(out[0], dlib.resize_image(planes, rows, cols))
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        up = resize_rgb(rgb, 2 * h + 1, 2 * w + 2)
        assert np.array_equal(up, dlib.resize_image(rgb, 2 * h + 1, 2 * w + 2))


@pytest.mark.parametrize(("rows", "cols"), [(720, 1280), (1080, 1920), (250, 250), (1454, 640)])
def test_pyramid_tiles_fit_without_overlap(rows: int, cols: int) -> None:
    layout = tile_pyramid(rows, cols, padding=10, outer_padding=11)
    tiles = layout.tiles
    assert tiles[0] == Tile(11, 11, rows, cols)
    assert layout.cols == cols + 22
    assert all(t.top >= 0 and t.left >= 0 for t in tiles)
    assert all(t.bottom <= layout.rows and t.right <= layout.cols for t in tiles)
    assert not any(a.overlaps(b) for i, a in enumerate(tiles) for b in tiles[i + 1 :])
    assert all(abs(b.rows - a.rows * 5 / 6) < 1 for a, b in itertools.pairwise(tiles))
    assert len(tiles) > 5


def test_nms_uses_dlibs_bounding_box_overlap() -> None:
    """Intersection over the boxes' bounding box, not their union: these two overlap by
    0.35 of their union but 0.32 of their bounding box, so dlib keeps both (rule 0.338)."""
    rects = np.array([[0, 0, 99, 99], [28, 28, 127, 127], [10, 10, 109, 109]], np.float64)
    assert non_max_suppression(rects, BoxOverlap(match=0.338, overlap=1.0)) == [0, 1]


def test_graph_and_spec_follow_the_file(tmp_path: Path) -> None:
    source = dlib_model("dlib_mmod").path
    spec = mmod_spec(load_mmod(source))
    assert (spec.stride, spec.offset) == (8, 14)  # three 5x5 stride-2 convs without padding
    assert spec.min_canvas == 29
    assert (spec.window.width, spec.window.height) == (80, 80)
    path = cached_mmod_onnx(source, cache_dir=tmp_path)
    assert cached_mmod_onnx(source, cache_dir=tmp_path) == path
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    out = OnnxSession(path, intra_op_threads=1).run(np.zeros((1, 3, 100, 61), np.float32))
    assert out.shape == (1, 1, 9, 5)  # (n - 5) // 2 + 1, three times
