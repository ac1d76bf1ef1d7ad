"""Fusion of the presentation-attack cues into one decision, over a few frames (issue 12).

Per frame (`judge_frame`):

1. Hard gates, in the policy's order. Any gate that FAILS refuses outright (ATTACK, with that
   cue's reason): a failed gate is never averaged away by another cue. Only then, any gate that
   abstained, or was not measured, asks for another try (RETRY, with its reason: "come closer").
   Failures come first so that a screen, whose NIR camera sees no face (the geometry abstains)
   and whose NIR cue fails, is refused rather than asked to come closer forever.
2. The combined cues (the shipped policy: the relief score alone; any set can be fitted):
   each score standardised by its bona fide mean and standard deviation, clipped to
   ±`clip` (no cue can outvote the others by looking absurdly bona fide), weighted
   by a logistic regression fitted on bona fide against attack frames (weights >= 0: a cue
   looking more bona fide never counts against a face), summed into one score, the logit of
   P(bona fide). ATTACK below `threshold`, chosen with `evaluation.pad.threshold_for_bpcer` on
   the bona fide fit frames alone, so the fused BPCER on those frames is <= `target_bpcer`
   (gate refusals of bona fide frames count in that budget). A combined cue that abstains
   makes the frame a RETRY: a non-response, never a pass.

Over frames (`PadWindow`, `decide`): the last `window` frames; a frame responded when it was
refused by a gate or scored. ATTACK when gates refused a majority of the responding frames
(and at least `min_frames`); otherwise the mean combined score of the scored frames against
the threshold once `min_frames` are scored; RETRY until then. One frame flickers (a blink, a
landmark slip, an unsynchronised pair); a decision rests on several.

A station without some camera runs `policy.for_cues(available)`: the gates it has, and the
combination refitted at fit time for the combined cues it has (a colour-only station: the RGB
texture cue alone). Every answer names the cues that decided (`decided_by`).

The RGB texture cue is a gate with its own rule in the shipped policy (`TextureWindow`: mean
P(live) >= 0.5 over its window), not a fitted term: the simulator the policy is fitted on has
no colour images. Its BPCER comes on top of the fitted part's.

A policy is data (JSON, versioned), not code: `default_policy()` is the one shipped, fitted on
the station simulator (`benchmarks/pad_simulated.py --policy-out`); a station fits its own on
its own bona fide and attack captures with `fit_policy`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from importlib.resources import files
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from yingyan.errors import ConfigError
from yingyan.evaluation.pad import threshold_for_bpcer
from yingyan.liveness.cues import CueResult, Decision

FORMAT: Final = "yingyan.pad_policy"
FORMAT_VERSION: Final = 1
DEFAULT_GATES: Final = ("epipolar", "distance", "nir", "rgb_texture")
# Measured on the simulator (benchmarks/pad_simulated.py): adding the NIR and distance scores
# to the relief in the combination loosens the relief where NIR cannot tell (a folded or an
# NIR print tilted 45 degrees at 0.8 m: APCER 3-4% against 0% with the relief alone, at the
# same BPCER target), so NIR and distance gate and only the relief is combined by default.
DEFAULT_CUES: Final = ("relief",)
HOLD_STILL: Final = "hold still"  # too few frames yet, none of them refused

FloatArray = npt.NDArray[np.float64]


class Verdict(StrEnum):
    BONA_FIDE = "bona_fide"
    ATTACK = "attack"
    RETRY = "retry"  # a non-response: ask again with the reason, never a pass


@dataclass(frozen=True, slots=True)
class Combination:
    """A logistic combination of some cues' scores and its threshold.

    term_i = weight_i · clip((score_i - mean_i) / std_i, ±clip); score = bias + Σ term_i."""

    cues: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float
    fit_bpcer: float = math.nan  # the BPCER the threshold gives on the bona fide fit frames
    clip: float = 5.0

    def terms(self, scores: Mapping[str, float]) -> dict[str, float]:
        """Each cue's contribution to the combined score."""
        out = {}
        for name, m, s, w in zip(self.cues, self.means, self.stds, self.weights, strict=True):
            z = (scores[name] - m) / s
            out[name] = w * float(np.clip(z, -self.clip, self.clip))
        return out

    def score(self, scores: Mapping[str, float]) -> float:
        return self.bias + sum(self.terms(scores).values())


