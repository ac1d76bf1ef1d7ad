"""The gallery service: every write and search of a gallery goes through here, so the SQL
store (the source of truth) and the vector index (a rebuildable cache) stay consistent.

Writes commit to the database first and then update the index, so a crash in between leaves
the index behind, never ahead. Whenever a gallery's index is opened it is checked against the
database (fingerprint of the template ids) and repaired: missing templates are added, extra
ones erased, a missing or unreadable file rebuilt.

With a `TemplateCipher`, every template is written encrypted (AES-GCM, bound to its gallery and
subject) and so is every faiss index file; erasure deletes the rows (SQLite overwrites them and
truncates its log) and removes the vectors from the index before saving it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from yingyan.calibration.fair_score import (
    FairScoreProfile,
    normalise_pairs,
    parse_profile,
    profile_json,
)
from yingyan.decision import Candidate, Mode, rank_subjects
from yingyan.errors import ConfigError, ModelMismatchError
from yingyan.gallery.index import (
    Fingerprint,
    IndexSpec,
    SearchResult,
    VectorIndex,
    VectorIndexError,
    open_index,
)
from yingyan.store import (
    Database,
    GalleryRow,
    add_template,
    delete_gallery,
    delete_subject,
    delete_template,
    get_calibration_profile,
    get_gallery,
    get_or_create_subject,
    get_subject,
    get_template,
    iter_template_batches,
    list_galleries,
    list_templates,
    put_calibration_profile,
    rename_subject,
    set_gallery_calibration,
    subject_templates,
    subjects_by_id,
    subjects_of_templates,
    template_dimension,
    template_ids,
    template_vector,
    template_vectors,
)
from yingyan.types import Box, Template, Vector

if TYPE_CHECKING:
    from yingyan.privacy import TemplateCipher


@dataclass(frozen=True, slots=True)
class EnrollItem:
    external_id: str
    template: Template
    quality: float
    source_sha256: str
    box: Box | None = None
    display_name: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    image: bytes | None = None


@dataclass(frozen=True, slots=True)
class SubjectCandidate:
    """A ranked lead for a human reviewer: never an identification by itself."""

    rank: int
    external_id: str
    display_name: str | None
    score: float
    template_id: int


@dataclass(frozen=True, slots=True)
class DuplicatePair:
    external_id_a: str
    external_id_b: str
    score: float
    template_a: int
    template_b: int


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


class GalleryService:
    """Galleries over one database and one folder of index files (or a Milvus URI).

    `cipher` (None: plaintext, as before encryption existed) encrypts the templates it writes
    and the faiss files it saves, and reads both. Milvus keeps vectors on its server: encryption
    at rest there is Milvus's own (its storage's), not this cipher's."""

    def __init__(
        self,
        db: Database,
        index_dir: Path,
        spec: IndexSpec | None = None,
        milvus_uri: str | None = None,
        cipher: TemplateCipher | None = None,
    ) -> None:
        self.db = db
        self.index_dir = index_dir
        self.spec = spec or IndexSpec()
        self.milvus_uri = milvus_uri
        self.cipher = cipher
        self._open: dict[int, VectorIndex] = {}
        self._profiles: dict[str, FairScoreProfile] = {}

    def close(self) -> None:
        for index in self._open.values():
            index.close()
        self._open.clear()

    # -- galleries ---------------------------------------------------------------------------

    def gallery(self, session: Session, name: str) -> GalleryRow:
        return get_gallery(session, name=name)

    def galleries(self) -> list[GalleryRow]:
        with self.db.session() as s:
            rows = list_galleries(s)
            s.expunge_all()
            return rows

    def delete(self, name: str) -> None:
        """Delete a gallery, its subjects and templates, and its index."""
        with self.db.session() as s:
            g = get_gallery(s, name=name)
            gid, path = g.id, self._index_path(g.id, g.model)
            delete_gallery(s, name=name)
        self.db.purge_deleted()
        index = self._open.pop(gid, None)
        if index is not None:
            index.remove(index.ids())
            index.save()
            index.close()
        if path is not None:
            for p in (path, path.with_name(path.name + ".json")):
                with suppress(FileNotFoundError):
                    p.unlink()

    # -- the index ---------------------------------------------------------------------------

    def _index_path(self, gallery_id: int, model: str) -> Path | None:
        if self.spec.kind == "milvus":
            return None
        return self.index_dir / f"gallery-{gallery_id}-{_slug(model)}.faiss"

    def _collection(self, gallery_id: int, model: str) -> str:
        return f"g{gallery_id}_{_slug(model).replace('.', '_').replace('-', '_').replace('@', '_')}"

    def index(self, gallery: GalleryRow, dimension: int | None = None) -> VectorIndex:
        """The gallery's index, opened once, repaired to agree with the database. `dimension`
        is needed only to create it (default: that of the gallery's stored templates)."""
        if gallery.id in self._open:
            return self._open[gallery.id]
        dimension = dimension or self._dimension(gallery.id)
        if dimension is None:
            raise ConfigError(f"gallery {gallery.name!r} has no templates yet")
        self.index_dir.mkdir(parents=True, exist_ok=True)
        path = self._index_path(gallery.id, gallery.model)
        try:
            index = self._open_index(gallery, dimension, path)
        except VectorIndexError:
            if path is None:
                raise
            path.unlink(missing_ok=True)  # a torn or foreign file: the database rebuilds it
            index = self._open_index(gallery, dimension, path)
        self._reconcile(gallery.id, index)
        self._open[gallery.id] = index
        return index

    def _open_index(self, gallery: GalleryRow, dimension: int, path: Path | None) -> VectorIndex:
        target: str | Path | None = self.milvus_uri if self.spec.kind == "milvus" else path
        return open_index(
            self.spec,
            target,
            dimension,
            model=gallery.model,
            collection=self._collection(gallery.id, gallery.model),
            cipher=self.cipher,
        )

    def _reconcile(self, gallery_id: int, index: VectorIndex) -> None:
        with self.db.session() as s:
            db_ids = template_ids(s, gallery_id=gallery_id)
        if index.fingerprint() == Fingerprint.of(db_ids):
            return
        extra = np.setdiff1d(index.ids(), db_ids)
        if extra.size:
            index.remove(extra)
        missing = set(np.setdiff1d(db_ids, index.ids()).tolist())
        if missing:
            with self.db.session() as s:
                for batch in iter_template_batches(s, gallery_id=gallery_id, cipher=self.cipher):
                    keep = np.fromiter((i in missing for i in batch.ids.tolist()), bool)
                    if keep.any():
                        if len(index) == 0 and hasattr(index, "train"):
                            index.train(batch.vectors)
                        index.add(batch.ids[keep], batch.vectors[keep])
        index.save()

    def check(self, name: str) -> tuple[Fingerprint, Fingerprint]:
        """(database, index) fingerprints of a gallery: equal when consistent."""
        with self.db.session() as s:
            g = get_gallery(s, name=name)
            db_ids = template_ids(s, gallery_id=g.id)
            s.expunge(g)
        return Fingerprint.of(db_ids), self.index(g).fingerprint()

    def _dimension(self, gallery_id: int) -> int | None:
        """The dimension of the gallery's templates, or None while it has none."""
        with self.db.session() as s:
            return template_dimension(s, gallery_id=gallery_id)

    def _index_if_any(self, gallery: GalleryRow) -> VectorIndex | None:
        """The gallery's index (opened if need be), or None while the gallery has no template."""
        if gallery.id in self._open:
            return self._open[gallery.id]
        dimension = self._dimension(gallery.id)
        return None if dimension is None else self.index(gallery, dimension)

    def _erase_from_index(self, index: VectorIndex | None, ids: Sequence[int]) -> None:
        """After deleting rows: purge their traces from the database files, then remove their
        vectors from the index and save it."""
        self.db.purge_deleted()
        if ids and index is not None:
            index.remove(np.array(ids, np.int64))
            index.save()

    # -- enrollment --------------------------------------------------------------------------

    def enroll(
        self, gallery: str, items: Sequence[EnrollItem], *, save: bool = True
    ) -> list[tuple[int, bool]]:
        """Store the templates (one transaction), then add the new ones to the index.
        Returns (template id, newly created) per item; re-enrolling an image is a no-op.
        With `save=False` the index file is written later (`save_index`); a crash before that
        loses nothing, since opening the index adds what the database has and it lacks."""
        if not items:
            return []
        with self.db.session() as s:
            g = get_gallery(s, name=gallery)
            out = []
            for item in items:
                subject, _ = get_or_create_subject(
                    s,
                    gallery_id=g.id,
                    external_id=item.external_id,
                    display_name=item.display_name,
                    metadata=item.metadata,
                )
                row, created = add_template(
                    s,
                    subject=subject,
                    template=item.template,
                    quality=item.quality,
                    source_sha256=item.source_sha256,
                    box=item.box,
                    image=item.image,
                    cipher=self.cipher,
                )
                s.flush()
                out.append((int(row.id), created))
            s.expunge(g)
        new = [(tid, item) for (tid, created), item in zip(out, items, strict=True) if created]
        if new:
            index = self.index(g, len(items[0].template.vector))
            index.add(
                np.array([t for t, _ in new], np.int64),
                np.stack([i.template.vector for _, i in new]),
            )
            if save:
                index.save()
        return out

    def save_index(self, gallery: str) -> None:
        """Write the gallery's index file, if it is open."""
        with self.db.session() as s:
            gid = get_gallery(s, name=gallery).id
        if gid in self._open:
            self._open[gid].save()

    def erase_subject(self, gallery: str, external_id: str) -> int:
        """Delete a subject and really erase its templates from the index (opened first, so a
        crash in between leaves extra index entries that the next open removes)."""
        g = self._detached_gallery(gallery)
        index = self._index_if_any(g)
        with self.db.session() as s:
            removed = delete_subject(s, gallery_id=g.id, external_id=external_id)
        self._erase_from_index(index, removed)
        return len(removed)

    def erase_template(self, gallery: str, template_id: int) -> str:
        """Delete one template from the database and the index, as `erase_subject` does for all
        of a subject's. Returns its subject's external id (the subject itself stays)."""
        g = self._detached_gallery(gallery)
        index = self._index_if_any(g)
        with self.db.session() as s:
            external_id = delete_template(s, gallery_id=g.id, template_id=template_id)
        self._erase_from_index(index, [template_id])
        return external_id

    # -- subjects and templates --------------------------------------------------------------

    def subject_vectors(self, gallery: str, external_id: str) -> list[tuple[int, Vector]]:
        """(template id, decrypted vector) of each template of a subject, in id order."""
        with self.db.session() as s:
            g = get_gallery(s, name=gallery)
            return self._subject_vectors(s, g.id, external_id)

    def _subject_vectors(
        self, session: Session, gallery_id: int, external_id: str
    ) -> list[tuple[int, Vector]]:
        subject = get_subject(session, gallery_id=gallery_id, external_id=external_id)
        rows = subject_templates(session, subject_id=subject.id)
        return [(int(r.id), template_vector(r, self.cipher)) for r in rows]

    def list_templates(
        self,
        gallery: str,
        *,
        external_id: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[tuple[int, str]], int]:
        """A page of (template id, subject external id) in id order, and the total count."""
        with self.db.session() as s:
            g = get_gallery(s, name=gallery)
            return list_templates(
                s, gallery_id=g.id, external_id=external_id, offset=offset, limit=limit
            )

    def template_vector(self, gallery: str, template_id: int) -> tuple[str, Vector]:
        """(subject external id, decrypted vector) of one template of the gallery."""
        with self.db.session() as s:
            g = get_gallery(s, name=gallery)
            row = get_template(s, gallery_id=g.id, template_id=template_id)
            subject = subjects_by_id(s, subject_ids=[row.subject_id])[row.subject_id]
            return subject.external_id, template_vector(row, self.cipher)

    def rename_subject(self, gallery: str, old: str, new: str) -> None:
        """Change a subject's external id; ConflictError if `new` is taken. Templates are bound
        to the subject's internal id, so nothing needs re-encrypting."""
        with self.db.session() as s:
            g = get_gallery(s, name=gallery)
            rename_subject(s, gallery_id=g.id, external_id=old, new_external_id=new)

    def _detached_gallery(self, name: str) -> GalleryRow:
        with self.db.session() as s:
            g = get_gallery(s, name=name)
            s.expunge(g)
        return g

    # -- search ------------------------------------------------------------------------------

    def identify(
        self,
        gallery: str,
        probes: Sequence[Template],
        *,
        k: int = 5,
        mode: Mode = "investigation",
        threshold: float | None = None,
    ) -> list[list[SubjectCandidate]]:
        """Subject-level candidates for each probe. Threshold mode uses the given threshold,
        else the gallery's; investigation mode returns the k best whatever their scores."""
        if k < 1:
            raise ConfigError("k must be at least 1")
        g = self._detached_gallery(gallery)
        for p in probes:
            if str(p.model) != g.model:
                raise ModelMismatchError(
                    f"gallery {gallery!r} holds templates of {g.model}, not of {p.model}"
                )
        if mode == "threshold":
            threshold = threshold if threshold is not None else g.threshold
            if threshold is None:
                raise ConfigError(f"gallery {gallery!r} has no threshold; pass one")
        if not probes:
            return []
        queries = np.stack([p.vector for p in probes]).astype(np.float32)
        index = self.index(g, queries.shape[1])
        profile = self.profile(g)
        # Normalisation re-ranks: search deeper so a candidate it lifts is among the hits.
        depth = max(4 * k, k + 16) if profile is None else max(8 * k, k + 64)
        hits = index.search(queries, min(depth, max(1, len(index))))
        with self.db.session() as s:
            scores = (
                hits.scores if profile is None else self._normalised(s, g, profile, queries, hits)
            )
            return self._candidates(s, scores, hits.ids, k=k, mode=mode, threshold=threshold)

    def verify_subject(
        self, gallery: str, external_id: str, probe: Template
    ) -> tuple[int, float] | None:
        """(template id, score) of the subject's best template against the probe, normalised if
        the gallery is calibrated; None if the subject has no template."""
        with self.db.session() as s:
            g = get_gallery(s, name=gallery)
            if str(probe.model) != g.model:
                raise ModelMismatchError(f"gallery {gallery!r} holds templates of {g.model}")
            refs = self._subject_vectors(s, g.id, external_id)
            s.expunge(g)
        if not refs:
            return None
        vectors = np.stack([v for _, v in refs])
        probe_vector = probe.vector[None, :].astype(np.float32)
        profile = self.profile(g)
        scores = (
            (vectors.astype(np.float64) @ probe_vector.T.astype(np.float64))[:, 0]
            if profile is None
            else profile.scores(probe_vector, vectors)[0]
        )
        best = int(np.argmax(scores))
        return refs[best][0], float(scores[best])

    def decision_threshold(self, gallery: str) -> tuple[float, str] | None:
        """The gallery's threshold and where it comes from: its own, else its calibration
        profile's (normalised scores are on another scale than the model's default)."""
        g = self._detached_gallery(gallery)
        if g.threshold is not None:
            return g.threshold, "the gallery's threshold"
        profile = self.profile(g)
        if profile is not None:
            return (
                profile.global_threshold,
                f"calibration profile {profile.name} v{profile.version}",
            )
        return None

    # -- calibration -------------------------------------------------------------------------

    def profile(self, gallery: GalleryRow) -> FairScoreProfile | None:
        """The calibration profile the gallery's comparisons use, if any (read once)."""
        version = gallery.calibration
        if version is None:
            return None
        if version not in self._profiles:
            with self.db.session() as s:
                body = get_calibration_profile(s, version=version).body
            self._profiles[version] = parse_profile(body, where=f"stored profile {version}")
        return self._profiles[version]

    def set_calibration(self, gallery: str, profile: FairScoreProfile | None) -> None:
        """Store the profile and make the gallery use it (None: raw scores again)."""
        with self.db.session() as s:
            if profile is not None:
                put_calibration_profile(
                    s, version=profile.version, model=profile.model, body=profile_json(profile)
                )
            set_gallery_calibration(s, name=gallery, version=profile.version if profile else None)

    def _normalised(
        self,
        session: Session,
        gallery: GalleryRow,
        profile: FairScoreProfile,
        queries: npt.NDArray[np.float32],
        hits: SearchResult,
    ) -> npt.NDArray[np.float64]:
        """The hits' scores normalised by the probe's and each candidate's norms."""
        ids = hits.ids
        found = template_vectors(
            session, gallery_id=gallery.id, template_ids=ids[ids >= 0].tolist(), cipher=self.cipher
        )
        out = np.full(ids.shape, -np.inf)
        if not found:
            return out
        order = np.array(sorted(found), np.int64)
        norms = profile.norms(np.stack([found[int(i)] for i in order]))
        probe_norms = profile.norms(queries)
        for row in range(ids.shape[0]):
            keep = np.isin(ids[row], order)
            where = np.searchsorted(order, ids[row][keep])
            raw = hits.scores[row][keep].astype(np.float64)
            rows = np.full(len(where), row, np.int64)
            out[row][keep] = normalise_pairs(raw, probe_norms[rows], norms[where])
        return out

    def _candidates(
        self,
        session: Session,
        scores: npt.NDArray[np.float32] | npt.NDArray[np.float64],
        ids: npt.NDArray[np.int64],
        *,
        k: int,
        mode: Mode,
        threshold: float | None,
    ) -> list[list[SubjectCandidate]]:
        subject_of = subjects_of_templates(session, template_ids=ids[ids >= 0].tolist())
        per_probe: list[list[Candidate]] = [
            rank_subjects(sc, ii, subject_of, k=k, mode=mode, threshold=threshold)
            for sc, ii in zip(scores, ids, strict=True)
        ]
        wanted = {c.subject_id for cs in per_probe for c in cs}
        subjects = subjects_by_id(session, subject_ids=wanted)
        return [
            [
                SubjectCandidate(
                    c.rank,
                    subjects[c.subject_id].external_id,
                    subjects[c.subject_id].display_name,
                    c.score,
                    c.template_id,
                )
                for c in cs
            ]
            for cs in per_probe
        ]

    def duplicates(self, gallery: str, threshold: float, *, k: int = 10) -> list[DuplicatePair]:
        """Pairs of different subjects with templates scoring at or above `threshold`, found by
        searching the index with every template (k neighbours each), not by all pairs."""
        g = self._detached_gallery(gallery)
        best: dict[tuple[int, int], tuple[float, int, int]] = {}
        index: VectorIndex | None = None
        with self.db.session() as session:
            batches = iter_template_batches(session, gallery_id=g.id, cipher=self.cipher)
            for ids, vectors in ((b.ids, b.vectors) for b in batches):
                index = index or self.index(g, vectors.shape[1])
                hits = index.search(vectors, min(k + 1, len(index)))
                subject_of = subjects_of_templates(
                    session, template_ids=np.concatenate([ids, hits.ids[hits.ids >= 0]]).tolist()
                )
                self._collect_pairs(ids, hits.scores, hits.ids, subject_of, threshold, best)
        with self.db.session() as s:
            subjects = subjects_by_id(s, subject_ids={x for pair in best for x in pair})
            pairs = [
                DuplicatePair(subjects[a].external_id, subjects[b].external_id, sc, ta, tb)
                for (a, b), (sc, ta, tb) in best.items()
            ]
        return sorted(pairs, key=lambda p: -p.score)

    @staticmethod
    def _collect_pairs(
        ids: npt.NDArray[np.int64],
        scores: npt.NDArray[np.float32],
        hit_ids: npt.NDArray[np.int64],
        subject_of: dict[int, int],
        threshold: float,
        best: dict[tuple[int, int], tuple[float, int, int]],
    ) -> None:
        """Keep, per pair of different subjects, their best-scoring template pair."""
        for tid, row_scores, row_ids in zip(ids.tolist(), scores, hit_ids, strict=True):
            for score, other in zip(row_scores.tolist(), row_ids.tolist(), strict=True):
                if other < 0 or other == tid or score < threshold:
                    continue
                a, b = subject_of.get(tid), subject_of.get(other)
                if a is None or b is None or a == b:
                    continue
                key = (min(a, b), max(a, b))
                if key not in best or score > best[key][0]:
                    best[key] = (score, tid, other) if a < b else (score, other, tid)
