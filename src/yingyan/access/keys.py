"""API keys: issue, list, revoke, rotate, authenticate. Keyword-only functions over the caller's
Session, like the store's repository; nothing here commits.

A token reads `yy_<prefix>_<secret>`: the prefix (12 hex characters) is public and names the
key in lists and in the audit log; the secret is 32 random bytes. Only sha256(token) is stored,
so the database never holds a usable key and the token is shown once, when it is issued.

A fast hash is enough here, unlike for passwords: a slow KDF (bcrypt, scrypt, argon2) protects
low-entropy secrets against guessing, but guessing a 256-bit random secret is hopeless at any
speed, and a slow hash on every request would only cost latency and invite denial of service.

A key's scope is a set of gallery ids, never names: ids are never reused (AUTOINCREMENT on
SQLite, sequences on PostgreSQL), so a gallery deleted and created again under the same name is
a new gallery that no old key reaches.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from yingyan.access.roles import Role, parse_role
from yingyan.store.repository import ConflictError, InvalidValueError, NotFoundError, try_insert
from yingyan.store.tables import ApiKeyRow, GalleryRow, utcnow

TOKEN_TAG: Final = "yy"
_PREFIX_HEX_BYTES: Final = 6  # 12 hex characters: a public name, unique by constraint
_SECRET_BYTES: Final = 32
_TOKEN = re.compile(r"yy_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_INSERT_ATTEMPTS: Final = 5  # a prefix collision (48 bits) is rare; retry with a new one
ACTOR_LIMIT: Final = 200  # characters of an audit entry's actor (the audit log refuses more)
_LABEL_OVERHEAD: Final = len("key:()") + 2 * _PREFIX_HEX_BYTES
MAX_NAME: Final = ACTOR_LIMIT - _LABEL_OVERHEAD  # 182: any key's label fits the audit log
# Control, format (bidi overrides, zero-width), surrogate, private-use and unassigned code
# points, and line/paragraph separators: each could forge or hide text where a label is shown,
# and a lone surrogate cannot even be encoded.
_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

KeyStatus = Literal["active", "revoked", "expired"]


@dataclass(frozen=True, slots=True)
class ScopedGallery:
    """One gallery of a key's scope: `id` is what the scope holds; `name` is the gallery's name
    when the key was read, None when that gallery has been deleted (the scope reaches nothing
    there, whatever is created later under its old name)."""

    id: int
    name: str | None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What is known of a key, never its secret."""

    id: int
    prefix: str
    name: str
    role: Role
    scope: tuple[ScopedGallery, ...] | None  # None: every gallery; () reaches none
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    rotated_from: int | None

    def can_access(self, gallery_id: int) -> bool:
        """Whether the key reaches the gallery with this id (its identity, not its name)."""
        return self.scope is None or any(g.id == gallery_id for g in self.scope)

    @property
    def gallery_ids(self) -> tuple[int, ...] | None:
        return None if self.scope is None else tuple(g.id for g in self.scope)

    @property
    def gallery_names(self) -> tuple[str, ...] | None:
        """Names of the scope's galleries that still exist (None: every gallery)."""
        if self.scope is None:
            return None
        return tuple(g.name for g in self.scope if g.name is not None)

    @property
    def label(self) -> str:
        """How the key appears as the actor of audit entries: always within the audit log's
        limit, even for a key stored before names were bounded."""
        name = self.name if len(self.name) <= MAX_NAME else self.name[: MAX_NAME - 1] + "…"
        return f"key:{self.prefix}({name})"

    def status(self, now: datetime | None = None) -> KeyStatus:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or utcnow()):
            return "expired"
        return "active"

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, for CLI output and service responses."""
        return {
            "id": self.id,
            "prefix": self.prefix,
            "name": self.name,
            "role": self.role,
            "galleries": None if self.scope is None else [g.name for g in self.scope],
            "gallery_ids": None if self.scope is None else [g.id for g in self.scope],
            "created_at": self.created_at.isoformat(),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
            "rotated_from": self.rotated_from,
            "status": self.status(),
        }


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key: ApiKey
    token: str  # the full secret token: show it once, never store or log it


def create_key(
    session: Session,
    *,
    name: str,
    role: str,
    galleries: Sequence[str] | None = None,
    expires_at: datetime | None = None,
) -> IssuedKey:
    """A new key for `role`, scoped to the galleries now named `galleries` (None: every
    gallery). The scope holds their ids: a name that names no gallery is NotFoundError."""
    row = ApiKeyRow(
        name=_name(name),
        role=parse_role(role),
        gallery_ids=_scope(session, galleries),
        expires_at=_expiry(expires_at),
    )
    return _issue(session, row)


def list_keys(session: Session, *, include_revoked: bool = False) -> list[ApiKey]:
    """Keys in creation order; expired keys are listed (their status says so)."""
    query = select(ApiKeyRow).order_by(ApiKeyRow.id)
    if not include_revoked:
        query = query.where(ApiKeyRow.revoked_at.is_(None))
    return [_key(session, row) for row in session.scalars(query)]


def get_key(session: Session, *, prefix: str) -> ApiKey:
    return _key(session, _row(session, prefix))


def revoke_key(session: Session, *, prefix: str) -> ApiKey:
    """Revoke at once; revoking a revoked key changes nothing (its first revocation stands)."""
    row = _row(session, prefix)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return _key(session, row)


def rotate_key(session: Session, *, prefix: str) -> IssuedKey:
    """A new secret with the same name, role, scope and expiry; the old key is revoked.

    A revoked or expired key is not rotated: rotation must not bring a dead key back to life."""
    old = _row(session, prefix)
    status = _key(session, old).status()
    if status != "active":
        raise ConflictError(f"key {prefix} is {status}: create a new key instead")
    old.revoked_at = utcnow()
    new = ApiKeyRow(
        name=old.name,
        role=old.role,
        gallery_ids=None if old.gallery_ids is None else list(old.gallery_ids),
        expires_at=old.expires_at,
        rotated_from=old.id,
    )
    return _issue(session, new)


def authenticate(session: Session, token: str, *, now: datetime | None = None) -> ApiKey | None:
    """The key `token` belongs to, or None when it is malformed, unknown, revoked or expired.

    Callers should not tell the cases apart in their answer (all mean 401)."""
    match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
    if match is None:
        return None
    row = _find(session, match[1])
    if row is None or not hmac.compare_digest(row.secret_sha256, _sha256(token)):
        return None
    key = _key(session, row)
    return key if key.status(now) == "active" else None


def reaches(session: Session, key: ApiKey, gallery: str) -> bool:
    """Whether `key` may use the gallery named `gallery` now: its scope holds the id of the
    gallery that has this name (a scoped key reaches no gallery that does not exist)."""
    if key.scope is None:
        return True
    gallery_id = session.scalar(select(GalleryRow.id).where(GalleryRow.name == gallery))
    return gallery_id is not None and key.can_access(gallery_id)


def count_active_keys(session: Session, *, now: datetime | None = None) -> int:
    """Keys neither revoked nor expired (zero: the service has no way in yet)."""
    query = select(func.count(ApiKeyRow.id)).where(
        ApiKeyRow.revoked_at.is_(None),
        or_(ApiKeyRow.expires_at.is_(None), ApiKeyRow.expires_at > (now or utcnow())),
    )
    return session.scalar(query) or 0


# -- helpers -----------------------------------------------------------------------------------


def _sha256(token: str) -> str:
    """The stored digest of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _issue(session: Session, row: ApiKeyRow) -> IssuedKey:
    for _ in range(_INSERT_ATTEMPTS):
        prefix = secrets.token_hex(_PREFIX_HEX_BYTES)
        token = f"{TOKEN_TAG}_{prefix}_{secrets.token_urlsafe(_SECRET_BYTES)}"
        row.prefix, row.secret_sha256 = prefix, _sha256(token)
        if try_insert(session, row):
            return IssuedKey(_key(session, row), token)
    raise ConflictError("could not find an unused key prefix; try again")


