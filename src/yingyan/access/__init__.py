"""Access control: API keys (only their hash is stored) and the roles that say what a key may
do. The service checks `authenticate`, then `allows(key.role, permission)` and
`key.can_access(gallery)`."""

from yingyan.access.keys import (
    ApiKey,
    IssuedKey,
    KeyStatus,
    authenticate,
    count_active_keys,
    create_key,
    get_key,
    list_keys,
    revoke_key,
    rotate_key,
)
from yingyan.access.roles import (
    PERMISSIONS,
    ROLE_NAMES,
    InvalidRoleError,
    Permission,
    Role,
    allows,
    parse_role,
)

__all__ = [
    "PERMISSIONS",
    "ROLE_NAMES",
    "ApiKey",
    "InvalidRoleError",
    "IssuedKey",
    "KeyStatus",
    "Permission",
    "Role",
    "allows",
    "authenticate",
    "count_active_keys",
    "create_key",
    "get_key",
    "list_keys",
    "parse_role",
    "revoke_key",
    "rotate_key",
]
