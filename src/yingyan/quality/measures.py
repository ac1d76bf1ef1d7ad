"""Quality measures of one face, each a plain number, plus an overall score in [0, 1].

Sharpness, brightness and contrast are measured on the aligned chip, so they do not depend on
how large the face was in the image; size is measured separately as the inter-eye distance in
original pixels. Pose comes from the landmarks: roll is the angle of the eye line, yaw is
estimated from how far the nose sits from the midpoint of the eyes (0 for a frontal face,
about ±90° when the nose reaches an eye).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from yingyan.types import Landmarks, Quality, RGBImage


def _ramp(value: float, bad: float, good: float) -> float:
    """0 at `bad`, 1 at `good`, linear between (works in either direction)."""
    if good == bad:
        return 1.0
    return float(min(1.0, max(0.0, (value - bad) / (good - bad))))


def pose_angles(landmarks: Landmarks) -> tuple[float, float]:
    """(yaw, roll) in degrees, estimated from the eyes and the nose."""
    left, right, nose = landmarks.left_eye, landmarks.right_eye, landmarks.nose
    eye_vec = right - left
    d = float(np.linalg.norm(eye_vec))
    if d == 0:
        return 0.0, 0.0
    roll = math.degrees(math.atan2(eye_vec[1], eye_vec[0]))
    # Offset of the nose along the eye line, relative to half the eye distance.
    mid = (left + right) / 2
    along = float(np.dot(nose - mid, eye_vec / d)) / (d / 2)
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, along))))
    return yaw, roll


def assess_quality(chip: RGBImage, landmarks: Landmarks) -> Quality:
    grey = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)
    # Central region only, so background and hair at the chip's edges do not dominate.
    h, w = grey.shape
    core = grey[h // 5 : h - h // 10, w // 5 : w - w // 5]
    sharpness = float(cv2.Laplacian(core, cv2.CV_64F).var())
    brightness = float(core.mean())
    contrast = float(core.std())
    yaw, roll = pose_angles(landmarks)
    iod = landmarks.inter_eye_distance

    parts = [
        _ramp(iod, 10.0, 40.0),  # ISO/IEC 29794-5 asks ~60 px for enrollment; 40+ works well
        _ramp(sharpness, 20.0, 150.0),
        min(_ramp(brightness, 30.0, 80.0), _ramp(brightness, 230.0, 180.0)),
        _ramp(contrast, 10.0, 35.0),
        _ramp(abs(yaw), 50.0, 15.0),
        _ramp(abs(roll), 45.0, 15.0),
    ]
    # Geometric mean: one very bad measure drags the score down, small flaws do not.
    score = float(np.prod([max(p, 1e-3) for p in parts]) ** (1 / len(parts)))
    return Quality(iod, sharpness, brightness, contrast, yaw, roll, score)
