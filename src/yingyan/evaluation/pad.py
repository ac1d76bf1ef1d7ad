"""Presentation-attack detection error rates as ISO/IEC 30107-3 defines them.

A presentation is bona fide or an attack of one PAI species (a print, a phone replay, ...).
The PAD subsystem either scores it (higher = more bona fide; classified bona fide when
score >= threshold) or gives no response: an abstain ("come closer") or a failure to acquire
(no face found). Error rates are computed over the presentations it responded to; the
non-responses are reported on their own (APNRR per species, BPNRR), never as errors, so that
neither a refusal to decide nor a missed face is hidden inside APCER or BPCER.

APCER is given per species and for the worst species (APCER_max), never only pooled: pooling
lets many presentations of an easy species hide a hard one. Operating points at a target rate
take the threshold the target allows exactly: "BPCER at APCER = 5%" (BPCER20) is the BPCER at
the lowest threshold whose APCER is at most 5%, for one species, or for every species at once
(the worst species decides). Tied scores are never split: a threshold accepts all of them or
none.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast, get_args

import numpy as np
import numpy.typing as npt

from yingyan.errors import DatasetError
from yingyan.evaluation.metrics import error_curve

BONA_FIDE: Final = "bona_fide"
_BONA_FIDE_NAMES: Final = frozenset({"bona_fide", "bona-fide", "bona fide", "bonafide"})
Outcome = Literal["scored", "abstain", "fta"]
OUTCOMES: Final[tuple[str, ...]] = get_args(Outcome)
APCER_TARGETS: Final = (0.01, 0.05)  # BPCER at APCER = 1%, 5% (the latter is BPCER20)
BPCER_TARGETS: Final = (0.01,)  # APCER at BPCER = 1%
_EPS: Final = 1e-9  # 0.29 * 100 is 28.999999999999996 in floating point, not 29
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Presentation:
    """One presentation to the PAD subsystem and what it answered. `score` is required when
    it was scored and ignored otherwise (an abstaining cue may still log one)."""

    species: str  # BONA_FIDE or the attack's PAI species
    outcome: Outcome = "scored"
    score: float | None = None

    def __post_init__(self) -> None:
        if not self.species:
            raise DatasetError("a presentation needs a species (bona_fide or an attack)")
        if self.outcome not in OUTCOMES:
            raise DatasetError(f"outcome {self.outcome!r}: choose one of {OUTCOMES}")
        if self.outcome == "scored" and (self.score is None or not math.isfinite(self.score)):
            raise DatasetError(f"a scored presentation needs a finite score, not {self.score}")

    @property
    def bona_fide(self) -> bool:
        return self.species == BONA_FIDE


def species_label(raw: str) -> str:
    """The canonical species name: the spellings of bona fide become BONA_FIDE."""
    name = raw.strip()
    return BONA_FIDE if name.lower() in _BONA_FIDE_NAMES else name


@dataclass(frozen=True, slots=True)
class Counts:
    """What the subsystem answered to one species' presentations."""

    presentations: int
    scored: int
    abstains: int
    failures_to_acquire: int

    @property
    def non_response_rate(self) -> float:
        """APNRR for an attack species, BPNRR for bona fide."""
        missing = self.abstains + self.failures_to_acquire
        return missing / self.presentations if self.presentations else 0.0


@dataclass(frozen=True, slots=True)
class BpcerAtApcer:
    """BPCER at the lowest threshold whose APCER is at most `target` (of one species, or of
    the worst species). `resolved` is False when fewer than 1/target attacks were scored: the
    target then only means "no attack accepted"."""

    target: float
    threshold: float
    bpcer: float
    apcer: float  # achieved at the threshold, <= target
    attacks: int
    resolved: bool


@dataclass(frozen=True, slots=True)
class ApcerAtBpcer:
    """APCER of each species at the highest threshold whose BPCER is at most `target`."""

    target: float
    threshold: float
    bpcer: float  # achieved, <= target
    apcer: dict[str, float]
    apcer_max: float
    worst_species: str
    resolved: bool  # at least 1/target bona fide presentations were scored


@dataclass(frozen=True, slots=True)
class DetCurve:
    """APCER and BPCER of one species at every distinct threshold, ascending; the last
    threshold (None) lies above every score: nothing accepted."""

    species: str
    thresholds: list[float | None]
    apcer: list[float]
    bpcer: list[float]


@dataclass(frozen=True, slots=True)
class SpeciesResult:
    species: str
    counts: Counts
    apcer: float | None  # at the report's threshold; None when none was scored
    bpcer_at_apcer: list[BpcerAtApcer]  # at this species' own thresholds


