"""Reads and writes of the gallery store: keyword-only functions over the caller's Session.

The caller owns the unit of work (`with db.session() as session:`) and nothing here commits, so
enrolling a subject with its templates and consent is all or nothing. Functions flush when they
need generated ids. Vectors are stored as float32 little-endian bytes, written and read only by
`pack_vector`/`unpack_vector`; given a `TemplateCipher` they are sealed with AES-GCM, bound to
their gallery and subject, and so are kept enrolment images (`seal_image`/`template_image`).
With a cipher, data in clear (rows written before encryption, or planted) is refused on read;
`reencrypt_templates` (the `yingyan encryption migrate` and `rotate` steps) seals it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt
from sqlalchemy import and_, case, delete, exists, func, or_, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from yingyan.errors import ModelMismatchError
from yingyan.privacy.cipher import (
    KeyMissingError,
    blob_key_id,
    image_context,
    plaintext_refused,
    template_context,
)
from yingyan.store.changes import log_change
from yingyan.store.database import StoreError
from yingyan.store.tables import (
    GALLERY_KINDS,
    Base,
    CalibrationProfileRow,
    ConsentRow,
    GalleryKind,
    GalleryRow,
    StagedTemplateRow,
    SubjectRow,
    TemplateRow,
    utcnow,
)
from yingyan.types import Box, ModelId, Template, Vector

if TYPE_CHECKING:
    from yingyan.privacy.cipher import TemplateCipher

_SHA256 = re.compile(r"[0-9a-f]{64}")
_VECTOR_DTYPE: Final = np.dtype("<f4")
_IN_CHUNK: Final = 500  # ids per IN (...) clause, far below every backend's parameter limit
_Row = TypeVar("_Row", bound=Base)

RetentionReason = Literal["gallery_expired", "consent_ended"]


class NotFoundError(StoreError):
    code = "not_found"


class ConflictError(StoreError):
    code = "conflict"


class InvalidValueError(StoreError):
    code = "invalid_value"


class TemplateBatch(NamedTuple):
    """Templates of one gallery in id order: `vectors[i]` is the template with id `ids[i]`."""

    ids: npt.NDArray[np.int64]
    vectors: npt.NDArray[np.float32]


class RetentionCandidate(NamedTuple):
    subject: SubjectRow
    reason: RetentionReason


# -- vectors -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TemplateOwner:
    """Where a stored template belongs; its sealed blob is bound to it (associated data)."""

    gallery_id: int
    subject_id: int

    def context(self) -> bytes:
        return template_context(self.gallery_id, self.subject_id)


def pack_vector(
    vector: npt.ArrayLike,
    cipher: TemplateCipher | None = None,
    *,
    owner: TemplateOwner | None = None,
) -> bytes:
    """The stored form of a template vector: float32 little-endian bytes, sealed under the
    cipher's active key (bound to `owner`) when a cipher is given."""
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or array.size == 0:
        raise InvalidValueError(f"a template vector must be 1-D and non-empty, not {array.shape}")
    if not np.isfinite(array).all():
        raise InvalidValueError("a template vector must not contain NaN or infinity")
    plain = array.astype(_VECTOR_DTYPE, copy=False).tobytes()
    if cipher is None:
        return plain
    if owner is None:
        raise InvalidValueError("an encrypted template needs its owner (gallery and subject)")
    return cipher.encrypt(plain, owner.context())


def unpack_vector(
    data: bytes,
    dimension: int,
    cipher: TemplateCipher | None = None,
    *,
    owner: TemplateOwner | None = None,
    allow_plaintext: bool = False,
) -> Vector:
    """The vector of a stored template; exact inverse of `pack_vector`. Sealed rows need the
    cipher and their owner. A plaintext row is read without a cipher (nothing is encrypted
    then); with one it is refused unless `allow_plaintext` (the migration that seals it)."""
    plain = _VECTOR_DTYPE.itemsize * dimension
    if len(data) == plain and cipher is not None and not allow_plaintext:
        raise plaintext_refused("a stored template")
    if len(data) != plain:
        if stored_key_id(data, dimension) is None:
            raise StoreError(f"stored vector has {len(data)} bytes, expected {dimension} float32")
        if cipher is None:
            raise KeyMissingError(
                "templates are encrypted but no key is configured "
                "(set YINGYAN_KEY_FILE or YINGYAN_TEMPLATE_KEY)"
            )
        if owner is None:
            raise InvalidValueError("an encrypted template needs its owner (gallery and subject)")
        data = cipher.decrypt(data, owner.context())
        if len(data) != plain:
            raise StoreError(f"decrypted vector has {len(data)} bytes, expected {plain}")
    return np.frombuffer(data, dtype=_VECTOR_DTYPE).astype(np.float32)


def stored_key_id(data: bytes, dimension: int) -> str | None:
    """The key id a stored template is sealed under; None for a plaintext row."""
    if len(data) == _VECTOR_DTYPE.itemsize * dimension:
        return None
    return blob_key_id(data)


def template_vector(row: TemplateRow, cipher: TemplateCipher | None = None) -> Vector:
    owner = TemplateOwner(row.gallery_id, row.subject_id)
    return unpack_vector(row.embedding, row.dimension, cipher, owner=owner)


# -- kept images -------------------------------------------------------------------------------


def seal_image(
    image: bytes, cipher: TemplateCipher | None, *, owner: TemplateOwner, source_sha256: str
) -> bytes:
    """The stored form of a kept enrolment image: sealed like its template (bound to gallery,
    subject and source hash) when a cipher is given, else as it is."""
    if cipher is None:
        return image
    return cipher.encrypt(image, _image_context(owner, source_sha256))


