"""Bulk enrollment from a manifest: the per-image work (in worker processes) and the manifest.

A manifest is a CSV with a header: `external_id`, `image` (a path, relative to the manifest's
folder), optional `name` and `metadata` (a JSON object); any other column is added to the
metadata. Each image yields one sample or one reason it was refused: unreadable, no face,
several faces, or (checked against the gallery) quality below its minimum.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from yingyan.batch import each, iter_batches, progress_bar
from yingyan.config import EngineConfig
from yingyan.detection import most_central
from yingyan.detection.base import largest
from yingyan.engine import Engine
from yingyan.errors import YingyanError
from yingyan.gallery.service import EnrollItem, GalleryService, Hook
from yingyan.store import enrolled_images, get_gallery
from yingyan.types import Box, ModelId, Template

FacePolicy = Literal["single", "largest", "central"]
REQUIRED = ("external_id", "image")


class ManifestError(YingyanError):
    code = "invalid_manifest"


@dataclass(frozen=True, slots=True)
class ManifestRow:
    line: int
    external_id: str
    image: Path
    name: str | None
    metadata: dict[str, Any] = field(default_factory=dict)


def read_manifest(path: Path) -> list[ManifestRow]:
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(f"{path}: missing column(s) {', '.join(missing)}")
        rows = [_row(path, n, raw) for n, raw in enumerate(reader, start=2)]
    if not rows:
        raise ManifestError(f"{path}: no rows")
    return rows


def _row(path: Path, line: int, raw: dict[str, str | None]) -> ManifestRow:
    external_id = (raw.get("external_id") or "").strip()
    image = (raw.get("image") or "").strip()
    if not external_id or not image:
        raise ManifestError(f"{path}:{line}: external_id and image are required")
    metadata: dict[str, Any] = {}
    if raw.get("metadata"):
        try:
            metadata = json.loads(raw["metadata"] or "{}")
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}:{line}: metadata is not JSON ({exc})") from None
        if not isinstance(metadata, dict):
            raise ManifestError(f"{path}:{line}: metadata must be a JSON object")
    extra = {k: v for k, v in raw.items() if k and k not in (*REQUIRED, "name", "metadata") and v}
    return ManifestRow(
        line=line,
        external_id=external_id,
        image=(path.parent / image).resolve(),
        name=(raw.get("name") or "").strip() or None,
        metadata={**extra, **metadata},
    )


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True, slots=True)
class Sample:
    """One enrollment image, embedded, or the reason it was refused."""

    path: str
    sha256: str | None
    vector: npt.NDArray[np.float32] | None = None
    quality: float = 0.0
    box: tuple[float, float, float, float] | None = None
    faces: int = 0
    refused: str | None = None  # unreadable | no_face | several_faces
    message: str | None = None
    recipe: str = "plain"


def sample_of(engine: Engine, path: str, policy: FacePolicy = "single") -> Sample:
    """Worker job: hash, decode, detect, choose the face by policy, and embed it."""
    try:
        data = Path(path).read_bytes()
        image = engine.load(data)
    except (OSError, YingyanError) as exc:
        return Sample(path, None, refused="unreadable", message=str(exc))
    sha = hashlib.sha256(data).hexdigest()
    detections = engine.detect(image)
    if not detections:
        return Sample(path, sha, refused="no_face", message="no face found")
    if policy == "single" and len(detections) > 1:
        return Sample(
            path,
            sha,
            faces=len(detections),
            refused="several_faces",
            message=f"{len(detections)} faces found; exactly one is required",
        )
    h, w = image.shape[:2]
    chosen = most_central(detections, w, h) if policy == "central" else largest(detections)
    assert chosen is not None
    face = engine.faces(image, [chosen])[0]
    assert face.template is not None
    b = chosen.box
    return Sample(
        path,
        sha,
        face.template.vector,
        face.quality.score,
        (b.x1, b.y1, b.x2, b.y2),
        len(detections),
    )


@dataclass
class EnrollmentReport:
    """What happened to every manifest row: enrolled, already enrolled (a resumed run), or
    refused with a reason."""

    rows: list[tuple[ManifestRow, str, str]] = field(default_factory=list)  # row, status, why

    def count(self, status: str) -> int:
        return sum(1 for _, st, _ in self.rows if st == status)

    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, status, why in self.rows:
            if status == "refused":
                key = why.split(":")[0]
                out[key] = out.get(key, 0) + 1
        return out

    def write_csv(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["line", "external_id", "image", "status", "reason"])
            for row, status, why in self.rows:
                w.writerow([row.line, row.external_id, str(row.image), status, why])


def enroll_manifest(
    service: GalleryService,
    gallery: str,
    manifest: Path,
    config: EngineConfig,
    *,
    workers: int = 1,
    policy: FacePolicy = "single",
    batch_size: int = 32,
    show_progress: bool = True,
    audit: Hook | None = None,
) -> EnrollmentReport:
    """Bulk enrollment, resumable: rows whose (external id, image hash) are already in the
    gallery are skipped; every batch is committed before the next (with its audit entry, from
    `audit` given the batch's (template id, new) pairs), so after a crash or Ctrl-C a rerun
    adds nothing twice and loses nothing."""
    rows = read_manifest(manifest)
    with service.db.read() as s:
        g = get_gallery(s, name=gallery)
        done = enrolled_images(s, gallery_id=g.id)
        min_quality, keep_images, model = g.min_quality, g.keep_images, g.model
    report = EnrollmentReport()
    todo: list[ManifestRow] = []
    for row in rows:
        sha = file_sha256(row.image) if row.image.is_file() else None
        if sha is not None and (row.external_id, sha) in done:
            report.rows.append((row, "already", ""))
        else:
            todo.append(row)
    by_path: dict[str, list[ManifestRow]] = {}
    for row in todo:
        by_path.setdefault(str(row.image), []).append(row)
    job = partial(each, partial(sample_of, policy=policy))
    with progress_bar(show_progress) as progress:
        task = progress.add_task("enrolling", total=len(rows), completed=len(rows) - len(todo))
        for paths, samples in iter_batches(
            job, list(by_path), config, batch_size=batch_size, workers=workers
        ):
            items: list[EnrollItem] = []
            for path, sample in zip(paths, samples, strict=True):
                for row in by_path[path]:
                    why = _refusal(sample, min_quality, model)
                    if why:
                        report.rows.append((row, "refused", why))
                        continue
                    assert sample.vector is not None and sample.sha256 is not None
                    items.append(_item(row, sample, model, keep_images))
                    report.rows.append((row, "enrolled", ""))
            service.enroll(gallery, items, save=False, audit=audit)
            progress.advance(task, sum(len(by_path[p]) for p in paths))
    service.save_index(gallery)
    return report


def _refusal(sample: Sample, min_quality: float, model: str) -> str:
    if sample.refused:
        return f"{sample.refused}: {sample.message}"
    if sample.quality < min_quality:
        return f"low_quality: {sample.quality:.2f} < the gallery's minimum {min_quality:.2f}"
    return ""


def _item(row: ManifestRow, sample: Sample, model: str, keep_images: bool) -> EnrollItem:
    assert sample.vector is not None and sample.sha256 is not None
    name, version = model.split("@", 1)
    return EnrollItem(
        external_id=row.external_id,
        template=Template(sample.vector, ModelId(name, version), sample.recipe),
        quality=sample.quality,
        source_sha256=sample.sha256,
        box=Box(*sample.box) if sample.box else None,
        display_name=row.name,
        metadata=row.metadata,
        image=Path(sample.path).read_bytes() if keep_images else None,
    )