@dataclass(frozen=True, slots=True)
class PadReport:
    name: str
    threshold: float
    bona_fide: Counts
    bpcer: float
    species: list[SpeciesResult]
    apcer_max: float
    worst_species: str
    bpcer_at_apcer: list[BpcerAtApcer]  # every species held to the target: the worst decides
    apcer_at_bpcer: list[ApcerAtBpcer]
    non_response_rate: float  # over every presentation
    det: list[DetCurve]
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["bona_fide"]["non_response_rate"] = self.bona_fide.non_response_rate
        for s, row in zip(self.species, out["species"], strict=True):
            row["counts"]["non_response_rate"] = s.counts.non_response_rate
        return out


def _allowed(target: float, n: int) -> int:
    """How many of n presentations a rate of at most `target` allows."""
    return min(n, math.floor(target * n + _EPS))


def apcer(attack: Sequence[float] | FloatArray, threshold: float) -> float:
    """Share of attack presentations classified bona fide (score >= threshold)."""
    a = np.asarray(attack, dtype=np.float64)
    return float(np.mean(a >= threshold)) if a.size else math.nan


def bpcer(bona_fide: Sequence[float] | FloatArray, threshold: float) -> float:
    """Share of bona fide presentations classified as attacks (score < threshold)."""
    b = np.asarray(bona_fide, dtype=np.float64)
    return float(np.mean(b < threshold)) if b.size else math.nan


def threshold_for_apcer(attack: Sequence[float] | FloatArray, target: float) -> float:
    """The lowest threshold with APCER <= target: just above the (k+1)-th highest attack
    score, k the attacks the target allows (ties at that score are all rejected)."""
    a = np.sort(np.asarray(attack, dtype=np.float64))
    k = _allowed(target, a.size)
    if k >= a.size:
        return float(a[0])
    return float(np.nextafter(a[a.size - k - 1], np.inf))


def threshold_for_bpcer(bona_fide: Sequence[float] | FloatArray, target: float) -> float:
    """The highest threshold with BPCER <= target: the (m+1)-th lowest bona fide score, m the
    rejections the target allows (ties at that score are all accepted)."""
    b = np.sort(np.asarray(bona_fide, dtype=np.float64))
    m = _allowed(target, b.size)
    if m >= b.size:
        return math.inf
    return float(b[m])


def det_curve(species: str, bona_fide: FloatArray, attack: FloatArray) -> DetCurve:
    c = error_curve(bona_fide, attack)  # genuine = bona fide, impostor = attack
    thresholds: list[float | None] = [float(t) if math.isfinite(t) else None for t in c.thresholds]
    return DetCurve(species, thresholds, c.fmr.tolist(), c.fnmr.tolist())


def _counts(group: Sequence[Presentation]) -> Counts:
    return Counts(
        presentations=len(group),
        scored=sum(p.outcome == "scored" for p in group),
        abstains=sum(p.outcome == "abstain" for p in group),
        failures_to_acquire=sum(p.outcome == "fta" for p in group),
    )


def _scores(group: Sequence[Presentation]) -> FloatArray:
    return np.array([p.score for p in group if p.outcome == "scored"], dtype=np.float64)


def _worst(rates: dict[str, float]) -> tuple[str, float]:
    """The species with the highest rate; ties go to the first name in sorted order."""
    name = max(sorted(rates), key=lambda s: rates[s])
    return name, rates[name]


def evaluate(
    presentations: Iterable[Presentation],
    *,
    threshold: float = 0.5,
    apcer_targets: Sequence[float] = APCER_TARGETS,
    bpcer_targets: Sequence[float] = BPCER_TARGETS,
    name: str = "",
) -> PadReport:
    """Every ISO/IEC 30107-3 rate of one set of presentations; needs scored bona fide
    presentations and at least one scored attack species."""
    if not math.isfinite(threshold):
        raise DatasetError("the threshold must be a finite number")
    for t in (*apcer_targets, *bpcer_targets):
        if not 0 < t < 1:
            raise DatasetError(f"target rates lie strictly between 0 and 1, not {t}")
    by_species: dict[str, list[Presentation]] = {}
    for p in presentations:
        by_species.setdefault(p.species, []).append(p)
    bona_group = by_species.pop(BONA_FIDE, [])
    bona = _scores(bona_group)
    if bona.size == 0:
        raise DatasetError("no scored bona fide presentation: BPCER cannot be measured")
    attacks = {s: _scores(g) for s, g in sorted(by_species.items())}
    scored = {s: a for s, a in attacks.items() if a.size}
    if not scored:
        raise DatasetError("no scored attack presentation: APCER cannot be measured")
    notes = [
        f"{s}: no presentation was scored; it is left out of APCER_max"
        for s in attacks
        if s not in scored
    ]

    species = []
    for s, group in sorted(by_species.items()):
        a = attacks[s]
        own = [_bpcer_at(bona, {s: a}, t) for t in apcer_targets] if a.size else []
        rate = apcer(a, threshold) if a.size else None
        species.append(SpeciesResult(s, _counts(group), rate, own))
    worst, apcer_max = _worst({s: apcer(a, threshold) for s, a in scored.items()})
    pooled = [p for g in (bona_group, *by_species.values()) for p in g]
    non_response = sum(p.outcome != "scored" for p in pooled) / len(pooled)
    joint = [_bpcer_at(bona, scored, t) for t in apcer_targets]
    for op in joint:
        if not op.resolved:
            notes.append(
                f"APCER {op.target:g}: a species has fewer than {1 / op.target:g} scored "
                "attacks, so the target only means that no attack of it is accepted"
            )
    at_bpcer = [_apcer_at(bona, scored, t) for t in bpcer_targets]
    for ap in at_bpcer:
        if not ap.resolved:
            notes.append(
                f"BPCER {ap.target:g}: fewer than {1 / ap.target:g} scored bona fide "
                "presentations, so the target only means that none is rejected"
            )
    return PadReport(
        name=name,
        threshold=threshold,
        bona_fide=_counts(bona_group),
        bpcer=bpcer(bona, threshold),
        species=species,
        apcer_max=apcer_max,
        worst_species=worst,
        bpcer_at_apcer=joint,
        apcer_at_bpcer=at_bpcer,
        non_response_rate=non_response,
        det=[det_curve(s, bona, a) for s, a in scored.items()],
        notes=notes,
    )