@dataclass(frozen=True, slots=True)
class PadPolicy:
    """Which cues gate, which combine and how, the threshold and the multi-frame rule.

    `cues`, `means`, `stds`, `weights`, `bias`, `threshold` are the main combination (every
    combined cue); `alternatives` are the same fit restricted to fewer cues, for stations that
    lack some (`for_cues`)."""

    version: str
    gates: tuple[str, ...]
    cues: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float
    target_bpcer: float
    window: int = 3
    min_frames: int = 2
    fitted_on: str = ""
    fit_bpcer: float = math.nan
    clip: float = 5.0
    alternatives: tuple[Combination, ...] = ()

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def combination(self) -> Combination | None:
        if not self.cues:
            return None
        return Combination(
            self.cues,
            self.means,
            self.stds,
            self.weights,
            self.bias,
            self.threshold,
            self.fit_bpcer,
            self.clip,
        )

    @property
    def required(self) -> tuple[str, ...]:
        """Every cue the policy reads, gates first, once each."""
        return tuple(dict.fromkeys(self.gates + self.cues))

    def for_cues(self, available: Sequence[str]) -> PadPolicy:
        """This policy on a station that measures only `available` cues: its gates among
        them, and the combination fitted for exactly its combined cues among them. A colour-only
        station keeps the RGB texture gate and no combination."""
        have = set(available)
        gates = tuple(g for g in self.gates if g in have)
        cues = tuple(c for c in self.cues if c in have)
        if not gates and not cues:
            raise ConfigError(
                f"PAD policy {self.version}: none of its cues ({', '.join(self.required)}) "
                f"is available on this station ({', '.join(sorted(have)) or 'none'})"
            )
        if cues == self.cues:
            return replace(self, gates=gates)
        combo: Combination | None = None
        if cues:
            combo = next((c for c in self.alternatives if c.cues == cues), None)
            if combo is None:
                raise ConfigError(
                    f"PAD policy {self.version} has no combination fitted for the cues "
                    f"{', '.join(cues)}; fit one with fit_policy on this station's captures"
                )
        kept = tuple(c for c in self.alternatives if set(c.cues) < set(cues))
        return replace(self, gates=gates, alternatives=kept, **_combination_fields(combo))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _json_safe(
            {"format": FORMAT, "format_version": FORMAT_VERSION} | asdict(self)
        )
        return out

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, raw: object, source: str = "PAD policy") -> PadPolicy:
        return _parse(raw, source)

    @classmethod
    def load(cls, path: Path | str) -> PadPolicy:
        p = Path(path)
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{p}: PAD policy file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{p}: not a readable JSON PAD policy ({exc})") from None
        return _parse(raw, str(p))


@dataclass(frozen=True, slots=True)
class FrameVerdict:
    """One frame's answer. score: the combined score (-inf: a gate refused; NaN: no score,
    i.e. a retry, or a pass by gates alone on a station without a combination)."""

    verdict: Verdict
    score: float
    reason: str
    decided_by: tuple[str, ...]
    cues: tuple[CueResult, ...]
    terms: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def refused_by_gate(self) -> bool:
        return self.verdict is Verdict.ATTACK and self.score == -math.inf

    @property
    def scored(self) -> bool:
        return math.isfinite(self.score)


@dataclass(frozen=True, slots=True)
class PadDecision:
    """The decision over the last frames. `frames`: how many frames it rests on (the refused
    ones for a gate refusal, the scored ones for a score decision, those seen for a retry)."""

    verdict: Verdict
    score: float
    reason: str
    decided_by: tuple[str, ...]
    frames: int
    cues: tuple[CueResult, ...]  # the last frame's

    @property
    def final(self) -> bool:
        return self.verdict is not Verdict.RETRY


