"""Key rotation over the store: re-encrypt every template under the active key, report which
keys are in use, and retire a key only once no stored template needs it.

Rotation: `add_key` (a new active key), `rotate_templates` (re-seal every template and kept
image not under it, plaintext ones included, one committed batch at a time: an interrupted run
keeps its progress and everything stays readable), `reseal_index_files`, then `retire_key` for
each old key. An index file under a retired key is only a cache: the gallery service rebuilds it.

Templates staged by a gallery migration between models (`staged_templates`, sealed like the
templates they will replace) are stored templates too: counted per key, re-sealed first (so a
switch that moves them in meanwhile lands in `templates` before that pass reaches its new ids),
and a key one of them still uses is not retired. A migration running meanwhile keeps the
keyring it loaded (it is refused once the images it reads are under the new key) and may stage
rows under the old key after that pass: `retire_key` refuses that key until a rerun re-seals
them.

Migration (`only_plaintext=True`): seal what was stored in clear (before encryption existed, or
written without a key), which is refused on read once a key is configured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from yingyan.gallery.index import VectorIndexError
from yingyan.privacy.cipher import KeyInUseError, TemplateCipher
from yingyan.privacy.keyring import read_keyring, write_keyring
from yingyan.store import (
    Database,
    InvalidValueError,
    TemplateOwner,
    count_all_templates,
    image_key_usage,
    pack_vector,
    reencrypt_templates,
    stored_key_id,
    template_key_usage,
    unpack_vector,
)
from yingyan.store.repository import count_staged
from yingyan.store.tables import StagedTemplateRow


@dataclass(frozen=True, slots=True)
class KeyUsage:
    """Stored templates per key id, and those still in plaintext; the same for kept images
    and for the templates a gallery migration has staged (`staged_templates`)."""

    by_key: dict[str, int]
    plaintext: int
    images_by_key: dict[str, int] = field(default_factory=dict)
    plaintext_images: int = 0
    staged_by_key: dict[str, int] = field(default_factory=dict)
    plaintext_staged: int = 0

    @property
    def total(self) -> int:
        return self.plaintext + sum(self.by_key.values())

    def uses(self, key_id: str) -> int:
        """Templates, staged templates and images sealed under `key_id`."""
        return (
            self.by_key.get(key_id, 0)
            + self.images_by_key.get(key_id, 0)
            + self.staged_by_key.get(key_id, 0)
        )


@dataclass(frozen=True, slots=True)
class RotationReport:
    scanned: int
    rewritten: int
    active_key: str
    images: int = 0
    staged: int = 0  # staged templates (a migration between models) re-sealed
    staged_scanned: int = 0


def key_usage(db: Database) -> KeyUsage:
    from yingyan.watch.alerts import crop_key_usage  # alert crops are kept images too

    with db.session() as s:
        templates, images = template_key_usage(s), image_key_usage(s)
        staged = _staged_key_usage(s)
    for key, n in crop_key_usage(db).items():
        images[key] = images.get(key, 0) + n
    plain, plain_images = templates.pop(None, 0), images.pop(None, 0)
    plain_staged = staged.pop(None, 0)
    return KeyUsage(
        _known(templates), plain, _known(images), plain_images, _known(staged), plain_staged
    )


def _staged_key_usage(session: Session, *, batch_size: int = 10_000) -> dict[str | None, int]:
    """Staged templates per key id (None: in clear); rows where the new model found no face
    hold no template and are not counted."""
    usage: dict[str | None, int] = {}
    last = 0
    row = StagedTemplateRow
    while True:
        query = (
            select(row.id, row.embedding, row.dimension)
            .where(row.id > last, row.embedding.is_not(None))
            .order_by(row.id)
            .limit(batch_size)
        )
        rows = session.execute(query).all()
        for r in rows:
            key_id = stored_key_id(r.embedding, r.dimension)
            usage[key_id] = usage.get(key_id, 0) + 1
        if len(rows) < batch_size:
            return usage
        last = rows[-1].id


def _known(usage: dict[str | None, int]) -> dict[str, int]:
    return {k: n for k, n in sorted(usage.items(), key=lambda kv: str(kv[0])) if k is not None}


def rotate_templates(
    db: Database,
    cipher: TemplateCipher,
    *,
    batch_size: int = 1_000,
    progress: Callable[[int], None] | None = None,
    only_plaintext: bool = False,
) -> RotationReport:
    """Re-encrypt every stored template, staged template and kept image that is not under the
    active key (with `only_plaintext`: every one stored in clear), `batch_size` per
    transaction; `progress(n)` is called with the number of rows scanned by each batch (staged
    ones first: `count_templates_to_scan` counts both)."""
    staged = staged_scanned = 0
    after = 0
    while True:
        last, n, done = db.run(
            partial(
                _reseal_staged,
                cipher=cipher,
                after=after,
                batch_size=batch_size,
                only_plaintext=only_plaintext,
            )
        )
        if last is None:
            break
        staged_scanned += n
        staged += done
        after = last
        if progress is not None:
            progress(n)
    scanned = rewritten = images = 0
    after = 0
    while True:
        with db.session() as s:
            batch = reencrypt_templates(
                s,
                cipher=cipher,
                after_id=after,
                batch_size=batch_size,
                only_plaintext=only_plaintext,
            )
        if batch.last_id is None:
            break
        scanned += batch.scanned
        rewritten += batch.rewritten
        images += batch.images
        after = batch.last_id
        if progress is not None:
            progress(batch.scanned)
    return RotationReport(scanned, rewritten, cipher.active_key_id, images, staged, staged_scanned)


def _reseal_staged(
    session: Session,
    *,
    cipher: TemplateCipher,
    after: int,
    batch_size: int,
    only_plaintext: bool,
) -> tuple[int | None, int, int]:
    """Re-seal the next `batch_size` staged templates after id `after` that need it, for the
    same owner as before (gallery and subject: what the switch moves them to). Each row is
    rewritten only if it still holds the blob read (a switch or an erasure may have deleted
    it meanwhile: then it is skipped). Returns (last id or None at the end, scanned, re-sealed)."""
    if batch_size < 1:
        raise InvalidValueError("batch_size must be at least 1")
    row = StagedTemplateRow
    query = (
        select(row.id, row.gallery_id, row.subject_id, row.embedding, row.dimension)
        .where(row.id > after)
        .order_by(row.id)
        .limit(batch_size)
    )
    rows = session.execute(query).all()
    done = 0
    for r in rows:
        if r.embedding is None:  # the new model found no face: nothing sealed
            continue
        key_id = stored_key_id(r.embedding, r.dimension)
        if (key_id is not None) if only_plaintext else (key_id == cipher.active_key_id):
            continue
        owner = TemplateOwner(r.gallery_id, r.subject_id)
        vector = unpack_vector(r.embedding, r.dimension, cipher, owner=owner, allow_plaintext=True)
        sealed = pack_vector(vector, cipher, owner=owner)
        result = session.execute(
            update(row).where(row.id == r.id, row.embedding == r.embedding).values(embedding=sealed)
        )
        done += int(getattr(result, "rowcount", 0) or 0)
    return (int(rows[-1].id) if rows else None), len(rows), done


def count_templates_to_scan(db: Database) -> int:
    """How many rows a rotation scans, templates and staged ones (a progress bar's total)."""
    with db.session() as s:
        return count_all_templates(s) + count_staged(s)


def reseal_index_files(
    index_dir: Path, cipher: TemplateCipher, *, only_plaintext: bool = False
) -> tuple[int, list[Path]]:
    """Re-encrypt every saved faiss file under the active key (`only_plaintext`: seal those in
    clear only). Returns how many were rewritten and the files that could not be decrypted
    (deleted: the service rebuilds them)."""
    from yingyan.gallery.index.faiss_index import reseal_file, sidecar_path

    rewritten, dropped = 0, []
    for path in sorted(index_dir.glob("*.faiss")) if index_dir.is_dir() else []:
        try:
            rewritten += reseal_file(path, cipher, only_plaintext=only_plaintext)
        except VectorIndexError:
            path.unlink(missing_ok=True)
            sidecar_path(path).unlink(missing_ok=True)
            dropped.append(path)
    return rewritten, dropped


def retire_key(db: Database, key_file: Path, key_id: str) -> None:
    """Remove `key_id` from the key file, refused while it is active or any stored template
    (staged ones included) or kept image is still encrypted under it (run `rotate_templates`
    first)."""
    keyring = read_keyring(key_file)
    smaller = keyring.without(key_id)  # refuses the active key and unknown ids
    usage = key_usage(db)
    in_use = usage.uses(key_id)
    if in_use:
        staged = usage.staged_by_key.get(key_id, 0)
        raise KeyInUseError(
            f"{in_use} stored template(s) or kept image(s) are still encrypted under "
            f"{key_id!r}"
            + (
                f" ({staged} of them staged by a gallery migration between models)"
                if staged
                else ""
            )
            + ": rotate (re-encrypt) them first"
        )
    write_keyring(key_file, smaller)
