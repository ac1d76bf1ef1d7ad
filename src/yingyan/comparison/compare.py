"""Scores and decisions.

The score is the cosine similarity of the two unit templates (1 identical, 0 unrelated); the
Euclidean distance between them is reported too because dlib's literature uses it
(d = sqrt(2 - 2 * score)). A decision always records the threshold it was made against, and is
a candidate for human review, never an automatic verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from yingyan.comparison.thresholds import Threshold
from yingyan.types import Template


@dataclass(frozen=True, slots=True)
class Comparison:
    score: float
    distance: float


@dataclass(frozen=True, slots=True)
class Decision:
    match: bool
    score: float
    distance: float
    threshold: Threshold

    def as_dict(self) -> dict[str, object]:
        return {
            "match": self.match,
            "score": round(self.score, 4),
            "distance": round(self.distance, 4),
            "threshold": self.threshold.as_dict(),
        }


def compare(a: Template, b: Template) -> Comparison:
    a.check_comparable(b)
    score = float(np.clip(np.dot(a.vector, b.vector), -1.0, 1.0))
    return Comparison(score, math.sqrt(max(0.0, 2.0 - 2.0 * score)))


def decide(comparison: Comparison, threshold: Threshold) -> Decision:
    return Decision(
        comparison.score >= threshold.score, comparison.score, comparison.distance, threshold
    )


def similarity_matrix(
    a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """All-pairs scores of two stacks of unit vectors (rows)."""
    return np.asarray(np.clip(a @ b.T, -1.0, 1.0), dtype=np.float32)