# --- one frame --------------------------------------------------------------------------------


def judge_frame(cues: Sequence[CueResult], policy: PadPolicy) -> FrameVerdict:
    """Gates first (a failure refuses, then an abstention retries), then the combination."""
    got = tuple(cues)
    by_name: dict[str, CueResult] = {}
    for c in got:
        if c.cue in by_name:
            raise ValueError(f"cue {c.cue!r} given twice for one frame")
        by_name[c.cue] = c
    failed = [
        by_name[g] for g in policy.gates if g in by_name and by_name[g].decision is Decision.FAIL
    ]
    if failed:
        return FrameVerdict(
            Verdict.ATTACK, -math.inf, failed[0].reason, tuple(c.cue for c in failed), got
        )
    unsure = _unsure(policy.gates, by_name)
    if unsure:
        return FrameVerdict(Verdict.RETRY, math.nan, unsure[0][1], tuple(n for n, _ in unsure), got)
    combo = policy.combination
    if combo is None:
        passed = ", ".join(policy.gates)
        return FrameVerdict(Verdict.BONA_FIDE, math.nan, f"passed {passed}", policy.gates, got)
    unsure = _unsure(combo.cues, by_name)
    if unsure:
        return FrameVerdict(Verdict.RETRY, math.nan, unsure[0][1], tuple(n for n, _ in unsure), got)
    terms = combo.terms({n: by_name[n].score for n in combo.cues})
    score = combo.bias + sum(terms.values())
    proxy = MappingProxyType(terms)
    if score >= combo.threshold:
        reason = f"fused score {score:.2f} >= {combo.threshold:.2f}"
        return FrameVerdict(Verdict.BONA_FIDE, score, reason, policy.required, got, proxy)
    return FrameVerdict(
        Verdict.ATTACK, score, _attack_reason(score, combo, terms, by_name), combo.cues, got, proxy
    )


def _unsure(names: Sequence[str], by_name: Mapping[str, CueResult]) -> list[tuple[str, str]]:
    """(cue, reason) of every cue that abstained or was not measured."""
    out = []
    for n in names:
        c = by_name.get(n)
        if c is None:
            out.append((n, f"{n} not measured"))
        elif c.decision is Decision.ABSTAIN or not math.isfinite(c.score):
            out.append((n, c.reason or f"{n} could not decide"))
    return out


def _attack_reason(
    score: float, combo: Combination, terms: Mapping[str, float], by_name: Mapping[str, CueResult]
) -> str:
    weakest = min(terms, key=lambda n: terms[n])
    head = f"fused score {score:.2f} < {combo.threshold:.2f}"
    cue = by_name[weakest]
    if cue.decision is Decision.FAIL and cue.reason:
        return f"{head}; {weakest}: {cue.reason}"
    return f"{head}; weakest cue: {weakest}"


# --- over frames ------------------------------------------------------------------------------


def decide(frames: Sequence[FrameVerdict], policy: PadPolicy) -> PadDecision:
    """The decision on these frames (the caller keeps the last `window`)."""
    last = frames[-1].cues if frames else ()
    refused = [f for f in frames if f.refused_by_gate]
    scored = [f for f in frames if f.scored]
    passed = [f for f in frames if f.verdict is Verdict.BONA_FIDE and not f.scored]
    responded = len(refused) + len(scored) + len(passed)
    if len(refused) >= policy.min_frames and 2 * len(refused) > responded:
        reason = Counter(f.reason for f in refused).most_common(1)[0][0]
        gates = tuple(dict.fromkeys(c for f in refused for c in f.decided_by))
        return PadDecision(Verdict.ATTACK, -math.inf, reason, gates, len(refused), last)
    if policy.combination is None and len(passed) >= policy.min_frames:
        reason = f"passed {', '.join(policy.gates)} in {len(passed)} frames"
        return PadDecision(Verdict.BONA_FIDE, math.nan, reason, policy.gates, len(passed), last)
    if policy.combination is not None and len(scored) >= policy.min_frames:
        mean = float(np.mean([f.score for f in scored]))
        n, t = len(scored), policy.threshold
        if mean >= t:
            reason = f"mean fused score {mean:.2f} over {n} frames >= {t:.2f}"
            return PadDecision(Verdict.BONA_FIDE, mean, reason, policy.required, n, last)
        worst = min(scored, key=lambda f: f.score)
        detail = worst.reason if worst.verdict is Verdict.ATTACK else ""
        reason = f"mean fused score {mean:.2f} over {n} frames < {t:.2f}"
        reason += f" ({detail})" if detail else ""
        return PadDecision(Verdict.ATTACK, mean, reason, policy.cues, n, last)
    retries = [f for f in frames if f.verdict is Verdict.RETRY]
    if retries:
        reason = Counter(f.reason for f in retries).most_common(1)[0][0]
        by = tuple(dict.fromkeys(c for f in retries for c in f.decided_by))
    else:
        reason, by = HOLD_STILL, ()
    return PadDecision(Verdict.RETRY, math.nan, reason, by, len(frames), last)


