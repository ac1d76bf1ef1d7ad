"""Fair score normalisation (after Terhörst et al., "Post-comparison mitigation of demographic
bias in face recognition using fair score normalization", 2020): label-free.

Fitting clusters a reference set of templates with spherical k-means and measures, for each
cluster, the score threshold that gives the target FMR on impostor pairs involving that
cluster (a few rounds, each on the scores the previous shifts left). Dense regions of the
embedding space (where different people look alike to the model) get high thresholds. A
comparison is then shifted by the clusters of its two templates:

    s' = s - (delta[c(a)] + delta[c(b)]) / 2,   delta[c] = threshold[c] - threshold[all]

so one global threshold on s' gives about the same FMR in every cluster. Clusters are
regions of template space, not demographic groups: no label is used, stored or inferred.
The profile holds centroids and offsets only, no template of any reference person.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from yingyan.errors import DatasetError, YingyanError
from yingyan.evaluation.metrics import threshold_at_fmr

Vectors = npt.NDArray[np.float32]
FORMAT = "yingyan.fair-score/1"


class CalibrationError(YingyanError):
    code = "calibration_error"


@dataclass(frozen=True, slots=True)
class FairScoreProfile:
    """A versioned, self-describing calibration: what it was fitted on and how."""

    name: str
    model: str  # templates of other models are refused
    clusters: int
    target_fmr: float
    global_threshold: float
    centroids: list[list[float]]
    deltas: list[float]
    fitted_on: dict[str, object]
    created: str
    rounds: int = 1
    format: str = FORMAT

    @property
    def version(self) -> str:
        """Content hash: two profiles with the same version normalise identically."""
        body = json.dumps([self.centroids, self.deltas, self.model])
        return hashlib.sha256(body.encode()).hexdigest()[:12]

    def offsets(self, vectors: Vectors) -> npt.NDArray[np.float64]:
        """delta of each template's nearest centroid."""
        c = np.asarray(self.centroids, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != c.shape[1]:
            raise CalibrationError(
                f"profile {self.name!r} expects {c.shape[1]}-d templates, got {vectors.shape}"
            )
        deltas = np.asarray(self.deltas, dtype=np.float64)
        out: npt.NDArray[np.float64] = deltas[(vectors @ c.T).argmax(axis=1)]
        return out

    def scores(self, a: Vectors, b: Vectors) -> npt.NDArray[np.float64]:
        """Normalised score matrix between two sets of unit templates."""
        raw: npt.NDArray[np.float64] = a.astype(np.float64) @ b.astype(np.float64).T
        return raw - (self.offsets(a)[:, None] + self.offsets(b)[None, :]) / 2

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = asdict(self) | {"version": self.version}
        path.write_text(json.dumps(data, indent=1))


def load_profile(path: Path) -> FairScoreProfile:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"cannot read calibration profile {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CalibrationError(f"{path} is not a Yingyan fair-score profile ({FORMAT})")
    version = data.pop("version", None)
    profile = FairScoreProfile(**data)
    if version != profile.version:
        raise CalibrationError(f"{path}: content does not match its version {version}")
    return profile


def spherical_kmeans(
    x: Vectors, k: int, *, iterations: int = 50, seed: int = 0
) -> tuple[Vectors, npt.NDArray[np.int64]]:
    """k-means on the unit sphere (cosine), k-means++ seeding; returns centroids, labels."""
    rng = np.random.default_rng(seed)
    centroids = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = 1 - np.max(x @ np.array(centroids).T, axis=1)
        p = np.maximum(d, 0) ** 2
        centroids.append(x[rng.choice(len(x), p=p / p.sum())])
    c = np.array(centroids, dtype=np.float32)
    labels = np.zeros(len(x), np.int64)
    for _ in range(iterations):
        new = (x @ c.T).argmax(axis=1)
        if np.array_equal(new, labels) and _ > 0:
            break
        labels = new
        for j in range(k):
            members = x[labels == j]
            if len(members):
                m = members.mean(axis=0)
                c[j] = m / np.linalg.norm(m)
    return c, labels


def fit_profile(
    vectors: Vectors,
    *,
    model: str,
    name: str,
    clusters: int = 40,
    target_fmr: float = 1e-3,
    fitted_on: dict[str, object] | None = None,
    min_pairs: int = 200,
    rounds: int = 3,
    seed: int = 0,
) -> FairScoreProfile:
    """Fit on reference templates of *different* people (e.g. one image per person)."""
    n = len(vectors)
    if n < 2 * clusters or n < 20:
        raise DatasetError(f"{n} reference templates are too few for {clusters} clusters")
    x = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    centroids, labels = spherical_kmeans(x, clusters, seed=seed)
    iu = np.triu_indices(n, 1)
    raw = (x @ x.T)[iu]
    la, lb = labels[iu[0]], labels[iu[1]]
    deltas = np.zeros(clusters)
    overall = threshold_at_fmr(raw, target_fmr)
    for _ in range(rounds):  # each round corrects what the previous shifts left uneven
        scores = raw - (deltas[la] + deltas[lb]) / 2
        overall = threshold_at_fmr(scores, target_fmr)
        for j in range(clusters):
            mine = scores[(la == j) | (lb == j)]  # pairs involving the cluster
            # too few pairs to measure a tail: no further shift
            if mine.size >= min_pairs:
                deltas[j] += threshold_at_fmr(mine, target_fmr) - overall
    return FairScoreProfile(
        name=name,
        model=model,
        clusters=clusters,
        target_fmr=target_fmr,
        global_threshold=overall,
        centroids=centroids.astype(float).round(6).tolist(),
        deltas=[round(float(d), 6) for d in deltas],
        rounds=rounds,
        fitted_on=(fitted_on or {}) | {"templates": n},
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
