"""Templates encrypted at rest: AES-256-GCM under a keyring of named keys, one of them active.

A sealed blob is `MAGIC | len(key id) | key id | 12-byte random nonce | ciphertext + 16-byte tag`.
The key id travels with the blob so that, after a rotation, blobs under older keys stay readable
until they are re-encrypted and the old key is retired. The associated data (authenticated, not
stored) binds a blob to where it belongs, e.g. a template to its gallery and subject: a blob
copied onto another row, or altered in any bit, fails to decrypt instead of silently matching.

`MAGIC` ends in a control byte, so it never begins a faiss file (printable four-character
codes) nor an image (every decodable format starts with its own signature); stored templates
are told apart by length (a plaintext template is exactly 4 bytes per dimension, a sealed one is
always longer), see `yingyan.store.repository.unpack_vector`. Once a key is configured, data in
clear is refused on read (`PlaintextRefusedError`) until `yingyan encryption migrate` seals it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from yingyan.errors import YingyanError

MAGIC: Final = b"YYC\x01"  # Yingyan cipher, blob format 1
KEY_BYTES: Final = 32  # AES-256
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
KEY_ID: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class CipherError(YingyanError):
    """Base of the errors of template encryption."""

    code = "cipher_error"


class KeyringError(CipherError):
    """A key file or key variable is missing, malformed, or an operation on it is refused."""

    code = "invalid_keyring"


class UnknownKeyError(CipherError):
    """The data was encrypted under a key id the configured keyring does not hold."""

    code = "template_key_unknown"


class DecryptionError(CipherError):
    """Authentication failed: another key under the same id, or the blob was altered or
    moved to a row it does not belong to."""

    code = "template_decryption_failed"


class KeyMissingError(CipherError):
    """The data is encrypted but no key is configured."""

    code = "template_key_missing"


class PlaintextRefusedError(CipherError):
    """Data that should be sealed is stored in clear. Unauthenticated bytes are never used once
    a key is configured (a row or file could have been planted): they are sealed only by the
    explicit, audited migration step."""

    code = "plaintext_refused"


MIGRATE_COMMAND: Final = "yingyan encryption migrate"


def plaintext_refused(what: str) -> PlaintextRefusedError:
    return PlaintextRefusedError(
        f"{what} is stored in plaintext and is refused while encryption is configured: "
        f"seal it with `{MIGRATE_COMMAND}`"
    )


class KeyInUseError(CipherError):
    """A key cannot be retired while stored templates are still encrypted under it."""

    code = "template_key_in_use"


@dataclass(frozen=True, slots=True)
class Keyring:
    """Named AES-256 keys; `active` encrypts, every key decrypts."""

    active: str
    keys: Mapping[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        for key_id, key in self.keys.items():
            if KEY_ID.fullmatch(key_id) is None:
                raise KeyringError(f"invalid key id {key_id!r}: use 1-64 of A-Z a-z 0-9 _ . -")
            if len(key) != KEY_BYTES:
                raise KeyringError(f"key {key_id!r} has {len(key)} bytes, not {KEY_BYTES}")
        if self.active not in self.keys:
            raise KeyringError(f"the active key {self.active!r} is not in the keyring")

    def with_new_key(self) -> tuple[Keyring, str]:
        """This keyring plus a fresh random key, made active; and the new key's id."""
        key_id = next_key_id(self.keys)
        return Keyring(key_id, {**self.keys, key_id: generate_key()}), key_id

    def without(self, key_id: str) -> Keyring:
        if key_id == self.active:
            raise KeyringError(f"{key_id!r} is the active key: add a new key before retiring it")
        if key_id not in self.keys:
            raise KeyringError(f"no key {key_id!r} in the keyring")
        return Keyring(self.active, {k: v for k, v in self.keys.items() if k != key_id})


def generate_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def next_key_id(existing: Mapping[str, bytes]) -> str:
    """k1, k2, ...: one more than the highest such id in use."""
    numbers = [int(k[1:]) for k in existing if re.fullmatch(r"k[0-9]+", k)]
    return f"k{max(numbers, default=0) + 1}"


def blob_key_id(blob: bytes) -> str | None:
    """The key id a sealed blob names, or None if `blob` is not in the sealed format."""
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 1:
        return None
    size = blob[len(MAGIC)]
    start = len(MAGIC) + 1
    if len(blob) < start + size + NONCE_BYTES + TAG_BYTES:
        return None
    try:
        key_id = blob[start : start + size].decode("ascii")
    except UnicodeDecodeError:
        return None
    return key_id if KEY_ID.fullmatch(key_id) else None


class TemplateCipher:
    """Seals and opens blobs with a keyring. Immutable and thread-safe: share one per process."""

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._aead = {key_id: AESGCM(key) for key_id, key in keyring.keys.items()}

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    @property
    def active_key_id(self) -> str:
        return self._keyring.active

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._keyring.keys))

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """A sealed blob of `plaintext` under the active key, bound to `associated_data`."""
        key_id = self._keyring.active.encode("ascii")
        nonce = secrets.token_bytes(NONCE_BYTES)  # random: 2^-32 collision risk at 2^32 blobs
        sealed = self._aead[self._keyring.active].encrypt(nonce, plaintext, associated_data)
        return b"".join((MAGIC, bytes([len(key_id)]), key_id, nonce, sealed))

    def decrypt(self, blob: bytes, associated_data: bytes) -> bytes:
        """The plaintext of a sealed blob; raises if the key is unknown or authentication fails."""
        key_id = blob_key_id(blob)
        if key_id is None:
            raise DecryptionError("not an encrypted blob (wrong format or truncated)")
        aead = self._aead.get(key_id)
        if aead is None:
            raise UnknownKeyError(
                f"data encrypted under key {key_id!r}, which the configured keyring "
                f"({', '.join(self.key_ids)}) does not hold: wrong or retired key file"
            )
        start = len(MAGIC) + 1 + len(key_id)
        nonce, sealed = blob[start : start + NONCE_BYTES], blob[start + NONCE_BYTES :]
        try:
            return aead.decrypt(nonce, sealed, associated_data)
        except InvalidTag:
            raise DecryptionError(
                f"cannot authenticate data under key {key_id!r}: a different key with that id, "
                "or the data was altered or moved to another record"
            ) from None

    def is_current(self, blob: bytes) -> bool:
        """Whether `blob` is sealed under the active key (else rotation re-encrypts it)."""
        return blob_key_id(blob) == self._keyring.active


def template_context(gallery_id: int, subject_id: int) -> bytes:
    """Associated data of a stored template: its gallery and subject."""
    return f"yingyan-template/1|gallery={gallery_id}|subject={subject_id}".encode()


def image_context(gallery_id: int, subject_id: int, source_sha256: str) -> bytes:
    """Associated data of a kept enrolment image: its gallery, subject and source hash (so it
    cannot be swapped with a template blob or another template's image)."""
    return (
        f"yingyan-image/1|gallery={gallery_id}|subject={subject_id}|sha256={source_sha256}"
    ).encode()


def index_context(name: str) -> bytes:
    """Associated data of an index file: its name, which names the gallery and model."""
    return f"yingyan-index/1|{name}".encode()


def alert_crop_context(alert_id: int) -> bytes:
    """Associated data of an alert's best-shot crop: its alert (a crop cannot be moved onto
    another alert, nor swapped with a template or a kept enrolment image)."""
    return f"yingyan-alert-crop/1|alert={alert_id}".encode()
