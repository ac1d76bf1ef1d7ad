"""The LFW verification protocol.

View 2 (`pairs.txt`): 10 folds of 300 same + 300 different pairs; for each fold the threshold
is chosen on the other nine and accuracy measured on it; mean ± std over folds is reported.
View 1 (`pairsDevTrain.txt` / `pairsDevTest.txt`): one set each, for development: thresholds
are tuned on DevTrain and frozen for DevTest.

Every image of every pair is evaluated: when no face is detected the centre box is used (LFW
guarantees a centred face), and the count of such images is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from yingyan.batch import map_images
from yingyan.config import EngineConfig
from yingyan.detection import most_central
from yingyan.embedding import normalise, recipe_name, tta_views
from yingyan.engine import Engine
from yingyan.errors import DatasetError, YingyanError
from yingyan.evaluation import metrics
from yingyan.evaluation.metrics import cosine_pairs

IMAGE_DIRS = ("lfw-deepfunneled", "lfw_funneled", "lfw")

# Scores of pairs row by row: (n, d) and (n, d) templates -> n scores. A calibration (e.g. a
# fair-score profile's `pair_scores`) plugs in here.
PairScore = Callable[[npt.NDArray[np.float32], npt.NDArray[np.float32]], npt.NDArray[np.float64]]


@dataclass(frozen=True, slots=True)
class Pair:
    a: str  # image path relative to the image folder
    b: str
    same: bool
    fold: int


def image_dir(root: Path) -> Path:
    for name in IMAGE_DIRS:
        if (root / name).is_dir():
            return root / name
    raise DatasetError(f"no LFW image folder ({', '.join(IMAGE_DIRS)}) under {root}")


def _name(person: str, number: str) -> str:
    return f"{person}/{person}_{int(number):04d}.jpg"


def read_pairs(path: Path) -> list[Pair]:
    """Parse pairs.txt (header 'folds n') or a View-1 file (header 'n', one fold)."""
    if not path.is_file():
        raise DatasetError(f"pairs file not found: {path}")
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    try:
        header = [int(x) for x in lines[0]]
        folds, per = (header[0], header[1]) if len(header) == 2 else (1, header[0])
        pairs: list[Pair] = []
        for k, f in enumerate(lines[1:]):
            fold = k // (2 * per)
            if len(f) == 3:
                pairs.append(Pair(_name(f[0], f[1]), _name(f[0], f[2]), True, fold))
            elif len(f) == 4:
                pairs.append(Pair(_name(f[0], f[1]), _name(f[2], f[3]), False, fold))
            else:
                raise ValueError(f"line {k + 2}: expected 3 or 4 fields")
    except (ValueError, IndexError) as exc:
        raise DatasetError(f"{path}: malformed LFW pairs file ({exc})") from None
    if len(pairs) != folds * per * 2:
        raise DatasetError(f"{path}: header promises {folds * per * 2} pairs, found {len(pairs)}")
    return pairs


@dataclass(frozen=True, slots=True)
class ImageResult:
    """Raw descriptors of every test-time view of one LFW image's chip: the chip, its jittered
    copies, then the mirror of each (the order of `tta_views`)."""

    views: npt.NDArray[np.float32] | None
    fallback: bool
    error: str | None = None
    quality: float = 0.0
    # A fusion: each member's views side by side (columns split at `splits`), and the scale
    # √a_i of each member's unit vector in the fused template.
    splits: tuple[int, ...] = ()
    scales: tuple[float, ...] = ()

    def template_vector(self, *, flip: bool, jitter: int) -> npt.NDArray[np.float32]:
        """The engine's template from these views: all views averaged (flip), or the chip's
        own views only; for a fusion, each member's so and then fused."""
        assert self.views is not None
        return self.from_rows(slice(None) if flip else slice(0, jitter + 1))

    def from_rows(
        self, rows: slice | list[int], member: int | None = None
    ) -> npt.NDArray[np.float32]:
        """The template of the chosen views (rows); for a fusion, of one member alone if
        `member` is given, else fused."""
        assert self.views is not None
        views = self.views[rows]
        if not self.splits:
            return normalise(normalise(views).mean(axis=0))
        parts = np.split(views, self.splits, axis=1)
        if member is not None:
            return normalise(normalise(parts[member]).mean(axis=0))
        fused = [
            normalise(normalise(v).mean(axis=0)) * s
            for v, s in zip(parts, self.scales, strict=True)
        ]
        return np.concatenate(fused).astype(np.float32)


