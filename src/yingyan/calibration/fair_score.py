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
import math
import unicodedata
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from yingyan.errors import DatasetError, YingyanError
from yingyan.evaluation.metrics import cosine_pairs, threshold_at_fmr
from yingyan.privacy.files import atomic_write

Vectors = npt.NDArray[np.float32]
FORMAT = "yingyan.fair-score/2"
# Profiles versioned before every field was hashed: read from the store only (see parse_profile).
LEGACY_FORMAT = "yingyan.fair-score/1"
METHODS = ("clusters", "cohort")
MAX_NAME: Final = 200  # the name goes into audit entries and labels
MAX_MODEL: Final = 200  # the store's model columns
MAX_FITTED_ON: Final = 10_000  # characters of the provenance record, as JSON
_UNIT_TOLERANCE: Final = 1e-3  # centroids and cohort rows are unit vectors (rounded to 1e-6)


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

    _version: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_profile(self)
        object.__setattr__(self, "_version", _version_of(self))

    @property
    def version(self) -> str:
        """Content hash of every field (sha256): two profiles with the same version are the same
        profile, so no threshold, cohort or provenance can change under a version an audit
        entry names. Legacy profiles keep the shorter hash they were stored under."""
        return self._version

    @property
    def dimension(self) -> int:
        """The dimension of the templates it normalises (of its centroids or cohort)."""
        rows = self.centroids if self.method == "clusters" else self.cohort
        return len(rows[0])

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
        atomic_write(path, profile_json(self), mode=0o644)  # read by servers: never half-written


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
    return json.dumps(_content(profile) | {"version": profile.version}, indent=1)


def parse_profile(
    text: str, *, where: str, legacy: bool = False, dimension: int | None = None
) -> FairScoreProfile:
    """A profile from its stored form, refused (CalibrationError, a 4xx) if malformed, if its
    content does not hash to the version it claims (edited after fitting), or if its templates
    are not `dimension`-d. `legacy`: also read the first format, whose version did not cover
    the threshold; only for rows already in the store (accepted, and audited, when uploaded),
    never for a new upload or file."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CalibrationError(f"{where}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CalibrationError(f"{where} is not a Yingyan fair-score profile ({FORMAT})")
    found = data.get("format")
    if found == LEGACY_FORMAT and not legacy:
        raise CalibrationError(
            f"{where} is a {LEGACY_FORMAT} profile, whose version does not cover its threshold: "
            "fit it again with this release (`yingyan calibrate fit`)"
        )
    if found not in (FORMAT, LEGACY_FORMAT):
        raise CalibrationError(f"{where} is not a Yingyan fair-score profile ({FORMAT})")
    version = data.pop("version", None)
    if data.get("method", "clusters") not in METHODS:
        raise CalibrationError(f"{where}: unknown method {_shown(data.get('method'))}")
    expected = {f.name for f in fields(FairScoreProfile) if f.init}
    if unknown := sorted(str(k) for k in set(data) - expected):
        raise CalibrationError(f"{where}: unknown fields {', '.join(map(_shown, unknown))}")
    try:
        profile = FairScoreProfile(**_typed(data))
    except TypeError as exc:  # a required field is missing
        raise CalibrationError(f"{where}: malformed profile ({exc})") from None
    except CalibrationError as exc:
        raise CalibrationError(f"{where}: {exc.message}") from None
    if version != profile.version:
        raise CalibrationError(f"{where}: content does not match its version {_shown(version)}")
    if dimension is not None and profile.dimension != dimension:
        raise CalibrationError(
            f"{where}: profile holds {profile.dimension}-d templates, the model gives {dimension}-d"
        )
    return profile


# -- validation --------------------------------------------------------------------------------

_FLOATS: Final = ("target_fmr", "global_threshold")


def _typed(data: dict[str, Any]) -> dict[str, Any]:
    """JSON numbers as the types fitting gives (an integral `2` threshold is the float 2.0), so
    a profile hashes the same after a round trip; anything else is left for the checks."""
    out = dict(data)
    for key in _FLOATS:
        if _is_number(out.get(key)):
            out[key] = float(out[key])
    for key in ("centroids", "cohort"):
        rows = out.get(key)
        if isinstance(rows, list) and all(
            isinstance(r, list) and all(_is_number(v) for v in r) for r in rows
        ):
            out[key] = [[float(v) for v in r] for r in rows]
    deltas = out.get("deltas")
    if isinstance(deltas, list) and all(_is_number(v) for v in deltas):
        out["deltas"] = [float(v) for v in deltas]
    return out


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: object) -> str:
    """A value quoted for a message: short, and printable whatever it holds."""
    text = ascii(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_text(value: object, what: str, limit: int) -> None:
    """Text that can go into an audit entry, a log line or a database column as it is: a
    non-empty string of at most `limit` characters, without control characters or lone
    surrogates (not encodable as UTF-8)."""
    if not isinstance(value, str) or not value.strip():
        raise CalibrationError(f"{what} must be a non-empty string")
    if len(value) > limit:
        raise CalibrationError(f"{what} has {len(value)} characters, at most {limit}")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise CalibrationError(f"{what} holds control characters or lone surrogates")


def _check_json(value: object, what: str) -> None:
    """Provenance: JSON objects, lists, finite numbers and encodable strings only."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise CalibrationError(f"{what} has a key that is not a string")
            _check_text(k, f"a key of {what}", MAX_NAME)
            _check_json(v, what)
    elif isinstance(value, list):
        for v in value:
            _check_json(v, what)
    elif isinstance(value, str):
        if any(unicodedata.category(c) == "Cs" for c in value):
            raise CalibrationError(f"{what} holds a lone surrogate")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise CalibrationError(f"{what} holds a number that is not finite")
    elif value is not None and not isinstance(value, int | bool):
        raise CalibrationError(f"{what} holds a {type(value).__name__}, not JSON")


