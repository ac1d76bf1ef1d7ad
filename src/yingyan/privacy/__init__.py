"""Privacy of stored biometrics: templates and index files encrypted at rest (AES-256-GCM) under
a keyring with rotation.

`cipher` holds the blob format and `TemplateCipher`; `keyring` the key file and environment
sources. Rotation over the database lives in `yingyan.privacy.rotation` (not imported here:
the store imports this package, and rotation imports the store).
"""

from yingyan.privacy.cipher import (
    CipherError,
    DecryptionError,
    KeyInUseError,
    KeyMissingError,
    Keyring,
    KeyringError,
    PlaintextRefusedError,
    TemplateCipher,
    UnknownKeyError,
    blob_key_id,
    image_context,
    index_context,
    template_context,
)
from yingyan.privacy.keyring import (
    DEFAULT_KEY_FILE,
    ENV_KEY,
    ENV_KEY_FILE,
    KeySource,
    add_key,
    create_keyring,
    key_source,
    load_cipher,
    open_cipher,
    parse_keyring,
    read_keyring,
    write_keyring,
)

__all__ = [
    "DEFAULT_KEY_FILE",
    "ENV_KEY",
    "ENV_KEY_FILE",
    "CipherError",
    "DecryptionError",
    "KeyInUseError",
    "KeyMissingError",
    "KeySource",
    "Keyring",
    "KeyringError",
    "PlaintextRefusedError",
    "TemplateCipher",
    "UnknownKeyError",
    "add_key",
    "blob_key_id",
    "create_keyring",
    "image_context",
    "index_context",
    "key_source",
    "load_cipher",
    "open_cipher",
    "parse_keyring",
    "read_keyring",
    "template_context",
    "write_keyring",
]
