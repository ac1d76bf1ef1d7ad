"""Detection backends on real photos: one face, several faces, no face."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from yingyan import Engine, EngineConfig, ImageLimits
from yingyan.detection import centre_detection, most_central
from yingyan.errors import ConfigError
from yingyan.types import RGBImage

Loader = Callable[[str], RGBImage]


def _no_face(load_still: Loader) -> RGBImage:
    # The lower-left of this rally photo: a suit, a tie and a backdrop, no face.
    return np.ascontiguousarray(load_still("knn/test/obama_and_biden.jpg")[900:, :550])


@pytest.fixture(scope="module")
def yunet(yunet_model: Path) -> Engine:
    return Engine(EngineConfig(detector="yunet", yunet_model=yunet_model))


@pytest.fixture(scope="module")
def hog() -> Engine:
    return Engine(EngineConfig(detector="hog"))


def test_the_default_detector_is_the_hog_cnn_cascade() -> None:
    """The default must not fail to acquire some groups more than others (issue 6): HOG
    alone missed 1.6-6.4% of UTKFace faces depending on the group, the cascade none."""
    assert EngineConfig().detector == "hog+cnn"
    assert Engine(EngineConfig()).detector.name == "dlib-hog+mmod-onnx"


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("obama.jpg", 1),
        ("biden.jpg", 1),
        ("two_people.jpg", 2),
        ("knn/test/obama_and_biden.jpg", 3),
    ],
)
def test_hog_counts_faces(
    hog: Engine, engine: Engine, load_still: Loader, name: str, count: int
) -> None:
    assert len(hog.detect(load_still(name))) == count
    assert len(engine.detect(load_still(name))) == count  # the default cascade: HOG's faces


@pytest.mark.parametrize(
    ("name", "count"),
    [("obama.jpg", 1), ("two_people.jpg", 2), ("knn/test/obama_and_biden.jpg", 3)],
)
def test_yunet_counts_faces(yunet: Engine, load_still: Loader, name: str, count: int) -> None:
    assert len(yunet.detect(load_still(name))) == count


def test_detectors_find_no_face_where_there_is_none(
    hog: Engine, engine: Engine, yunet: Engine, load_still: Loader
) -> None:
    img = _no_face(load_still)
    assert hog.detect(img) == []
    assert engine.detect(img) == []  # the cascade's CNN finds none either
    assert yunet.detect(img) == []
    assert engine.faces(img) == []


def test_hog_and_yunet_agree_on_where_the_faces_are(
    hog: Engine, yunet: Engine, load_still: Loader
) -> None:
    img = load_still("two_people.jpg")
    yn = yunet.detect(img)
    for h in hog.detect(img):
        cx, cy = h.box.center
        # YuNet's boxes include more forehead, so compare centres, not IoU.
        best = min(yn, key=lambda d: (d.box.center[0] - cx) ** 2 + (d.box.center[1] - cy) ** 2)
        assert abs(best.box.center[0] - cx) < 0.25 * h.box.width
        assert best.box.iou(h.box) > 0.3


def test_yunet_landmarks_are_ordered_and_inside_the_box(yunet: Engine, load_still: Loader) -> None:
    for d in yunet.detect(load_still("two_people.jpg")):
        assert d.landmarks is not None
        p = d.landmarks.points
        assert p[0, 0] < p[1, 0]  # image-left eye first
        assert np.all((p[:, 0] >= d.box.x1) & (p[:, 0] <= d.box.x2))
        assert np.all((p[:, 1] >= d.box.y1) & (p[:, 1] <= d.box.y2))


def test_upsampling_maps_boxes_back_to_image_pixels(yunet_model: Path, load_still: Loader) -> None:
    img = load_still("obama.jpg")
    plain = Engine(EngineConfig(detector="yunet", yunet_model=yunet_model)).detect(img)
    up = Engine(EngineConfig(detector="yunet", yunet_model=yunet_model, upsample=1)).detect(img)
    assert plain and up
    assert plain[0].box.iou(up[0].box) > 0.8


def test_upsampling_recovers_small_faces(load_still: Loader) -> None:
    import cv2

    img = load_still("two_people.jpg")
    small = cv2.resize(img, None, fx=0.22, fy=0.22, interpolation=cv2.INTER_AREA)  # ~35 px faces
    no_up = Engine(EngineConfig(detector="hog", upsample=0)).detect(small)
    up = Engine(EngineConfig(detector="hog", upsample=2)).detect(small)
    assert len(up) == 2
    assert len(no_up) < len(up)


def test_mmod_cnn_detector_finds_the_lfw_face(lfw_root: Path) -> None:
    from yingyan import load_image

    img = load_image(lfw_root / "lfw-deepfunneled/Abel_Pacheco/Abel_Pacheco_0001.jpg")
    cnn = Engine(EngineConfig(detector="cnn", upsample=0)).detect(img)
    hog = Engine(EngineConfig(detector="hog")).detect(img)
    assert len(cnn) == 1 and cnn[0].detector == "mmod-onnx"  # the default ONNX backend
    assert cnn[0].box.iou(hog[0].box) > 0.5


def test_centre_fallback_and_most_central() -> None:
    d = centre_detection(250, 250)
    cx, cy = d.box.center
    assert abs(cx - 125) < 10 and abs(cy - 132) < 10
    edge = centre_detection(250, 250)
    picked = most_central([edge], 250, 250)
    assert picked is edge
    assert most_central([], 10, 10) is None


def test_yunet_needs_a_model_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model path"):
        EngineConfig(detector="yunet", model_dir=tmp_path)  # none installed there
    with pytest.raises(ConfigError, match="unknown detector"):
        EngineConfig(detector="sift")  # type: ignore[arg-type]


def test_hog_cnn_cascade_acquires_the_faces_hog_misses(utkface_root: Path) -> None:
    """UTKFace Black men: HOG misses some (6.4% over the 250); the cascade misses none, and
    where HOG finds a face the cascade returns exactly HOG's detections."""
    from yingyan import load_image

    hog = Engine(EngineConfig(detector="hog"))
    cascade = Engine(EngineConfig(detector="hog+cnn"))
    missed = 0
    for path in sorted(utkface_root.glob("*_0_1_*.jpg")):
        img = load_image(path)
        h, c = hog.detect(img), cascade.detect(img)
        assert c, f"cascade found no face in {path.name}"
        if h:
            assert c == h
        else:
            missed += 1
            assert c[0].detector == "mmod-onnx"
    assert missed >= 5


