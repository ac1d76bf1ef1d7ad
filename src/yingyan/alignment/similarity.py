"""Alignment to a recognizer's landmark template by a similarity transform (rotation, uniform
scale, translation), as ArcFace-family models expect (InsightFace's `norm_crop`).

Five points (eyes, nose, mouth corners) are used when the detector gives them (YuNet); with
dlib's 5-point model there are no mouth corners, so eyes and nose alone fix the transform.
"""

from __future__ import annotations

from functools import cached_property

import cv2
import numpy as np
import numpy.typing as npt

from yingyan.alignment.dlib_chip import DlibAligner
from yingyan.types import Detection, Landmarks, RGBImage

# The standard ArcFace template for 112x112 chips (pixel coordinates, Yingyan's point order:
# image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner).
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def similarity_transform(
    src: npt.NDArray[np.float64], dst: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Least-squares similarity (Umeyama) mapping src points onto dst: a 2x3 matrix."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    scale = float((sig * sign).sum() / (s**2).sum() * len(src))
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


class TemplateAligner:
    """Warps a face so its landmarks land on a fixed template of a `size` x `size` chip."""

    def __init__(self, template: npt.NDArray[np.float64] = ARCFACE_112, size: int = 112) -> None:
        self.template = template
        self.size = size
        self.name = f"similarity-{size}"

    @cached_property
    def _dlib(self) -> DlibAligner:
        return DlibAligner()

    def landmarks(self, image: RGBImage, detection: Detection) -> Landmarks:
        if detection.landmarks is not None and not np.isnan(detection.landmarks.points).any():
            return detection.landmarks
        return self._dlib.align(image, detection)[0]

    def align(self, image: RGBImage, detection: Detection) -> tuple[Landmarks, RGBImage]:
        lm = self.landmarks(image, detection)
        usable = ~np.isnan(lm.points).any(axis=1)
        m = similarity_transform(lm.points[usable], self.template[usable])
        chip = cv2.warpAffine(
            image,
            m,
            (self.size, self.size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        return lm, np.ascontiguousarray(chip, dtype=np.uint8)
