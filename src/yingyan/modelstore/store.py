"""The model folder: where fetched or added models live, and how the engine finds them.

Layout: `<folder>/<name>/` holds the model's files under their published names, `LICENSE` (the
publisher's licence text) and `NOTICE` (where the files come from, their sha256, the licence,
the training data and when and how they were installed). The default folder is `models/` in
the user data folder (platformdirs' `user_data_dir("yingyan")`, the default data folder).

Files are only ever written through a staging folder inside the model folder (the same file
system): each is hashed while it is written, refused unless its size and sha256 are the pinned
ones, fsynced, then renamed into place; the staging folder is removed whatever happens, so a
failed or refused install leaves nothing behind. The licence and notice go in before the model
file, so no model file is ever installed without them.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from yingyan.errors import ModelError
from yingyan.modelstore.registry import SUPPORTED, ModelAsset, SupportedModel, supported_model
from yingyan.privacy.files import fsync_dir

NOTICE = "NOTICE"
LICENSE = "LICENSE"
_STAGING = ".staging-"
STALE_S = 3600.0
Progress = Callable[[int, int], None]  # bytes done, bytes expected
FileState = Literal["ok", "missing", "corrupted"]
ModelState = Literal["installed", "not installed", "partial", "corrupted"]


def default_model_dir() -> Path:
    """`models/` in the user data folder (the same base as the service's default data_dir)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("yingyan")) / "models"


def model_folder(folder: Path | None = None) -> Path:
    return Path(folder) if folder is not None else default_model_dir()


def sha256_file(path: Path) -> str:
    """The file's sha256 as it is now (not cached: an installed file may be replaced)."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@dataclass(frozen=True, slots=True)
class FileStatus:
    asset: ModelAsset
    path: Path
    state: FileState
    sha256: str | None = None  # computed when the file exists


@dataclass(frozen=True, slots=True)
class ModelStatus:
    model: SupportedModel
    folder: Path  # the model's own folder, <model folder>/<name>
    files: tuple[FileStatus, ...]

    @property
    def state(self) -> ModelState:
        states = {f.state for f in self.files}
        if "corrupted" in states:
            return "corrupted"
        if states == {"ok"}:
            return "installed"
        return "not installed" if states == {"missing"} else "partial"

    @property
    def path(self) -> Path:
        """The primary file's path (where the engine is pointed)."""
        return self.files[0].path

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.model.name,
            "kind": self.model.kind,
            "state": self.state,
            "licence": self.model.licence,
            "folder": str(self.folder),
            "files": [
                {
                    "file": f.asset.file,
                    "path": str(f.path),
                    "state": f.state,
                    "sha256": f.sha256,
                    "pinned_sha256": f.asset.sha256,
                }
                for f in self.files
            ],
        }


def _file_status(asset: ModelAsset, path: Path) -> FileStatus:
    if not path.is_file():
        return FileStatus(asset, path, "missing")
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise ModelError(f"cannot read the installed model file {path}: {exc}") from None
    return FileStatus(asset, path, "ok" if digest == asset.sha256 else "corrupted", digest)


def model_status(name: str, folder: Path | None = None) -> ModelStatus:
    """What is installed of `name` in the model folder, each file's sha256 checked."""
    model = supported_model(name)
    home = model_folder(folder) / model.name
    files = tuple(_file_status(a, home / a.file) for a in model.assets)
    return ModelStatus(model, home, files)


def all_status(folder: Path | None = None) -> list[ModelStatus]:
    return [model_status(name, folder) for name in SUPPORTED]


def installed_model(name: str, folder: Path | None = None) -> Path | None:
    """The installed primary file of a supported model, None when it is not installed. A file
    that is there but is not the pinned one (or a model missing some of its files) is a
    ModelError: the engine must not quietly run on other weights."""
    files = installed_files(name, folder)
    return files[0] if files else None


def installed_files(name: str, folder: Path | None = None) -> tuple[Path, ...] | None:
    """Every file of an installed model in the registry's order (MiniFASNet has two), None
    when it is not installed; a ModelError as for `installed_model`."""
    status = model_status(name, folder)
    if status.state == "installed":
        return tuple(f.path for f in status.files)
    if status.state == "not installed":
        return None
    bad = [f for f in status.files if f.state != "ok"]
    problems = ", ".join(
        f"{f.path} is missing"
        if f.state == "missing"
        else f"{f.path} has sha256 {(f.sha256 or '')[:12]}…, not the pinned {f.asset.sha256[:12]}…"
        for f in bad
    )
    raise ModelError(
        f"{name} in {status.folder} is {status.state}: {problems}; install it again with "
        f"`yingyan models fetch {name} --force` (or `yingyan models add FILE`)"
    )