# -- the work bound: what a detector builds after upsampling stays under max_work_pixels ----

SMALL_BOUND = 4_000_000


def _blank_png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, "PNG")
    return buffer.getvalue()


class _CanvasWatch:
    """Wraps the real `build_canvas`: records each canvas's size and refuses (before any
    memory is taken) one over the bound, so unbounded code fails here instead of swapping."""

    def __init__(self, bound: int) -> None:
        from yingyan.detection import mmod_onnx

        self.bound, self.real, self.sizes = bound, mmod_onnx.build_canvas, []

    def __call__(self, image: RGBImage, layout: object, mean: object) -> object:
        size = layout.rows * layout.cols  # type: ignore[attr-defined]
        self.sizes.append(size)
        assert size <= self.bound, f"MMOD canvas of {size} pixels, over the {self.bound} bound"
        return self.real(image, layout, mean)  # type: ignore[arg-type]


class _HogWatch:
    """Wraps dlib's HOG detector: records the size dlib will upsample each image to."""

    def __init__(self, real: object) -> None:
        self.real, self.scanned = real, []

    def run(self, image: RGBImage, upsample: int, threshold: float) -> object:
        from yingyan.detection.base import dlib_up_size

        rows, cols = image.shape[:2]
        for _ in range(upsample):
            rows, cols = dlib_up_size(rows, cols)
        self.scanned.append((upsample, rows * cols))
        assert upsample == 0 or rows * cols <= SMALL_BOUND, f"HOG upsampled to {rows * cols}"
        return self.real.run(image, upsample, threshold)  # type: ignore[attr-defined]