def _find(session: Session, prefix: str) -> ApiKeyRow | None:
    return session.scalars(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix)).one_or_none()


def _row(session: Session, prefix: str) -> ApiKeyRow:
    row = _find(session, prefix)
    if row is None:
        raise NotFoundError(f"no API key with prefix {prefix!r}")
    return row


def _key(session: Session, row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        prefix=row.prefix,
        name=row.name,
        role=parse_role(row.role),
        scope=None if row.gallery_ids is None else _scoped(session, row.gallery_ids),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        rotated_from=row.rotated_from,
    )


def _scoped(session: Session, ids: Sequence[int]) -> tuple[ScopedGallery, ...]:
    """The scope's ids in stored order, each with its gallery's current name (None: gone)."""
    query = select(GalleryRow.id, GalleryRow.name).where(GalleryRow.id.in_(ids))
    names = {gallery_id: name for gallery_id, name in session.execute(query)}
    return tuple(ScopedGallery(i, names.get(i)) for i in ids)


def _name(name: str) -> str:
    """A stripped name whose audit label fits the audit log and whose text is printable."""
    if not isinstance(name, str):
        raise InvalidValueError("a key name is text")
    name = name.strip()
    if not name:
        raise InvalidValueError("a key needs a name (who or what uses it)")
    if len(name) > MAX_NAME:
        raise InvalidValueError(f"a key name has at most {MAX_NAME} characters")
    bad = next((c for c in name if unicodedata.category(c) in _REFUSED_CATEGORIES), None)
    if bad is not None:
        raise InvalidValueError(
            f"a key name holds no control, format, surrogate or unassigned character "
            f"(found U+{ord(bad):04X})"
        )
    return name


def _scope(session: Session, galleries: Sequence[str] | None) -> list[int] | None:
    """Ids of the distinct galleries named, in the given order. An empty scope is refused
    because it would read as "every gallery" to anyone who confuses [] with None."""
    if galleries is None:
        return None
    if isinstance(galleries, str):
        galleries = [galleries]
    names = list(dict.fromkeys(g.strip() for g in galleries))
    if not names or "" in names:
        raise InvalidValueError("a key's gallery scope lists non-empty names (or none: all)")
    query = select(GalleryRow.name, GalleryRow.id).where(GalleryRow.name.in_(names))
    found = {name: gallery_id for name, gallery_id in session.execute(query)}
    missing = [n for n in names if n not in found]
    if missing:
        raise NotFoundError(
            f"no gallery named {missing[0]!r}: a key is scoped to existing galleries"
        )
    return [found[n] for n in names]


def _expiry(expires_at: datetime | None) -> datetime | None:
    if expires_at is None:
        return None
    if expires_at.tzinfo is None:
        raise InvalidValueError("expires_at must carry a time zone (e.g. datetime.UTC)")
    if expires_at <= utcnow():
        raise InvalidValueError(f"expires_at {expires_at.isoformat()} is in the past")
    return expires_at


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
