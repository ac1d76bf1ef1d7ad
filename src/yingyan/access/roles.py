"""Roles and what each may do: a fixed table, so a key's power is read from its role alone.

Permissions are coarse on purpose (one per kind of act the service offers); which galleries a
key reaches is its scope of gallery ids (`ApiKey.can_access`, `keys.reaches`), checked
separately.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal, cast, get_args

from yingyan.store.repository import InvalidValueError

Role = Literal["admin", "enroller", "operator", "reviewer", "auditor"]
Permission = Literal[
    "galleries:read",
    "galleries:write",
    "subjects:read",
    "subjects:write",
    "faces:enroll",
    "detect",
    "verify",
    "identify",
    "audit:read",
    "watch:read",  # watch sessions, cameras and alerts
    "watch:write",  # start, change and stop sessions; add and remove cameras
    "alerts:review",  # confirm or reject an alert (two different reviewers confirm)
]

ROLE_NAMES: Final[tuple[Role, ...]] = get_args(Role)
ALL_PERMISSIONS: Final[frozenset[Permission]] = frozenset(get_args(Permission))

PERMISSIONS: Final[Mapping[Role, frozenset[Permission]]] = MappingProxyType(
    {
        "admin": ALL_PERMISSIONS,
        "enroller": frozenset(
            {"galleries:read", "subjects:read", "subjects:write", "faces:enroll", "detect"}
        ),
        "operator": frozenset({"galleries:read", "detect", "verify", "identify", "watch:read"}),
        # Reviewers look at the candidates a search produced; they run no search themselves.
        "reviewer": frozenset({"galleries:read", "subjects:read", "watch:read", "alerts:review"}),
        "auditor": frozenset({"audit:read", "galleries:read", "watch:read"}),
    }
)


class InvalidRoleError(InvalidValueError):
    code = "invalid_role"


def parse_role(value: str) -> Role:
    """`value` as a Role, or InvalidRoleError naming the roles there are."""
    if value not in ROLE_NAMES:
        raise InvalidRoleError(f"unknown role {value!r}: use one of {', '.join(ROLE_NAMES)}")
    return value


def allows(role: str, permission: Permission) -> bool:
    """Whether `role` grants `permission`; an unknown role grants nothing."""
    granted = PERMISSIONS.get(cast(Role, role))
    return granted is not None and permission in granted