def extract_one(engine: Engine, path: str) -> ImageResult:
    """Worker job: the most central face of one image (centre box if none), every view of its
    chip embedded in one batch."""
    try:
        image = engine.load(path)
        det = most_central(engine.detect(image), image.shape[1], image.shape[0])
        assert det is not None  # centre_fallback guarantees one
        face = engine.faces(image, [det], embed=False)[0]
        assert face.chip is not None
        jitter = engine.config.jitter
        if engine.fusion is None:
            views = engine.embedder.embed(tta_views(face.chip, flip=True, jitter=jitter))
            return ImageResult(views, det.detector == "centre-fallback", quality=face.quality.score)
        members = engine.view_vectors(engine.member_chips(image, det), jitter)
        return ImageResult(
            np.concatenate(members, axis=1),
            det.detector == "centre-fallback",
            quality=face.quality.score,
            splits=tuple(np.cumsum([m.shape[1] for m in members])[:-1].tolist()),
            scales=tuple(float(np.sqrt(a)) for a in engine.fusion.coefficients),
        )
    except YingyanError as exc:
        return ImageResult(None, False, exc.message)


def extract_images(
    images: Path,
    names: list[str],
    config: EngineConfig,
    *,
    known: Mapping[str, ImageResult] | None = None,
    workers: int | None = None,
    show_progress: bool = True,
) -> dict[str, ImageResult]:
    """`extract_one` for every image named relative to the image folder `images` (see
    `image_dir`), reusing `known` results (extracted with the same config) so that several
    protocols embed each image once."""
    missing = [n for n in names if not (images / n).is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} LFW images missing under {images}, e.g. {missing[0]}")
    known = known or {}
    todo = [n for n in names if n not in known]
    results = map_images(
        extract_one,
        [str(images / n) for n in todo],
        config.with_(centre_fallback=True, keep_chips=True),
        workers=workers,
        description="LFW images",
        show_progress=show_progress,
    )
    fresh = dict(zip(todo, results, strict=True))
    return {n: known[n] if n in known else fresh[n] for n in names}


@dataclass
class VariantResult:
    name: str
    fold_accuracies: list[float]
    fold_thresholds: list[float]
    eer: float
    eer_threshold: float
    tar_at_far: dict[str, float | None]
    genuine: npt.NDArray[np.float64] = field(repr=False)
    impostor: npt.NDArray[np.float64] = field(repr=False)

    def accuracy_at(self, threshold: float) -> float:
        """Accuracy over all pairs at a threshold frozen beforehand (e.g. tuned on DevTrain)."""
        return metrics.accuracy_at(self.genuine, self.impostor, threshold)

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.fold_accuracies))

    def as_dict(self) -> dict[str, object]:
        return {
            "variant": self.name,
            "accuracy_mean": round(self.mean, 5),
            "accuracy_std": round(self.std, 5),
            "fold_accuracies": [round(a, 5) for a in self.fold_accuracies],
            "fold_thresholds": [round(t, 5) for t in self.fold_thresholds],
            "eer": round(self.eer, 5),
            "eer_threshold": round(self.eer_threshold, 5),
            "tar_at_far": self.tar_at_far,
        }


def k_fold(
    scores: npt.NDArray[np.float64], same: npt.NDArray[np.bool_], folds: npt.NDArray[np.int_]
) -> tuple[list[float], list[float]]:
    """Per-fold (accuracies, thresholds); with a single fold, the threshold is tuned on it."""
    accs, thrs = [], []
    for k in np.unique(folds):
        test = folds == k
        train = ~test if np.any(~test) else test
        t, _ = metrics.best_accuracy_threshold(scores[train & same], scores[train & ~same])
        accs.append(metrics.accuracy_at(scores[test & same], scores[test & ~same], t))
        thrs.append(t)
    return accs, thrs


def evaluate_scores(name: str, scores: npt.NDArray[np.float64], pairs: list[Pair]) -> VariantResult:
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    accs, thrs = k_fold(scores, same, folds)
    g, i = scores[same], scores[~same]
    eer, eer_t = metrics.equal_error_rate(g, i)
    tars = {f"{far:g}": metrics.tar_at_far(g, i, far) for far in (1e-3, 1e-4)}
    return VariantResult(name, accs, thrs, eer, eer_t, tars, g, i)


@dataclass
class LfwReport:
    pairs_file: str
    n_pairs: int
    n_images: int
    fallback_images: int
    failed_images: list[str]
    config: dict[str, object]
    variants: list[VariantResult]

    def as_dict(self) -> dict[str, object]:
        return {
            "pairs_file": self.pairs_file,
            "n_pairs": self.n_pairs,
            "n_images": self.n_images,
            "centre_fallback_images": self.fallback_images,
            "failed_images": self.failed_images,
            "config": self.config,
            "variants": [v.as_dict() for v in self.variants],
        }


