"""Shared fixtures. Real data comes from ../shared (or $YINGYAN_SHARED) and is never copied
into the repository. Without it, data tests skip, except under CI=true where they fail."""

from __future__ import annotations

import importlib.util
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, create_engine, make_url
from sqlalchemy.exc import OperationalError

from yingyan import Engine, EngineConfig, load_image
from yingyan.evaluation.lfw import ImageResult, extract_images, image_dir
from yingyan.evaluation.lfw_identification import identification_protocol
from yingyan.store import Database, open_database
from yingyan.types import RGBImage

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    env = os.environ.get("YINGYAN_SHARED")
    return Path(env) if env else PROJECT_ROOT.parent / "shared"


def shared_path(*parts: str) -> Path:
    """Path of a shared file or folder; skip (fail under CI=true) when it is absent."""
    path = shared_root().joinpath(*parts)
    if not path.exists():
        reason = f"shared data not found: {path} (set YINGYAN_SHARED to its location)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def stills() -> Path:
    return shared_path("datasets", "video")


@pytest.fixture(scope="session")
def lfw_root() -> Path:
    return shared_path("datasets", "lfw")


@pytest.fixture(scope="session")
def lfw_extracted(lfw_root: Path) -> dict[str, ImageResult]:
    """Every LFW image (13,233) extracted once with the default engine, shared by the LFW
    verification and identification tests so that CI embeds each image only once."""
    images = image_dir(lfw_root)
    names = identification_protocol(lfw_root).image_names(images)
    return extract_images(images, names, EngineConfig(), show_progress=False)


@pytest.fixture(scope="session")
def utkface_root() -> Path:
    return shared_path("datasets", "utkface-balanced")


@pytest.fixture(scope="session")
def yunet_model() -> Path:
    return shared_path("models", "yunet", "face_detection_yunet_2023mar.onnx")


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine(EngineConfig())


@pytest.fixture(scope="session")
def load_still(stills: Path):  # type: ignore[no-untyped-def]
    def load(name: str) -> RGBImage:
        return load_image(stills / name)

    return load


# -- database backends: every gallery test runs on SQLite and on PostgreSQL ----------------


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def start_milvus_lite(path: Path) -> Any:
    """A `MilvusClient` on a Milvus Lite at `path`; skip when milvus-lite is missing or cannot
    start on this machine, fail instead under CI=true."""
    if importlib.util.find_spec("milvus_lite") is None:
        _unavailable("milvus-lite is not installed")
    from pymilvus import MilvusClient

    try:
        return MilvusClient(str(path))
    except Exception as exc:  # pymilvus raises several unrelated types for a failed start
        _unavailable(f"milvus-lite cannot start on this machine: {exc}")


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[URL]:
    """A new, empty PostgreSQL database for this session; dropped at the end."""
    admin_url = make_url(
        os.environ.get("YINGYAN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    ).set(drivername="postgresql+psycopg")
    admin = create_engine(
        admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    name = f"yingyan_test_{secrets.token_hex(6)}"
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except OperationalError as exc:
        admin.dispose()
        where = admin_url.render_as_string(hide_password=True)
        _unavailable(f"PostgreSQL not reachable at {where} (set YINGYAN_TEST_POSTGRES): {exc.orig}")
    try:
        yield admin_url.set(database=name)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@dataclass(frozen=True)
class Target:
    """Where a test's database lives: `open_database(target.url, target.data_dir)`."""

    backend: str
    url: str | None
    data_dir: Path

    def open(self, *, migrate: bool = True) -> Database:
        return open_database(self.url, self.data_dir, migrate=migrate)

    @property
    def cli_args(self) -> list[str]:
        """The options that point a `yingyan` command at this database."""
        if self.url is None:
            return ["--data-dir", str(self.data_dir)]
        return ["--database-url", self.url]


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """An empty database on each backend (PostgreSQL: a fresh public schema per test)."""
    if request.param == "sqlite":
        yield Target("sqlite", None, tmp_path / "data")
        return
    url: URL = request.getfixturevalue("postgres_database")
    yield Target("postgresql", url.render_as_string(hide_password=False), tmp_path)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    engine.dispose()


@pytest.fixture
def db(target: Target) -> Iterator[Database]:
    with target.open() as database:
        yield database
