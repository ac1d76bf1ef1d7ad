"""The gallery service: every write and search of a gallery goes through here, so the SQL
store (the source of truth) and the vector index (a rebuildable cache) stay consistent.

Many processes (service workers, the CLI, camera workers) use one gallery at once. Every write
is one database transaction that also appends to the gallery's change log (`store.changes`) and,
given an `audit` hook, the act's audit entry: all or nothing. No write touches an index; after it
commits, the writer's own index replays the log. Before every search an index reads the
gallery's change seq (one indexed read) and, if it is behind, replays what it missed, so a
search in any process never returns a template erased before it began nor misses one added.
An index file is saved with its seq and never over one saved at a later seq; when the log no
longer reaches back to an index (compacted), or a file has no seq, it is reconciled with the
database (fingerprint of the template ids): missing templates added, extra ones erased, a
missing or unreadable file rebuilt. Index files that belong to no gallery are deleted at start.

Threads: searches of a gallery share its read lock; replaying changes into it takes its write
lock; galleries never wait for each other, and database writes take no index lock at all.

With a `TemplateCipher`, every template is written encrypted (AES-GCM, bound to its gallery and
subject) and so is every faiss index file; erasure deletes the rows (SQLite overwrites them and
truncates its log) and removes the vectors from the index before saving it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

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
from yingyan.privacy.files import private_dir
from yingyan.store import (
    Database,
    GalleryRow,
    NotFoundError,
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
    list_subjects,
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
from yingyan.store.changes import ChangeState, change_state, changes_since
from yingyan.store.repository import KEEP, Keep
from yingyan.types import Box, Template, Vector

if TYPE_CHECKING:
    from yingyan.privacy import TemplateCipher

T = TypeVar("T")
# Called inside a write's transaction with its result, e.g. to append the act's audit entry:
# if it raises, the act rolls back with it.
Hook = Callable[[Session, Any], object]
log = logging.getLogger(__name__)
_INDEX_FILE = re.compile(r"gallery-(\d+)-.+\.faiss(\.json|\.lock)?")
_SUFFIXES = ("", ".json", ".lock")


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


class ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers (no starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer and not self._waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._writer and not self._readers)
            self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class ModelChangedError(ModelMismatchError):
    """The gallery moved to another model (a migration) while a search of the old one was
    starting: nothing was compared; retry with a probe of the gallery's current model."""

    code = "conflict"  # 409: retryable