def euclidean_pairs(
    a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = -np.linalg.norm(a.astype(np.float64) - b, axis=1)
    return out


def _pair_scores(
    vecs: dict[str, npt.NDArray[np.float32]], pairs: list[Pair], score: PairScore = cosine_pairs
) -> npt.NDArray[np.float64]:
    """One score per pair; a pair with a failed image can only be a non-match."""
    out = np.full(len(pairs), -1e9)
    ok = [k for k, p in enumerate(pairs) if p.a in vecs and p.b in vecs]
    if ok:
        a = np.stack([vecs[pairs[k].a] for k in ok])
        b = np.stack([vecs[pairs[k].b] for k in ok])
        out[ok] = np.maximum(score(a, b), -1e9)
    return out


def run_lfw(
    root: Path,
    pairs_file: Path,
    config: EngineConfig,
    *,
    known: Mapping[str, ImageResult] | None = None,
    workers: int | None = None,
    show_progress: bool = True,
    calibration: tuple[str, PairScore] | None = None,
) -> LfwReport:
    """Embed every image of the protocol once and score each variant from the same descriptors:
    'plain' (one pass), 'flip' (chip + mirror averaged), 'flip+jitterK' (with K jittered views,
    when configured) and 'plain-euclidean-raw' (dlib's own distance on unnormalised
    descriptors, for reference). The configured recipe comes first. With a `calibration`
    (name, pair score), the configured recipe is also scored through it, as the second
    variant '<recipe>+<name>', so its accuracy cost is read against the same templates."""
    images = image_dir(root)
    pairs = read_pairs(pairs_file)
    names = sorted({p.a for p in pairs} | {p.b for p in pairs})
    extracted = extract_images(
        images, names, config, known=known, workers=workers, show_progress=show_progress
    )
    results = [extracted[n] for n in names]
    ok = {n: r for n, r in zip(names, results, strict=True) if r.views is not None}
    k = config.jitter + 1  # views per side (original, mirrored)
    plain = {n: r.from_rows([0]) for n, r in ok.items()}
    flip = {n: r.from_rows([0, k]) for n, r in ok.items()}
    templates = {"flip": flip, "plain": plain}
    variants = [
        evaluate_scores("flip", _pair_scores(flip, pairs), pairs),
        evaluate_scores("plain", _pair_scores(plain, pairs), pairs),
    ]
    fused = next((r for r in ok.values() if r.splits), None)
    if fused is None:
        raw = {n: r.views[0] for n, r in ok.items() if r.views is not None}
        variants.append(
            evaluate_scores("plain-euclidean-raw", _pair_scores(raw, pairs, euclidean_pairs), pairs)
        )
    else:  # each member alone, from the same views: the fusion's gain read in one run
        for i, member in enumerate(Engine(config).fusion.members):  # type: ignore[union-attr]
            alone = {n: r.from_rows([0, k], member=i) for n, r in ok.items()}
            variants.append(
                evaluate_scores(f"flip:{member.model_id}", _pair_scores(alone, pairs), pairs)
            )
    if config.jitter:
        full = {n: r.from_rows(slice(None)) for n, r in ok.items()}
        name = f"flip+jitter{config.jitter}"
        templates[name] = full
        variants.append(evaluate_scores(name, _pair_scores(full, pairs), pairs))
    primary = recipe_name(flip=config.flip, jitter=config.jitter)
    if not config.flip and config.jitter:
        primary = "plain"  # jitter without flip is not scored separately
    variants.sort(key=lambda v: v.name != primary)
    if calibration is not None:
        label, score = calibration
        calibrated = _pair_scores(templates[primary], pairs, score)
        variants.insert(1, evaluate_scores(f"{primary}+{label}", calibrated, pairs))
    return LfwReport(
        pairs_file=str(pairs_file),
        n_pairs=len(pairs),
        n_images=len(names),
        fallback_images=sum(r.fallback for r in results),
        failed_images=[n for n, r in zip(names, results, strict=True) if r.error],
        config={
            "detector": config.detector,
            "upsample": config.pyramid_upsample,
            "jitter": config.jitter,
            "flip": config.flip,
            "backend": config.backend,
            "recognizer_model": str(config.recognizer_model or "dlib_resnet_v1"),
            "fusion": str(config.fusion) if config.fusion else None,
        },
        variants=variants,
    )
