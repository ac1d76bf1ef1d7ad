"""Label-free score normalisation against demographic differentials. Two methods, one form.

Every method gives each template a shift and a scale, computed once per template (a probe at
query time, a gallery template at enrolment), and a comparison of templates a and b becomes

    s' = ((s - shift[a]) / scale[a] + (s - shift[b]) / scale[b]) / 2

`clusters` (fair score normalisation, after Terhörst et al., "Post-comparison mitigation of
demographic bias in face recognition using fair score normalization", 2020): spherical k-means
on a reference set; for each cluster, the threshold that gives the target FMR on impostor
pairs involving it, a few rounds; shift = that threshold minus the global one, scale 1. The
profile holds centroids and offsets only, no template of any reference person.

`cohort` (adaptive score normalisation, "AS-norm"): shift and scale are the mean and standard
deviation of the template's `top_k` highest scores against a reference cohort of other
people. Where the model packs different people close together (the groups that suffer the
most false matches), a template's nearest strangers score high and its scores are pulled down
by as much. Measured on held-out UTKFace it evens out group FMRs better than the clusters (see
the README), at a cost: the profile stores the cohort's templates, so it is biometric data of
the reference people and must come from data licensed for it and be protected like a gallery.

Clusters and cohorts are regions and samples of template space, not demographic groups: no
label is used, stored or inferred.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from yingyan.errors import DatasetError, YingyanError
from yingyan.evaluation.metrics import cosine_pairs, threshold_at_fmr

Vectors = npt.NDArray[np.float32]
FORMAT = "yingyan.fair-score/1"
METHODS = ("clusters", "cohort")


class CalibrationError(YingyanError):
    code = "calibration_error"


@dataclass(frozen=True, slots=True)
class TemplateNorms:
    """The per-template terms of the normalisation (see the module docstring)."""

    shift: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]

    def __getitem__(self, rows: npt.NDArray[np.int64] | slice) -> TemplateNorms:
        return TemplateNorms(self.shift[rows], self.scale[rows])


def normalise_matrix(
    raw: npt.NDArray[np.float64], a: TemplateNorms, b: TemplateNorms
) -> npt.NDArray[np.float64]:
    """All pairs: raw[i, j] compares template i of `a` with template j of `b`."""
    out: npt.NDArray[np.float64] = (
        (raw - a.shift[:, None]) / a.scale[:, None] + (raw - b.shift[None, :]) / b.scale[None, :]
    ) / 2
    return out


def normalise_pairs(
    raw: npt.NDArray[np.float64], a: TemplateNorms, b: TemplateNorms
) -> npt.NDArray[np.float64]:
    """Row by row: raw[k] compares template k of `a` with template k of `b`."""
    out: npt.NDArray[np.float64] = ((raw - a.shift) / a.scale + (raw - b.shift) / b.scale) / 2
    return out


@dataclass(frozen=True, slots=True)
class FairScoreProfile:
    """A versioned, self-describing calibration: what it was fitted on and how.

    Use in verify and identify (the gallery service): compute `norms` once for the probe, and
    for the candidates either once per gallery template at enrolment (kept beside it, keyed by
    the profile version) or from the candidates' templates when they are scored (one small
    matrix product each, so cheap for a shortlist); then normalise each raw cosine score with
    `normalise_pairs` (verify: one pair) or `normalise_matrix` (identify: probe x candidates)
    and compare it with a threshold on the *normalised* scale: `global_threshold` (the target
    FMR over the reference set's impostor pairs) or one recorded by `yingyan calibrate
    threshold --calibration`, never a cosine threshold. Normalisation changes the ranking, so
    identify should shortlist generously by raw score (e.g. 10x the wanted candidates) and
    re-rank by normalised score. A profile whose `model` differs from the templates' model must
    be refused; a new profile version means stored norms must be recomputed."""

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
    method: str = "clusters"
    cohort: list[list[float]] = field(default_factory=list)
    top_k: int = 0

    @property
    def version(self) -> str:
        """Content hash: two profiles with the same version normalise identically."""
        parts: list[object] = [self.centroids, self.deltas, self.model]
        if self.method != "clusters":  # unchanged hash for the first profiles
            parts += [self.method, self.cohort, self.top_k]
        body = json.dumps(parts)
        return hashlib.sha256(body.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        """How reports name the scores it gives."""
        return f"fair-score {self.name} v{self.version}"

    def _check(self, vectors: Vectors, dim: int) -> None:
        if vectors.ndim != 2 or vectors.shape[1] != dim:
            raise CalibrationError(
                f"profile {self.name!r} expects {dim}-d templates, got {vectors.shape}"
            )

    def offsets(self, vectors: Vectors) -> npt.NDArray[np.float64]:
        """`clusters` method: delta of each template's nearest centroid (the shift)."""
        c = np.asarray(self.centroids, dtype=np.float32)
        self._check(vectors, c.shape[1])
        deltas = np.asarray(self.deltas, dtype=np.float64)
        out: npt.NDArray[np.float64] = deltas[(vectors @ c.T).argmax(axis=1)]
        return out

    def norms(self, vectors: Vectors) -> TemplateNorms:
        """Each template's shift and scale: one small matrix product against the centroids or
        the cohort, so a probe costs one call and a gallery template one call at enrolment."""
        if self.method == "clusters":
            shift = self.offsets(vectors)
            return TemplateNorms(shift, np.ones_like(shift))
        cohort = np.asarray(self.cohort, dtype=np.float32)
        self._check(vectors, cohort.shape[1])
        return cohort_norms(vectors, cohort, self.top_k)

    def scores(self, a: Vectors, b: Vectors) -> npt.NDArray[np.float64]:
        """Normalised score matrix between two sets of unit templates."""
        raw: npt.NDArray[np.float64] = a.astype(np.float64) @ b.astype(np.float64).T
        return normalise_matrix(raw, self.norms(a), self.norms(b))

    def pair_scores(self, a: Vectors, b: Vectors) -> npt.NDArray[np.float64]:
        """Normalised scores of pairs row by row (a[k] with b[k])."""
        return normalise_pairs(cosine_pairs(a, b), self.norms(a), self.norms(b))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(profile_json(self))


_SELF = 0.9999  # a cohort score above this is the template itself


def cohort_norms(vectors: Vectors, cohort: Vectors, top_k: int) -> TemplateNorms:
    """Mean and standard deviation of each template's `top_k` highest scores against the
    cohort. A score of 1 (within float error) is the template itself, when it belongs to the
    cohort, and is left out so that fitting on the cohort sees what a stranger would."""
    s = vectors.astype(np.float32) @ cohort.T
    s[s > _SELF] = -np.inf
    k = min(top_k, cohort.shape[0] - 1)
    top = -np.partition(-s, k - 1, axis=1)[:, :k].astype(np.float64)
    scale = np.maximum(top.std(axis=1), 1e-6)
    return TemplateNorms(top.mean(axis=1), scale)


def load_profile(path: Path) -> FairScoreProfile:
    try:
        text = path.read_text()
    except OSError as exc:
        raise CalibrationError(f"cannot read calibration profile {path}: {exc}") from exc
    return parse_profile(text, where=str(path))


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


def _reference(vectors: Vectors, k: int, what: str) -> Vectors:
    """The reference templates as unit rows, refused if fewer than 2k (or 20) for `what`."""
    n = len(vectors)
    if n < 2 * k or n < 20:
        raise DatasetError(f"{n} reference templates are too few for {what}")
    x: Vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    return x


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
    x = _reference(vectors, clusters, f"{clusters} clusters")
    n = len(x)
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


def fit_cohort_profile(
    vectors: Vectors,
    *,
    model: str,
    name: str,
    top_k: int = 50,
    target_fmr: float = 1e-3,
    fitted_on: dict[str, object] | None = None,
) -> FairScoreProfile:
    """The `cohort` method: the reference templates (of *different* people, one each) become
    the cohort. Nothing is estimated but the normalised threshold at the target FMR over the
    reference set's own pairs, each template normalised against the others."""
    x = _reference(vectors, top_k, f"a top-{top_k} cohort")
    n = len(x)
    cohort = x.astype(float).round(6)
    norms = cohort_norms(x, cohort.astype(np.float32), top_k)
    iu = np.triu_indices(n, 1)
    scores = normalise_matrix(x.astype(np.float64) @ x.T.astype(np.float64), norms, norms)[iu]
    return FairScoreProfile(
        name=name,
        model=model,
        clusters=0,
        target_fmr=target_fmr,
        global_threshold=round(threshold_at_fmr(scores, target_fmr), 6),
        centroids=[],
        deltas=[],
        method="cohort",
        cohort=cohort.tolist(),
        top_k=top_k,
        fitted_on=(fitted_on or {}) | {"templates": n},
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def profile_json(profile: FairScoreProfile) -> str:
    """The stored form of a profile (a file, or a row of the store), with its version."""
    return json.dumps(asdict(profile) | {"version": profile.version}, indent=1)


def parse_profile(text: str, *, where: str) -> FairScoreProfile:
    """A profile from its stored form; refused if malformed or if its content does not hash
    to the version it claims (edited after fitting)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CalibrationError(f"{where}: not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CalibrationError(f"{where} is not a Yingyan fair-score profile ({FORMAT})")
    version = data.pop("version", None)
    if data.get("method", "clusters") not in METHODS:
        raise CalibrationError(f"{where}: unknown method {data.get('method')!r}")
    try:
        profile = FairScoreProfile(**data)
    except TypeError as exc:
        raise CalibrationError(f"{where}: malformed profile ({exc})") from None
    if version != profile.version:
        raise CalibrationError(f"{where}: content does not match its version {version}")
    return profile
