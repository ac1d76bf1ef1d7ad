"""Demographic differentials: error rates measured per group, never a classifier of groups.

Groups exist only as labels of evaluation data (a CSV, UTKFace file names, the LFW gender
lists). For each group the report gives failure to acquire, the quality distribution, the
false-match rate of *same-group* impostor pairs at the global thresholds that give the target
FMRs over all impostor pairs, the false non-match rate where identities exist, and the
worst/best group FMR ratio with a bootstrap 95% confidence interval (images, or identities when
known, resampled within each group).

A group whose measured FMR is 0 would make the ratio infinite; rates in ratios are floored at
half an error, 0.5 / pairs, and the floor is reported with the figure.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from yingyan.config import EngineConfig
from yingyan.detection import most_central
from yingyan.engine import Engine
from yingyan.errors import DatasetError, YingyanError
from yingyan.evaluation.lfw import image_dir, read_pairs
from yingyan.evaluation.metrics import fmr_at, threshold_at_fmr, thresholds_at_fmr

Vectors = npt.NDArray[np.float32]
ScoreFn = Callable[[Vectors, Vectors], npt.NDArray[np.float64]]
Curves = tuple[Vectors, Vectors]  # (genuine, impostor) scores of one group

UTK_RACE = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian"}
UTK_GENDER = {"0": "male", "1": "female"}


@dataclass(frozen=True, slots=True)
class LabelledImage:
    path: Path
    group: str  # e.g. "Black female"; only ever a label of evaluation data
    identity: str | None = None  # None: every image is a different person


def read_utkface(root: Path) -> list[LabelledImage]:
    """UTKFace crops named `age_gender_race_timestamp...`: group "<race> <gender>"."""
    out = []
    for path in sorted(root.glob("*.jpg")):
        parts = path.name.split("_")
        if len(parts) < 4 or parts[1] not in UTK_GENDER or parts[2] not in UTK_RACE:
            raise DatasetError(f"{path.name}: not a UTKFace name age_gender_race_*.jpg")
        out.append(LabelledImage(path, f"{UTK_RACE[parts[2]]} {UTK_GENDER[parts[1]]}"))
    if not out:
        raise DatasetError(f"no UTKFace images under {root}")
    return out


def read_lfw_gender(root: Path) -> list[LabelledImage]:
    """LFW images with the per-image gender lists (`gender/{male,female}_names.txt`); images
    listed under both are left out. Identity is the person's folder."""
    images = image_dir(root)
    lists = {g: root / "gender" / f"{g}_names.txt" for g in ("male", "female")}
    if not all(p.is_file() for p in lists.values()):
        raise DatasetError(f"LFW gender lists not found under {root / 'gender'}")
    labels: dict[str, set[str]] = {}
    for gender, path in lists.items():
        for name in path.read_text().split():
            labels.setdefault(name, set()).add(gender)
    out = []
    for name, genders in sorted(labels.items()):
        person = name.rsplit("_", 1)[0]
        path = images / person / name
        if len(genders) == 1 and path.is_file():
            out.append(LabelledImage(path, next(iter(genders)), person))
    return out


def read_lfw_unpaired(root: Path) -> list[LabelledImage]:
    """LFW images of the people who appear in no pair of `pairs.txt` (1,468 of 5,749): a
    reference set in LFW's own domain that shares no person with the view-2 protocol, for
    fitting a calibration that is then measured on view 2. No labels: group "unlabelled"."""
    images = image_dir(root)
    paired = {n.split("/")[0] for p in read_pairs(root / "pairs.txt") for n in (p.a, p.b)}
    return [
        LabelledImage(path, "unlabelled", path.parent.name)
        for path in sorted(images.glob("*/*.jpg"))
        if path.parent.name not in paired
    ]


def read_lfw_unpaired_gender(root: Path) -> list[LabelledImage]:
    """The gender-labelled LFW images of the people in no pair of `pairs.txt`: identity-labelled
    reference data (true impostor pairs only) that shares no person with view 2, for thresholds
    named by the worst group's same-group FMR."""
    unpaired = {im.path for im in read_lfw_unpaired(root)}
    return [im for im in read_lfw_gender(root) if im.path in unpaired]


