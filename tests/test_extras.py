"""The lean core and its extras (issue 14): the core serves without any extra installed, and a
feature whose extra is missing says which one to install (`pip install 'yingyan[EXTRA]'`) with
a CLI exit 2 or a camera's problem, never a traceback.

This environment has every extra installed, so the tests hide them from real subprocesses: a
`sitecustomize` on PYTHONPATH puts an import hook first on `sys.meta_path` that fails the
import of each hidden top-level module exactly as a missing package does (ModuleNotFoundError).
Spawned workers inherit it through the environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from yingyan.errors import ConfigError
from yingyan.extras import MissingExtraError, lazy, require

from ._server import running_server
from .conftest import PROJECT_ROOT

# What each extra installs, as imported (pyproject.toml [project.optional-dependencies]), and
# the heavy packages the Milvus client pulls in, which the core must not need either.
EXTRAS: Mapping[str, tuple[str, ...]] = {
    "postgres": ("psycopg", "psycopg_binary"),
    "milvus": ("pymilvus", "milvus_lite", "pandas", "pyarrow", "grpc"),
    "eval": ("matplotlib", "scipy"),
    "video": ("av", "scipy"),
}
EVERY_EXTRA = sorted({m for modules in EXTRAS.values() for m in modules})

HOOK = '''
import os
import sys

HIDDEN = frozenset(filter(None, os.environ.get("YINGYAN_TEST_HIDDEN", "").split(",")))


class HideModules:
    """Imports of HIDDEN top-level modules fail as if the package were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, HideModules())