def _bpcer_at(bona: FloatArray, attacks: dict[str, FloatArray], target: float) -> BpcerAtApcer:
    """BPCER where every given species has APCER <= target: the highest of their own
    lowest thresholds (APCER only falls as the threshold rises)."""
    t = max(threshold_for_apcer(a, target) for a in attacks.values())
    achieved = max(apcer(a, t) for a in attacks.values())
    fewest = min(a.size for a in attacks.values())
    return BpcerAtApcer(target, t, bpcer(bona, t), achieved, fewest, fewest * target >= 1 - _EPS)


def _apcer_at(bona: FloatArray, attacks: dict[str, FloatArray], target: float) -> ApcerAtBpcer:
    t = threshold_for_bpcer(bona, target)
    rates = {s: apcer(a, t) for s, a in attacks.items()}
    worst, top = _worst(rates)
    resolved = bona.size * target >= 1 - _EPS
    return ApcerAtBpcer(target, t, bpcer(bona, t), rates, top, worst, resolved)


# -- scores files --------------------------------------------------------------------------


def _presentation(raw: dict[str, Any], where: str) -> Presentation:
    species = raw.get("species")
    if not isinstance(species, str) or not species.strip():
        raise DatasetError(f"{where}: 'species' must be a non-empty text")
    score = raw.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
        raise DatasetError(f"{where}: 'score' must be a number or empty, not {score!r}")
    outcome = raw.get("outcome") or ("scored" if score is not None else None)
    if outcome is None:
        raise DatasetError(f"{where}: no score and no outcome (scored, abstain or fta)")
    if not isinstance(outcome, str) or outcome.strip().lower() not in OUTCOMES:
        raise DatasetError(f"{where}: outcome {outcome!r}: choose one of {OUTCOMES}")
    try:
        return Presentation(
            species_label(species),
            cast(Outcome, outcome.strip().lower()),
            None if score is None else float(score),
        )
    except DatasetError as exc:
        raise DatasetError(f"{where}: {exc.message}") from None


def _csv_rows(text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or "species" not in reader.fieldnames:
        raise DatasetError("the CSV needs a header with species, score and outcome columns")
    rows: list[dict[str, Any]] = []
    for k, row in enumerate(reader, start=2):
        cell = (row.get("score") or "").strip()
        try:
            score = float(cell) if cell else None
        except ValueError:
            raise DatasetError(f"line {k}: score {cell!r} is not a number") from None
        rows.append(
            {"species": row.get("species") or "", "score": score, "outcome": row.get("outcome")}
        )
    return rows


def read_presentations(path: Path) -> list[Presentation]:
    """Presentations from a JSON file (a list of {species, score, outcome} objects, or an
    object holding one under "presentations") or a CSV with those columns. `outcome` is
    scored, abstain or fta (failure to acquire); it may be left out when a score is given."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read the scores file {path}: {exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(text)
        where = "line {}"
        first = 2
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(data, dict):
            data = data.get("presentations")
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise DatasetError(f"{path}: expected a list of presentation objects")
        rows, where, first = data, "presentation {}", 0
    else:
        raise DatasetError(f"{path}: scores file must be .json or .csv")
    if not rows:
        raise DatasetError(f"{path}: no presentations")
    return [_presentation(r, where.format(k)) for k, r in enumerate(rows, start=first)]


def presentation_rows(presentations: Iterable[Presentation]) -> list[dict[str, Any]]:
    """The JSON form `read_presentations` reads back."""
    return [{"species": p.species, "score": p.score, "outcome": p.outcome} for p in presentations]
