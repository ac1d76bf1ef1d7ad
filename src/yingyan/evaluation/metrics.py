"""Verification error metrics on similarity scores (higher = more alike; match if score >= t).

FMR(t)  = share of impostor pairs with score >= t   (false match rate, ISO/IEC 19795-1)
FNMR(t) = share of genuine pairs with score <  t    (false non-match rate)
TAR     = 1 - FNMR ("true accept rate"), FAR is used as FMR here, as the literature does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Scores = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]


def _arr(x: Scores) -> FloatArray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError("no scores")
    if not np.all(np.isfinite(a)):
        raise ValueError("scores must be finite")
    return a


def cosine_pairs(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> FloatArray:
    """Scores of unit templates row by row: a[k] with b[k], in float64."""
    out: FloatArray = np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64))
    return out


def fmr_at(impostor: Scores, threshold: float) -> float:
    return float(np.mean(_arr(impostor) >= threshold))


def fnmr_at(genuine: Scores, threshold: float) -> float:
    return float(np.mean(_arr(genuine) < threshold))


@dataclass(frozen=True, slots=True)
class ErrorCurve:
    """FMR and FNMR at every distinct threshold (ascending), the basis of ROC and DET plots."""

    thresholds: FloatArray
    fmr: FloatArray
    fnmr: FloatArray

    @property
    def tar(self) -> FloatArray:
        return 1.0 - self.fnmr


def error_curve(genuine: Scores, impostor: Scores) -> ErrorCurve:
    g, i = np.sort(_arr(genuine)), np.sort(_arr(impostor))
    t = np.unique(np.concatenate([g, i, [np.inf]]))
    # Counts of scores strictly below each threshold, by binary search: O((n+m) log(n+m)).
    fnmr = np.searchsorted(g, t, side="left") / g.size
    fmr = 1.0 - np.searchsorted(i, t, side="left") / i.size
    return ErrorCurve(t, fmr.astype(np.float64), fnmr.astype(np.float64))


def equal_error_rate(genuine: Scores, impostor: Scores) -> tuple[float, float]:
    """(EER, threshold): where FMR and FNMR cross, linearly interpolated between the two
    neighbouring operating points."""
    c = error_curve(genuine, impostor)
    diff = c.fmr - c.fnmr  # decreasing in threshold: positive first, then negative
    k = int(np.argmax(diff <= 0))
    if k == 0:
        return float((c.fmr[0] + c.fnmr[0]) / 2), float(c.thresholds[0])
    d0, d1 = diff[k - 1], diff[k]
    w = d0 / (d0 - d1) if d0 != d1 else 0.5
    eer = (1 - w) * (c.fmr[k - 1] + c.fnmr[k - 1]) / 2 + w * (c.fmr[k] + c.fnmr[k]) / 2
    t = (1 - w) * c.thresholds[k - 1] + w * min(c.thresholds[k], np.finfo(float).max)
    return float(eer), float(t)


def threshold_at_fmr(impostor: Scores, target_fmr: float) -> float:
    """Lowest threshold whose FMR does not exceed the target."""
    return thresholds_at_fmr(impostor, (target_fmr,))[0]


def thresholds_at_fmr(impostor: Scores, targets: Sequence[float]) -> list[float]:
    """`threshold_at_fmr` for each target, from one pass over the scores: each threshold
    needs a single order statistic (just above the (allowed+1)-th highest impostor score), so
    the scores are partitioned once at every needed rank, O(n), never sorted (43 million
    impostor scores in the LFW identification benchmark)."""
    i = _arr(impostor)
    if not all(t >= 0 for t in targets):  # NaN fails too
        raise ValueError(f"target FMRs must be >= 0, not {list(targets)}")
    # impostors allowed at or above it; the epsilon keeps 0.29 * 100 = 28.999... at 29
    allowed = [math.floor(t * i.size + 1e-9) for t in targets]
    ranks = sorted({i.size - a - 1 for a in allowed if a < i.size})
    if ranks:
        i = np.partition(i, ranks)  # each of these ranks now holds its sorted value
    return [
        float(np.nextafter(i[i.size - a - 1], np.inf)) if a < i.size else float(i.min())
        for a in allowed
    ]


def tar_at_far(genuine: Scores, impostor: Scores, far: float) -> float | None:
    """TAR at the threshold giving FMR <= far, or None when there are fewer than 1/far impostor
    pairs (the rate could not be observed at all)."""
    i = _arr(impostor)
    if i.size * far < 1:
        return None
    return 1.0 - fnmr_at(genuine, threshold_at_fmr(i, far))


def accuracy_at(genuine: Scores, impostor: Scores, threshold: float) -> float:
    g, i = _arr(genuine), _arr(impostor)
    correct = np.sum(g >= threshold) + np.sum(i < threshold)
    return float(correct / (g.size + i.size))


def best_accuracy_threshold(genuine: Scores, impostor: Scores) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy; among ties the midpoint of the best run."""
    g, i = _arr(genuine), _arr(impostor)
    c = error_curve(g, i)
    correct = (1 - c.fnmr) * g.size + (1 - c.fmr) * i.size
    k = int(np.argmax(correct))  # first (lowest) threshold of the best run
    # Midway between that score and the next lower one: same decisions, not on a sample.
    below = c.thresholds[:k]
    t = (c.thresholds[k] + below[-1]) / 2 if below.size else c.thresholds[k]
    if not np.isfinite(t):  # everything rejected is best: just above the top score
        t = float(np.nextafter(c.thresholds[k - 1], np.inf)) if k else 1.0
    return float(t), float(correct[k] / (g.size + i.size))