def read_labels_csv(path: Path) -> list[LabelledImage]:
    """A CSV with columns `path`, optional `identity`, and one or more label columns; the group
    is the label values joined by spaces, in column order. Relative paths are from the CSV."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "path" not in rows[0]:
        raise DatasetError(f"{path}: needs a header with a 'path' column and label columns")
    labels = [c for c in rows[0] if c not in ("path", "identity")]
    if not labels:
        raise DatasetError(f"{path}: no label columns besides path/identity")
    out = []
    for line, row in enumerate(rows, start=2):
        if not row.get("path"):
            raise DatasetError(f"{path}:{line}: empty path")
        image = Path(row["path"])
        image = image if image.is_absolute() else path.parent / image
        group = " ".join((row.get(c) or "").strip() for c in labels)
        out.append(LabelledImage(image, group, (row.get("identity") or "").strip() or None))
    return out


# --- acquisition ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Acquired:
    """One image's template and quality, or a failure to acquire (no usable face)."""

    vector: Vectors | None
    quality: float | None
    error: str | None = None


def acquire(engine: Engine, path: str) -> Acquired:
    """Worker job: the most central face; none found is a failure to acquire (no fallback)."""
    try:
        image = engine.load(path)
        detections = engine.detect(image)
        det = most_central(detections, image.shape[1], image.shape[0])
        if det is None:
            return Acquired(None, None, "no face")
        face = engine.faces(image, [det])[0]
        assert face.template is not None
        return Acquired(face.template.vector, face.quality.score)
    except YingyanError as exc:
        return Acquired(None, None, exc.message)


# --- metrics on scores ------------------------------------------------------------------------


def cosine(a: Vectors, b: Vectors) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = a.astype(np.float64) @ b.astype(np.float64).T
    return out


def pair_mask(
    identities: Sequence[str | None], images: Sequence[int] | None = None
) -> npt.NDArray[np.bool_]:
    """Upper-triangle mask of impostor pairs: different people. Without an identity an image
    is its own person; `images` (default: positions) names the image, so that copies of one
    image drawn by a bootstrap are the same person, never an impostor pair."""
    images = range(len(identities)) if images is None else images
    ids = np.array([f"\0{i}" if x is None else x for x, i in zip(identities, images, strict=True)])
    mask: npt.NDArray[np.bool_] = np.triu(ids[:, None] != ids[None, :], k=1)
    return mask


def impostor_scores(
    vectors: Vectors, identities: Sequence[str | None], score: ScoreFn
) -> npt.NDArray[np.float64]:
    """Every impostor pair's score, as the report scores them (float64)."""
    out: npt.NDArray[np.float64] = score(vectors, vectors)[pair_mask(identities)]
    return out


def genuine_scores(
    vectors: Vectors, identities: Sequence[str | None], score: ScoreFn, cap: int = 10
) -> Vectors:
    """Same-identity pairs, at most `cap` images per identity (so that a few people with many
    images do not dominate)."""
    by_id: dict[str, list[int]] = {}
    for i, x in enumerate(identities):
        if x is not None and len(by_id.setdefault(x, [])) < cap:
            by_id[x].append(i)
    out = []
    for rows in by_id.values():
        if len(rows) > 1:
            s = score(vectors[rows], vectors[rows])
            out.append(s[np.triu_indices(len(rows), 1)])
    return np.concatenate(out).astype(np.float32) if out else np.empty(0, np.float32)


def floored_rate(errors: int, pairs: int) -> float:
    """A rate for ratios: half an error when none was observed."""
    return max(errors, 0.5) / pairs if pairs else math.nan


def worst_best(counts: dict[str, tuple[int, int]]) -> tuple[float, str, str]:
    """(ratio, worst, best) of groups' (errors, trials): rates floored at half an error; no
    error in any group is no differential (1.0), not a ratio of group sizes."""
    rates = {g: floored_rate(e, n) for g, (e, n) in counts.items()}
    worst, best = max(rates, key=rates.__getitem__), min(rates, key=rates.__getitem__)
    if not any(e for e, _ in counts.values()):
        return 1.0, worst, best
    return rates[worst] / rates[best], worst, best


@dataclass(frozen=True, slots=True)
class Differential:
    """Worst/best group FMR ratio at one target, with its bootstrap 95% interval."""

    target: float
    ratio: float
    low: float
    high: float
    worst: str
    best: str


def fmr_differential(
    scores_by_group: dict[str, npt.NDArray[np.float64]],
    identities_by_group: dict[str, list[str | None]],
    threshold: float,
    target: float,
    *,
    replicates: int = 200,
    seed: int = 0,
) -> Differential:
    """The ratio from each group's square score matrix, and its interval from resampling each
    group's images (identities, when known) with replacement."""

    def false_matches(s: npt.NDArray[np.float64], mask: npt.NDArray[np.bool_]) -> tuple[int, int]:
        return int(np.sum(s[mask] >= threshold)), int(mask.sum())

    ratio, worst, best = worst_best(
        {g: false_matches(s, pair_mask(identities_by_group[g])) for g, s in scores_by_group.items()}
    )
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(replicates):
        boot = {}
        for g, s in scores_by_group.items():
            take = _resample(identities_by_group[g], rng)
            ids = [identities_by_group[g][i] for i in take]
            boot[g] = false_matches(s[np.ix_(take, take)], pair_mask(ids, take.tolist()))
        ratios.append(worst_best(boot)[0])
    low, high = np.percentile(ratios, [2.5, 97.5]) if ratios else (math.nan, math.nan)
    return Differential(target, ratio, float(low), float(high), worst, best)


