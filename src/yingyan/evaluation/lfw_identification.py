"""The LFW closed-set identification protocol used by the gallery benchmarks.

Gallery: the first image (by file name) of each of the 5,749 people. Probes: every other
image, 7,484 of them, from the 1,680 people who have two or more. The rank-1 identification
rate is the share of probes whose best-scoring subject is their own person.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from yingyan.config import EngineConfig
from yingyan.embedding import recipe_name
from yingyan.engine import Engine
from yingyan.errors import DatasetError
from yingyan.evaluation import metrics
from yingyan.evaluation.lfw import ImageResult, extract_images, image_dir
from yingyan.gallery.service import EnrollItem, GalleryService
from yingyan.store import create_gallery
from yingyan.types import Template


@dataclass(frozen=True, slots=True)
class IdentificationProtocol:
    gallery: list[tuple[str, Path]]  # (person, image)
    probes: list[tuple[str, Path]]

    def image_names(self, images: Path) -> list[str]:
        """Gallery then probe images, named relative to the image folder `images`."""
        return [p.relative_to(images).as_posix() for _, p in self.gallery + self.probes]


def identification_protocol(root: Path) -> IdentificationProtocol:
    images = image_dir(root)
    gallery: list[tuple[str, Path]] = []
    probes: list[tuple[str, Path]] = []
    for person_dir in sorted(p for p in images.iterdir() if p.is_dir()):
        files = sorted(f for f in person_dir.iterdir() if f.suffix.lower() == ".jpg")
        if not files:
            continue
        gallery.append((person_dir.name, files[0]))
        probes.extend((person_dir.name, f) for f in files[1:])
    if not gallery:
        raise DatasetError(f"no LFW people under {images}")
    return IdentificationProtocol(gallery, probes)


@dataclass(frozen=True, slots=True)
class IdentificationReport:
    enrolled: int
    probes: int
    rank1: float
    rank5: float
    rank10: float
    centre_fallbacks: int
    seconds_embed: float
    seconds_enroll: float
    seconds_identify: float
    impostor_thresholds: dict[str, float]  # FMR → score threshold, from gallery x probe pairs
    # A fusion: each member's rank-1/5/10 from the same extraction (the same detections), and
    # the fused templates' own, by exact search: a same-run comparison without a second run.
    members: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {f: getattr(self, f) for f in self.__slots__}


def run_identification(
    root: Path,
    config: EngineConfig,
    service: GalleryService,
    *,
    gallery: str = "lfw",
    known: Mapping[str, ImageResult] | None = None,
    workers: int | None = None,
    show_progress: bool = True,
) -> IdentificationReport:
    """Embed every LFW image once (most central face, centre box if none), enrol the gallery
    images through the gallery service, identify every probe, and report rank-k rates."""
    proto = identification_protocol(root)
    images = image_dir(root)
    names = proto.image_names(images)
    start = time.perf_counter()
    extracted = extract_images(
        images, names, config, known=known, workers=workers, show_progress=show_progress
    )
    results = [extracted[n] for n in names]
    failed = [n for n, r in zip(names, results, strict=True) if r.views is None]
    if failed:
        raise DatasetError(f"{len(failed)} LFW images could not be read, e.g. {failed[0]}")
    engine = Engine(config)
    model = engine.model_id
    vectors = np.stack([r.template_vector(flip=config.flip, jitter=config.jitter) for r in results])
    recipe = recipe_name(flip=config.flip, jitter=config.jitter)
    n = len(proto.gallery)
    t_embed = time.perf_counter() - start

    start = time.perf_counter()
    with service.db.session() as s:
        create_gallery(
            s,
            name=gallery,
            kind="enrollment",
            purpose="LFW identification benchmark",
            legal_basis="research evaluation on a public dataset",
            model=model,
        )
    items = [
        EnrollItem(
            person,
            Template(vectors[i], model, recipe),
            results[i].quality,
            hashlib.sha256(path.read_bytes()).hexdigest(),
            display_name=person,
        )
        for i, (person, path) in enumerate(proto.gallery)
    ]
    for chunk in range(0, n, 2000):
        service.enroll(gallery, items[chunk : chunk + 2000])
    t_enroll = time.perf_counter() - start

    start = time.perf_counter()
    probes = [Template(v, model, recipe) for v in vectors[n:]]
    candidates = service.identify(gallery, probes, k=10, mode="investigation")
    t_identify = time.perf_counter() - start
    truth = [person for person, _ in proto.probes]
    ranks = [
        next((c.rank for c in cs if c.external_id == person), 11)
        for cs, person in zip(candidates, truth, strict=True)
    ]
    gallery_people = [p for p, _ in proto.gallery]
    impostors = _impostor_scores(vectors[:n], vectors[n:], gallery_people, truth)
    fmrs = (1e-4, 1e-5, 1e-6)  # their thresholds from one pass over the ~43 million scores
    thresholds = metrics.thresholds_at_fmr(impostors, fmrs)
    del impostors  # 170 MB
    members: dict[str, dict[str, float]] = {}
    if engine.fusion is not None:
        rows = slice(None) if config.flip else slice(0, config.jitter + 1)
        for m, member in enumerate(engine.fusion.members):
            mv = np.stack([r.from_rows(rows, member=m) for r in results])
            members[member.model_id] = _exact_rates(mv[:n], mv[n:], gallery_people, truth)
        members[str(model)] = _exact_rates(vectors[:n], vectors[n:], gallery_people, truth)
    return IdentificationReport(
        enrolled=n,
        probes=len(probes),
        rank1=float(np.mean(np.array(ranks) <= 1)),
        rank5=float(np.mean(np.array(ranks) <= 5)),
        rank10=float(np.mean(np.array(ranks) <= 10)),
        centre_fallbacks=sum(r.fallback for r in results),
        seconds_embed=t_embed,
        seconds_enroll=t_enroll,
        seconds_identify=t_identify,
        impostor_thresholds={f"{f:g}": t for f, t in zip(fmrs, thresholds, strict=True)},
        members=members,
    )


def _exact_rates(
    gallery: npt.NDArray[np.float32],
    probes: npt.NDArray[np.float32],
    gallery_people: list[str],
    probe_people: list[str],
) -> dict[str, float]:
    """Rank-1/5/10 by brute-force cosine over one template per gallery person: a probe's rank
    is one more than the number of other people scoring above its own person."""
    where = {p: i for i, p in enumerate(gallery_people)}
    own = np.array([where[p] for p in probe_people])
    ranks = []
    for start in range(0, len(probes), 1000):
        block = probes[start : start + 1000] @ gallery.T
        true = block[np.arange(len(block)), own[start : start + 1000]]
        ranks.append(1 + (block > true[:, None]).sum(axis=1))
    r = np.concatenate(ranks)
    return {f"rank{k}": float(np.mean(r <= k)) for k in (1, 5, 10)}


def _impostor_scores(
    gallery: npt.NDArray[np.float32],
    probes: npt.NDArray[np.float32],
    gallery_people: list[str],
    probe_people: list[str],
) -> npt.NDArray[np.float32]:
    """Every gallery x probe score of different people (~43 million on LFW)."""
    g_people = np.array(gallery_people)
    out = []
    for start in range(0, len(probes), 1000):
        block = probes[start : start + 1000] @ gallery.T
        same = np.array(probe_people[start : start + 1000])[:, None] == g_people[None, :]
        out.append(block[~same])
    return np.concatenate(out).astype(np.float32)
