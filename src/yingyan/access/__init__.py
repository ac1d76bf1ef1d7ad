"""Access control: API keys (only their hash is stored) and the roles that say what a key may
do. The service checks `authenticate`, then `allows(key.role, permission)` and `reaches(session,
key, gallery)`: a scope holds gallery ids, so a gallery created again under an old name is outside
the old keys."""

from yingyan.access.keys import (
    MAX_NAME,
    ApiKey,
    IssuedKey,
    KeyStatus,
    ScopedGallery,
    authenticate,
    count_active_keys,
    create_key,
    get_key,
    list_keys,
    reaches,
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
    "MAX_NAME",
    "PERMISSIONS",
    "ROLE_NAMES",
    "ApiKey",
    "InvalidRoleError",
    "IssuedKey",
    "KeyStatus",
    "Permission",
    "Role",
    "ScopedGallery",
    "allows",
    "authenticate",
    "count_active_keys",
    "create_key",
    "get_key",
    "list_keys",
    "parse_role",
    "reaches",
    "revoke_key",
    "rotate_key",
]
