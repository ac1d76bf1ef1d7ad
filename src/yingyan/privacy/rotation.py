"""Key rotation over the store: re-encrypt every template under the active key, report which
keys are in use, and retire a key only once no stored template needs it.

Rotation: `add_key` (a new active key), `rotate_templates` (re-seal every template and kept
image not under it, plaintext ones included, one committed batch at a time: an interrupted run
keeps its progress and everything stays readable), `reseal_index_files`, then `retire_key` for
each old key. An index file under a retired key is only a cache: the gallery service rebuilds it.

Migration (`only_plaintext=True`): seal what was stored in clear (before encryption existed, or
written without a key), which is refused on read once a key is configured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from yingyan.gallery.index import VectorIndexError
from yingyan.privacy.cipher import KeyInUseError, TemplateCipher
from yingyan.privacy.keyring import read_keyring, write_keyring
from yingyan.store import (
    Database,
    count_all_templates,
    image_key_usage,
    reencrypt_templates,
    template_key_usage,
)


@dataclass(frozen=True, slots=True)
class KeyUsage:
    """Stored templates per key id, and those still in plaintext; the same for kept images."""

    by_key: dict[str, int]
    plaintext: int
    images_by_key: dict[str, int] = field(default_factory=dict)
    plaintext_images: int = 0

    @property
    def total(self) -> int:
        return self.plaintext + sum(self.by_key.values())

    def uses(self, key_id: str) -> int:
        """Templates and images sealed under `key_id`."""
        return self.by_key.get(key_id, 0) + self.images_by_key.get(key_id, 0)


@dataclass(frozen=True, slots=True)
class RotationReport:
    scanned: int
    rewritten: int
    active_key: str
    images: int = 0


def key_usage(db: Database) -> KeyUsage:
    from yingyan.watch.alerts import crop_key_usage  # alert crops are kept images too

    with db.session() as s:
        templates, images = template_key_usage(s), image_key_usage(s)
    for key, n in crop_key_usage(db).items():
        images[key] = images.get(key, 0) + n
    plain, plain_images = templates.pop(None, 0), images.pop(None, 0)
    return KeyUsage(_known(templates), plain, _known(images), plain_images)


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
    """Re-encrypt every stored template and kept image that is not under the active key (with
    `only_plaintext`: every one stored in clear), `batch_size` per transaction; `progress(n)`
    is called with the number of templates scanned by each batch."""
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
    return RotationReport(scanned, rewritten, cipher.active_key_id, images)


def count_templates_to_scan(db: Database) -> int:
    """How many templates a rotation scans (for a progress bar's total)."""
    with db.session() as s:
        return count_all_templates(s)


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
    """Remove `key_id` from the key file, refused while it is active or any stored template is
    still encrypted under it (run `rotate_templates` first)."""
    keyring = read_keyring(key_file)
    smaller = keyring.without(key_id)  # refuses the active key and unknown ids
    in_use = key_usage(db).uses(key_id)
    if in_use:
        raise KeyInUseError(
            f"{in_use} stored template(s) or kept image(s) are still encrypted under "
            f"{key_id!r}: rotate (re-encrypt) them first"
        )
    write_keyring(key_file, smaller)
