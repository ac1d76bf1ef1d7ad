"""Where template keys come from: a key file (JSON, mode 0600) or an environment value.

Key file: `{"format": "yingyan-keyring-1", "active": "k2", "keys": {"k1": "<base64>", ...}}`,
each key 32 random bytes. An environment value holds the same JSON, or one base64 key (its id
is derived from the key, so a different key is reported as unknown rather than as tampering).
Nothing here reads the environment itself: callers pass `os.environ` to `key_source`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from yingyan.privacy.cipher import Keyring, KeyringError, TemplateCipher, generate_key
from yingyan.privacy.files import atomic_write, private_dir, private_file

KEYRING_FORMAT: Final = "yingyan-keyring-1"
ENV_KEY_FILE: Final = "YINGYAN_KEY_FILE"
ENV_KEY: Final = "YINGYAN_TEMPLATE_KEY"
DEFAULT_KEY_FILE: Final = "template-keys.json"


@dataclass(frozen=True, slots=True)
class KeySource:
    """Exactly one of `key_file` and `env_value`; `is_default` when nothing was configured and
    the key file is the default one in the data folder (which may be created)."""

    key_file: Path | None
    env_value: str | None
    is_default: bool = False

    def describe(self) -> str:
        return f"key file {self.key_file}" if self.key_file is not None else f"${ENV_KEY}"


def key_source(key_file: Path | None, environ: Mapping[str, str], default_file: Path) -> KeySource:
    """The configured source, first found of: `key_file` (a command-line option),
    $YINGYAN_KEY_FILE, $YINGYAN_TEMPLATE_KEY, else `default_file`."""
    if key_file is not None:
        return KeySource(key_file, None)
    if environ.get(ENV_KEY_FILE):
        return KeySource(Path(environ[ENV_KEY_FILE]), None)
    if environ.get(ENV_KEY):
        return KeySource(None, environ[ENV_KEY])
    return KeySource(default_file, None, is_default=True)


def load_cipher(key_file: Path | None, env_value: str | None) -> TemplateCipher | None:
    """The cipher of a key file or of an environment value; None when neither is given
    (templates are then written in plaintext)."""
    if key_file is not None and env_value is not None:
        raise KeyringError("give a key file or a key value, not both")
    if env_value is not None:
        return TemplateCipher(parse_keyring(env_value, where=f"${ENV_KEY}"))
    if key_file is not None:
        return TemplateCipher(read_keyring(key_file))
    return None


def parse_keyring(text: str, *, where: str) -> Keyring:
    """A keyring from its JSON form, or from a single base64 key."""
    text = text.strip()
    if not text.startswith("{"):
        key = _b64(text, where)
        key_id = single_key_id(key)
        return Keyring(key_id, {key_id: key})
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyringError(f"{where} is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict) or data.get("format") != KEYRING_FORMAT:
        raise KeyringError(f"{where} is not a {KEYRING_FORMAT} keyring")
    keys = data.get("keys")
    active = data.get("active")
    if not isinstance(keys, dict) or not keys or not isinstance(active, str):
        raise KeyringError(f"{where} needs 'active' and a non-empty 'keys' object")
    return Keyring(active, {str(k): _b64(v, f"{where} key {k!r}") for k, v in keys.items()})


def keyring_json(keyring: Keyring) -> str:
    keys = {k: base64.b64encode(v).decode("ascii") for k, v in sorted(keyring.keys.items())}
    return json.dumps({"format": KEYRING_FORMAT, "active": keyring.active, "keys": keys}, indent=2)


def single_key_id(key: bytes) -> str:
    """The id of a key given alone: derived from it (a one-way, truncated hash)."""
    return "env-" + hashlib.sha256(b"yingyan key id|" + key).hexdigest()[:12]


def read_keyring(path: Path) -> Keyring:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyringError(
            f"no key file at {path}: create it with `yingyan encryption init`"
        ) from None
    except OSError as exc:
        raise KeyringError(f"cannot read key file {path}: {exc.strerror}") from None
    keyring = parse_keyring(text, where=f"key file {path}")
    private_file(path)  # one made by hand, or by an older version, may be readable by others
    return keyring


def create_keyring(path: Path) -> Keyring:
    """A new key file holding one random key; refuses to overwrite an existing file (and two
    processes creating it together end up with the same one)."""
    keyring = Keyring("k1", {"k1": generate_key()})
    private_dir(path.parent, tighten=False)  # created 0700; an existing folder is the operator's
    try:
        atomic_write(path, keyring_json(keyring) + "\n", exclusive=True)
    except FileExistsError:
        raise KeyringError(f"a key file already exists at {path}") from None
    return keyring


def write_keyring(path: Path, keyring: Keyring) -> None:
    """Replace the key file atomically (readers see the old or the new keyring, never half)."""
    atomic_write(path, keyring_json(keyring) + "\n")


def add_key(path: Path) -> str:
    """Rotation, step 1: a new random key becomes active (older keys still decrypt).
    Returns its id."""
    keyring, key_id = read_keyring(path).with_new_key()
    write_keyring(path, keyring)
    return key_id


def _b64(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise KeyringError(f"{where} must be a base64 string")
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        try:
            return base64.urlsafe_b64decode(value.strip())
        except (binascii.Error, ValueError):
            raise KeyringError(f"{where} is not base64") from None


def open_cipher(source: KeySource) -> TemplateCipher:
    """The cipher of a configured source. The default key file is created when absent (privacy
    by default); an explicitly configured one must exist."""
    if source.is_default and source.key_file is not None and not source.key_file.exists():
        with suppress(KeyringError):  # created meanwhile by another process: use that one
            create_keyring(source.key_file)
    cipher = load_cipher(source.key_file, source.env_value)
    assert cipher is not None  # a source always names a file or a value
    return cipher
