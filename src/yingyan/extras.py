"""Optional features and the pip extras that install them.

The core install (`pip install yingyan`) is what the embedded default needs: `yingyan serve`
with SQLite and FAISS, the CLI, the models. Everything else is an extra:

    postgres  psycopg              a PostgreSQL database (YINGYAN_DATABASE_URL=postgresql://...)
    milvus    pymilvus, milvus-lite  the Milvus index (YINGYAN_INDEX=milvus)
    eval      matplotlib, scipy    DET plots, fairness reports, open-set statistics
    video     av, scipy            video sources (cameras, `yingyan video`) and the tracker
    station   scipy                face stations: stereo relief, the station simulator
    all       every extra above;   dev: all + the test and lint tools

Code that needs an extra imports it through `require` (or `lazy`), so a missing extra is a
`MissingExtraError` (a ConfigError: CLI exit 2, a 4xx body, a camera without a worker) that
names the extra and the pip command, never a ModuleNotFoundError traceback. `check_settings`
checks what a deployment's settings need before the service starts.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

from yingyan.errors import ConfigError

if TYPE_CHECKING:
    from yingyan.settings import Settings


class MissingExtraError(ConfigError):
    """A feature was asked for whose optional packages are not installed."""

    code = "missing_extra"

    def __init__(self, message: str, extra: str) -> None:
        super().__init__(message)
        self.extra = extra


def install_hint(extra: str) -> str:
    return f"pip install 'yingyan[{extra}]'"


def require(module: str, extra: str, feature: str | None = None) -> ModuleType:
    """`module`, imported; MissingExtraError naming `extra` when it (or a package it needs)
    cannot be imported. `feature` says what needed it ("a PostgreSQL database")."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = feature or f"the {module} module"
        raise MissingExtraError(
            f"{what} needs the [{extra}] extra, which is not installed: {install_hint(extra)} "
            f"({exc})",
            extra,
        ) from None


class _LazyModule(ModuleType):
    """A module imported through `require` on first attribute access."""

    def __init__(self, module: str, extra: str, feature: str | None) -> None:
        super().__init__(module)
        self._yy_args = (module, extra, feature)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_yy_"):
            raise AttributeError(name)
        return getattr(require(*self._yy_args), name)


def lazy(module: str, extra: str, feature: str | None = None) -> ModuleType:
    """A stand-in for `module` that imports it (through `require`) when first used, so that
    importing the code that uses it costs nothing and needs no extra."""
    return _LazyModule(module, extra, feature)


def check_settings(settings: Settings) -> None:
    """The extras `settings` need (PostgreSQL, Milvus, Milvus Lite), checked before a service
    or a command opens anything: MissingExtraError naming the first missing one."""
    if settings.database_url is not None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(settings.database_url)
        except ArgumentError:
            pass  # open_database gives the clear error (without repeating the URL)
        else:
            if url.drivername in ("postgres", "postgresql", "postgresql+psycopg"):
                require("psycopg", "postgres", "a PostgreSQL database")
    if settings.index == "milvus":
        require("pymilvus", "milvus", "the Milvus index")
        if not settings.milvus_uri or "://" not in settings.milvus_uri:
            require("milvus_lite", "milvus", "Milvus Lite (the Milvus index in the data folder)")
