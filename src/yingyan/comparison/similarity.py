"""A calibrated similarity on [0, 1], for clients that expect CompreFace's scale.

CompreFace clients accept a pair when its `similarity` exceeds a fixed number (often 0.8-0.9)
and expect two different people to score low. A raw cosine cannot serve: dlib's model gives
two different people 0.6-0.85. The similarity here is 0.5 at the operating threshold and is
read through the impostor score distribution's tail, so that each similarity means one false
match rate:

    phi(score) = -log10 FMR(score)       impostor survival, measured (`Tail`)
    similarity = logistic(GAIN * (phi(score) - phi(threshold)))
    FMR(similarity >= s) = FMR(threshold) * 10 ** (-logit(s) / GAIN)

so each +1/GAIN of logit divides the FMR by ten, whatever the threshold. The mapping is strictly
increasing (ranks are kept) and only presents scores: every decision stays with the threshold.

A scale without a measured tail (a cohort-calibrated gallery's normalised scores, a model with
no measured tail) uses a logistic in the score, 0.5 at its threshold; its FMR at other points is
not measured. A model with neither a default nor a gallery threshold keeps the cosine clipped to
[0, 1] ("uncalibrated").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Each 1/GAIN of logit(similarity) is one decade of FMR: 0.99 is 2.3 decades below 0.5.
GAIN = 2.0


@dataclass(frozen=True, slots=True)
class Tail:
    """-log10 FMR of a model's impostor cosine scores at increasing knots; linear between them
    and beyond the ends (a log-linear tail), so strictly increasing everywhere."""

    model: str
    scores: tuple[float, ...]
    decades: tuple[float, ...]
    source: str

    def __post_init__(self) -> None:
        if len(self.scores) < 4 or len(self.scores) != len(self.decades):
            raise ValueError("a tail needs at least four (score, decades) knots")
        if any(b <= a for a, b in zip(self.scores, self.scores[1:], strict=False)) or any(
            b <= a for a, b in zip(self.decades, self.decades[1:], strict=False)
        ):
            raise ValueError("tail knots must increase strictly in score and in decades")

    def phi(self, score: npt.ArrayLike) -> npt.NDArray[np.float64]:
        x = np.asarray(score, dtype=np.float64)
        xs, ys = np.array(self.scores), np.array(self.decades)
        low = (ys[1] - ys[0]) / (xs[1] - xs[0])
        high = (ys[-1] - ys[-4]) / (xs[-1] - xs[-4])  # the last stretch, less noisy than a knot
        out = np.interp(x, xs, ys)
        out = np.where(x < xs[0], ys[0] + low * (x - xs[0]), out)
        return np.asarray(np.where(x > xs[-1], ys[-1] + high * (x - xs[-1]), out))

    def score_of(self, decades: float) -> float:
        """The inverse of `phi`."""
        xs, ys = np.array(self.scores), np.array(self.decades)
        if decades < ys[0]:
            return float(xs[0] + (decades - ys[0]) * (xs[1] - xs[0]) / (ys[1] - ys[0]))
        if decades > ys[-1]:
            return float(xs[-1] + (decades - ys[-1]) * (xs[-1] - xs[-4]) / (ys[-1] - ys[-4]))
        return float(np.interp(decades, ys, xs))


# Measured by `python benchmarks/similarity_scale.py --fit` on LFW view 2 (pairs.txt, its
# 7,701 images) with `EngineConfig()`: every pair of images of different people.
_DLIB_TAIL = Tail(
    model="dlib_resnet_v1",
    scores=(
        0.6481,
        0.8337,
        0.8559,
        0.8706,
        0.8816,
        0.8905,
        0.8980,
        0.9044,
        0.9101,
        0.9153,
        0.9200,
        0.9244,
        0.9285,
        0.9323,
        0.9359,
        0.9394,
        0.9428,
        0.9459,
        0.9488,
        0.9516,
        0.9542,
        0.9566,
        0.9586,
        0.9606,
        0.9630,
    ),
    decades=tuple(0.25 * k for k in range(25)),
    source="LFW view 2 (pairs.txt, 7,701 images), EngineConfig() (hog+cnn, flip): "
    "29,640,749 pairs of images of different people, -log10 FMR every 0.25 decade down to "
    "1e-6: `python benchmarks/similarity_scale.py --fit`",
)
_TAILS = {_DLIB_TAIL.model: _DLIB_TAIL}


def measured_tail(model: str) -> Tail | None:
    """The measured impostor tail of a model (its id, with or without `@version`), if any."""
    return _TAILS.get(model.split("@")[0])


# Logistic widths (score units per unit of logit) where no tail is measured. Cosine of another
# model: dlib's local width at its default threshold, 1 / (GAIN * phi'(0.912)) = 0.0104.
# Cohort-normalised scores (z-like): a Gaussian tail falls one decade per ~0.63 near FMR 1e-3,
# so 0.63 / GAIN gives about one decade per 1/GAIN of logit there.
COSINE_WIDTH = 0.01
NORMALISED_WIDTH = 0.63 / GAIN


@dataclass(frozen=True, slots=True)
class SimilarityScale:
    """How raw scores of one comparison context become similarities."""

    kind: str  # "tail" (measured), "logistic" (normalised scores) or "uncalibrated"
    threshold: float  # the raw score that maps to 0.5 (unused when uncalibrated)
    tail: Tail | None = None
    width: float = NORMALISED_WIDTH

    def logits(self, scores: npt.ArrayLike) -> npt.NDArray[np.float64]:
        x = np.asarray(scores, dtype=np.float64)
        if self.tail is not None:
            return GAIN * (self.tail.phi(x) - self.tail.phi(self.threshold))
        return (x - self.threshold) / self.width

    def similarities(self, scores: npt.ArrayLike) -> npt.NDArray[np.float64]:
        if self.kind == "uncalibrated":
            return np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(self.logits(scores), -700, 700))))

    def similarity(self, score: float) -> float:
        """One score's similarity, rounded as CompreFace shows it."""
        return round(float(self.similarities(score)), 5)

    def fmr_at(self, similarity: float) -> float | None:
        """The FMR a similarity threshold gives, on the measured tail (None: not measured)."""
        if self.tail is None:
            return None
        base = float(self.tail.phi(self.threshold))
        return float(10 ** -(base + _logit(similarity) / GAIN))


def _logit(p: float) -> float:
    if not 0.0 < p < 1.0:
        raise ValueError("a similarity threshold lies strictly between 0 and 1")
    return math.log(p / (1.0 - p))


def scale_for(model: str, threshold: float | None, *, normalised: bool = False) -> SimilarityScale:
    """The scale of one context: the model's measured tail for cosine scores, a logistic for a
    calibrated gallery's normalised scores, and the clipped cosine when nothing is known."""
    if threshold is None:
        return SimilarityScale("uncalibrated", math.nan)
    tail = None if normalised else measured_tail(model)
    if tail is not None:
        return SimilarityScale("tail", threshold, tail)
    return SimilarityScale(
        "logistic", threshold, width=NORMALISED_WIDTH if normalised else COSINE_WIDTH
    )


def threshold_score_at(scale: SimilarityScale, similarity: float) -> float:
    """The raw score whose similarity is `similarity` (the inverse of the mapping)."""
    if scale.kind == "uncalibrated":
        return similarity
    logit = _logit(similarity)
    if scale.tail is None:
        return scale.threshold + logit * scale.width
    return scale.tail.score_of(float(scale.tail.phi(scale.threshold)) + logit / GAIN)
