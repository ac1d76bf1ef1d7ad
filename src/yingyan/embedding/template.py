"""Templates: test-time augmentation and normalisation around any embedder.

Test-time augmentation (TTA) embeds several views of each chip in one batch and averages their
unit vectors: the mirror image (a face and its mirror are the same person) and, optionally,
small deterministic shifts and scales that average out alignment noise. Deterministic views
keep templates reproducible, unlike dlib's random jitter.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from yingyan.types import ModelId, RGBImage, Template

# (dx, dy) as a fraction of the chip side, and a scale, for each jittered view.
_JITTERS: tuple[tuple[float, float, float], ...] = (
    (0.02, 0.0, 1.0),
    (-0.02, 0.0, 1.0),
    (0.0, 0.02, 1.0),
    (0.0, -0.02, 1.0),
    (0.0, 0.0, 1.04),
    (0.0, 0.0, 0.96),
    (0.015, 0.015, 1.02),
    (-0.015, -0.015, 0.98),
)
MAX_JITTER = len(_JITTERS)


class Embedder(Protocol):
    name: str
    backend: str

    @property
    def model_id(self) -> ModelId: ...

    @property
    def provider(self) -> str: ...

    def embed(self, chips: list[RGBImage]) -> npt.NDArray[np.float32]: ...


def normalise(vectors: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.asarray(v / np.maximum(norms, 1e-12), dtype=np.float32)


def _shifted(chip: RGBImage, dx: float, dy: float, scale: float) -> RGBImage:
    n = chip.shape[0]
    m = cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), 0.0, scale)
    m[:, 2] += (dx * n, dy * n)
    out = cv2.warpAffine(chip, m, (chip.shape[1], n), borderMode=cv2.BORDER_REFLECT101)
    return np.ascontiguousarray(out, dtype=np.uint8)


def tta_views(chip: RGBImage, *, flip: bool, jitter: int = 0) -> list[RGBImage]:
    """The chip, `jitter` shifted/scaled copies, then (with `flip`) the mirror of each."""
    views = [chip] + [_shifted(chip, *j) for j in _JITTERS[:jitter]]
    if flip:
        views += [np.ascontiguousarray(v[:, ::-1]) for v in views]
    return views


def recipe_name(*, flip: bool, jitter: int) -> str:
    parts = ["flip" if flip else "plain"] + ([f"jitter{jitter}"] if jitter else [])
    return "+".join(parts)


def make_templates(
    embedder: Embedder, chips: list[RGBImage], *, flip: bool, jitter: int = 0
) -> list[Template]:
    """One template per chip: all TTA views of all chips go through the embedder as one batch,
    and each chip's unit vectors are averaged and renormalised."""
    if not chips:
        return []
    per_chip = [tta_views(c, flip=flip, jitter=jitter) for c in chips]
    k = len(per_chip[0])
    vectors = normalise(embedder.embed([v for views in per_chip for v in views]))
    averaged = normalise(vectors.reshape(len(chips), k, -1).mean(axis=1))
    model, recipe = embedder.model_id, recipe_name(flip=flip, jitter=jitter)
    return [Template(v, model, recipe) for v in averaged]
