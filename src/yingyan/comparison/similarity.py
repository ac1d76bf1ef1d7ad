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

A tail is data carried with the model's description, like its thresholds: a built-in
recognizer's in its manifest (`embedding/manifests/*.toml`, `[tail]`: dlib's ResNet and
MobileFaceNet, measured on LFW view 2 by `python benchmarks/similarity_scale.py --fit` or
`yingyan calibrate tail`), a user's manifest's `[tail]` (pinned weights), a fusion's in its
fusion file (`yingyan calibrate tail --into FUSION`, versioned apart from the model id like its
thresholds); the last two are made known here when they are loaded.
`scale_for` picks the tail of the model id it is given, and only for the weights (or fusion)
it was measured on.

A scale without a measured tail (a cohort-calibrated gallery's normalised scores, a model with
no measured tail: the ArcFace family) uses a logistic in the score, 0.5
at its threshold; its FMR at other points is not measured. A model with neither a default nor a
gallery threshold keeps the cosine clipped to [0, 1] ("uncalibrated").
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

from yingyan.errors import ConfigError

# Each 1/GAIN of logit(similarity) is one decade of FMR: 0.99 is 2.3 decades below 0.5.
GAIN = 2.0


@dataclass(frozen=True, slots=True)
class Tail:
    """-log10 FMR of a model's impostor cosine scores at increasing knots; linear between them
    and beyond the ends (a log-linear tail), so strictly increasing everywhere."""

    model: str
    scores: tuple[float, ...]
    decades: tuple[float, ...]
    source: str  # what it was measured on, with the command
    dataset: str | None = None
    measured: str | None = None  # ISO date

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


TAIL_KEYS = {"scores", "decades", "source", "dataset", "measured"}


def parse_tail(model: str, row: object, source: str) -> Tail:
    """A validated tail from a manifest's `[tail]` table or a fusion file's `tail` entry."""
    if not isinstance(row, Mapping):
        raise ConfigError(f"{source}: the tail must be a table (scores, decades, source)")
    missing = {"scores", "decades", "source"} - set(row)
    if missing:
        raise ConfigError(f"{source}: the tail needs {', '.join(sorted(missing))}")
    unknown = set(row) - TAIL_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown tail key(s) {', '.join(sorted(unknown))}")
    knots = []
    for key in ("scores", "decades"):
        values = row[key]
        if not isinstance(values, list | tuple) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        ):
            raise ConfigError(f"{source}: tail {key!r} must be a list of numbers")
        knots.append(tuple(float(v) for v in values))
    scores, decades = knots
    if any(not -1.0 <= v <= 1.0 for v in scores):
        raise ConfigError(f"{source}: tail scores must lie in [-1, 1]")
    if any(v < 0 for v in decades):
        raise ConfigError(f"{source}: tail decades (-log10 FMR) must be >= 0")
    try:
        return Tail(
            model,
            scores,
            decades,
            str(row["source"]),
            dataset=_opt_str(row.get("dataset")),
            measured=_opt_str(row.get("measured")),
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def tail_row(tail: Tail) -> dict[str, Any]:
    """The entry `parse_tail` reads back (a fusion file's `tail`)."""
    row: dict[str, Any] = {"scores": list(tail.scores), "decades": list(tail.decades)}
    row |= {k: getattr(tail, k) for k in ("dataset", "measured") if getattr(tail, k) is not None}
    return row | {"source": tail.source}


def tail_toml(tail: Tail) -> str:
    """The `[tail]` table of a recognizer manifest holding this tail."""
    lines = ["[tail]"]
    for key in ("dataset", "measured"):
        if getattr(tail, key) is not None:
            lines.append(f"{key} = {json.dumps(getattr(tail, key))}")
    lines.append(f"source = {json.dumps(tail.source)}")
    lines.append("scores = [" + ", ".join(f"{s:.4f}" for s in tail.scores) + "]")
    lines.append("decades = [" + ", ".join(f"{d:g}" for d in tail.decades) + "]")
    return "\n".join(lines) + "\n"


def fit_tail(
    impostor: npt.ArrayLike,
    model: str,
    source: str,
    *,
    dataset: str | None = None,
    measured: str | None = None,
    step: float = 0.25,
    min_count: int = 30,
) -> Tail:
    """The tail of impostor scores: the score at FMR 10^-(step k) for k = 0, 1, ... down to
    the FMR that `min_count` impostors still observe (scores rounded to 4 decimals; a knot
    whose rounded score does not exceed the previous one is left out)."""
    ordered = np.sort(np.asarray(impostor, dtype=np.float64).ravel())[::-1]
    n = len(ordered)
    scores: list[float] = []
    decades: list[float] = []
    for k in range(0, 1000):
        count = round(10 ** (-step * k) * n)
        if count < min_count:
            break
        score = round(float(ordered[count - 1]), 4)
        if not scores or score > scores[-1]:
            scores.append(score)
            decades.append(round(step * k, 4))
    if len(scores) < 4:
        raise ValueError(f"{n} impostor scores give {len(scores)} knots; a tail needs four")
    return Tail(model, tuple(scores), tuple(decades), source, dataset=dataset, measured=measured)


# Tails of loaded fusions and user manifests, by full model id ("fusion:name@digest",
# "name@sha256 prefix"), registered on load.
_LOADED: dict[str, Tail] = {}


def register_tail(model_id: str, tail: Tail) -> None:
    """Make a loaded model's (a fusion's, a user manifest's) tail known to `measured_tail`."""
    _LOADED[model_id] = tail


@cache
def _built_in() -> dict[str, tuple[Tail, str | None]]:
    """The built-in manifests' tails with the sha256 of the weights they were measured on."""
    from yingyan.embedding.manifest import BUILT_IN, built_in_manifest

    manifests = (built_in_manifest(name) for name in BUILT_IN)
    return {m.name: (m.tail, m.sha256) for m in manifests if m.tail is not None}


def measured_tail(model: str) -> Tail | None:
    """The measured impostor tail of a model id (with or without `@version`), if any: a
    loaded fusion's or user manifest's, else a built-in manifest's `[tail]` (only for the
    weights it pins)."""
    name, _, version = model.partition("@")
    if version and model in _LOADED:
        return _LOADED[model]
    if not version:
        loaded = [t for key, t in _LOADED.items() if key.partition("@")[0] == name]
        if len(loaded) == 1:
            return loaded[0]
    built = _built_in().get(name)
    if built is None:
        return None
    tail, sha = built
    if version and sha and not sha.startswith(version[:12]):
        return None  # measured on other weights
    return tail


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
    """The scale of one context: the measured tail of `model` (the probe's and gallery's model
    id: a built-in manifest's for its pinned weights, a loaded fusion's) for cosine scores, a
    logistic for a calibrated gallery's normalised scores or a model without a measured tail,
    and the clipped cosine when no threshold is known."""
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