'''


@pytest.fixture(scope="module")
def hook_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hide-extras")
    (folder / "sitecustomize.py").write_text(HOOK)
    return folder


def hiding(hook_dir: Path, modules: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Environment variables that hide `modules` from a Python started with them."""
    path = os.pathsep.join(p for p in (str(hook_dir), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "YINGYAN_TEST_HIDDEN": ",".join(modules)}


def yingyan(
    args: list[str], env: Mapping[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "yingyan.cli.main", *args],
        env=os.environ | {"COLUMNS": "300"} | dict(env),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


def assert_needs(done: subprocess.CompletedProcess[str], extra: str) -> None:
    """Exit 2 with the one-line error that names `extra` and how to install it."""
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output, output
    assert "(missing_extra)" in done.stderr, output
    assert f"needs the [{extra}] extra" in done.stderr, output
    assert f"pip install 'yingyan[{extra}]'" in done.stderr, output


def test_the_hook_hides_a_module_as_a_missing_package_does(hook_dir: Path) -> None:
    """The test's premise: what the hook hides cannot be imported, the rest can."""
    probe = (
        "import importlib\n"
        "for name in ('av', 'scipy.optimize', 'psycopg'):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError as exc:\n"
        "        print('missing', exc.name)\n"
        "import numpy, sqlalchemy\n"
        "print('core ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=os.environ | hiding(hook_dir, ["av", "scipy"]),
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split("\n") == ["missing av", "missing scipy", "core ok", ""]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


def test_the_core_requires_no_package_of_an_extra() -> None:
    """pyproject.toml: the extras' packages stay out of the core; `all` is every extra and
    `dev` holds `all`, and not the CompreFace SDK (it has its own venv)."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    moved = {"psycopg", "pymilvus", "milvus-lite", "matplotlib", "scipy", "av"}
    assert not core & moved, core & moved
    assert {_name(r) for e in ("postgres", "milvus", "eval", "video") for r in extras[e]} == moved
    named = {e for r in extras["all"] for e in r.partition("[")[2].rstrip("]").split(",")}
    assert named == set(extras) - {"all", "dev"}
    assert "yingyan[all]" in extras["dev"]
    assert not {"compreface-sdk", "requests-toolbelt"} & {_name(r) for r in extras["dev"]}


def test_require_names_the_extra_and_lazy_defers_the_import() -> None:
    with pytest.raises(MissingExtraError) as caught:
        require("yingyan_no_such_module", "video", "a video source")
    error = caught.value
    assert isinstance(error, ConfigError) and error.code == "missing_extra"
    assert error.extra == "video"
    assert error.message.startswith(
        "a video source needs the [video] extra, which is not installed: "
        "pip install 'yingyan[video]'"
    )
    stand_in = lazy("yingyan_no_such_module", "eval")  # nothing imported yet
    with pytest.raises(MissingExtraError, match=r"needs the \[eval\] extra"):
        stand_in.anything  # noqa: B018
    assert lazy("json", "eval").dumps([1]) == "[1]"


def test_postgresql_without_its_extra(hook_dir: Path, tmp_path: Path) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/yingyan_never_opened"
    done = yingyan(
        ["gallery", "list", "--data-dir", str(tmp_path), "--database-url", url],
        hiding(hook_dir, EXTRAS["postgres"]),
    )
    assert_needs(done, "postgres")


def _enroll_into_milvus(
    env: Mapping[str, str], stills: Path, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """A gallery made on the core (SQLite), then one face enrolled through a Milvus index."""
    data = ["--data-dir", str(tmp_path)]
    made = yingyan(["gallery", "create", "g", "--purpose", "p", "--legal-basis", "l", *data], env)
    assert made.returncode == 0, made.stderr
    manifest = tmp_path / "faces.csv"
    manifest.write_text(f"external_id,image\nobama,{stills / 'obama.jpg'}\n")
    return yingyan(
        ["enroll", "-g", "g", "--manifest", str(manifest), "--index", "milvus", *data], env
    )


@pytest.mark.shared
def test_milvus_without_its_extra(hook_dir: Path, stills: Path, tmp_path: Path) -> None:
    done = _enroll_into_milvus(hiding(hook_dir, EXTRAS["milvus"]), stills, tmp_path)
    assert_needs(done, "milvus")
    assert "the Milvus index needs" in done.stderr


@pytest.mark.shared
def test_milvus_lite_without_its_extra(hook_dir: Path, stills: Path, tmp_path: Path) -> None:
    """pymilvus alone (a cluster's client) is not enough for an index in a local file."""
    done = _enroll_into_milvus(hiding(hook_dir, ["milvus_lite"]), stills, tmp_path)
    assert_needs(done, "milvus")
    assert "Milvus Lite" in done.stderr


def test_serve_checks_the_extras_its_settings_need(hook_dir: Path, tmp_path: Path) -> None:
    """Before it opens anything: PostgreSQL, then Milvus, each named (exit 2, no traceback)."""
    # An address no interface has: were the check missing, serve would fail, not listen.
    base = {"YINGYAN_DATA_DIR": str(tmp_path), "YINGYAN_WORKERS": "0", "YINGYAN_HOST": "192.0.2.1"}
    postgres = base | {"YINGYAN_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/none"}
    done = yingyan(["serve"], postgres | hiding(hook_dir, EXTRAS["postgres"]))
    assert_needs(done, "postgres")
    milvus = base | {"YINGYAN_INDEX": "milvus"}
    done = yingyan(["serve"], milvus | hiding(hook_dir, EXTRAS["milvus"]))
    assert_needs(done, "milvus")


@pytest.mark.shared
def test_a_video_search_without_its_extra(hook_dir: Path, stills: Path, tmp_path: Path) -> None:
    done = yingyan(
        [
            *("video", "search", str(stills / "short_hamilton_clip.mp4")),
            *("--probe", str(stills / "obama.jpg"), "--case", "CASE-1", "--purpose", "p"),
            *("--legal-basis", "l", "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path)),
        ],
        hiding(hook_dir, EXTRAS["video"]),
    )
    assert_needs(done, "video")


@pytest.mark.shared
def test_a_fairness_report_without_its_extra(hook_dir: Path, stills: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    rows = [("obama.jpg", "obama"), ("obama2.jpg", "obama"), ("biden.jpg", "biden")]
    labels.write_text(
        "path,identity,group\n" + "".join(f"{stills / p},{who},all\n" for p, who in rows)
    )
    done = yingyan(
        [
            *("eval", "fairness", "--dataset", "csv", "--root", str(labels)),
            *("--out-dir", str(tmp_path / "report"), "--workers", "1"),
        ],
        hiding(hook_dir, EXTRAS["eval"]),
    )
    assert_needs(done, "eval")


@pytest.mark.shared
def test_the_core_serves_without_any_extra(hook_dir: Path, stills: Path, tmp_path: Path) -> None:
    """`yingyan serve` with its embedded defaults (SQLite + FAISS, camera workers on) starts,
    enrols and identifies with every extra hidden; a camera added to a watch session then has
    no worker, and its problem names the [video] extra."""
    env = hiding(hook_dir, EVERY_EXTRA)
    with running_server(tmp_path / "data", env=env) as server:
        h = server.headers
        for name, kind in (("staff", "enrollment"), ("wanted", "watchlist")):
            body = {"name": name, "kind": kind, "purpose": "test", "legal_basis": "test"}
            r = httpx.post(f"{server.url}/api/v1/galleries", json=body, headers=h)
            assert r.status_code == 201, r.text
        g = f"{server.url}/api/v1/galleries/staff"
        r = httpx.post(f"{g}/subjects", json={"external_id": "obama"}, headers=h)
        assert r.status_code == 201, r.text
        face = {"image": ("obama.jpg", (stills / "obama.jpg").read_bytes(), "image/jpeg")}
        r = httpx.post(f"{g}/subjects/obama/faces", files=face, headers=h, timeout=120)
        assert r.status_code == 201, r.text
        probe = {"probe": ("obama2.jpg", (stills / "obama2.jpg").read_bytes(), "image/jpeg")}
        r = httpx.post(f"{g}/identify", files=probe, headers=h, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["faces"][0]["candidates"][0]["external_id"] == "obama"
        session = {
            "name": "yard",
            "purpose": "find a suspect",
            "case_ref": "CASE-14",
            "legal_basis": "test",
            "expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            "watchlists": ["wanted"],
        }
        sessions = f"{server.url}/api/v1/watch/sessions"
        r = httpx.post(sessions, json=session, headers=h)
        assert r.status_code == 201, r.text
        camera = {"name": "gate", "url": str(stills / "short_hamilton_clip.mp4")}
        r = httpx.post(f"{sessions}/yard/cameras", json=camera, headers=h, timeout=60)
        assert r.status_code == 201, r.text
        r = httpx.get(f"{sessions}/yard/cameras", headers=h, timeout=60)
        assert r.status_code == 200, r.text
        (listed,) = r.json()
        assert listed["worker"] is None, listed
        assert "needs the [video] extra" in listed["problem"], listed
        assert "pip install 'yingyan[video]'" in listed["problem"], listed
        ready = httpx.get(f"{server.url}/ready")
        assert ready.status_code == 200, ready.text
    log = server.output()
    assert "Traceback" not in log, log
