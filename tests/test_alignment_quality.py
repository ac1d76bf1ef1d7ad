"""Landmarks, aligned chips and quality measures on real faces and controlled degradations."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest

from yingyan import Engine, EngineConfig
from yingyan.alignment import CHIP_SIZE
from yingyan.types import Face, RGBImage

Loader = Callable[[str], RGBImage]


@pytest.fixture(scope="module")
def chip_engine() -> Engine:
    return Engine(EngineConfig(keep_chips=True))


def _one(engine: Engine, img: RGBImage) -> Face:
    faces = engine.faces(img, embed=False)
    assert len(faces) == 1
    return faces[0]


def test_chip_and_landmarks(chip_engine: Engine, load_still: Loader) -> None:
    face = _one(chip_engine, load_still("obama.jpg"))
    assert face.chip is not None and face.chip.shape == (CHIP_SIZE, CHIP_SIZE, 3)
    lm = face.landmarks
    b = face.detection.box
    assert lm.left_eye[0] < lm.nose[0] < lm.right_eye[0]
    assert lm.left_eye[1] < lm.nose[1] and lm.right_eye[1] < lm.nose[1]
    assert b.x1 < lm.left_eye[0] and lm.right_eye[0] < b.x2
    # An aligned chip puts the eyes level: rows of the darkest points of each eye region agree.
    assert abs(face.quality.roll_deg) < 15


def test_roll_follows_image_rotation(chip_engine: Engine, load_still: Loader) -> None:
    img = load_still("obama.jpg")
    base = _one(chip_engine, img).quality.roll_deg
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), -15, 1.0)  # 15° clockwise on screen
    rotated = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    roll = _one(chip_engine, rotated).quality.roll_deg
    assert roll - base == pytest.approx(15, abs=4)


def test_yaw_changes_sign_in_the_mirror(chip_engine: Engine, load_still: Loader) -> None:
    img = load_still("two_people.jpg")
    q = max(chip_engine.faces(img, embed=False), key=lambda f: abs(f.quality.yaw_deg)).quality
    mirrored = np.ascontiguousarray(img[:, ::-1])
    qm = max(chip_engine.faces(mirrored, embed=False), key=lambda f: abs(f.quality.yaw_deg)).quality
    assert abs(q.yaw_deg) > 5
    assert np.sign(qm.yaw_deg) == -np.sign(q.yaw_deg)


def test_blur_lowers_sharpness_and_score(chip_engine: Engine, load_still: Loader) -> None:
    img = load_still("obama.jpg")
    sharp = _one(chip_engine, img).quality
    blurred = _one(chip_engine, cv2.GaussianBlur(img, (0, 0), 4)).quality
    assert blurred.sharpness < sharp.sharpness / 3
    assert blurred.score < sharp.score


def test_darkness_lowers_brightness_and_score(chip_engine: Engine, load_still: Loader) -> None:
    img = load_still("obama.jpg")
    base = _one(chip_engine, img).quality
    dark = _one(chip_engine, (img * 0.3).astype(np.uint8)).quality
    assert dark.brightness < base.brightness * 0.4
    assert dark.contrast < base.contrast
    assert dark.score < base.score


def test_smaller_face_has_smaller_eye_distance(chip_engine: Engine, load_still: Loader) -> None:
    img = load_still("obama.jpg")
    big = _one(chip_engine, img).quality
    small = _one(chip_engine, cv2.resize(img, None, fx=0.5, fy=0.5)).quality
    assert small.inter_eye_px == pytest.approx(big.inter_eye_px / 2, rel=0.15)
    assert 0.0 <= small.score <= 1.0 and 0.0 <= big.score <= 1.0