def _matrix(rows: object, what: str) -> tuple[int, int]:
    """(rows, dimension) of a rectangular matrix of finite numbers whose rows are unit
    vectors; (0, 0) if empty."""
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise CalibrationError(f"{what} must be a list of rows of numbers")
    if not rows:
        return 0, 0
    width = len(rows[0])
    if width == 0 or any(len(r) != width for r in rows):
        raise CalibrationError(f"{what} is not rectangular: every row needs the same length")
    if not all(_is_number(v) for r in rows for v in r):
        raise CalibrationError(f"{what} holds values that are not numbers")
    array = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(array).all():
        raise CalibrationError(f"{what} holds NaN or infinite values")
    if np.abs(np.linalg.norm(array, axis=1) - 1).max() > _UNIT_TOLERANCE:
        raise CalibrationError(f"{what} holds rows that are not unit vectors")
    return len(rows), width


def _check_numbers(p: FairScoreProfile) -> None:
    for key in _FLOATS:
        value = getattr(p, key)
        if not _is_number(value) or not math.isfinite(value):
            raise CalibrationError(f"{key} must be a finite number, not {_shown(value)}")
    if not 0 < p.target_fmr < 1:
        raise CalibrationError(f"target_fmr must lie in (0, 1), not {p.target_fmr}")
    for key in ("clusters", "rounds", "top_k"):
        if not _is_int(getattr(p, key)):
            raise CalibrationError(f"{key} must be an integer, not {_shown(getattr(p, key))}")
    if p.rounds < 1:
        raise CalibrationError(f"rounds must be at least 1, not {p.rounds}")


def _check_method(p: FairScoreProfile) -> None:
    """The terms of the profile's method are well formed and the other method's are absent,
    so every stored number is one that scores use."""
    centroids, _ = _matrix(p.centroids, "centroids")
    cohort, _ = _matrix(p.cohort, "cohort")
    deltas = p.deltas
    if not isinstance(deltas, list) or not all(_is_number(d) for d in deltas):
        raise CalibrationError("deltas must be a list of numbers")
    if not all(math.isfinite(d) for d in deltas):
        raise CalibrationError("deltas hold NaN or infinite values")
    if p.method == "clusters":
        if centroids < 1 or p.clusters != centroids or len(deltas) != centroids:
            raise CalibrationError(
                f"a clusters profile needs as many centroids as deltas as `clusters` "
                f"({centroids}, {len(deltas)}, {p.clusters})"
            )
        if cohort or p.top_k != 0:
            raise CalibrationError("a clusters profile holds no cohort and no top_k")
        return
    if cohort < 2:
        raise CalibrationError(f"a cohort profile needs at least 2 cohort templates, not {cohort}")
    if not 1 <= p.top_k <= cohort:
        raise CalibrationError(f"top_k must lie in [1, {cohort}] (the cohort size), not {p.top_k}")
    if centroids or deltas or p.clusters != 0:
        raise CalibrationError("a cohort profile holds no centroids, deltas or clusters")


def _check_profile(p: FairScoreProfile) -> None:
    """Everything a score or a decision reads is well formed, so a stored profile can never
    make a search fail: raised as CalibrationError (a 4xx) where the profile is made."""
    if p.format not in (FORMAT, LEGACY_FORMAT):
        raise CalibrationError(f"format must be {FORMAT}, not {_shown(p.format)}")
    if p.method not in METHODS:
        raise CalibrationError(f"unknown method {_shown(p.method)}")
    _check_text(p.name, "the profile name", MAX_NAME)
    _check_text(p.model, "the model", MAX_MODEL)
    _check_text(p.created, "created", 64)
    if not isinstance(p.fitted_on, dict):
        raise CalibrationError("fitted_on must be a JSON object")
    _check_json(p.fitted_on, "fitted_on")
    if len(json.dumps(p.fitted_on)) > MAX_FITTED_ON:
        raise CalibrationError(f"fitted_on is longer than {MAX_FITTED_ON} characters as JSON")
    _check_numbers(p)
    _check_method(p)


def _content(p: FairScoreProfile) -> dict[str, object]:
    """The profile's fields, as stored and hashed."""
    return {f.name: getattr(p, f.name) for f in fields(p) if f.init}


def _version_of(p: FairScoreProfile) -> str:
    if p.format == LEGACY_FORMAT:
        return _legacy_version(p)
    body = json.dumps(_content(p), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(body.encode()).hexdigest()


def _legacy_version(p: FairScoreProfile) -> str:
    """The first format's hash (normalisation terms and model only), kept so that profiles
    stored under it still load under the version galleries and audit entries name."""
    parts: list[object] = [p.centroids, p.deltas, p.model]
    if p.method != "clusters":
        parts += [p.method, p.cohort, p.top_k]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]