def notice_text(model: SupportedModel, source: str, files: Iterable[str]) -> str:
    """The NOTICE installed beside a model: provenance, licence, training data, how installed."""
    lines = [
        f"{model.name}: {model.title}",
        "",
        f"Licence: {model.licence} (the publisher's text is in {LICENSE} beside this file). "
        "This model is not part of Yingyan and is not covered by Yingyan's licence.",
        f"Publisher: {model.publisher}",
        f"Training data: {model.training_data}",
    ]
    if model.notes:
        lines.append(f"Notes: {model.notes}")
    lines += ["", "Files (pinned size and sha256; the publisher's address):"]
    for a in model.assets:
        lines += [f"  {a.file}  {a.size} bytes  sha256 {a.sha256}", f"    {a.url}"]
    stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    lines += ["", f"Installed {stamp}: {', '.join(files)} {source}", ""]
    return "\n".join(lines)


class Staging:
    """Files being installed: written and checked here, then renamed into the model's folder."""

    def __init__(self, model: SupportedModel, folder: Path) -> None:
        self.model = model
        self.root = folder
        self.dir = folder / f"{_STAGING}{model.name}-{secrets.token_hex(4)}"
        self.files: dict[str, Path] = {}

    def write(
        self, asset: ModelAsset, chunks: Iterable[bytes], on_progress: Progress | None = None
    ) -> Path:
        """Write `chunks` as `asset`, refusing (nothing kept) more bytes than the pinned size,
        fewer, or another sha256. The bytes checked are the bytes installed."""
        path = self.dir / asset.file
        digest = hashlib.sha256()
        done = 0
        with path.open("xb") as fh:
            for chunk in chunks:
                done += len(chunk)
                if done > asset.size:
                    raise ModelError(
                        f"{asset.file}: more than the pinned {asset.size:,} bytes; refused"
                    )
                digest.update(chunk)
                fh.write(chunk)
                if on_progress is not None:
                    on_progress(done, asset.size)
            fh.flush()
            os.fsync(fh.fileno())
        if done != asset.size:
            raise ModelError(
                f"{asset.file}: {done:,} bytes, not the pinned {asset.size:,} (truncated); refused"
            )
        if digest.hexdigest() != asset.sha256:
            raise ModelError(
                f"{asset.file}: sha256 {digest.hexdigest()[:16]}… is not the pinned "
                f"{asset.sha256[:16]}… (a corrupted or different file); refused, nothing installed"
            )
        self.files[asset.file] = path
        return path

    def commit(self, source: str) -> Path:
        """Install the staged files (licence and notice first), each by an atomic rename."""
        home = self.root / self.model.name
        home.mkdir(parents=True, exist_ok=True)
        (self.dir / LICENSE).write_text(self.model.licence_text, encoding="utf-8")
        (self.dir / NOTICE).write_text(
            notice_text(self.model, source, self.files), encoding="utf-8"
        )
        for name in (LICENSE, NOTICE, *self.files):
            staged = self.dir / name
            if name in (LICENSE, NOTICE):
                with staged.open("rb") as fh:
                    os.fsync(fh.fileno())
            os.replace(staged, home / name)
        fsync_dir(home)
        return home


def _remove_stale(root: Path) -> None:
    """Staging folders a killed install left behind (an hour old: no install takes that long)."""
    cutoff = time.time() - STALE_S
    for leftover in root.glob(f"{_STAGING}*"):
        with suppress(OSError):
            if leftover.is_dir() and leftover.stat().st_mtime < cutoff:
                shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def staging(model: SupportedModel, folder: Path | None = None) -> Iterator[Staging]:
    """A staging folder for `model` inside the model folder, removed on the way out."""
    root = model_folder(folder)
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale(root)
        stage = Staging(model, root)
        stage.dir.mkdir()
    except OSError as exc:
        raise ModelError(f"cannot write to the model folder {root}: {exc}") from None
    try:
        yield stage
    except OSError as exc:
        raise ModelError(f"cannot install {model.name} into {root}: {exc}") from None
    finally:
        shutil.rmtree(stage.dir, ignore_errors=True)