class PadWindow:
    """The rolling decision of one capture over its last `policy.window` frames."""

    def __init__(self, policy: PadPolicy) -> None:
        self.policy = policy
        self._frames: deque[FrameVerdict] = deque(maxlen=policy.window)

    def add(self, frame: FrameVerdict) -> PadDecision:
        self._frames.append(frame)
        return decide(list(self._frames), self.policy)

    def reset(self) -> None:
        """A new person in front of the station: nothing of the last one counts."""
        self._frames.clear()


# --- fitting ----------------------------------------------------------------------------------


def fit_policy(
    bona_fide: Sequence[Sequence[CueResult]],
    attacks: Sequence[Sequence[CueResult]],
    *,
    target_bpcer: float = 0.01,
    gates: Sequence[str] = DEFAULT_GATES,
    cues: Sequence[str] = DEFAULT_CUES,
    fitted_on: str,
    version: str | None = None,
    window: int = 3,
    min_frames: int = 2,
    l2: float = 0.1,
    clip: float = 5.0,
) -> PadPolicy:
    """Fit the combination on frames (each a sequence of cue results) and choose its threshold
    for `target_bpcer` on the bona fide frames alone.

    Standardisation uses bona fide statistics; the logistic regression (numpy, L2 penalty on
    the weights, classes weighted equally, weights constrained >= 0) sees the frames every
    gate passed and every combined cue scored, the only ones the combination judges. The same
    is fitted for every smaller set of combined cues (`alternatives`), each assuming the
    station lacks the others, gates included. Gates absent from the fit frames (the RGB
    texture cue on the simulator) do not enter the threshold: their BPCER comes on top."""
    if not 0 < target_bpcer < 1:
        raise ValueError("target_bpcer must lie strictly between 0 and 1")
    gates, cues = tuple(gates), tuple(cues)
    combos = []
    for k in range(len(cues), 0, -1):
        for subset in itertools.combinations(cues, k):
            missing = set(cues) - set(subset)
            kept = tuple(g for g in gates if g not in missing)
            combos.append(
                _fit_combination(bona_fide, attacks, kept, subset, target_bpcer, l2, clip)
            )
    main = combos[0] if combos else None
    body = dict(
        gates=gates,
        target_bpcer=target_bpcer,
        window=window,
        min_frames=min_frames,
        fitted_on=fitted_on,
        clip=clip,
        alternatives=tuple(combos[1:]),
        **_combination_fields(main),
    )
    policy = PadPolicy(version=version or "unversioned", **body)
    if version is None:  # content-addressed: the same fit gives the same version
        content = {k: v for k, v in policy.as_dict().items() if k != "version"}
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        policy = replace(policy, version=f"pad-{digest[:12]}")
    return policy


