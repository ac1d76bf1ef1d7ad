"""Fused templates: several recognizers' embeddings in one vector, so one inner product gives
the fused score and the gallery, index and search code stay as they are.

Each member's score is standardised by its impostor scores on reference data, (s - μ) / σ, and
the standardised scores are averaged with weights w. Since the offsets μ/σ are constants, the
ranking and every threshold only depend on Σ (w/σ) s. So member i's unit vector is scaled by
√a_i with a_i = (w_i/σ_i) / Σ_j (w_j/σ_j): the concatenation is again a unit vector and the
inner product of two of them is Σ a_i s_i, a cosine-like score in [-1, 1].

A fusion is versioned data (members by model id, weights, standardisation, what it was fitted
on), written by `yingyan calibrate fusion` and never fitted on evaluation data. Its model id is
a digest of the members, so templates of two fusions never mix.

Its shipped thresholds travel in the same file, versioned apart from the model id: measuring
them again (`yingyan calibrate threshold --into FUSION`) changes no template, so it must not
force re-enrolment; the thresholds carry their own version and digest, checked at load, so a
hand-edited threshold is refused like an edited member. Its impostor tail (the CompreFace
similarity scale, `comparison/similarity.py`) is presentation data of the same kind and is kept
the same way: `tail`, with its own version and digest and outside the model id, written by
`yingyan calibrate tail --into FUSION` (or `benchmarks/similarity_scale.py --fit --into`)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from yingyan.comparison.similarity import Tail, parse_tail, register_tail, tail_row
from yingyan.comparison.thresholds import ThresholdSet, parse_thresholds, register_thresholds
from yingyan.embedding.template import normalise
from yingyan.errors import ModelError, YingyanError
from yingyan.types import ModelId

FORMAT = "yingyan-fusion/1"
DLIB = "dlib_resnet_v1"  # the member name of the embedded recognizer


@dataclass(frozen=True, slots=True)
class FusionMember:
    """One recognizer in a fusion: `recognizer` is "dlib_resnet_v1" or a model file (relative
    to the fusion file), `model_id` the id its templates carry (checked at load)."""

    recognizer: str
    model_id: str
    weight: float
    impostor_mean: float
    impostor_std: float
    manifest: str | None = None


@dataclass(frozen=True, slots=True)
class FusionSpec:
    name: str
    members: tuple[FusionMember, ...]
    fitted_on: str
    reference: dict[str, Any] = field(default_factory=dict)  # what the fit measured
    created_at: str = ""
    thresholds: tuple[dict[str, Any], ...] = ()  # shipped operating points (rows)
    thresholds_version: int = 0  # bumped each time they are measured again
    tail: Tail | None = None  # the fused score's measured impostor tail
    tail_version: int = 0  # bumped each time it is measured again

    def __post_init__(self) -> None:
        if len(self.members) < 2:
            raise ModelError("a fusion needs at least two recognizers")
        for m in self.members:
            if not (m.weight > 0 and m.impostor_std > 0 and math.isfinite(m.impostor_mean)):
                raise ModelError(f"fusion member {m.recognizer}: weight and std must be > 0")

    @property
    def coefficients(self) -> npt.NDArray[np.float64]:
        """a_i: each member's share of the fused score (they sum to 1)."""
        raw = np.array([m.weight / m.impostor_std for m in self.members])
        return np.asarray(raw / raw.sum())

    @property
    def model_id(self) -> ModelId:
        body = json.dumps([asdict(m) for m in self.members], sort_keys=True).encode()
        return ModelId(f"fusion:{self.name}", hashlib.sha256(body).hexdigest()[:12])

    @property
    def thresholds_digest(self) -> str:
        body = json.dumps([self.thresholds_version, list(self.thresholds)], sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:12]

    @property
    def tail_digest(self) -> str:
        row = tail_row(self.tail) if self.tail is not None else None
        body = json.dumps([self.tail_version, row], sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:12]

    def threshold_set(self) -> ThresholdSet | None:
        """The thresholds as `get_threshold` serves them (None: none measured yet)."""
        return parse_thresholds(
            self.model_id.name, self.model_id.version, self.thresholds, f"fusion {self.name}"
        )

    def fuse(self, member_vectors: list[npt.NDArray[np.floating]]) -> npt.NDArray[np.float32]:
        """One fused unit vector per row from each member's vectors (same rows in each)."""
        if len(member_vectors) != len(self.members):
            raise ModelError(f"{len(member_vectors)} embeddings for {len(self.members)} members")
        parts = [
            normalise(v) * np.float32(math.sqrt(a))
            for v, a in zip(member_vectors, self.coefficients, strict=True)
        ]
        return np.asarray(np.concatenate(parts, axis=-1), dtype=np.float32)

    def standardised(self, fused_score: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The weighted mean of standardised member scores that a fused score stands for."""
        w = np.array([m.weight for m in self.members])
        mu = np.array([m.impostor_mean for m in self.members])
        sd = np.array([m.impostor_std for m in self.members])
        scale = float((w / sd).sum())
        offset = float((w * mu / sd).sum())
        return np.asarray((np.asarray(fused_score, dtype=np.float64) * scale - offset) / w.sum())


def fusion_json(spec: FusionSpec) -> str:
    body = {
        "format": FORMAT,
        "name": spec.name,
        "model_id": str(spec.model_id),
        "fitted_on": spec.fitted_on,
        "created_at": spec.created_at,
        "members": [asdict(m) for m in spec.members],
        "reference": spec.reference,
    }
    if spec.thresholds:
        body["thresholds"] = {
            "version": spec.thresholds_version,
            "digest": spec.thresholds_digest,
            "entries": list(spec.thresholds),
        }
    if spec.tail is not None:
        body["tail"] = {"version": spec.tail_version, "digest": spec.tail_digest} | tail_row(
            spec.tail
        )
    return json.dumps(body, indent=2)


def with_tail(spec: FusionSpec, tail: Tail) -> FusionSpec:
    """The fusion with its impostor tail measured again: a new tail version, the same model id
    (templates do not change, so nothing needs re-enrolling)."""
    if tail.model != spec.model_id.name:
        raise ModelError(f"a tail of {tail.model} is not one of fusion {spec.model_id.name}")
    return replace(spec, tail=tail, tail_version=spec.tail_version + 1)


def _tail(doc: dict[str, Any], name: str, path: Path) -> tuple[Tail | None, int, str | None]:
    """The file's tail entry: (tail, version, digest as written)."""
    entry = doc.get("tail")
    if entry is None:
        return None, 0, None
    if not isinstance(entry, dict) or "version" not in entry:
        raise ModelError(f"fusion file {path}: malformed tail (a table with a version)")
    row = {k: v for k, v in entry.items() if k not in ("version", "digest")}
    try:
        tail = parse_tail(f"fusion:{name}", row, f"fusion file {path}")
        version = int(entry["version"])
    except YingyanError as exc:
        raise ModelError(exc.message) from None
    except (TypeError, ValueError) as exc:
        raise ModelError(f"fusion file {path}: malformed tail version ({exc})") from None
    return tail, version, entry.get("digest")


def load_fusion(path: Path) -> FusionSpec:
    """A fusion file, validated; a clear ModelError for anything malformed. Its thresholds
    become known to `get_threshold` and its tail to `measured_tail` under its model id."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"fusion file {path}: cannot be read as JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelError(f"fusion file {path}: not a {FORMAT} file")
    thresholds = doc.get("thresholds", {"version": 0, "entries": []})
    tail, tail_version, tail_digest = _tail(doc, str(doc.get("name")), path)
    try:
        members = tuple(FusionMember(**m) for m in doc["members"])
        spec = FusionSpec(
            name=str(doc["name"]),
            members=members,
            fitted_on=str(doc["fitted_on"]),
            reference=dict(doc.get("reference", {})),
            created_at=str(doc.get("created_at", "")),
            thresholds=tuple(dict(t) for t in thresholds["entries"]),
            thresholds_version=int(thresholds["version"]),
            tail=tail,
            tail_version=tail_version,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"fusion file {path}: malformed ({exc})") from None
    if doc.get("model_id") not in (None, str(spec.model_id)):
        raise ModelError(f"fusion file {path}: edited after fitting (its model id differs)")
    if spec.thresholds and thresholds.get("digest") != spec.thresholds_digest:
        raise ModelError(
            f"fusion file {path}: thresholds edited by hand (their digest differs); "
            "measure them with `yingyan calibrate threshold --into`"
        )
    if spec.tail is not None and tail_digest != spec.tail_digest:
        raise ModelError(
            f"fusion file {path}: tail edited by hand (its digest differs); measure it with "
            "`yingyan calibrate tail --into`"
        )
    try:
        measured = spec.threshold_set()
    except YingyanError as exc:
        raise ModelError(f"fusion file {path}: {exc.message}") from None
    if measured is not None:
        register_thresholds(measured)
    if spec.tail is not None:
        register_tail(str(spec.model_id), spec.tail)
    return spec


def member_path(spec_path: Path, member: FusionMember) -> Path | None:
    """The model file of a member (None for the embedded dlib recognizer)."""
    if member.recognizer == DLIB:
        return None
    p = Path(member.recognizer)
    return p if p.is_absolute() else (Path(spec_path).parent / p).resolve()
