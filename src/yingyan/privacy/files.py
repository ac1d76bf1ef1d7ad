"""Private files and folders: what holds biometrics or secrets (the database, index files, the
keyring, the initial admin key, the data folder) is created readable by its owner only, whatever
the process umask, and an existing one is tightened rather than trusted.

Modes are set at creation (`os.open(..., 0o600)`, `mkdir(0o700)`), never by a later chmod of a
file that was briefly readable; no function here changes the process umask (it is process-wide
state, and the service creates files from several threads).

`atomic_write` is the one way a file that is read back (an index, its sidecar, the keyring,
the ONNX cache, a cursor, the initial admin key) is written: temporary sibling, fsync, rename,
folder fsync.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Final

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700
SQLITE_SIBLINGS: Final = ("-wal", "-shm", "-journal")


def private_dir(path: Path, *, tighten: bool = True) -> Path:
    """`path` as a folder only its owner can use: created 0700 when absent (parents too, since
    `mkdir(parents=True)` would give them the umask's mode); an existing one is set to 0700
    when `tighten` (the data folder: ours), else left as the operator made it."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:  # created meanwhile by another process
            continue
        os.chmod(folder, DIR_MODE)  # mkdir's mode is masked by the umask; make it exact
    if tighten and not missing:
        _restrict(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """`path` as a file only its owner can read: created empty with mode 0600 when absent, an
    existing one set to 0600. For files another library then writes in place (SQLite keeps the
    mode of an existing database file, and gives its journal files the same)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        _restrict(path, FILE_MODE)
    else:
        os.close(fd)
    return path


def private_sqlite(path: Path) -> Path:
    """A SQLite database file and the journal files beside it, private (see `private_file`):
    SQLite creates `-wal`/`-shm` with the database file's mode, but files left by an older
    version keep theirs."""
    private_file(path)
    for suffix in SQLITE_SIBLINGS:
        sibling = path.with_name(path.name + suffix)
        if sibling.exists():
            _restrict(sibling, FILE_MODE)
    return path


def atomic_write(
    path: Path,
    content: bytes | str | Callable[[Path], object],
    *,
    mode: int = FILE_MODE,
    exclusive: bool = False,
) -> None:
    """Put `content` at `path` atomically and durably: readers see the old file or the new
    one, never part of either, and after a crash the new one is there whole or not at all.
    The one way Yingyan writes a file that something later reads back.

    `content` is bytes, text (UTF-8), or a function that writes into the file at the path it
    is given (e.g. `faiss.write_index`, whose `fopen` keeps the temporary file's mode). The
    temporary file is a new sibling (a random name: threads and processes never share one),
    created with `mode` (0600 unless told otherwise; the umask can only narrow it), written,
    fsynced, then renamed over `path` (a new inode: an old file's mode, owner or other hard
    links do not carry over) and the folder fsynced so that the rename survives a crash.
    With `exclusive`, an existing `path` is never replaced (FileExistsError; a hard link,
    not a rename, so that two processes creating it together end up with the same file).
    The temporary file is removed whatever happens."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, mode)
    try:
        try:
            if callable(content):
                os.close(fd)
                fd = -1
                content(tmp)  # into the file given, not a replacement of it
                fd = os.open(tmp, os.O_RDONLY)
            else:
                data = content.encode("utf-8") if isinstance(content, str) else content
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            if fd >= 0:
                os.close(fd)
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


# The name the service's callers know; the same function.
write_private = atomic_write


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_private(path: Path) -> bool:
    """Whether neither group nor others have any access to `path`."""
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def _restrict(path: Path, mode: int) -> None:
    """chmod `path` to `mode` if its mode differs and this process owns it (a file owned by
    someone else, e.g. root-managed, or on a read-only mount, is the operator's to set)."""
    info = path.stat()
    if stat.S_IMODE(info.st_mode) != mode and info.st_uid == os.getuid():
        with suppress(PermissionError, OSError):  # e.g. a read-only mount: nothing to tighten
            os.chmod(path, mode)