def _combination_fields(combo: Combination | None) -> dict[str, Any]:
    """The policy's fields that hold its main combination (none: gates alone)."""
    if combo is None:
        return dict(
            cues=(), means=(), stds=(), weights=(), bias=0.0, threshold=0.0, fit_bpcer=math.nan
        )
    return dict(
        cues=combo.cues,
        means=combo.means,
        stds=combo.stds,
        weights=combo.weights,
        bias=combo.bias,
        threshold=combo.threshold,
        fit_bpcer=combo.fit_bpcer,
    )


def _gated_scores(
    frames: Sequence[Sequence[CueResult]], gates: Sequence[str], cues: Sequence[str]
) -> tuple[FloatArray, int, int]:
    """The combined cues' scores of the frames the combination judges, how many frames the
    gates refused and how many were non-responses. Gates missing from a frame are skipped."""
    rows, refused, unsure = [], 0, 0
    for frame in frames:
        by_name = {c.cue: c for c in frame}
        present = [by_name[g] for g in gates if g in by_name]
        if any(c.decision is Decision.FAIL for c in present):
            refused += 1
        elif any(c.decision is Decision.ABSTAIN for c in present) or _unsure(cues, by_name):
            unsure += 1
        else:
            rows.append([by_name[c].score for c in cues])
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(cues)), refused, unsure


def _fit_combination(
    bona_fide: Sequence[Sequence[CueResult]],
    attacks: Sequence[Sequence[CueResult]],
    gates: tuple[str, ...],
    cues: tuple[str, ...],
    target: float,
    l2: float,
    clip: float,
) -> Combination:
    bona, refused, _ = _gated_scores(bona_fide, gates, cues)
    att, _, _ = _gated_scores(attacks, gates, cues)
    if len(bona) < 10:
        raise ValueError(f"only {len(bona)} bona fide frames reach the combination of {cues}")
    means, stds = bona.mean(axis=0), bona.std(axis=0, ddof=1)
    if not (stds > 0).all():
        raise ValueError(f"a cue of {cues} has the same score on every bona fide frame")

    def z(x: FloatArray) -> FloatArray:
        out: FloatArray = np.clip((x - means) / stds, -clip, clip)
        return out

    if len(att):
        weights, bias = _logistic(z(bona), z(att), l2)
    else:  # nothing to separate from: equal weights on the standardised scores
        weights, bias = np.full(len(cues), 1.0 / len(cues)), 0.0
    combo = Combination(
        cues,
        tuple(map(float, means)),
        tuple(map(float, stds)),
        tuple(map(float, weights)),
        float(bias),
        0.0,
        math.nan,
        clip,
    )
    # Scored exactly as judge_frame scores them: the threshold is one of these numbers, and a
    # different rounding would move the bona fide frame at the threshold below it.
    scored = [combo.score(dict(zip(cues, map(float, row), strict=True))) for row in bona]
    fused = np.concatenate([scored, np.full(refused, -np.inf)])
    threshold = threshold_for_bpcer(fused, target)
    if not math.isfinite(threshold):  # the gates alone use up the budget: accept every other
        threshold = float(fused[np.isfinite(fused)].min())
    return replace(combo, threshold=threshold, fit_bpcer=float(np.mean(fused < threshold)))


def _logistic(bona: FloatArray, att: FloatArray, l2: float) -> tuple[FloatArray, float]:
    """L2-penalised logistic regression (label 1 = bona fide), classes weighted equally, by
    Newton's method; a cue given a negative weight is dropped (weight 0) and the rest refit."""
    x = np.vstack([bona, att])
    y = np.concatenate([np.ones(len(bona)), np.zeros(len(att))])
    sw = np.concatenate([np.full(len(bona), 0.5 / len(bona)), np.full(len(att), 0.5 / len(att))])
    active = np.ones(x.shape[1], dtype=bool)
    while True:
        w = _newton(x[:, active], y, sw, l2)
        if (w[1:] >= 0).all():
            break
        active[np.flatnonzero(active)[w[1:] < 0]] = False
        if not active.any():
            return np.zeros(x.shape[1]), float(np.log(len(bona) / max(len(att), 1)))
    weights = np.zeros(x.shape[1])
    weights[active] = w[1:]
    return weights, float(w[0])


