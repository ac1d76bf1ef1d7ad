"""Records that cross stage boundaries: image → detection → alignment → quality → template.

All boxes are xyxy in original-image pixels; all images are RGB uint8 (H, W, 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from yingyan.errors import ModelMismatchError

RGBImage = npt.NDArray[np.uint8]
Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return max(0.0, self.x2 - self.x1)

    @property
    def height(self) -> float:
        return max(0.0, self.y2 - self.y1)

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2)

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def as_list(self) -> list[float]:
        return [round(self.x1, 1), round(self.y1, 1), round(self.x2, 1), round(self.y2, 1)]


@dataclass(frozen=True, slots=True, eq=False)
class Landmarks:
    """Five facial points in image pixels, in one fixed order for every detector:
    image-left eye centre, image-right eye centre, nose, image-left and image-right mouth
    corner. Points a model does not give (dlib's 5-point model has no mouth) are NaN."""

    points: npt.NDArray[np.float64]  # (5, 2)
    source: str

    @property
    def left_eye(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.points[0], dtype=np.float64)

    @property
    def right_eye(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.points[1], dtype=np.float64)

    @property
    def nose(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.points[2], dtype=np.float64)

    @property
    def inter_eye_distance(self) -> float:
        return float(np.linalg.norm(self.right_eye - self.left_eye))


@dataclass(frozen=True, slots=True)
class Detection:
    box: Box
    score: float
    detector: str
    landmarks: Landmarks | None = None


@dataclass(frozen=True, slots=True)
class Quality:
    """Measures for gating enrollment; each is a plain number, `score` combines them in [0, 1]."""

    inter_eye_px: float
    sharpness: float  # variance of the Laplacian on the aligned grey chip
    brightness: float  # mean grey level of the chip, 0..255
    contrast: float  # std of grey levels of the chip
    yaw_deg: float  # estimate from the nose offset between the eyes
    roll_deg: float  # angle of the eye line
    score: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(getattr(self, k)), 3) for k in self.__slots__}


@dataclass(frozen=True, slots=True)
class ModelId:
    """Which model (and which exact weights) produced a template."""

    name: str
    version: str  # sha256 prefix of the weights file

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True, slots=True, eq=False)
class Template:
    """An L2-normalised embedding with its provenance. `recipe` names the test-time
    augmentation (e.g. 'plain', 'flip'); templates of one model compare across recipes."""

    vector: Vector
    model: ModelId
    recipe: str = "plain"

    def check_comparable(self, other: Template) -> None:
        if self.model != other.model:
            raise ModelMismatchError(
                f"templates come from different models: {self.model} vs {other.model}"
            )


@dataclass(frozen=True, slots=True, eq=False)
class Face:
    """One face found in an image, carried through the pipeline."""

    detection: Detection
    landmarks: Landmarks
    quality: Quality
    template: Template | None = None
    chip: RGBImage | None = field(default=None, repr=False)
