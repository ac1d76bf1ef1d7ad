"""Named operating points per model: thresholds are calibrated data, never literals in callers.

Each entry records what it was measured on, so a decision can say which threshold it used and
why. Later issues add thresholds calibrated to a target false-match rate per deployment.
"""

from __future__ import annotations

from dataclasses import dataclass

from yingyan.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Threshold:
    name: str
    score: float  # a pair matches when its similarity score is >= this
    model: str
    source: str

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "score": self.score, "model": self.model, "source": self.source}


_THRESHOLDS: dict[str, dict[str, Threshold]] = {}


def _register(t: Threshold) -> None:
    _THRESHOLDS.setdefault(t.model, {})[t.name] = t


_register(
    Threshold(
        name="lfw-devtrain",
        score=0.912,
        model="dlib_resnet_v1",
        source="maximum accuracy on LFW pairsDevTrain.txt (2,200 pairs), HOG+5pt+flip: "
        "`yingyan eval lfw --pairs pairsDevTrain.txt`",
    )
)
_DEFAULT = {"dlib_resnet_v1": "lfw-devtrain"}


def get_threshold(model: str, name: str | None = None) -> Threshold:
    table = _THRESHOLDS.get(model, {})
    key = name if name is not None else _DEFAULT.get(model)
    if key is None or key not in table:
        known = ", ".join(sorted(table)) or "none"
        raise ConfigError(f"no threshold {key!r} for model {model}; known: {known}")
    return table[key]


def default_threshold(model: str) -> Threshold:
    return get_threshold(model, None)


def custom_threshold(model: str, score: float) -> Threshold:
    if not -1.0 <= score <= 1.0:
        raise ConfigError("a threshold score must lie in [-1, 1]")
    return Threshold("custom", score, model, "given by the caller")
