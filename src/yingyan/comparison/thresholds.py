"""Named operating points per model: thresholds are calibrated data, never literals in callers.

Each entry records the false-match rate it guarantees, for whom (the worst measured group's
same-group impostors: the colleague who looks alike, not the average stranger) and what it was
measured on, so a decision can say which threshold it used and why. A built-in model's
thresholds live in its manifest (`embedding/manifests/*.toml`, `[[threshold]]`); a fusion's in
its own fusion file, made known here when the fusion is loaded. The default is the strict one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from yingyan.errors import ConfigError

DEFAULT_NAME = "strict"
_KEYS = {"name", "score", "source", "fmr", "worst_group", "dataset", "measured", "default"}


@dataclass(frozen=True, slots=True)
class Threshold:
    name: str
    score: float  # a pair matches when its similarity score is >= this
    model: str
    source: str  # what it was measured on, with the command
    fmr: float | None = None  # the FMR guaranteed for the worst group's same-group impostors
    worst_group: str | None = None  # the group that set it
    dataset: str | None = None
    measured: str | None = None  # ISO date

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.name,
            "score": self.score,
            "model": self.model,
            "source": self.source,
        }
        for key in ("fmr", "worst_group", "dataset", "measured"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True, slots=True)
class ThresholdSet:
    """One model's named thresholds and which of them is the default."""

    model: str  # the model id's name ("dlib_resnet_v1", "fusion:dlib+mobilefacenet")
    version: str | None  # the weights' (or fusion's) version they were measured for
    entries: Mapping[str, Threshold]
    default: str

    def get(self, name: str | None) -> Threshold:
        key = self.default if name is None else name
        if key not in self.entries:
            known = ", ".join(sorted(self.entries)) or "none"
            raise ConfigError(f"no threshold {key!r} for model {self.model}; known: {known}")
        return self.entries[key]


def parse_thresholds(
    model: str, version: str | None, rows: Iterable[Any], source: str
) -> ThresholdSet | None:
    """A validated set from manifest or fusion-file rows (None: no rows). Exactly one row may
    say `default = true`; else the one named "strict" is the default."""
    entries: dict[str, Threshold] = {}
    default = None
    for row in rows:
        if not isinstance(row, dict) or not {"name", "score", "source"} <= set(row):
            raise ConfigError(f"{source}: a threshold needs name, score and source")
        unknown = set(row) - _KEYS
        if unknown:
            raise ConfigError(f"{source}: unknown threshold key(s) {', '.join(sorted(unknown))}")
        score, fmr = row["score"], row.get("fmr")
        if not isinstance(score, int | float) or isinstance(score, bool) or not -1 <= score <= 1:
            raise ConfigError(f"{source}: threshold {row['name']!r}: score must lie in [-1, 1]")
        if fmr is not None and (not isinstance(fmr, int | float) or not 0 < fmr < 1):
            raise ConfigError(f"{source}: threshold {row['name']!r}: fmr must lie in (0, 1)")
        name = str(row["name"])
        if name in entries:
            raise ConfigError(f"{source}: threshold {name!r} given twice")
        entries[name] = Threshold(
            name=name,
            score=float(score),
            model=model,
            source=str(row["source"]),
            fmr=None if fmr is None else float(fmr),
            worst_group=_opt_str(row.get("worst_group")),
            dataset=_opt_str(row.get("dataset")),
            measured=_opt_str(row.get("measured")),
        )
        if row.get("default") is True:
            if default is not None:
                raise ConfigError(f"{source}: more than one default threshold")
            default = name
    if not entries:
        return None
    default = default or (DEFAULT_NAME if DEFAULT_NAME in entries else None)
    if default is None:
        raise ConfigError(f"{source}: no threshold named {DEFAULT_NAME!r} nor one marked default")
    return ThresholdSet(model, version, entries, default)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def threshold_rows(t: ThresholdSet) -> list[dict[str, object]]:
    """The rows `parse_thresholds` reads back (for writing a fusion file)."""
    rows = []
    for entry in t.entries.values():
        row = {k: v for k, v in entry.as_dict().items() if k != "model"}
        if entry.name == t.default and entry.name != DEFAULT_NAME:
            row["default"] = True
        rows.append(row)
    return rows


# Fusions' thresholds, keyed by their full model id ("fusion:name@digest"), registered on load.
_LOADED: dict[str, ThresholdSet] = {}


def register_thresholds(t: ThresholdSet) -> None:
    """Make a loaded model's (a fusion's) thresholds known to `get_threshold`."""
    _LOADED[f"{t.model}@{t.version}"] = t


@cache
def _built_in() -> dict[str, ThresholdSet]:
    from yingyan.embedding.manifest import BUILT_IN, built_in_manifest

    sets = (built_in_manifest(name).thresholds for name in BUILT_IN)
    return {t.model: t for t in sets if t is not None}


def _lookup(model: str) -> ThresholdSet:
    name, _, version = model.partition("@")
    if version and model in _LOADED:
        return _LOADED[model]
    if not version:
        loaded = [t for t in _LOADED.values() if t.model == name]
        if len(loaded) == 1:
            return loaded[0]
        if len(loaded) > 1:
            raise ConfigError(f"several versions of {name} are loaded: name one ({name}@…)")
    built = _built_in().get(name)
    if built is None:
        raise ConfigError(f"no thresholds are known for model {model}")
    if version and built.version and not built.version.startswith(version[:12]):
        raise ConfigError(
            f"{model}: the shipped thresholds of {name} were measured on weights "
            f"{built.version[:12]}, not these: measure this model's thresholds"
        )
    return built


def get_threshold(model: str, name: str | None = None) -> Threshold:
    """A model's named threshold, its default (the strict one) when `name` is None. `model` is
    a model id, with or without `@version` (with it, thresholds of other weights are refused)."""
    return _lookup(model).get(name)


def default_threshold(model: str) -> Threshold:
    return get_threshold(model, None)


def known_thresholds(model: str) -> list[Threshold]:
    """All of a model's named thresholds, the default first."""
    t = _lookup(model)
    return [t.entries[t.default], *(e for n, e in t.entries.items() if n != t.default)]


def custom_threshold(model: str, score: float) -> Threshold:
    if not math.isfinite(score) or not -1.0 <= score <= 1.0:
        raise ConfigError("a threshold score must lie in [-1, 1]")
    return Threshold("custom", score, model, "given by the caller")
