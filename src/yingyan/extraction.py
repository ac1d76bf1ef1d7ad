"""Batch template extraction: many image files → one row per face, for offline jobs (bulk
enrollment, evaluation) and for the benchmarks. Unreadable files and files without a face are
reported, not fatal (unaligned photos often hold no detectable face)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from yingyan.batch import map_batches
from yingyan.config import EngineConfig
from yingyan.engine import Engine
from yingyan.errors import ImageError, YingyanError
from yingyan.types import Face, RGBImage

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files as given, folders searched recursively for images; sorted, without duplicates."""
    found: set[Path] = set()
    for p in paths:
        if p.is_dir():
            found.update(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            found.add(p)
        else:
            raise ImageError(f"no such file or folder: {p}")
    return sorted(found)


@dataclass(frozen=True, slots=True)
class FileFaces:
    """Every face of one file (rows), or why the file failed."""

    boxes: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    quality: npt.NDArray[np.float32]
    templates: npt.NDArray[np.float32]
    engine: dict[str, str]  # what produced them (model, backend, provider)
    error: str | None = None


def _failed(message: str) -> FileFaces:
    empty = np.zeros((0, 4), np.float32)
    return FileFaces(empty, empty[:, 0], empty[:, 0], np.zeros((0, 0), np.float32), {}, message)


def faces_of_files(engine: Engine, paths: list[str]) -> list[FileFaces]:
    """Worker job: every face of a chunk of files; the chips of the whole chunk are embedded
    in one batch. A file that cannot be read fails alone."""
    images: list[RGBImage] = []
    results: list[FileFaces | None] = []
    for p in paths:
        try:
            images.append(engine.load(p))
            results.append(None)
        except YingyanError as exc:
            results.append(_failed(exc.message))
    faces = iter(engine.faces_many(images))
    about = engine.describe() if images else {}
    out = []
    for r in results:
        if r is not None:
            out.append(r)
            continue
        out.append(_file_faces(next(faces), about))
    return out


def _file_faces(fs: list[Face], about: dict[str, str]) -> FileFaces:
    """The rows of one file's faces; a file without a face gives zero rows (of width 0, since
    no template says the dimension), which `extract` reports rather than concatenates."""
    vectors = [f.template.vector for f in fs if f.template is not None]
    templates = np.array(vectors, np.float32) if vectors else np.zeros((0, 0), np.float32)
    return FileFaces(
        boxes=np.array([f.detection.box.as_list() for f in fs], np.float32).reshape(-1, 4),
        scores=np.array([f.detection.score for f in fs], np.float32),
        quality=np.array([f.quality.score for f in fs], np.float32),
        templates=templates,
        engine=about,
    )


@dataclass(frozen=True, slots=True)
class Extraction:
    paths: list[str]  # one per face row
    boxes: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    quality: npt.NDArray[np.float32]
    templates: npt.NDArray[np.float32]
    failures: dict[str, str]
    no_face: list[str]  # readable files in which no face was found
    images: int
    describe: dict[str, str]

    def save(self, out: Path) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {
            "paths": np.array(self.paths, dtype=str),
            "boxes": self.boxes,
            "detector_scores": self.scores,
            "quality": self.quality,
            "templates": self.templates,
            "failed_paths": np.array(list(self.failures), dtype=str),
            "failed_reasons": np.array(list(self.failures.values()), dtype=str),
            "no_face_paths": np.array(self.no_face, dtype=str),
        }
        arrays.update({k: np.array(v) for k, v in self.describe.items()})
        np.savez_compressed(out, **arrays)


def extract(
    paths: list[Path], config: EngineConfig, *, workers: int = 1, show_progress: bool = True
) -> Extraction:
    files = expand_paths(paths)
    results = map_batches(
        faces_of_files,
        [str(f) for f in files],
        config,
        batch_size=16,
        workers=workers,
        description="embedding",
        show_progress=show_progress,
    )
    readable = [(str(f), r) for f, r in zip(files, results, strict=True) if r.error is None]
    rows = [(p, r) for p, r in readable if len(r.boxes)]
    dim = next((r.templates.shape[1] for _, r in rows), 0)
    describe = next((r.engine for _, r in readable if r.engine), {})
    return Extraction(
        paths=[p for p, r in rows for _ in range(len(r.boxes))],
        boxes=np.concatenate([r.boxes for _, r in rows] or [np.zeros((0, 4), np.float32)]),
        scores=np.concatenate([r.scores for _, r in rows] or [np.zeros(0, np.float32)]),
        quality=np.concatenate([r.quality for _, r in rows] or [np.zeros(0, np.float32)]),
        templates=np.concatenate(
            [r.templates for _, r in rows] or [np.zeros((0, dim), np.float32)]
        ),
        failures={str(f): r.error for f, r in zip(files, results, strict=True) if r.error},
        no_face=[p for p, r in readable if not len(r.boxes)],
        images=len(files),
        describe=describe,
    )