@dataclass(slots=True)
class _Slot:
    """One gallery's index in this process, and the lock its searches and replays take. An
    index holds one model's vectors (`model`): after a migration it is replaced, never mixed."""

    lock: ReadWriteLock = field(default_factory=ReadWriteLock)
    index: VectorIndex | None = None
    model: str | None = None


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
        self._guard = threading.Lock()  # over the two dicts, never held during work
        self._slots: dict[int, _Slot] = {}
        self._profiles: dict[str, FairScoreProfile] = {}

    def close(self) -> None:
        with self._guard:
            slots, self._slots = list(self._slots.values()), {}
        for slot in slots:
            with slot.lock.write():
                if slot.index is not None:
                    slot.index.close()
                    slot.index = None

    def write(self, work: Callable[[Session], T], *, audit: Hook | None = None) -> T:
        """`work` and then `audit` in one unit of work (retried whole on a busy database)."""

        def unit(session: Session) -> T:
            result = work(session)
            if audit is not None:
                audit(session, result)
            return result

        return self.db.run(unit)

    # -- galleries ---------------------------------------------------------------------------

    def gallery(self, session: Session, name: str) -> GalleryRow:
        return get_gallery(session, name=name)

    def galleries(self) -> list[GalleryRow]:
        with self.db.read() as s:
            rows = list_galleries(s)
            s.expunge_all()
            return rows

    def delete(self, name: str, *, audit: Hook | None = None) -> int:
        """Delete a gallery, its subjects and templates (one transaction, with `audit`), then
        its index everywhere: this process's copy, the file or the Milvus collection. A crash
        in between leaves an orphan file that `remove_orphans` deletes at the next start.
        Returns how many templates went."""

        def work(s: Session) -> tuple[int, int, str]:
            g = get_gallery(s, name=name)
            gid, model = g.id, g.model
            return gid, delete_gallery(s, name=name), model

        gid, removed, model = self.write(work, audit=lambda s, r: audit and audit(s, r[1]))
        self.db.purge_deleted()
        self._drop_index(gid, model)
        return removed

    def _drop_index(self, gallery_id: int, model: str) -> None:
        """Erase the gallery's index of `model` here and on disk (or its Milvus collection)."""
        with self._guard:
            slot = self._slots.get(gallery_id)
            if slot is not None and slot.model in (model, None):
                del self._slots[gallery_id]
            else:
                slot = None
        dropped = False
        if slot is not None:
            with slot.lock.write():
                if slot.index is not None:
                    slot.index.remove(slot.index.ids())
                    drop = getattr(slot.index, "drop", None)
                    if drop is not None:
                        drop()
                        dropped = True
                    slot.index.close()
                    slot.index = None
        path = self._index_path(gallery_id, model)
        if path is not None:
            for p in (path, path.with_name(path.name + ".json")):
                with suppress(FileNotFoundError):
                    p.unlink()
        elif self.milvus_uri is not None and not dropped:
            from yingyan.gallery.index.milvus_index import drop_collection

            drop_collection(self.milvus_uri, self._collection(gallery_id, model))

    def erase_model_index(self, gallery_id: int, model: str) -> None:
        """After a migration: erase the gallery's index of its old `model` in this process,
        its file (and any other file of a model the gallery no longer uses) or collection."""
        self._drop_index(gallery_id, model)
        self.remove_orphans()

    def remove_orphans(self) -> list[Path]:
        """Delete index files of galleries that no longer exist (a crash between a gallery's
        deletion and its files' removal) or of a model a gallery no longer uses (a migration):
        run at start and after a migration. Returns the files deleted."""
        if self.spec.kind == "milvus" or not self.index_dir.is_dir():
            return []
        with self.db.read() as s:
            live = {g.id: _slug(g.model) for g in list_galleries(s)}
        gone = []
        for p in sorted(self.index_dir.iterdir()):
            m = _INDEX_FILE.fullmatch(p.name)
            if m is None:
                continue
            gid = int(m.group(1))
            own = f"gallery-{gid}-{live[gid]}.faiss" if gid in live else None
            if own is None or not p.name.startswith(own) or p.name[len(own) :] not in _SUFFIXES:
                p.unlink(missing_ok=True)
                gone.append(p)
        if gone:
            log.warning("removed %d orphan index files: %s", len(gone), [p.name for p in gone])
        return gone

    # -- the index ---------------------------------------------------------------------------

    def _index_path(self, gallery_id: int, model: str) -> Path | None:
        if self.spec.kind == "milvus":
            return None
        return self.index_dir / f"gallery-{gallery_id}-{_slug(model)}.faiss"

    def _collection(self, gallery_id: int, model: str) -> str:
        return f"g{gallery_id}_{_slug(model).replace('.', '_').replace('-', '_').replace('@', '_')}"

    def index(self, gallery: GalleryRow, dimension: int | None = None) -> VectorIndex:
        """The gallery's index in this process, caught up with the database. `dimension` is
        needed only to create it (default: that of the gallery's stored templates). The caller
        must not change it; searches take `_searchable` to hold its read lock."""
        index = self._fresh(gallery, dimension)
        if index is None:
            raise ConfigError(f"gallery {gallery.name!r} has no templates yet")
        return index

    @contextmanager
    def _searchable(
        self, gallery: GalleryRow, dimension: int | None = None
    ) -> Iterator[VectorIndex | None]:
        """The gallery's index, caught up, under its read lock (None: nothing to search)."""
        self._fresh(gallery, dimension)
        slot = self._slot(gallery.id)
        with slot.lock.read():
            if slot.index is not None and slot.model != gallery.model:
                raise self._changed(gallery, slot.model)
            yield slot.index

    def _slot(self, gallery_id: int) -> _Slot:
        with self._guard:
            return self._slots.setdefault(gallery_id, _Slot())

    def _fresh(self, gallery: GalleryRow, dimension: int | None = None) -> VectorIndex | None:
        """Catch this process's index of the gallery up with the database's change log."""
        slot = self._slot(gallery.id)
        state = self._state(gallery)
        if state.model != gallery.model:
            raise self._changed(gallery, state.model)
        with slot.lock.read():
            if slot.index is not None and slot.index.seq == state.seq and slot.model == state.model:
                return slot.index
        with slot.lock.write():
            self._catch_up(slot, gallery, state, dimension)
            return slot.index

    @staticmethod
    def _changed(gallery: GalleryRow, now: str | None) -> ModelChangedError:
        return ModelChangedError(
            f"gallery {gallery.name!r} now holds templates of {now}, not of {gallery.model} "
            "(it was migrated): retry with a probe of its current model"
        )

    def _state(self, gallery: GalleryRow) -> ChangeState:
        with self.db.read() as s:
            state = change_state(s, gallery_id=gallery.id)
        if state is None:
            raise NotFoundError(f"gallery {gallery.name!r} no longer exists")
        return state

    def _catch_up(
        self, slot: _Slot, gallery: GalleryRow, state: ChangeState, dimension: int | None
    ) -> None:
        """Under the slot's write lock: open the index if need be, replay the log from its seq
        (or reconcile with the templates where the log cannot serve) until it stands at the
        gallery's current seq, and save it if anything changed."""
        if slot.index is not None and slot.model != gallery.model:
            # Another model's index (the gallery was migrated): closed, never replayed into.
            slot.index.close()
            slot.index = None
        opened = slot.index is None
        if slot.index is None:
            slot.index = self._open_slot(gallery, dimension)
            if slot.index is None:
                return
            slot.model = gallery.model
        index = slot.index
        changed = False
        removed = False
        for _ in range(100):  # bounded: each round ends at a seq read before it
            if index.seq == state.seq and not (opened and index.seq == 0):
                break
            if index.seq == 0 or index.seq < state.compacted or index.seq > state.seq:
                opened = False
                changed |= self._reconcile(gallery, index)
                removed = True  # a reconcile may have erased extra vectors
                index.seq = state.seq
            else:
                with self.db.read() as s:
                    net = changes_since(s, gallery_id=gallery.id, after=index.seq, upto=state.seq)
                    found = template_vectors(
                        s, gallery_id=gallery.id, template_ids=net.added, cipher=self.cipher
                    )
                self._apply(index, found, net.removed)
                removed |= bool(net.removed)
                changed = True
                index.seq = state.seq
            # A template read above may have been erased since: replay until the seq holds.
            state = self._state(gallery)
            if state.model != gallery.model:
                raise self._changed(gallery, state.model)  # unsaved: nothing of B came in
        if changed or removed:
            index.save()

    @staticmethod
    def _apply(index: VectorIndex, added: dict[int, Vector], removed: set[int]) -> None:
        if removed:
            index.remove(np.array(sorted(removed), np.int64))
        if added:
            ids = np.array(sorted(added), np.int64)
            vectors = np.stack([added[int(i)] for i in ids]).astype(np.float32)
            if len(index) == 0 and hasattr(index, "train"):
                index.train(vectors)
            index.add(ids, vectors)

    def _open_slot(self, gallery: GalleryRow, dimension: int | None) -> VectorIndex | None:
        """Open (or create) the gallery's index, or None while there is nothing to index."""
        path = self._index_path(gallery.id, gallery.model)
        dimension = dimension or self._dimension(gallery) or self._saved_dimension(path)
        if dimension is None:
            return None
        private_dir(self.index_dir, tighten=False)
        try:
            return self._open_index(gallery, dimension, path)
        except VectorIndexError:
            if path is None:
                raise
            # A torn or foreign file (or its sidecar): the database rebuilds it.
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".json").unlink(missing_ok=True)
            return self._open_index(gallery, dimension, path)

    @staticmethod
    def _saved_dimension(path: Path | None) -> int | None:
        """The dimension of a saved index file (one whose templates have all been erased still
        holds their vectors until it is reconciled)."""
        if path is None or not path.exists():
            return None
        from yingyan.gallery.index.faiss_index import read_manifest

        with suppress(VectorIndexError):
            return read_manifest(path).dimension
        return None

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

    def _reconcile(self, gallery: GalleryRow, index: VectorIndex) -> bool:
        """Make the index hold exactly the gallery's templates (of its model); True if it
        changed."""
        gallery_id, model = gallery.id, gallery.model
        with self.db.read() as s:
            db_ids = template_ids(s, gallery_id=gallery_id, model=model)
        if index.fingerprint() == Fingerprint.of(db_ids):
            return False
        extra = np.setdiff1d(index.ids(), db_ids)
        if extra.size:
            index.remove(extra)
        missing = set(np.setdiff1d(db_ids, index.ids()).tolist())
        if missing:
            with self.db.read() as s:
                batches = iter_template_batches(
                    s, gallery_id=gallery_id, cipher=self.cipher, model=model
                )
                for batch in batches:
                    keep = np.fromiter((i in missing for i in batch.ids.tolist()), bool)
                    if keep.any():
                        if len(index) == 0 and hasattr(index, "train"):
                            index.train(batch.vectors)
                        index.add(batch.ids[keep], batch.vectors[keep])
        return True

    def check(self, name: str) -> tuple[Fingerprint, Fingerprint]:
        """(database, index) fingerprints of a gallery: equal when consistent."""
        g = self._detached_gallery(name)
        with self._searchable(g) as index:
            with self.db.read() as s:
                db_ids = template_ids(s, gallery_id=g.id)
            return Fingerprint.of(db_ids), (
                Fingerprint.of([]) if index is None else index.fingerprint()
            )

    def _dimension(self, gallery: GalleryRow) -> int | None:
        """The dimension of the gallery's templates, or None while it has none."""
        with self.db.read() as s:
            return template_dimension(s, gallery_id=gallery.id, model=gallery.model)

    def refresh(self, gallery: str | GalleryRow) -> None:
        """After a write: replay it into this process's index (if the gallery has one) and
        save it, so an erasure leaves the file at once. Also purges SQLite's log."""
        g = gallery if isinstance(gallery, GalleryRow) else self._detached_gallery(gallery)
        self._fresh(g)

    # -- enrollment --------------------------------------------------------------------------

    def enroll(
        self,
        gallery: str,
        items: Sequence[EnrollItem],
        *,
        save: bool = True,
        audit: Hook | None = None,
    ) -> list[tuple[int, bool]]:
        """Store the templates in one transaction (with `audit`, given the result), then replay
        them into this process's index. Returns (template id, newly created) per item;
        re-enrolling an image is a no-op. With `save=False` (bulk enrolment) the index catches
        up later (`save_index`, or any search): the change log has every template meanwhile."""
        if not items:
            return []
        out = self.write(lambda s: self.enroll_in(s, gallery, items), audit=audit)
        if save:
            self.refresh(gallery)
        return out

    def enroll_in(
        self, session: Session, gallery: str, items: Sequence[EnrollItem]
    ) -> list[tuple[int, bool]]:
        """The database part of `enroll`, in the caller's unit of work."""
        g = get_gallery(session, name=gallery)
        out = []
        for item in items:
            subject, _ = get_or_create_subject(
                session,
                gallery_id=g.id,
                external_id=item.external_id,
                display_name=item.display_name,
                metadata=item.metadata,
            )
            row, created = add_template(
                session,
                subject=subject,
                template=item.template,
                quality=item.quality,
                source_sha256=item.source_sha256,
                box=item.box,
                image=item.image,
                cipher=self.cipher,
            )
            session.flush()
            out.append((int(row.id), created))
        return out

    def save_index(self, gallery: str) -> None:
        """Bring this process's index of the gallery up to date and write its file."""
        self.refresh(gallery)

    def erase_subject(self, gallery: str, external_id: str, *, audit: Hook | None = None) -> int:
        """Delete a subject with its templates (one transaction, with `audit`), then erase
        them from the index and its file. A crash in between leaves extra index entries that
        the next search, in any process, removes first."""
        removed = self.write(
            lambda s: delete_subject(
                s, gallery_id=get_gallery(s, name=gallery).id, external_id=external_id
            ),
            audit=audit,
        )
        self._after_erasure(gallery)
        return len(removed)

    def erase_all_subjects(self, gallery: str, *, audit: Hook | None = None) -> int:
        """Delete every subject of the gallery with its templates in one transaction (the
        gallery stays), then erase them from the index at once. Returns how many subjects."""

        def work(s: Session) -> int:
            gid = get_gallery(s, name=gallery).id
            names: list[str] = []
            after = None
            while rows := list_subjects(s, gallery_id=gid, limit=1000, after_id=after):
                names += [r.external_id for r in rows]
                after = rows[-1].id
            for name in names:
                delete_subject(s, gallery_id=gid, external_id=name)
            return len(names)

        count = self.write(work, audit=audit)
        self._after_erasure(gallery)
        return count

    def erase_template(self, gallery: str, template_id: int, *, audit: Hook | None = None) -> str:
        """Delete one template, as `erase_subject` does all of a subject's. Returns its
        subject's external id (the subject itself stays)."""

        def audit_one(session: Session, erased: list[tuple[int, str]]) -> None:
            if audit is not None:
                audit(session, erased[0][1])

        return self.erase_templates(gallery, [template_id], audit=audit_one)[0][1]

    def erase_templates(
        self,
        gallery: str,
        template_ids: Sequence[int] | None = None,
        *,
        external_id: str | None = None,
        missing_ok: bool = False,
        audit: Hook | None = None,
    ) -> list[tuple[int, str]]:
        """Delete several templates in one transaction and one index update (not a rewrite of
        the index file per template): these ids, or with None every template of the subject
        `external_id` (of the whole gallery without one), taken inside the transaction.
        Returns (template id, subject external id) of each one deleted. An id not in the
        gallery is skipped with `missing_ok`, else NotFoundError and nothing is deleted."""

        def work(s: Session) -> list[tuple[int, str]]:
            gid = get_gallery(s, name=gallery).id
            ids = template_ids
            if ids is None:
                if external_id is not None:
                    get_subject(s, gallery_id=gid, external_id=external_id)
                ids = [t for t, _ in self._all_templates(s, gid, external_id)]
            out = []
            for t in ids:
                try:
                    out.append((t, delete_template(s, gallery_id=gid, template_id=t)))
                except NotFoundError:
                    if not missing_ok:
                        raise
            return out

        erased = self.write(work, audit=audit)
        if erased:
            self._after_erasure(gallery)
        return erased

    @staticmethod
    def _all_templates(
        session: Session, gallery_id: int, external_id: str | None
    ) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        while True:
            page, total = list_templates(
                session, gallery_id=gallery_id, external_id=external_id, offset=len(out), limit=1000
            )
            out += page
            if not page or len(out) >= total:
                return out

    def _after_erasure(self, gallery: str) -> None:
        """Purge the database's traces of deleted rows, and erase them from the index file."""
        self.db.purge_deleted()
        with suppress(NotFoundError):
            self.refresh(gallery)

    # -- subjects and templates --------------------------------------------------------------

    def subject_vectors(self, gallery: str, external_id: str) -> list[tuple[int, Vector]]:
        """(template id, decrypted vector) of each template of a subject, in id order."""
        with self.db.read() as s:
            g = get_gallery(s, name=gallery)
            return self._subject_vectors(s, g.id, external_id)

    def _subject_vectors(
        self, session: Session, gallery_id: int, external_id: str, read: GalleryRow | None = None
    ) -> list[tuple[int, Vector]]:
        """With `read` (the gallery as read for a comparison), a template of another model
        (a migration committed since that read) is never returned: ModelChangedError."""
        subject = get_subject(session, gallery_id=gallery_id, external_id=external_id)
        rows = subject_templates(session, subject_id=subject.id)
        if read is not None:
            other = {f"{r.model_name}@{r.model_version}" for r in rows} - {read.model}
            if other:
                raise self._changed(read, other.pop())
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
        with self.db.read() as s:
            g = get_gallery(s, name=gallery)
            return list_templates(
                s, gallery_id=g.id, external_id=external_id, offset=offset, limit=limit
            )

    def template_vector(self, gallery: str, template_id: int) -> tuple[str, Vector]:
        """(subject external id, decrypted vector) of one template of the gallery."""
        with self.db.read() as s:
            g = get_gallery(s, name=gallery)
            row = get_template(s, gallery_id=g.id, template_id=template_id)
            subject = subjects_by_id(s, subject_ids=[row.subject_id])[row.subject_id]
            return subject.external_id, template_vector(row, self.cipher)

    def verify_template(
        self, gallery: str, template_id: int, probes: Sequence[Template]
    ) -> tuple[str, list[float]]:
        """(subject external id, each probe's score against one stored template), normalised
        if the gallery is calibrated. Probes of another model than the gallery's are refused
        (ModelMismatchError), as in every other comparison."""
        with self.db.read() as s:
            g = get_gallery(s, name=gallery)
            for p in probes:
                if str(p.model) != g.model:
                    raise ModelMismatchError(
                        f"gallery {gallery!r} holds templates of {g.model}, not of {p.model}"
                    )
            row = get_template(s, gallery_id=g.id, template_id=template_id)
            subject = subjects_by_id(s, subject_ids=[row.subject_id])[row.subject_id]
            reference = template_vector(row, self.cipher)[None, :].astype(np.float32)
            s.expunge(g)
        if not probes:
            return subject.external_id, []
        stack = np.stack([p.vector for p in probes]).astype(np.float32)
        profile = self.profile(g)
        raw = (stack @ reference.T)[:, 0] if profile is None else profile.scores(stack, reference)
        return subject.external_id, [float(v) for v in np.asarray(raw).reshape(-1)]

    def rename_subject(
        self, gallery: str, old: str, new: str, *, audit: Hook | None = None
    ) -> None:
        """Change a subject's external id; ConflictError if `new` is taken. Templates are bound
        to the subject's internal id, so nothing needs re-encrypting."""

        def work(s: Session) -> None:
            g = get_gallery(s, name=gallery)
            rename_subject(s, gallery_id=g.id, external_id=old, new_external_id=new)

        self.write(work, audit=audit)

    def gallery_model(self, gallery: str) -> str:
        """The model id the gallery's templates are of now (a migration changes it)."""
        return self._detached_gallery(gallery).model

    def _detached_gallery(self, name: str) -> GalleryRow:
        with self.db.read() as s:
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
            if threshold is None:
                own = self.decision_threshold(gallery)
                threshold = None if own is None else own[0]
            if threshold is None:
                raise ConfigError(f"gallery {gallery!r} has no threshold; pass one")
        if not probes:
            return []
        queries = np.stack([p.vector for p in probes]).astype(np.float32)
        profile = self.profile(g)
        # Normalisation re-ranks: search deeper so a candidate it lifts is among the hits.
        depth = max(4 * k, k + 16) if profile is None else max(8 * k, k + 64)
        with self._searchable(g, queries.shape[1]) as index:
            if index is None:
                return [[] for _ in probes]
            hits = index.search(queries, min(depth, max(1, len(index))))
        with self.db.read() as s:
            scores = (
                hits.scores if profile is None else self._normalised(s, g, profile, queries, hits)
            )
            return self._candidates(s, scores, hits.ids, k=k, mode=mode, threshold=threshold)

    def identify_current(
        self,
        gallery: str,
        probes_for: Callable[[str], Sequence[Template]],
        **options: Any,
    ) -> list[list[SubjectCandidate]]:
        """`identify` with probes made for the gallery's current model (`probes_for(model)`,
        e.g. `EnginesByModel.engine_for`): if a migration switches the gallery in between,
        the probes are made again once for the new model, never compared across models."""
        for attempt in (0, 1):
            model = self._detached_gallery(gallery).model
            probes = probes_for(model)
            try:
                return self.identify(gallery, probes, **options)
            except ModelMismatchError:
                if attempt or self._detached_gallery(gallery).model == model:
                    raise
        raise AssertionError("unreachable")

    def verify_subject(
        self, gallery: str, external_id: str, probe: Template
    ) -> tuple[int, float] | None:
        """(template id, score) of the subject's best template against the probe, normalised if
        the gallery is calibrated; None if the subject has no template."""
        with self.db.read() as s:
            g = get_gallery(s, name=gallery)
            if str(probe.model) != g.model:
                raise ModelMismatchError(f"gallery {gallery!r} holds templates of {g.model}")
            refs = self._subject_vectors(s, g.id, external_id, g)
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
        profile = self.profile(g)
        if profile is not None:
            scale = f"calibration profile {profile.name} v{profile.version}"
            if g.threshold is not None:
                return g.threshold, f"{scale} (the gallery's own threshold on its scale)"
            return profile.global_threshold, scale
        if g.threshold is not None:
            return g.threshold, "the gallery's threshold"
        return None

    # -- calibration -------------------------------------------------------------------------

    def profile(self, gallery: GalleryRow) -> FairScoreProfile | None:
        """The calibration profile the gallery's comparisons use, if any (read once)."""
        version = gallery.calibration
        if version is None:
            return None
        if version not in self._profiles:
            with self.db.read() as s:
                body = get_calibration_profile(s, version=version).body
            self._profiles[version] = parse_profile(
                body, where=f"stored profile {version}", legacy=True
            )
        return self._profiles[version]

    def set_calibration(
        self,
        gallery: str,
        profile: FairScoreProfile | None,
        *,
        audit: Hook | None = None,
        threshold: float | Keep | None = KEEP,
    ) -> None:
        """Store the profile and make the gallery use it (None: raw scores again), with
        `threshold` on its scale (see `set_gallery_calibration`)."""

        def work(s: Session) -> None:
            if profile is not None:
                put_calibration_profile(
                    s, version=profile.version, model=profile.model, body=profile_json(profile)
                )
            version = profile.version if profile else None
            set_gallery_calibration(s, name=gallery, version=version, threshold=threshold)

        self.write(work, audit=audit)

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
        with self._searchable(g) as index, self.db.read() as session:
            batches = iter_template_batches(
                session, gallery_id=g.id, cipher=self.cipher, model=g.model
            )
            for ids, vectors in ((b.ids, b.vectors) for b in batches):
                if index is None or not len(index):
                    break
                hits = index.search(vectors, min(k + 1, len(index)))
                subject_of = subjects_of_templates(
                    session, template_ids=np.concatenate([ids, hits.ids[hits.ids >= 0]]).tolist()
                )
                self._collect_pairs(ids, hits.scores, hits.ids, subject_of, threshold, best)
        with self.db.read() as s:
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