def open_image(
    data: bytes,
    cipher: TemplateCipher | None,
    *,
    owner: TemplateOwner,
    source_sha256: str,
    allow_plaintext: bool = False,
) -> bytes:
    """The image bytes of a stored one; exact inverse of `seal_image`. An image in clear (no
    image format starts with the sealed magic) is refused with a cipher unless
    `allow_plaintext`; a sealed one needs the cipher."""
    if blob_key_id(data) is None:
        if cipher is not None and not allow_plaintext:
            raise plaintext_refused("a kept enrolment image")
        return data
    if cipher is None:
        raise KeyMissingError(
            "kept images are encrypted but no key is configured "
            "(set YINGYAN_KEY_FILE or YINGYAN_TEMPLATE_KEY)"
        )
    return cipher.decrypt(data, _image_context(owner, source_sha256))


def template_image(row: TemplateRow, cipher: TemplateCipher | None = None) -> bytes | None:
    """The enrolment image kept with a template, decrypted; None if none was kept."""
    if row.image is None:
        return None
    owner = TemplateOwner(row.gallery_id, row.subject_id)
    return open_image(row.image, cipher, owner=owner, source_sha256=row.source_sha256)


def _image_context(owner: TemplateOwner, source_sha256: str) -> bytes:
    return image_context(owner.gallery_id, owner.subject_id, source_sha256)


# -- galleries ---------------------------------------------------------------------------------


def create_gallery(
    session: Session,
    *,
    name: str,
    kind: GalleryKind,
    purpose: str,
    legal_basis: str,
    model: ModelId | str,
    expires_at: datetime | None = None,
    keep_images: bool = False,
    min_quality: float = 0.0,
    threshold: float | None = None,
) -> GalleryRow:
    """A new gallery. Purpose and legal basis are required: no gallery exists without them."""
    if kind not in GALLERY_KINDS:
        raise InvalidValueError(f"gallery kind must be one of {', '.join(GALLERY_KINDS)}")
    if not 0.0 <= min_quality <= 1.0:
        raise InvalidValueError("min_quality must lie in [0, 1]")
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise InvalidValueError("a threshold on the similarity score must lie in [-1, 1]")
    name = _required(name, "gallery name")
    if _gallery_named(session, name) is not None:
        raise ConflictError(f"a gallery named {name!r} already exists")
    row = GalleryRow(
        name=name,
        kind=kind,
        purpose=_required(purpose, "purpose"),
        legal_basis=_required(legal_basis, "legal basis"),
        model=_required(str(model), "model"),
        expires_at=_aware(expires_at, "expires_at"),
        keep_images=keep_images,
        min_quality=min_quality,
        threshold=threshold,
    )
    if not _insert(session, row):  # created concurrently since the check above
        raise ConflictError(f"a gallery named {name!r} already exists")
    return row


def get_gallery(session: Session, *, name: str) -> GalleryRow:
    row = _gallery_named(session, name)
    if row is None:
        raise NotFoundError(f"no gallery named {name!r}")
    return row


def get_gallery_by_id(session: Session, *, gallery_id: int) -> GalleryRow:
    row = session.get(GalleryRow, _db_int(gallery_id, "gallery id"))
    if row is None:
        raise NotFoundError(f"no gallery with id {gallery_id}")
    return row