def _resample(identities: list[str | None], rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """Indices of a bootstrap sample: identities drawn with replacement (all their images),
    or images when there are no identities."""
    if all(x is None for x in identities):
        return rng.integers(0, len(identities), len(identities))
    by_id: dict[str, list[int]] = {}
    for i, x in enumerate(identities):
        by_id.setdefault(x or f"\0{i}", []).append(i)
    keys = list(by_id)
    chosen = rng.integers(0, len(keys), len(keys))
    return np.array([i for k in chosen for i in by_id[keys[k]]], dtype=np.int64)


# --- the report -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupStats:
    group: str
    images: int
    failures_to_acquire: int
    quality_p10: float | None
    quality_p50: float | None
    quality_p90: float | None
    impostor_pairs: int
    fmr: dict[str, float]  # target → same-group FMR at the global threshold
    genuine_pairs: int
    fnmr: dict[str, float | None]

    @property
    def fta(self) -> float:
        return self.failures_to_acquire / self.images if self.images else math.nan


@dataclass(frozen=True, slots=True)
class FairnessReport:
    dataset: str
    normalisation: str
    thresholds: dict[str, float]  # target FMR over all impostor pairs → score threshold
    groups: list[GroupStats]
    differentials: list[Differential]
    fta_ratio: float  # worst / best group failure to acquire (floored at half a failure)
    engine: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        for g, stats in zip(out["groups"], self.groups, strict=True):
            g["fta"] = stats.fta
        return out


def build_report(
    dataset: str,
    images: list[LabelledImage],
    acquired: list[Acquired],
    *,
    targets: Sequence[float] = (1e-3, 1e-4),
    score: ScoreFn = cosine,
    normalisation: str = "none",
    max_group_images: int = 1500,
    replicates: int = 200,
    seed: int = 0,
) -> tuple[FairnessReport, dict[str, Curves]]:
    """Per-group statistics from acquired templates. Groups larger than `max_group_images`
    are sampled (seeded) for impostor pairs; all impostor pairs of the sample, across groups,
    set the global thresholds. Also returns each group's (genuine, impostor) scores for plots."""
    rng = np.random.default_rng(seed)
    groups = sorted({im.group for im in images})
    ok = [i for i, a in enumerate(acquired) if a.vector is not None]
    if len(ok) < 2:
        raise DatasetError("fewer than two faces acquired: nothing to compare")
    members: dict[str, list[int]] = {g: [] for g in groups}
    for i in ok:
        members[images[i].group].append(i)
    for g, idx in members.items():
        if len(idx) > max_group_images:
            members[g] = sorted(rng.choice(idx, max_group_images, replace=False).tolist())
    sample = sorted(i for idx in members.values() for i in idx)
    # one score matrix: all its impostor pairs set the global thresholds, its diagonal blocks
    # are the groups' own pairs
    vectors = _stack([acquired[i] for i in sample])
    scores = score(vectors, vectors)
    everything = scores[pair_mask([images[i].identity for i in sample])]
    found = thresholds_at_fmr(everything, targets)  # one partition for every target
    thresholds = {f"{t:g}": v for t, v in zip(targets, found, strict=True)}
    position = {i: k for k, i in enumerate(sample)}

    stats, per_group_scores, per_group_ids, curves = [], {}, {}, {}
    for g in groups:
        all_idx = [i for i, im in enumerate(images) if im.group == g]
        q = [a.quality for a in (acquired[i] for i in all_idx) if a.quality is not None]
        at = [position[i] for i in members[g]]
        gids = [images[i].identity for i in members[g]]
        s = scores[np.ix_(at, at)]
        per_group_scores[g], per_group_ids[g] = s, gids
        imp = s[pair_mask(gids)]
        full = [i for i in all_idx if acquired[i].vector is not None]
        gen = genuine_scores(
            _stack([acquired[i] for i in full]),
            [images[i].identity for i in full],
            score,
        )
        curves[g] = (gen, imp.astype(np.float32))
        stats.append(
            GroupStats(
                group=g,
                images=len(all_idx),
                failures_to_acquire=sum(acquired[i].vector is None for i in all_idx),
                quality_p10=_pct(q, 10),
                quality_p50=_pct(q, 50),
                quality_p90=_pct(q, 90),
                impostor_pairs=int(imp.size),
                fmr={
                    k: float(np.mean(imp >= t)) if imp.size else math.nan
                    for k, t in thresholds.items()
                },
                genuine_pairs=int(gen.size),
                fnmr={
                    k: float(np.mean(gen < t)) if gen.size else None for k, t in thresholds.items()
                },
            )
        )
    differentials = [
        fmr_differential(
            per_group_scores,
            per_group_ids,
            thresholds[f"{t:g}"],
            t,
            replicates=replicates,
            seed=seed,
        )
        for t in targets
    ]
    fta_ratio = worst_best({s.group: (s.failures_to_acquire, s.images) for s in stats})[0]
    report = FairnessReport(dataset, normalisation, thresholds, stats, differentials, fta_ratio)
    return report, curves


def _stack(items: list[Acquired]) -> Vectors:
    if not items:
        return np.empty((0, 1), np.float32)
    return np.stack([_vector(a) for a in items]).astype(np.float32)


def _vector(a: Acquired) -> Vectors:
    assert a.vector is not None
    return a.vector


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def read_dataset(kind: str, root: Path, half: int | None = None) -> list[LabelledImage]:
    """`utkface` (a folder), `lfw-gender`, `lfw-unpaired` or `lfw-unpaired-gender` (the LFW
    folder) or `csv` (a labels
    file); `half` (0 or 1) keeps one of two fixed, disjoint halves, so that a calibration fitted
    on one half is evaluated on the other."""
    readers = {
        "utkface": read_utkface,
        "lfw-gender": read_lfw_gender,
        "lfw-unpaired": read_lfw_unpaired,
        "lfw-unpaired-gender": read_lfw_unpaired_gender,
        "csv": read_labels_csv,
    }
    if kind not in readers:
        raise DatasetError(f"unknown dataset kind {kind!r}: choose {', '.join(readers)}")
    if not root.exists():
        raise DatasetError(f"{root} does not exist")
    images = readers[kind](root)
    if half is None:
        return images
    if half not in (0, 1):
        raise DatasetError(f"half must be 0 or 1, not {half}")
    return [im for im in images if split_half(im) == half]


def split_half(image: LabelledImage) -> int:
    """0 or 1 from a hash of the identity (or the file name when there is none): all images of
    one person fall in the same half."""
    key = image.identity or image.path.name
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % 2


def acquire_dataset(
    kind: str, root: Path, half: int | None, config: EngineConfig, *, workers: int | None = None
) -> tuple[list[LabelledImage], list[Acquired]]:
    """Read a labelled dataset (or one half of it) and acquire every image's face."""
    images = read_dataset(kind, root, half)
    return images, acquire_all(images, config, workers=workers)


def acquire_all(
    images: list[LabelledImage],
    config: EngineConfig,
    *,
    workers: int | None = None,
    show_progress: bool = True,
) -> list[Acquired]:
    from yingyan.batch import map_images

    paths = [str(im.path) for im in images]
    return map_images(
        acquire, paths, config, workers=workers, description="faces", show_progress=show_progress
    )


@dataclass(frozen=True, slots=True)
class GroupThreshold:
    threshold: float
    worst_group: str  # the group that sets it
    group_fmr: dict[str, float]  # each group's same-group FMR at the threshold
    pairs: dict[str, int]


def worst_group_threshold(
    images: list[LabelledImage],
    acquired: list[Acquired],
    target_fmr: float,
    *,
    score: ScoreFn | None = None,
    max_group_images: int = 1500,
    seed: int = 0,
) -> GroupThreshold:
    """The lowest threshold meeting the target FMR on every group's same-group impostor
    pairs: the maximum of the per-group thresholds."""
    score = score or cosine
    rng = np.random.default_rng(seed)
    per_group: dict[str, npt.NDArray[np.float64]] = {}
    for g in sorted({im.group for im in images}):
        idx = [i for i, im in enumerate(images) if im.group == g and acquired[i].vector is not None]
        if len(idx) > max_group_images:
            idx = sorted(rng.choice(idx, max_group_images, replace=False).tolist())
        if len(idx) < 2:
            raise DatasetError(f"group {g!r} has fewer than two acquired faces")
        vec = _stack([acquired[i] for i in idx])
        per_group[g] = impostor_scores(vec, [images[i].identity for i in idx], score)
    thresholds = {g: threshold_at_fmr(s, target_fmr) for g, s in per_group.items()}
    worst = max(thresholds, key=thresholds.__getitem__)
    t = thresholds[worst]
    return GroupThreshold(
        t,
        worst,
        {g: fmr_at(s, t) for g, s in per_group.items()},
        {g: int(s.size) for g, s in per_group.items()},
    )
