"""Fitting a fusion of recognizers on reference data (never on the data it is evaluated on).

Every reference image is embedded once by every member (one detection, each member's own
alignment); per member, the impostor scores (pairs of different people) give the mean and
spread that standardise its scores. With two members the weight is chosen on a grid for the
largest separation d' of genuine and impostor fused scores; with more, weights are equal.
What the fit measured (pairs, d', EER, thresholds at FMR 1e-3 / 1e-4 on the reference
impostors) is kept in the fusion file beside the weights."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from yingyan.config import EngineConfig
from yingyan.embedding.fusion import DLIB, FusionMember, FusionSpec, fusion_json
from yingyan.embedding.template import normalise
from yingyan.errors import ModelError
from yingyan.evaluation import metrics
from yingyan.privacy.files import atomic_write

WEIGHT_GRID = np.round(np.linspace(0.05, 0.95, 19), 2)


@dataclass(frozen=True, slots=True)
class MemberScores:
    genuine: npt.NDArray[np.float64]
    impostor: npt.NDArray[np.float64]


def member_of(config: EngineConfig, recognizer: str, manifest: str | None) -> FusionMember:
    """A not yet fitted member (weight 1, no standardisation) with its real model id."""
    from yingyan.engine import make_recognizer

    model = None if recognizer == DLIB else Path(recognizer).resolve()
    r = make_recognizer(config, model, manifest)
    return FusionMember(str(model or DLIB), str(r.embedder.model_id), 1.0, 0.0, 1.0, manifest)


def provisional(members: list[FusionMember], name: str) -> FusionSpec:
    """Equal shares, so each member's part of a fused vector is its unit vector / √n."""
    return FusionSpec(name=name, members=tuple(members), fitted_on="(not fitted)")


def split_members(
    fused: npt.NDArray[np.float32], dimensions: list[int]
) -> list[npt.NDArray[np.float32]]:
    """Each member's unit vectors back out of fused vectors (any positive shares)."""
    cuts = np.cumsum(dimensions)[:-1]
    return [normalise(part) for part in np.split(fused, cuts, axis=1)]


def pair_scores(vectors: npt.NDArray[np.float32], identities: list[str]) -> MemberScores:
    """Scores of every genuine and every impostor pair (each pair once)."""
    ids = np.asarray(identities)
    scores = vectors @ vectors.T
    upper = np.triu(np.ones(scores.shape, dtype=bool), k=1)
    same = ids[:, None] == ids[None, :]
    return MemberScores(
        scores[upper & same].astype(np.float64), scores[upper & ~same].astype(np.float64)
    )


def d_prime(genuine: npt.NDArray[np.float64], impostor: npt.NDArray[np.float64]) -> float:
    spread = math.sqrt((genuine.var() + impostor.var()) / 2)
    return float((genuine.mean() - impostor.mean()) / spread) if spread > 0 else 0.0


def _summary(s: MemberScores) -> dict[str, Any]:
    eer, _ = metrics.equal_error_rate(s.genuine, s.impostor)
    t3, t4 = metrics.thresholds_at_fmr(s.impostor, (1e-3, 1e-4))
    return {
        "d_prime": round(d_prime(s.genuine, s.impostor), 4),
        "eer": round(float(eer), 5),
        "threshold_fmr_1e-3": round(t3, 5),
        "threshold_fmr_1e-4": round(t4, 5),
    }


def fit_fusion(
    members: list[FusionMember],
    member_vectors: list[npt.NDArray[np.float32]],
    identities: list[str],
    *,
    name: str,
    fitted_on: str,
) -> FusionSpec:
    """The fitted fusion of `members`, from each member's templates of the reference images."""
    per = [pair_scores(v, identities) for v in member_vectors]
    genuine = min(len(s.genuine) for s in per)
    if genuine < 20 or min(len(s.impostor) for s in per) < 10_000:
        raise ModelError(
            f"the reference set gives {genuine} genuine pairs: a fusion needs at least 20 "
            "genuine and 10,000 impostor pairs (more images of the same people)"
        )
    stats = [(float(s.impostor.mean()), float(s.impostor.std())) for s in per]
    z = [
        ((s.genuine - mu) / sd, (s.impostor - mu) / sd)
        for s, (mu, sd) in zip(per, stats, strict=True)
    ]

    def fused(weights: list[float]) -> MemberScores:
        g = sum(w * zg for w, (zg, _) in zip(weights, z, strict=True))
        i = sum(w * zi for w, (_, zi) in zip(weights, z, strict=True))
        return MemberScores(np.asarray(g), np.asarray(i))

    if len(members) == 2:
        best = max(WEIGHT_GRID, key=lambda w: d_prime(*_pair(fused([1 - w, w]))))
        weights = [round(1 - float(best), 2), round(float(best), 2)]
    else:
        weights = [round(1 / len(members), 4)] * len(members)
    fitted = tuple(
        replace(m, weight=w, impostor_mean=round(mu, 6), impostor_std=round(sd, 6))
        for m, w, (mu, sd) in zip(members, weights, stats, strict=True)
    )
    spec = FusionSpec(name=name, members=fitted, fitted_on=fitted_on)
    fused_vectors = spec.fuse(member_vectors)
    reference = {
        "images": len(identities),
        "genuine_pairs": genuine,
        "impostor_pairs": len(per[0].impostor),
        "members": {m.model_id: _summary(s) for m, s in zip(fitted, per, strict=True)},
        "fused": _summary(pair_scores(fused_vectors, identities)),
        "weight_grid": [float(w) for w in WEIGHT_GRID] if len(members) == 2 else None,
    }
    return replace(
        spec, reference=reference, created_at=datetime.now(UTC).isoformat(timespec="seconds")
    )


def _pair(s: MemberScores) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    return s.genuine, s.impostor


def save_fusion(spec: FusionSpec, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, fusion_json(spec), mode=0o644)  # servers read it: never half-written


def with_threshold(spec: FusionSpec, row: dict[str, Any]) -> FusionSpec:
    """The fusion with one named threshold added or replaced: a new thresholds version, the
    same model id (templates do not change, so nothing needs re-enrolling)."""
    kept = tuple(t for t in spec.thresholds if t.get("name") != row["name"])
    updated = replace(spec, thresholds=(*kept, row), thresholds_version=spec.thresholds_version + 1)
    updated.threshold_set()  # validate before anything is written
    return updated