def lock_gallery(session: Session, *, gallery_id: int) -> GalleryRow:
    """The gallery's row as committed now, locked until the transaction ends (the lock the
    change log's seq UPDATE takes: FOR NO KEY UPDATE, which subject inserts do not block), so
    a template checked against its model cannot commit beside a migration's switch."""
    query = (
        select(GalleryRow)
        .where(GalleryRow.id == _db_int(gallery_id, "gallery id"))
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    row = session.scalar(query)
    if row is None:
        raise NotFoundError(f"no gallery with id {gallery_id}")
    return row


def list_galleries(session: Session) -> list[GalleryRow]:
    return list(session.scalars(select(GalleryRow).order_by(GalleryRow.name)))


def delete_gallery(session: Session, *, name: str) -> int:
    """Delete a gallery with its subjects, templates and consents (the database cascades).
    Returns how many templates went, for the caller's record; drop the gallery's index too."""
    row = get_gallery(session, name=name)
    removed = count_templates(session, gallery_id=row.id)
    session.delete(row)
    session.flush()
    return removed


def _gallery_named(session: Session, name: str) -> GalleryRow | None:
    return session.scalar(select(GalleryRow).where(GalleryRow.name == name))


# -- subjects ----------------------------------------------------------------------------------


def get_or_create_subject(
    session: Session,
    *,
    gallery_id: int,
    external_id: str,
    display_name: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> tuple[SubjectRow, bool]:
    """The gallery's subject with this external id, and whether it was just created. An
    existing subject is returned unchanged (its name and metadata are not overwritten)."""
    gallery = get_gallery_by_id(session, gallery_id=gallery_id)
    external_id = _required(external_id, "external id")

    def find() -> SubjectRow | None:
        return _subject(session, gallery.id, external_id)

    def make() -> SubjectRow:
        return SubjectRow(
            gallery_id=gallery.id,
            external_id=external_id,
            display_name=display_name,
            metadata_=dict(metadata or {}),
        )

    return _get_or_insert(session, find, make)


def get_subject(session: Session, *, gallery_id: int, external_id: str) -> SubjectRow:
    row = _subject(session, gallery_id, external_id)
    if row is None:
        raise NotFoundError(f"no subject {external_id!r} in gallery {gallery_id}")
    return row


def list_subjects(
    session: Session, *, gallery_id: int, limit: int = 100, after_id: int | None = None
) -> list[SubjectRow]:
    """One page of a gallery's subjects in id order. Pass the last id of a page as `after_id`
    for the next: unlike OFFSET, this stays fast deep into millions of rows."""
    limit = _db_int(limit, "limit", low=1)
    after_id = None if after_id is None else _db_int(after_id, "after_id")
    query = select(SubjectRow).where(SubjectRow.gallery_id == gallery_id)
    if after_id is not None:
        query = query.where(SubjectRow.id > after_id)
    return list(session.scalars(query.order_by(SubjectRow.id).limit(limit)))


def count_subjects(session: Session, *, gallery_id: int) -> int:
    query = select(func.count()).where(SubjectRow.gallery_id == gallery_id)
    return session.scalar(query) or 0


def delete_subject(session: Session, *, gallery_id: int, external_id: str) -> list[int]:
    """Delete a subject with its templates and consents. Returns the removed template ids in
    ascending order: the caller removes them from the vector index."""
    row = get_subject(session, gallery_id=gallery_id, external_id=external_id)
    ids = list(
        session.scalars(
            select(TemplateRow.id).where(TemplateRow.subject_id == row.id).order_by(TemplateRow.id)
        )
    )
    session.delete(row)
    session.flush()
    log_change(session, gallery_id=gallery_id, op="remove", template_ids=ids)
    return ids


def rename_subject(
    session: Session, *, gallery_id: int, external_id: str, new_external_id: str
) -> SubjectRow:
    """Give a subject another external id (its templates and consents follow)."""
    row = get_subject(session, gallery_id=gallery_id, external_id=external_id)
    new = _required(new_external_id, "external id")
    if new == row.external_id:
        return row
    if _subject(session, gallery_id, new) is not None:
        raise ConflictError(f"a subject {new!r} already exists in gallery {gallery_id}")
    try:
        with session.begin_nested():
            row.external_id = new
    except IntegrityError:  # taken concurrently since the check above
        raise ConflictError(f"a subject {new!r} already exists in gallery {gallery_id}") from None
    return row


def subjects_of_templates(session: Session, *, template_ids: Iterable[int]) -> dict[int, int]:
    """template id → subject id, for turning index hits into candidates. Unknown ids (deleted
    since the index was built) are absent."""
    wanted = _db_ints(template_ids, "template id")
    found: dict[int, int] = {}
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        query = select(TemplateRow.id, TemplateRow.subject_id).where(TemplateRow.id.in_(chunk))
        found.update({tid: sid for tid, sid in session.execute(query)})
    return found


def _subject(session: Session, gallery_id: int, external_id: str) -> SubjectRow | None:
    query = select(SubjectRow).where(
        SubjectRow.gallery_id == gallery_id, SubjectRow.external_id == external_id
    )
    return session.scalar(query)


# -- templates ---------------------------------------------------------------------------------


def add_template(
    session: Session,
    *,
    subject: SubjectRow,
    template: Template,
    quality: float,
    source_sha256: str,
    box: Box | Sequence[float] | None = None,
    image: bytes | None = None,
    cipher: TemplateCipher | None = None,
) -> tuple[TemplateRow, bool]:
    """Store a template of `subject`, and whether it is new. The same source image for the same
    subject returns the existing row, so re-running an enrolment is harmless.

    The template must come from the gallery's model. `image` is kept only if the gallery keeps
    images, and dropped otherwise: the store never holds photos it was not allowed to. Quality
    gating against `min_quality` is the enrolment policy's job, not the store's. With a
    `cipher` the vector and the kept image are stored encrypted, bound to their owner.
    """
    gallery = get_gallery_by_id(session, gallery_id=subject.gallery_id)
    if str(template.model) != gallery.model:
        raise ModelMismatchError(
            f"gallery {gallery.name!r} holds templates of {gallery.model}, not of {template.model}"
        )
    sha = source_sha256.lower()
    if _SHA256.fullmatch(sha) is None:
        raise InvalidValueError("source_sha256 must be the 64 hex digits of a sha256")
    if not math.isfinite(quality):
        raise InvalidValueError("quality must be a finite number")
    dimension = int(np.asarray(template.vector).size)
    owner = TemplateOwner(gallery.id, subject.id)
    embedding = pack_vector(template.vector, cipher, owner=owner)
    stored_box = _box(box)

    def find() -> TemplateRow | None:
        query = select(TemplateRow).where(
            TemplateRow.subject_id == subject.id, TemplateRow.source_sha256 == sha
        )
        return session.scalar(query)

    def make() -> TemplateRow:
        kept = None
        if image is not None and gallery.keep_images:
            kept = seal_image(image, cipher, owner=owner, source_sha256=sha)
        return TemplateRow(
            subject_id=subject.id,
            gallery_id=gallery.id,
            embedding=embedding,
            dimension=dimension,
            model_name=template.model.name,
            model_version=template.model.version,
            recipe=template.recipe,
            quality=float(quality),
            source_sha256=sha,
            image=kept,
            box=stored_box,
        )

    row, created = _get_or_insert(session, find, make)
    if created:
        # Checked again under the lock the log takes anyway (last, as before): a migration's
        # switch that committed since the first read refuses this template.
        if lock_gallery(session, gallery_id=gallery.id).model != str(template.model):
            raise ModelMismatchError(f"gallery {gallery.name!r} was migrated to another model")
        log_change(session, gallery_id=gallery.id, op="add", template_ids=[row.id])
    return row, created


def count_templates(session: Session, *, gallery_id: int) -> int:
    query = select(func.count()).where(TemplateRow.gallery_id == gallery_id)
    return session.scalar(query) or 0


def template_dimension(
    session: Session, *, gallery_id: int, model: str | None = None
) -> int | None:
    """The dimension of the gallery's templates (of its first one: they all share it), read
    from its column without decrypting anything; None while the gallery has none."""
    query = (
        select(TemplateRow.dimension)
        .where(TemplateRow.gallery_id == gallery_id, _of_model(model))
        .order_by(TemplateRow.id)
        .limit(1)
    )
    return session.scalar(query)


def count_all_templates(session: Session) -> int:
    """Templates of every gallery (what a key rotation scans)."""
    return session.scalar(select(func.count()).select_from(TemplateRow)) or 0


def iter_template_batches(
    session: Session,
    *,
    gallery_id: int,
    batch_size: int = 10_000,
    cipher: TemplateCipher | None = None,
    model: str | None = None,
) -> Iterator[TemplateBatch]:
    """Every template of a gallery exactly once, in ascending id order, `batch_size` at a time,
    for (re)building the vector index without loading the whole gallery. Each batch is one
    keyset query (`id > last`), so memory stays bounded and no cursor is held between batches.
    """
    batch_size = _db_int(batch_size, "batch_size", low=1)
    get_gallery_by_id(session, gallery_id=gallery_id)
    last = 0  # ids start at 1 on both backends
    while True:
        query = (
            select(
                TemplateRow.id,
                TemplateRow.subject_id,
                TemplateRow.embedding,
                TemplateRow.dimension,
            )
            .where(TemplateRow.gallery_id == gallery_id, TemplateRow.id > last, _of_model(model))
            .order_by(TemplateRow.id)
            .limit(batch_size)
        )
        rows = session.execute(query).all()
        if not rows:
            return
        yield _batch(rows, gallery_id, cipher)
        if len(rows) < batch_size:
            return
        last = rows[-1].id


def _batch(rows: Sequence[Any], gallery_id: int, cipher: TemplateCipher | None) -> TemplateBatch:
    ids = np.fromiter((row.id for row in rows), dtype=np.int64, count=len(rows))
    dimension = rows[0].dimension
    vectors = np.empty((len(rows), dimension), dtype=np.float32)
    for i, row in enumerate(rows):
        if row.dimension != dimension:
            raise StoreError(f"template {row.id} has dimension {row.dimension}, not {dimension}")
        owner = TemplateOwner(gallery_id, row.subject_id)
        vectors[i] = unpack_vector(row.embedding, row.dimension, cipher, owner=owner)
    return TemplateBatch(ids, vectors)


def get_template(session: Session, *, gallery_id: int, template_id: int) -> TemplateRow:
    template_id = _db_int(template_id, "template id")
    query = select(TemplateRow).where(
        TemplateRow.id == template_id, TemplateRow.gallery_id == gallery_id
    )
    row = session.scalar(query)
    if row is None:
        raise NotFoundError(f"no template {template_id} in gallery {gallery_id}")
    return row


def delete_template(session: Session, *, gallery_id: int, template_id: int) -> str:
    """Delete one template of a gallery (its subject stays, with its other templates and
    consents). Returns the subject's external id; the caller removes the id from the index."""
    row = get_template(session, gallery_id=gallery_id, template_id=template_id)
    external_id = session.scalars(
        select(SubjectRow.external_id).where(SubjectRow.id == row.subject_id)
    ).one()
    session.delete(row)
    session.flush()
    log_change(session, gallery_id=gallery_id, op="remove", template_ids=[template_id])
    return external_id


def subject_templates(session: Session, *, subject_id: int) -> list[TemplateRow]:
    subject_id = _db_int(subject_id, "subject id")
    query = select(TemplateRow).where(TemplateRow.subject_id == subject_id)
    return list(session.scalars(query.order_by(TemplateRow.id)))


def list_templates(
    session: Session,
    *,
    gallery_id: int,
    external_id: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> tuple[list[tuple[int, str]], int]:
    """One page of a gallery's (template id, subject external id) in template id order, of one
    subject if `external_id` is given; and how many there are in all."""
    limit, offset = _db_int(limit, "limit", low=1), _db_int(offset, "offset")
    where = [TemplateRow.gallery_id == gallery_id]
    if external_id is not None:
        where.append(SubjectRow.external_id == external_id)
    joined = select(TemplateRow.id, SubjectRow.external_id).join(
        SubjectRow, SubjectRow.id == TemplateRow.subject_id
    )
    page = joined.where(*where).order_by(TemplateRow.id).offset(offset).limit(limit)
    total = select(func.count()).select_from(joined.where(*where).subquery())
    rows = [(int(tid), str(ext)) for tid, ext in session.execute(page)]
    return rows, session.scalar(total) or 0


def template_key_usage(session: Session, *, batch_size: int = 10_000) -> dict[str | None, int]:
    """How many stored templates (every gallery) are sealed under each key id; None counts
    plaintext rows. What `retire` checks before a key leaves the keyring."""
    usage: dict[str | None, int] = {}
    last = 0
    while True:
        query = (
            select(TemplateRow.id, TemplateRow.embedding, TemplateRow.dimension)
            .where(TemplateRow.id > last)
            .order_by(TemplateRow.id)
            .limit(batch_size)
        )
        rows = session.execute(query).all()
        for row in rows:
            key_id = stored_key_id(row.embedding, row.dimension)
            usage[key_id] = usage.get(key_id, 0) + 1
        if len(rows) < batch_size:
            return usage
        last = rows[-1].id


_SEALED_HEAD: Final = 4 + 1 + 64 + 12 + 16  # magic, id length, longest id, nonce, tag


def image_key_usage(session: Session, *, batch_size: int = 10_000) -> dict[str | None, int]:
    """Like `template_key_usage`, for kept images (None: in clear). Reads only the head of
    each image, where the key id is."""
    usage: dict[str | None, int] = {}
    last = 0
    head = func.substr(TemplateRow.image, 1, _SEALED_HEAD)
    while True:
        query = (
            select(TemplateRow.id, head)
            .where(TemplateRow.id > last, TemplateRow.image.is_not(None))
            .order_by(TemplateRow.id)
            .limit(batch_size)
        )
        rows = session.execute(query).all()
        for tid, data in rows:
            key_id = blob_key_id(bytes(data))
            usage[key_id] = usage.get(key_id, 0) + 1
            last = tid
        if len(rows) < batch_size:
            return usage


class ReencryptedBatch(NamedTuple):
    last_id: int | None  # None: no template after `after_id`, the pass is complete
    scanned: int
    rewritten: int  # templates re-sealed
    images: int = 0  # kept images re-sealed


def reencrypt_templates(
    session: Session,
    *,
    cipher: TemplateCipher,
    after_id: int = 0,
    batch_size: int = 1_000,
    only_plaintext: bool = False,
) -> ReencryptedBatch:
    """Re-seal under the active key the next `batch_size` templates (every gallery, id order),
    and their kept images, that are plaintext or under an older key (`only_plaintext`: seal
    what is in clear and leave sealed ones as they are, the migration). Call again with
    `after_id=last_id` until `last_id` is None; commit between calls so a long pass keeps its
    progress. The one place data in clear is accepted once a key is configured."""
    batch_size = _db_int(batch_size, "batch_size", low=1)
    after_id = _db_int(after_id, "after_id")
    # Locked (PostgreSQL): a template erased meanwhile waits for this batch, never vanishes
    # under its update.
    query = (
        select(TemplateRow)
        .where(TemplateRow.id > after_id)
        .order_by(TemplateRow.id)
        .limit(batch_size)
        .with_for_update()
    )
    rows = list(session.scalars(query))
    rewritten = images = 0
    for row in rows:
        owner = TemplateOwner(row.gallery_id, row.subject_id)
        if _needs_sealing(stored_key_id(row.embedding, row.dimension), cipher, only_plaintext):
            vector = unpack_vector(
                row.embedding, row.dimension, cipher, owner=owner, allow_plaintext=True
            )
            row.embedding = pack_vector(vector, cipher, owner=owner)
            rewritten += 1
        if row.image is not None and _needs_sealing(blob_key_id(row.image), cipher, only_plaintext):
            sha = row.source_sha256
            image = open_image(
                row.image, cipher, owner=owner, source_sha256=sha, allow_plaintext=True
            )
            row.image = seal_image(image, cipher, owner=owner, source_sha256=sha)
            images += 1
    session.flush()
    return ReencryptedBatch(rows[-1].id if rows else None, len(rows), rewritten, images)


def _needs_sealing(key_id: str | None, cipher: TemplateCipher, only_plaintext: bool) -> bool:
    return key_id is None if only_plaintext else key_id != cipher.active_key_id


def template_ids(
    session: Session, *, gallery_id: int, batch_size: int = 100_000, model: str | None = None
) -> npt.NDArray[np.int64]:
    """Every template id of a gallery, ascending, streamed in keyset batches: what the vector
    index must hold (compare with `yingyan.gallery.index.Fingerprint.of`). With `model`, only
    that model's (an index of one model never takes another's, even across a migration)."""
    get_gallery_by_id(session, gallery_id=gallery_id)
    chunks = list(_id_chunks(session, gallery_id, batch_size, model))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)


def enrolled_images(session: Session, *, gallery_id: int) -> set[tuple[str, str]]:
    """(external id, source sha256) of every template of a gallery: what a resumed bulk
    enrollment must not do again."""
    query = (
        select(SubjectRow.external_id, TemplateRow.source_sha256)
        .join(TemplateRow, TemplateRow.subject_id == SubjectRow.id)
        .where(SubjectRow.gallery_id == gallery_id)
    )
    return {(e, h) for e, h in session.execute(query)}


def subjects_by_id(session: Session, *, subject_ids: Iterable[int]) -> dict[int, SubjectRow]:
    wanted = _db_ints(subject_ids, "subject id")
    found: dict[int, SubjectRow] = {}
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        found.update(
            {r.id: r for r in session.scalars(select(SubjectRow).where(SubjectRow.id.in_(chunk)))}
        )
    return found


def _of_model(model: str | None) -> Any:
    """A WHERE clause for templates of `model` ("name@version"; None: any model)."""
    if model is None:
        return true()
    name, _, version = model.rpartition("@")
    return and_(TemplateRow.model_name == name, TemplateRow.model_version == version)


def _id_chunks(
    session: Session, gallery_id: int, batch_size: int, model: str | None = None
) -> Iterator[npt.NDArray[np.int64]]:
    last = 0
    while True:
        query = (
            select(TemplateRow.id)
            .where(TemplateRow.gallery_id == gallery_id, TemplateRow.id > last, _of_model(model))
            .order_by(TemplateRow.id)
            .limit(batch_size)
        )
        ids = np.fromiter(session.scalars(query), dtype=np.int64)
        if ids.size == 0:
            return
        yield ids
        if ids.size < batch_size:
            return
        last = int(ids[-1])


# -- consents ----------------------------------------------------------------------------------


def add_consent(
    session: Session,
    *,
    subject_id: int,
    purpose: str,
    reference: str,
    granted_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> ConsentRow:
    """Record a subject's consent to a purpose; `reference` says who consented or names the
    signed document. `granted_at` defaults to now."""
    if session.get(SubjectRow, _db_int(subject_id, "subject id")) is None:
        raise NotFoundError(f"no subject with id {subject_id}")
    granted = _aware(granted_at, "granted_at") or utcnow()
    expires = _aware(expires_at, "expires_at")
    if expires is not None and expires <= granted:
        raise InvalidValueError("a consent must expire after it was granted")
    row = ConsentRow(
        subject_id=subject_id,
        purpose=_required(purpose, "purpose"),
        reference=_required(reference, "reference"),
        granted_at=granted,
        expires_at=expires,
    )
    session.add(row)
    session.flush()
    return row


def list_consents(session: Session, *, subject_id: int) -> list[ConsentRow]:
    subject_id = _db_int(subject_id, "subject id")
    query = select(ConsentRow).where(ConsentRow.subject_id == subject_id)
    return list(session.scalars(query.order_by(ConsentRow.granted_at, ConsentRow.id)))


def withdraw_consent(
    session: Session, *, consent_id: int, at: datetime | None = None
) -> ConsentRow:
    """Mark a consent withdrawn (from `at`, default now). Withdrawing twice keeps the first."""
    row = session.get(ConsentRow, _db_int(consent_id, "consent id"))
    if row is None:
        raise NotFoundError(f"no consent with id {consent_id}")
    if row.withdrawn_at is None:
        row.withdrawn_at = _aware(at, "at") or utcnow()
        session.flush()
    return row


def subjects_due_for_removal(
    session: Session, *, now: datetime | None = None, limit: int | None = None
) -> list[RetentionCandidate]:
    """Subjects the retention job must remove, with the reason, in id order: every subject of an
    expired gallery, and subjects that have consents none of which is still in force (neither
    withdrawn nor expired). Subjects without any consent rows rely on the gallery's legal basis
    (e.g. a watchlist) and are removed only with their gallery."""
    limit = None if limit is None else _db_int(limit, "limit", low=1)
    at = _aware(now, "now") or utcnow()
    in_force = exists().where(
        ConsentRow.subject_id == SubjectRow.id,
        ConsentRow.withdrawn_at.is_(None),
        or_(ConsentRow.expires_at.is_(None), ConsentRow.expires_at > at),
    )
    has_consent = exists().where(ConsentRow.subject_id == SubjectRow.id)
    gallery_expired = and_(GalleryRow.expires_at.is_not(None), GalleryRow.expires_at <= at)
    reason = case((gallery_expired, "gallery_expired"), else_="consent_ended")
    query = (
        select(SubjectRow, reason)
        .join(GalleryRow, GalleryRow.id == SubjectRow.gallery_id)
        .where(or_(gallery_expired, and_(has_consent, ~in_force)))
        .order_by(SubjectRow.id)
        .limit(limit)
    )
    return [RetentionCandidate(subject, why) for subject, why in session.execute(query)]


# -- helpers -----------------------------------------------------------------------------------


def _get_or_insert(
    session: Session, find: Callable[[], _Row | None], make: Callable[[], _Row]
) -> tuple[_Row, bool]:
    """Return the existing row or insert a new one; a concurrent insert of the same key (unique
    violation) is resolved by reading the winner's row instead of failing the unit of work."""
    existing = find()
    if existing is not None:
        return existing, False
    row = make()
    if _insert(session, row):
        return row, True
    existing = find()
    if existing is None:
        raise ConflictError(f"could not store {row!r}: it conflicts with another row")
    return existing, False


def _insert(session: Session, row: Base) -> bool:
    """Insert in a savepoint; False (and the transaction still usable) on a unique violation."""
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return False
    return True


def _required(value: str, what: str) -> str:
    value = value.strip()
    if not value:
        raise InvalidValueError(f"{what} is required")
    return value


def _aware(value: datetime | None, what: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidValueError(f"{what} must carry a time zone (e.g. datetime.UTC)")
    return value


def _box(box: Box | Sequence[float] | None) -> list[float] | None:
    if box is None:
        return None
    values = [box.x1, box.y1, box.x2, box.y2] if isinstance(box, Box) else [float(v) for v in box]
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InvalidValueError("a box is 4 finite numbers: x1, y1, x2, y2")
    return values


# -- calibration profiles ------------------------------------------------------------------------


def put_calibration_profile(
    session: Session, *, version: str, model: str, body: str
) -> CalibrationProfileRow:
    """Store a profile under its version (content hash); storing it again is a no-op."""
    version = _required(version, "profile version")

    def find() -> CalibrationProfileRow | None:
        return session.get(CalibrationProfileRow, version)

    def make() -> CalibrationProfileRow:
        return CalibrationProfileRow(version=version, model=_required(model, "model"), body=body)

    row, _ = _get_or_insert(session, find, make)
    return row


def get_calibration_profile(session: Session, *, version: str) -> CalibrationProfileRow:
    row = session.get(CalibrationProfileRow, version)
    if row is None:
        raise NotFoundError(f"no calibration profile {version!r}")
    return row


class Keep(Enum):
    """`set_gallery_calibration(threshold=KEEP)`: leave the gallery's threshold as it is."""

    THRESHOLD = "keep"


KEEP: Final = Keep.THRESHOLD


def set_gallery_calibration(
    session: Session,
    *,
    name: str,
    version: str | None,
    threshold: float | Keep | None = KEEP,
) -> GalleryRow:
    """Make a gallery's comparisons use a stored profile (None: raw scores again). The profile
    must be of the gallery's model and dimension.

    A gallery's `threshold` is always on the scale of the scores its comparisons give: raw
    cosine without a calibration, that profile's normalised scale with one. This is the one
    place the calibration changes, so the scale is kept here: when it changes, a threshold set
    on the old scale is refused rather than carried over (a cosine 0.9 against normalised
    scores around 2.5 lets impostors match). Pass the threshold on the new scale, or None to
    drop it (the profile's own threshold, or the model's default, then applies)."""
    from yingyan.calibration.fair_score import parse_profile

    gallery = get_gallery(session, name=name)
    if version is not None:
        row = get_calibration_profile(session, version=version)
        if row.model != gallery.model:
            raise ModelMismatchError(
                f"profile {version} is for {row.model}, gallery {name!r} holds {gallery.model}"
            )
        profile = parse_profile(row.body, where=f"stored profile {version}", legacy=True)
        dimension = session.scalar(
            select(TemplateRow.dimension).where(TemplateRow.gallery_id == gallery.id).limit(1)
        )
        if dimension is not None and dimension != profile.dimension:
            raise ModelMismatchError(
                f"profile {version} is for {profile.dimension}-d templates, "
                f"gallery {name!r} holds {dimension}-d ones"
            )
    if isinstance(threshold, Keep):
        if version != gallery.calibration and gallery.threshold is not None:
            old = "raw cosine" if gallery.calibration is None else f"profile {gallery.calibration}"
            new = "raw cosine" if version is None else f"profile {version}"
            raise InvalidValueError(
                f"gallery {name!r} has a threshold ({gallery.threshold:g}) on the {old} scale, "
                f"and its scores would be on the {new} scale: give a threshold on the new scale "
                "or drop the gallery's own"
            )
    elif threshold is not None and not math.isfinite(threshold):
        raise InvalidValueError("a threshold must be a finite number")
    elif threshold is not None and version is None and not -1.0 <= threshold <= 1.0:
        raise InvalidValueError("a threshold on the similarity score must lie in [-1, 1]")
    else:
        gallery.threshold = threshold
    gallery.calibration = version
    session.flush()
    return gallery


def template_vectors(
    session: Session,
    *,
    gallery_id: int,
    template_ids: Iterable[int],
    cipher: TemplateCipher | None = None,
) -> dict[int, Vector]:
    """Decrypted vectors of some templates of a gallery (e.g. the candidates of a search);
    ids not in the gallery are absent."""
    out: dict[int, Vector] = {}
    wanted = _db_ints(template_ids, "template id")
    for chunk in (wanted[i : i + _IN_CHUNK] for i in range(0, len(wanted), _IN_CHUNK)):
        query = select(TemplateRow).where(
            TemplateRow.gallery_id == gallery_id, TemplateRow.id.in_(chunk)
        )
        for row in session.scalars(query):
            out[int(row.id)] = template_vector(row, cipher)
    return out


def template_counts(session: Session, *, subject_ids: Iterable[int]) -> dict[int, int]:
    """subject id → number of templates, for a page of subjects in one grouped query."""
    wanted = _db_ints(subject_ids, "subject id")
    if not wanted:
        return {}
    query = (
        select(TemplateRow.subject_id, func.count())
        .where(TemplateRow.subject_id.in_(wanted))
        .group_by(TemplateRow.subject_id)
    )
    found = {int(sid): int(n) for sid, n in session.execute(query)}
    return {sid: found.get(sid, 0) for sid in wanted}


# -- shared with other packages ------------------------------------------------------------------

# `_insert` for the access keys (a prefix collision is retried) and the audit log (concurrent
# first appends create the head once): False, with the transaction still usable, on a duplicate.
try_insert = _insert


# -- bounds --------------------------------------------------------------------------------------

DB_INT_MAX: Final = 2**63 - 1
DB_INT_MIN: Final = -(2**63)
"""The range of SQLite's INTEGER and PostgreSQL's BIGINT: every id, seq, limit and offset."""


def _db_int(value: int, what: str, *, low: int = 0) -> int:
    """An id, limit or offset the database can hold, else InvalidValueError: a larger Python int
    fails in the driver (OverflowError, or a PostgreSQL out-of-range error) as a bug would."""
    number = int(value)
    if not low <= number <= DB_INT_MAX:
        raise InvalidValueError(f"{what} must lie in [{low}, {DB_INT_MAX}], not {value}")
    return number


def _db_ints(values: Iterable[int], what: str) -> list[int]:
    """Distinct ids, ascending, each checked by `_db_int`."""
    return sorted({_db_int(v, what) for v in values})


# -- migration between models ------------------------------------------------------------------


class MigrationSource(NamedTuple):
    """A template of the gallery's current model, with what re-embedding it needs."""

    template_id: int
    subject_id: int
    source_sha256: str
    box: list[float] | None
    has_image: bool


def migration_sources(
    session: Session, *, gallery_id: int, target_model: str
) -> list[MigrationSource]:
    """The gallery's templates not yet staged for `target_model`, in id order."""
    staged = select(StagedTemplateRow.id).where(
        StagedTemplateRow.source_template_id == TemplateRow.id,
        StagedTemplateRow.target_model == target_model,
    )
    query = (
        select(
            TemplateRow.id,
            TemplateRow.subject_id,
            TemplateRow.source_sha256,
            TemplateRow.box,
            TemplateRow.image.is_not(None),
        )
        .where(TemplateRow.gallery_id == gallery_id, ~exists(staged))
        .order_by(TemplateRow.id)
    )
    return [
        MigrationSource(int(a), int(b), c, d, bool(e)) for a, b, c, d, e in session.execute(query)
    ]


def stage_template(
    session: Session,
    *,
    source: TemplateRow,
    template: Template,
    quality: float,
    box: Box | Sequence[float] | None = None,
    cipher: TemplateCipher | None = None,
) -> bool:
    """Stage the target model's template of one source template, sealed for the same owner;
    False if it was staged already (a rerun)."""
    owner = TemplateOwner(source.gallery_id, source.subject_id)
    row = StagedTemplateRow(
        gallery_id=source.gallery_id,
        subject_id=source.subject_id,
        source_template_id=source.id,
        target_model=str(template.model),
        embedding=pack_vector(template.vector, cipher, owner=owner),
        dimension=int(np.asarray(template.vector).size),
        recipe=template.recipe,
        quality=float(quality) if math.isfinite(quality) else 0.0,
        box=_box(box),
    )
    return _insert(session, row)


def stage_no_face(session: Session, *, source: TemplateRow, target_model: str) -> bool:
    """Record that the target model found no face in this source's image (not retried)."""
    row = StagedTemplateRow(
        gallery_id=source.gallery_id,
        subject_id=source.subject_id,
        source_template_id=source.id,
        target_model=target_model,
        embedding=None,
        dimension=0,
        recipe="none",
        quality=0.0,
        box=None,
    )
    return _insert(session, row)


def staged_templates(
    session: Session, *, gallery_id: int, target_model: str
) -> list[StagedTemplateRow]:
    query = (
        select(StagedTemplateRow)
        .where(
            StagedTemplateRow.gallery_id == gallery_id,
            StagedTemplateRow.target_model == target_model,
        )
        .order_by(StagedTemplateRow.source_template_id)
    )
    return list(session.scalars(query))


def discard_staged(session: Session, *, gallery_id: int) -> int:
    """Delete every staged template of the gallery (a migration abandoned or completed)."""
    result = session.execute(
        delete(StagedTemplateRow).where(StagedTemplateRow.gallery_id == gallery_id)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def count_staged(session: Session, *, gallery_id: int | None = None) -> int:
    query = select(func.count()).select_from(StagedTemplateRow)
    if gallery_id is not None:
        query = query.where(StagedTemplateRow.gallery_id == gallery_id)
    return int(session.scalar(query) or 0)


class SwitchResult(NamedTuple):
    removed: list[int]  # template ids of the old model
    added: list[int]  # template ids of the new one
    dropped_subjects: list[int]  # subjects left with no template (to re-enrol)


def switch_gallery_model(session: Session, *, gallery_id: int, target: ModelId) -> SwitchResult:
    """In the caller's transaction: the gallery's templates become the staged ones of `target`
    (each keeping its source's kept image, sealed for the same owner), every old template is
    deleted, the log gets the removes and the adds, and `galleries.model` names `target`.
    Templates with no staged vector are dropped: the caller decides whether that is allowed."""
    gallery = lock_gallery(session, gallery_id=gallery_id)
    model = str(target)
    staged = {
        s.source_template_id: s
        for s in staged_templates(session, gallery_id=gallery_id, target_model=model)
    }
    old = list(
        session.scalars(
            select(TemplateRow).where(TemplateRow.gallery_id == gallery_id).order_by(TemplateRow.id)
        )
    )
    new_rows: list[TemplateRow] = []
    for row in old:
        s = staged.get(row.id)
        if s is not None and s.embedding is not None:
            new_rows.append(
                TemplateRow(
                    subject_id=row.subject_id,
                    gallery_id=gallery_id,
                    embedding=s.embedding,
                    dimension=s.dimension,
                    model_name=target.name,
                    model_version=target.version,
                    recipe=s.recipe,
                    quality=s.quality,
                    source_sha256=row.source_sha256,
                    image=row.image,
                    box=s.box,
                )
            )
    removed = [int(r.id) for r in old]
    kept_subjects = {r.subject_id for r in new_rows}
    dropped = sorted({int(r.subject_id) for r in old} - kept_subjects)
    session.execute(delete(StagedTemplateRow).where(StagedTemplateRow.gallery_id == gallery_id))
    for r in old:
        session.delete(r)
    session.flush()
    log_change(session, gallery_id=gallery_id, op="remove", template_ids=removed)
    session.add_all(new_rows)
    session.flush()
    added = [int(r.id) for r in new_rows]
    log_change(session, gallery_id=gallery_id, op="add", template_ids=added)
    gallery.model = model
    gallery.calibration = None  # a profile is fitted on one model's scores
    gallery.threshold = None  # ditto: the new model's default applies until one is set
    session.flush()
    return SwitchResult(removed, added, dropped)