def _newton(x: FloatArray, y: FloatArray, sw: FloatArray, l2: float) -> FloatArray:
    a = np.hstack([np.ones((len(x), 1)), x])
    penalty = np.full(a.shape[1], l2)
    penalty[0] = 0.0  # the bias is not penalised
    w = np.zeros(a.shape[1])
    for _ in range(100):
        p = 1 / (1 + np.exp(-np.clip(a @ w, -30, 30)))
        grad = a.T @ (sw * (p - y)) + penalty * w
        hess = (a * (sw * p * (1 - p))[:, None]).T @ a + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w = w - step
        if np.abs(step).max() < 1e-10:
            break
    return w


# --- files ------------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    """NaN and infinities as null (strict JSON has neither); tuples as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _names(raw: object, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
        raise ConfigError(f"{where} must be a list of cue names")
    if len(set(raw)) != len(raw):
        raise ConfigError(f"{where} names a cue twice")
    return tuple(raw)


def _floats(raw: object, where: str, n: int) -> tuple[float, ...]:
    if not isinstance(raw, list) or len(raw) != n:
        raise ConfigError(f"{where} must be a list of {n} numbers (one per combined cue)")
    return tuple(_number(x, where) for x in raw)


def _number(raw: object, where: str, *, nullable: bool = False) -> float:
    if raw is None and nullable:
        return math.nan
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ConfigError(f"{where} must be a finite number, got {raw!r}")
    return float(raw)


def _integer(raw: object, where: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ConfigError(f"{where} must be an integer, got {raw!r}")
    return raw


def _combination(raw: object, where: str) -> Combination:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be an object")
    try:
        cues = _names(raw["cues"], f"{where}.cues")
        n = len(cues)
        return Combination(
            cues,
            _floats(raw["means"], f"{where}.means", n),
            _floats(raw["stds"], f"{where}.stds", n),
            _floats(raw["weights"], f"{where}.weights", n),
            _number(raw["bias"], f"{where}.bias"),
            _number(raw["threshold"], f"{where}.threshold"),
            _number(raw.get("fit_bpcer"), f"{where}.fit_bpcer", nullable=True),
            _number(raw.get("clip", 5.0), f"{where}.clip"),
        )
    except KeyError as exc:
        raise ConfigError(f"{where}: missing field {exc.args[0]!r}") from None


def _parse(raw: object, source: str) -> PadPolicy:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a PAD policy must be a JSON object")
    if raw.get("format") != FORMAT:
        raise ConfigError(f"{source}: not a PAD policy (format must be {FORMAT!r})")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"{source}: PAD policy format_version {raw.get('format_version')!r} is not "
            f"supported (this version reads {FORMAT_VERSION})"
        )
    try:
        version = raw["version"]
        if not isinstance(version, str) or not version:
            raise ConfigError(f"{source}: version must be a non-empty string")
        fitted_on = raw.get("fitted_on", "")
        if not isinstance(fitted_on, str):
            raise ConfigError(f"{source}: fitted_on must be a string")
        main = _combination(
            {k: raw[k] for k in ("cues", "means", "stds", "weights", "bias", "threshold")}
            | {"fit_bpcer": raw.get("fit_bpcer"), "clip": raw.get("clip", 5.0)},
            source,
        )
        alternatives = raw.get("alternatives", [])
        if not isinstance(alternatives, list):
            raise ConfigError(f"{source}: alternatives must be a list")
        return PadPolicy(
            version=version,
            gates=_names(raw["gates"], f"{source}: gates"),
            cues=main.cues,
            means=main.means,
            stds=main.stds,
            weights=main.weights,
            bias=main.bias,
            threshold=main.threshold,
            target_bpcer=_number(raw["target_bpcer"], f"{source}: target_bpcer"),
            window=_integer(raw.get("window", 3), f"{source}: window"),
            min_frames=_integer(raw.get("min_frames", 2), f"{source}: min_frames"),
            fitted_on=fitted_on,
            fit_bpcer=main.fit_bpcer,
            clip=main.clip,
            alternatives=tuple(
                _combination(a, f"{source}: alternatives[{i}]") for i, a in enumerate(alternatives)
            ),
        )
    except KeyError as exc:
        raise ConfigError(f"{source}: missing field {exc.args[0]!r}") from None
    except ConfigError as exc:
        if exc.message.startswith(source):
            raise
        raise ConfigError(f"{source}: {exc.message}") from None


