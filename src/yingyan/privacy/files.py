"""Private files and folders: what holds biometrics or secrets (the database, index files, the
keyring, the initial admin key, the data folder) is created readable by its owner only, whatever
the process umask, and an existing one is tightened rather than trusted.

Modes are set at creation (`os.open(..., 0o600)`, `mkdir(0o700)`), never by a later chmod of a
file that was briefly readable; no function here changes the process umask (it is process-wide
state, and the service creates files from several threads).
"""

from __future__ import annotations

import os
import stat
import threading
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


def new_private_file(path: Path) -> Path:
    """A new, empty file at `path` (an old one removed first) with mode 0600 from its creation:
    call it on a temporary file before writing it (e.g. with `faiss.write_index`, which opens
    with `fopen` and keeps an existing file's mode), then rename it into place."""
    path.unlink(missing_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    return path


def write_new_private(path: Path, data: bytes) -> None:
    """Write `data` to a new file at `path` (an old one removed first), mode 0600 from its
    creation; for the temporary file of an atomic write."""
    new_private_file(path)
    with path.open("r+b") as fh:
        fh.write(data)


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`, mode 0600 (see `replace_private`)."""
    replace_private(path, lambda tmp: tmp.write_bytes(data))


def replace_private(path: Path, write: Callable[[Path], object]) -> None:
    """Replace `path` atomically with what `write` puts in the file it is given: a new 0600
    temporary sibling (a new inode: an existing file's mode, owner or other hard links do not
    carry over; writers that keep an existing file's mode, e.g. faiss, get 0600), fsynced,
    renamed over `path`, the folder fsynced."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        new_private_file(tmp)
        write(tmp)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


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
