"""1:N on LFW through the gallery service (SQLite + FAISS exact): the closed-set rank-1 rate
of the 5,749-person gallery, and deduplication of people registered twice."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from yingyan import Engine, EngineConfig
from yingyan.embedding import recipe_name
from yingyan.evaluation.lfw import ImageResult, image_dir
from yingyan.evaluation.lfw_identification import (
    IdentificationReport,
    identification_protocol,
    run_identification,
)
from yingyan.gallery.service import EnrollItem, GalleryService
from yingyan.store import open_database
from yingyan.types import Template

# LFW itself files these people under two spellings of their names (one image each in the
# gallery): duplicate registrations that nobody planted.
LFW_ALIASES = [
    {"Noer_Moeis", "Noer_Muis"},
    {"Chyung_Dai-chul", "Dai_Chul_Chyung"},
    {"Wang_Yingfan", "Yingfan_Wang"},
    {"Felipe_De_Borbon", "Prince_Felipe"},
]

Gallery = tuple[GalleryService, IdentificationReport]


@pytest.fixture(scope="module")
def lfw_gallery(
    lfw_root: Path, lfw_extracted: dict[str, ImageResult], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gallery]:
    data = tmp_path_factory.mktemp("lfw-gallery")
    with open_database(None, data) as db:
        service = GalleryService(db, data / "index")
        report = run_identification(
            lfw_root, EngineConfig(), service, known=lfw_extracted, show_progress=False
        )
        yield service, report
        service.close()


@pytest.mark.slow
def test_rank1_identification_of_the_lfw_gallery(lfw_gallery: Gallery) -> None:
    _, report = lfw_gallery
    print(
        f"LFW identification: rank-1 {report.rank1:.4f}, rank-5 {report.rank5:.4f}, "
        f"rank-10 {report.rank10:.4f}; thresholds {report.impostor_thresholds}"
    )
    assert (report.enrolled, report.probes) == (5749, 7484)
    assert report.rank1 >= 0.875  # the plain dlib pipeline measured 87.95%
    assert report.rank1 <= report.rank5 <= report.rank10


@pytest.mark.slow
def test_dedup_finds_people_enrolled_twice(
    lfw_root: Path, lfw_gallery: Gallery, lfw_extracted: dict[str, ImageResult]
) -> None:
    """Plant a second registration (the person's second image, under another id) for each
    of the 1,680 people with two or more images, then dedup at the threshold measured to give
    FMR = 1e-5 on gallery x probe impostor pairs."""
    service, report = lfw_gallery
    images = image_dir(lfw_root)
    seconds: dict[str, Path] = {}
    for person, path in identification_protocol(lfw_root).probes:
        seconds.setdefault(person, path)
    model, recipe = Engine(EngineConfig()).model_id, recipe_name(flip=True, jitter=0)
    items = []
    for person, path in seconds.items():
        result = lfw_extracted[path.relative_to(images).as_posix()]
        vector = result.template_vector(flip=True, jitter=0)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        items.append(EnrollItem(f"{person}~2", Template(vector, model, recipe), 0.9, sha))
    service.enroll("lfw", items)

    threshold = report.impostor_thresholds["1e-05"]
    found = {
        frozenset((p.external_id_a, p.external_id_b)) for p in service.duplicates("lfw", threshold)
    }
    planted = {frozenset((p, f"{p}~2")) for p in seconds}
    known = {frozenset(pair) for pair in LFW_ALIASES}
    recall = len(found & planted) / len(planted)
    others = found - planted - known
    n = 5749 + len(planted)
    print(
        f"dedup at {threshold:.4f}: {len(found)} pairs, planted recall {recall:.3f}, "
        f"{len(others)} other pairs among {n * (n - 1) // 2:,}"
    )
    assert known <= found  # LFW's own double registrations
    assert recall >= 0.55  # measured 0.605 over all pairs at this threshold (dlib model)
    assert len(others) <= 2 * 1e-5 * n * (n - 1) / 2  # the FMR bound holds for dedup too