def _validate(p: PadPolicy) -> None:
    where = f"PAD policy {p.version!r}"
    if not p.gates and not p.cues:
        raise ConfigError(f"{where}: no gate and no combined cue")
    if not 0 < p.target_bpcer < 1:
        raise ConfigError(f"{where}: target_bpcer must lie strictly between 0 and 1")
    if not 1 <= p.min_frames <= p.window:
        raise ConfigError(f"{where}: min_frames must lie between 1 and window")
    for combo in (p.combination, *p.alternatives):
        if combo is None:
            continue
        n = len(combo.cues)
        if not len(combo.means) == len(combo.stds) == len(combo.weights) == n:
            raise ConfigError(f"{where}: means, stds and weights need one value per cue")
        if not all(s > 0 and math.isfinite(s) for s in combo.stds):
            raise ConfigError(f"{where}: stds must be finite and > 0")
        if not all(w >= 0 and math.isfinite(w) for w in combo.weights):
            raise ConfigError(f"{where}: weights must be finite and >= 0")
        values = (*combo.means, combo.bias, combo.threshold)
        if not all(math.isfinite(v) for v in values):
            raise ConfigError(f"{where}: means, bias and threshold must be finite")
        if not combo.clip > 0:
            raise ConfigError(f"{where}: clip must be > 0")


# --- the shipped policy -----------------------------------------------------------------------

# Fitted on the station SIMULATOR (yingyan.liveness.simulator), not on real presentations:
# `benchmarks/pad_simulated.py --only fused --n 200 --fit-n 300 --seed 12 --cues relief
# --policy-out policy.json`. Replace it with a policy fitted on the station's own captures
# before relying on it.
_DEFAULT: Final[dict[str, Any]] = {
    "format": "yingyan.pad_policy",
    "format_version": 1,
    "version": "pad-8c2091bd37ad",
    "gates": ["epipolar", "distance", "nir", "rgb_texture"],
    "cues": ["relief"],
    "means": [1.2505686938594398],
    "stds": [0.6284960992555273],
    "weights": [1.3828634129693669],
    "bias": 2.6584172578587006,
    "threshold": 0.04709245678761764,
    "target_bpcer": 0.01,
    "window": 3,
    "min_frames": 2,
    "fitted_on": "SIMULATED station (yingyan.liveness.simulator, rig 1022 px, B 50 mm): 300 bona "
    "fide frames (seed 32), 150 per attack species (flat_print, tilted_print, "
    "bent_print, folded_print, small_photo_close, phone_replay, tablet_replay, "
    "monitor_replay, nir_print; seed 37), NIR rendered. The rgb_texture gate is not "
    "fitted here (the simulator renders no colour images): its own rule, "
    "TextureConfig's mean P(live) >= 0.5 over its window, with its BPCER on top of "
    "this fit's",
    "fit_bpcer": 0.01,
    "clip": 5.0,
    "alternatives": [],
}


def default_policy() -> PadPolicy:
    """The shipped policy, fitted on the station simulator (say so: the figures it rests on
    are simulated); needs no model file and no scipy."""
    return _parse(_DEFAULT, "the default PAD policy")


def rendered_policy() -> PadPolicy:
    """The shipped policy for a station analysing images (`station.analysis`): fitted on
    rendered RGB + NIR pairs of real face photos (benchmarks/pad_rendered.py --fit-policy),
    so its thresholds are those of image-level cues, not of the point simulator's."""
    source = files("yingyan.liveness") / "policies" / "rendered_rgb_nir.json"
    return PadPolicy.from_dict(json.loads(source.read_text()), "rendered_rgb_nir.json")