def test_a_blank_png_under_the_input_limit_gets_bounded_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default cascade on a blank 6 MP PNG (a few kB): HOG finds nothing, so the CNN runs.
    With one upsampling its canvas would be 87 MP; it must stay within the bound (HOG: no
    upsampling; CNN: the image shrunk until its tiled pyramid fits)."""
    from yingyan.detection import mmod_onnx

    data = _blank_png(3000, 2000)
    assert len(data) < 50_000
    engine = Engine(EngineConfig(limits=ImageLimits(max_work_pixels=SMALL_BOUND), threads=1))
    canvas = _CanvasWatch(SMALL_BOUND)
    monkeypatch.setattr(mmod_onnx, "build_canvas", canvas)
    hog = engine.detector.first  # type: ignore[attr-defined]
    hog.__dict__["_model"] = watch = _HogWatch(hog._model)

    assert engine.detect(engine.load(data)) == []
    assert watch.scanned == [(0, 6_000_000)]  # no upsampling: the input itself is bounded
    assert len(canvas.sizes) == 1
    assert SMALL_BOUND * 0.9 < canvas.sizes[0] <= SMALL_BOUND  # shrunk to fit, not further


def test_hog_upsamples_only_as_far_as_the_bound_allows(load_still: Loader) -> None:
    """Two upsamplings of a 640x370 image would be 3.8 MP, over a 3 MP bound: one is made, and
    the faces are still found (they are large enough for one)."""
    import cv2

    img = cv2.resize(load_still("two_people.jpg"), (640, 370), interpolation=cv2.INTER_AREA)
    engine = Engine(
        EngineConfig(detector="hog", upsample=2, limits=ImageLimits(max_work_pixels=3_000_000))
    )
    hog = engine.detector
    hog.__dict__["_model"] = watch = _HogWatch(hog._model)  # type: ignore[attr-defined]
    found = engine.detect(img)
    assert [u for u, _ in watch.scanned] == [1]
    assert len(found) == 2


def test_the_work_plan_keeps_full_hd_and_bounds_the_largest_input() -> None:
    """Default bound: a full-HD image keeps dlib's one upsampling (canvas 30 MP); a 6000x6000
    blank PNG (36 MP, under the 40 MP input limit) would make a 520 MP canvas with it: the
    CNN scans it without upsampling, shrunk so that its canvas fits 32 MP."""
    from yingyan.config import MAX_WORK_PIXELS
    from yingyan.detection.dlib_mmod import MmodDetector
    from yingyan.detection.mmod_onnx import MmodOnnxDetector

    onnx_cnn, dlib_cnn = MmodOnnxDetector(upsample=1), MmodDetector(upsample=1)
    full_hd = onnx_cnn.plan(1080, 1920)
    assert (full_hd.size, full_hd.levels) == ((1080, 1920), 1)
    assert onnx_cnn.canvas_pixels(2161, 3842) <= MAX_WORK_PIXELS
    huge = onnx_cnn.plan(6000, 6000)
    assert huge.levels == 0 and huge.size[0] == huge.size[1] < 6000
    assert onnx_cnn.canvas_pixels(6000, 6000) > MAX_WORK_PIXELS
    assert MAX_WORK_PIXELS * 0.9 < onnx_cnn.canvas_pixels(*huge.size) <= MAX_WORK_PIXELS
    assert dlib_cnn.plan(6000, 6000) == huge  # the reference backend builds the same canvas


def test_yunet_upsamples_only_as_far_as_the_bound_allows(yunet_model: Path) -> None:
    from yingyan.detection.yunet import YuNetDetector

    yunet = YuNetDetector(yunet_model, upsample=2, max_work_pixels=SMALL_BOUND)
    assert yunet.scale_for(500, 400) == 4.0  # 2000 x 1600
    assert yunet.scale_for(900, 800) == 2.0
    assert yunet.scale_for(3000, 2000) == 1.0


def test_a_shrunk_cnn_scan_maps_boxes_back_to_image_pixels(load_still: Loader) -> None:
    from yingyan.detection.mmod_onnx import MmodOnnxDetector

    img = load_still("obama-1080p.jpg")  # canvas 7.6 MP without upsampling
    whole = MmodOnnxDetector(threads=1).detect(img)
    shrunk_cnn = MmodOnnxDetector(threads=1, max_work_pixels=SMALL_BOUND)
    assert shrunk_cnn.plan(1080, 1920).size < (1080, 1920)
    shrunk = shrunk_cnn.detect(img)
    assert len(whole) == len(shrunk) == 1
    a, b = whole[0].box, shrunk[0].box
    # Same place (unmapped, the shrunk box would sit at ~0.72 of these coordinates); sizes
    # may differ by one pyramid level (6/5), as the face falls on another level.
    assert abs(a.center[0] - b.center[0]) < 0.05 * a.width
    assert abs(a.center[1] - b.center[1]) < 0.05 * a.width
    assert 1 / 1.25 <= a.width / b.width <= 1.25
