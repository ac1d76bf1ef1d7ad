"""`yingyan models fetch | add | list` on the real model files from ../shared/models, served by
a local HTTP server (this machine has no internet): the pinned sha256 is checked, the licence and
notice are installed beside the model, the engine finds it without a path, and a corrupted,
truncated, oversized, missing or unknown file is refused with exit 2 and nothing installed."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests._server import free_port
from tests.conftest import shared_path
from yingyan import Engine, EngineConfig, load_image
from yingyan.cli.main import app
from yingyan.errors import ConfigError, ModelError
from yingyan.modelstore import SUPPORTED, installed_files, installed_model, model_status
from yingyan.modelstore.store import NOTICE

runner = CliRunner()
YUNET = SUPPORTED["yunet"].primary
STALL_S = 5.0


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def shared_models() -> Path:
    return shared_path("models")


@pytest.fixture(scope="module")
def published(shared_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the test server publishes: good/ (every supported file, by its published name),
    flipped/ and short/ (a bit-flipped and a truncated copy of YuNet)."""
    root = tmp_path_factory.mktemp("published")
    for folder in ("good", "flipped", "short"):
        (root / folder).mkdir()
    for model in SUPPORTED.values():
        for asset in model.assets:
            shutil.copyfile(shared_models / model.name / asset.file, root / "good" / asset.file)
    data = bytearray((root / "good" / YUNET.file).read_bytes())
    data[len(data) // 2] ^= 0x01
    (root / "flipped" / YUNET.file).write_bytes(bytes(data))
    (root / "short" / YUNET.file).write_bytes(bytes(data[: len(data) // 3]))
    return root


class _Handler(SimpleHTTPRequestHandler):
    """Files from the published folder, plus two misbehaving routes: /endless/ sends the file
    and more bytes without a Content-Length, /stall/ sends headers and then nothing."""

    requests: list[str]
    release: threading.Event

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path.startswith("/endless/"):
            self.send_response(200)
            self.end_headers()
            body = (Path(self.directory) / "good" / YUNET.file).read_bytes()
            with contextlib.suppress(OSError):  # the client hangs up at the pinned size
                self.wfile.write(body + b"\0" * 100_000)
            return
        if self.path.startswith("/stall/"):
            self.send_response(200)
            self.send_header("Content-Length", str(YUNET.size))
            self.end_headers()
            self.wfile.flush()
            self.release.wait(STALL_S)
            return
        # A client that refuses a file part-way (over its pinned size) hangs up: without this
        # the server thread prints a BrokenPipe traceback into whatever stderr is current.
        with contextlib.suppress(ConnectionError):
            super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(published: Path) -> Iterator[tuple[str, list[str]]]:
    """The server's base URL and the paths it was asked for."""
    requests: list[str] = []
    release = threading.Event()
    handler = type("Handler", (_Handler,), {"requests": requests, "release": release})
    httpd = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(published))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", requests
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@pytest.fixture(autouse=True)
def _own_folders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never the user's real model folder: the default folder is under tmp_path."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    for name in ("YINGYAN_MODEL_DIR", "YINGYAN_YUNET_MODEL", "YINGYAN_RECOGNIZER_MODEL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def lfw_image() -> Path:
    return shared_path(
        "datasets", "lfw", "lfw-deepfunneled", "Aaron_Eckhart", "Aaron_Eckhart_0001.jpg"
    )


def _nothing_installed(folder: Path) -> None:
    """No model file, no notice and no staging left behind."""
    left = [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
    assert left == [], left
    if folder.exists():
        assert not [p for p in folder.iterdir() if p.name.startswith(".staging")]


def _ok(args: list[str]) -> str:
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    return r.stdout


def _fails(args: list[str], message: str) -> str:
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.output
    return r.stderr


def test_the_registry_pins_the_shared_files_and_their_licences(shared_models: Path) -> None:
    for model in SUPPORTED.values():
        for asset in model.assets:
            path = shared_models / model.name / asset.file
            assert path.stat().st_size == asset.size, asset.file
            assert sha256(path) == asset.sha256, asset.file
            assert asset.url.startswith("https://github.com/")
        # The licence installed is the publisher's LICENSE, byte for byte.
        shipped = (shared_models / model.name / "LICENSE").read_text(encoding="utf-8")
        assert model.licence_text == shipped, model.name
        assert model.licence == "Apache-2.0"


def test_fetch_installs_yunet_with_its_licence_and_the_engine_finds_it(
    server: tuple[str, list[str]], tmp_path: Path, lfw_image: Path, shared_models: Path
) -> None:
    base, requests = server
    folder = tmp_path / "xdg" / "yingyan" / "models"  # the default folder (XDG_DATA_HOME)
    with pytest.raises(ConfigError, match="models fetch yunet"):
        EngineConfig(detector="yunet")  # not installed yet: says how to get it

    r = runner.invoke(app, ["models", "fetch", "yunet", "--url", f"{base}good/"])
    assert r.exit_code == 0, r.output
    assert "installed yunet" in r.stdout and "Apache-2.0" in r.stdout
    assert f"/good/{YUNET.file}" in requests

    installed = folder / "yunet" / YUNET.file
    assert sha256(installed) == YUNET.sha256
    licence = folder / "yunet" / "LICENSE"
    assert licence.read_bytes() == (shared_models / "yunet" / "LICENSE").read_bytes()
    notice = (folder / "yunet" / NOTICE).read_text()
    for fact in ("Apache-2.0", YUNET.sha256, YUNET.url, "WIDER FACE", f"from {base}good/"):
        assert fact in notice, fact
    assert sorted(p.name for p in folder.iterdir()) == ["yunet"]  # no staging left
    assert installed_model("yunet") == installed

    # The engine finds it without a path: the library, and the CLI's detect.
    config = EngineConfig(detector="yunet")
    assert config.yunet_model == installed
    faces = Engine(config).detect(load_image(lfw_image))
    assert len(faces) == 1 and faces[0].detector == "yunet"
    r = runner.invoke(app, ["detect", str(lfw_image), "--detector", "yunet", "--json"])
    assert r.exit_code == 0, r.output
    assert [f["detector"] for f in json.loads(r.stdout)["faces"]] == ["yunet"]

    r = runner.invoke(app, ["models", "list", "--json"])
    assert r.exit_code == 0, r.output
    listed = {m["name"]: m for m in json.loads(r.stdout)["models"]}
    assert listed["yunet"]["state"] == "installed"
    assert listed["yunet"]["files"][0]["sha256"] == YUNET.sha256
    assert listed["mobilefacenet"]["state"] == "not installed"

    # Installed and intact: a second fetch downloads nothing.
    asked = len(requests)
    r = runner.invoke(app, ["models", "fetch", "yunet", "--url", f"{base}good/"])
    assert r.exit_code == 0 and "already installed" in r.stdout
    assert len(requests) == asked


def test_a_corrupted_or_truncated_download_is_refused_and_nothing_installed(
    server: tuple[str, list[str]], tmp_path: Path
) -> None:
    base, _ = server
    folder = tmp_path / "models"
    dir_opt = ["--model-dir", str(folder)]
    _fails(["models", "fetch", "yunet", "--url", f"{base}flipped/", *dir_opt], "sha256")
    _nothing_installed(folder)
    _fails(["models", "fetch", "yunet", "--url", f"{base}short/", *dir_opt], "offers")
    _nothing_installed(folder)
    # No Content-Length and more bytes than the pinned file: cut off at the pinned size.
    _fails(["models", "fetch", "yunet", "--url", f"{base}endless/x", *dir_opt], "more than")
    _nothing_installed(folder)

    # A refused download never touches an intact installation.
    _ok(["models", "fetch", "yunet", "--url", f"{base}good/", *dir_opt])
    good = folder / "yunet" / YUNET.file
    assert sha256(good) == YUNET.sha256
    args = ["models", "fetch", "yunet", "--force", "--url", f"{base}flipped/", *dir_opt]
    _fails(args, "sha256")
    assert sha256(good) == YUNET.sha256
    assert sorted(p.name for p in folder.iterdir()) == ["yunet"]


def test_network_failures_and_bad_names_are_clear_errors(
    server: tuple[str, list[str]], tmp_path: Path
) -> None:
    base, _ = server
    folder = tmp_path / "models"
    dir_opt = ["--model-dir", str(folder)]
    _fails(["models", "fetch", "yunet", "--url", f"{base}missing/", *dir_opt], "HTTP 404")
    closed = f"http://127.0.0.1:{free_port()}/"
    _fails(["models", "fetch", "yunet", "--url", closed, *dir_opt], "cannot download")
    started = time.monotonic()
    args = ["models", "fetch", "yunet", "--url", f"{base}stall/", "--timeout", "1", *dir_opt]
    _fails(args, "cannot download")
    assert time.monotonic() - started < STALL_S - 1
    _fails(["models", "fetch", "arcface", *dir_opt], "unknown model 'arcface'")
    _fails(["models", "fetch", "yunet", "--url", "file:///etc/passwd", *dir_opt], "http(s)")
    # Two files cannot come from one file URL.
    _fails(["models", "fetch", "minifasnet", "--url", f"{base}good/x", *dir_opt], "folder URL")
    _nothing_installed(folder)


def test_fetch_a_two_file_model_and_a_recognizer_found_by_name(
    server: tuple[str, list[str]], tmp_path: Path, lfw_image: Path
) -> None:
    base, _ = server
    folder = tmp_path / "models"
    dir_opt = ["--model-dir", str(folder)]
    with pytest.raises(ConfigError, match="models fetch mobilefacenet"):
        EngineConfig(recognizer_model=Path("mobilefacenet"), model_dir=folder)
    for name in ("minifasnet", "mobilefacenet", "yunet"):
        r = runner.invoke(app, ["models", "fetch", name, "--url", f"{base}good/", *dir_opt])
        assert r.exit_code == 0, r.output
    status = model_status("minifasnet", folder)
    assert status.state == "installed" and len(status.files) == 2
    assert installed_files("minifasnet", folder) == tuple(
        folder / "minifasnet" / a.file for a in SUPPORTED["minifasnet"].assets
    )

    config = EngineConfig(
        detector="yunet", recognizer_model=Path("mobilefacenet"), model_dir=folder
    )
    assert config.recognizer_model == folder / "mobilefacenet" / "MobileFaceNet.onnx"
    engine = Engine(config)
    assert engine.model_id.name == "mobilefacenet"  # its manifest, found by sha256
    assert len(engine.templates(load_image(lfw_image))) == 1


def test_an_installed_file_that_changed_is_refused_and_fetch_repairs_it(
    server: tuple[str, list[str]], tmp_path: Path
) -> None:
    base, _ = server
    folder = tmp_path / "models"
    dir_opt = ["--model-dir", str(folder)]
    _ok(["models", "fetch", "yunet", "--url", f"{base}good/", *dir_opt])
    installed = folder / "yunet" / YUNET.file
    installed.write_bytes(installed.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelError, match="corrupted"):
        EngineConfig(detector="yunet", model_dir=folder)
    r = runner.invoke(app, ["models", "list", *dir_opt])
    assert r.exit_code == 0 and "corrupted" in r.stdout
    r = runner.invoke(app, ["models", "fetch", "yunet", "--url", f"{base}good/", *dir_opt])
    assert r.exit_code == 0 and "installed yunet" in r.stdout
    assert sha256(installed) == YUNET.sha256


def test_add_installs_a_local_copy_by_its_sha256(
    published: Path, tmp_path: Path, shared_models: Path
) -> None:
    folder = tmp_path / "models"
    dir_opt = ["--model-dir", str(folder)]
    renamed = tmp_path / "detector.bin"  # the name does not matter, the sha256 does
    shutil.copyfile(published / "good" / YUNET.file, renamed)
    # What a killed install left an hour ago is removed; another one's fresh staging is not.
    stale, fresh = folder / ".staging-yunet-dead", folder / ".staging-yunet-busy"
    for leftover in (stale, fresh):
        leftover.mkdir(parents=True)
        (leftover / YUNET.file).write_bytes(b"partial")
    os.utime(stale, (time.time() - 2 * 3600,) * 2)
    r = runner.invoke(app, ["models", "add", str(renamed), *dir_opt])
    assert r.exit_code == 0, r.output
    assert not stale.exists() and fresh.exists()
    installed = folder / "yunet" / YUNET.file
    assert sha256(installed) == YUNET.sha256
    assert "yingyan models add" in (folder / "yunet" / NOTICE).read_text()
    assert (folder / "yunet" / "LICENSE").read_bytes() == (
        shared_models / "yunet" / "LICENSE"
    ).read_bytes()
    assert EngineConfig(detector="yunet", model_dir=folder).yunet_model == installed

    # One of MiniFASNet's two files: partial until the other is added.
    v2, v1se = (a.file for a in SUPPORTED["minifasnet"].assets)
    r = runner.invoke(app, ["models", "add", str(published / "good" / v2), *dir_opt])
    assert r.exit_code == 0 and f"minifasnet still needs {v1se}" in r.stderr
    assert model_status("minifasnet", folder).state == "partial"
    with pytest.raises(ModelError, match="partial"):
        installed_model("minifasnet", folder)
    r = runner.invoke(app, ["models", "add", str(published / "good" / v1se), *dir_opt])
    assert r.exit_code == 0 and model_status("minifasnet", folder).state == "installed"


def test_add_refuses_unknown_corrupted_and_mismatched_files(
    published: Path, tmp_path: Path, lfw_image: Path
) -> None:
    folder = tmp_path / "models"
    dir_opt = ["--model-dir", str(folder)]
    flipped = published / "flipped" / YUNET.file
    _fails(["models", "add", str(flipped), *dir_opt], "not a supported model file")
    _fails(["models", "add", str(lfw_image), *dir_opt], "not a supported model file")
    _fails(["models", "add", str(tmp_path / "nope.onnx"), *dir_opt], "no such file")
    good = published / "good" / YUNET.file
    _fails(["models", "add", str(good), "--name", "mobilefacenet", *dir_opt], "not a file of")
    _fails(["models", "add", str(good), "--name", "nonesuch", *dir_opt], "unknown model")
    big = tmp_path / "big.onnx"
    with big.open("wb") as fh:
        fh.truncate(max(a.size for m in SUPPORTED.values() for a in m.assets) + 1)
    _fails(["models", "add", str(big), *dir_opt], "larger than any supported")
    _nothing_installed(folder)
