"""Exadel's own CompreFace Python SDK against a running `yingyan serve` (a real server process
with an inference worker process): add faces for two subjects, recognize, verify, detect,
list and delete, all through the SDK, unchanged."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from compreface import CompreFace  # type: ignore[import-untyped]

from yingyan.api.app import INITIAL_KEY_FILE

pytestmark = pytest.mark.shared


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, url: str, data: Path, process: subprocess.Popen[str]) -> None:
        self.url, self.data, self.process = url, data, process

    @property
    def admin(self) -> str:
        return (self.data / INITIAL_KEY_FILE).read_text().strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("serve")
    port = _free_port()
    env = os.environ | {"YINGYAN_WORKERS": "1", "YINGYAN_LOG_JSON": "false"}
    cmd = [sys.executable, "-m", "yingyan.cli.main", "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*cmd, "--data-dir", str(data)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):  # the worker process loads its models before /ready says so
            if process.poll() is not None:
                pytest.fail(
                    f"yingyan serve exited: {process.stdout.read() if process.stdout else ''}"
                )
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("yingyan serve did not become ready in 120 s")
        yield Server(url, data, process)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_announces_where_it_listens_and_the_first_admin_key(server: Server) -> None:
    assert server.admin.startswith("yy_")
    r = httpx.get(f"{server.url}/api/v1/galleries", headers={"x-api-key": server.admin})
    assert r.status_code == 200 and r.json() == []


def test_compreface_sdk_works_unchanged(server: Server, stills: Path) -> None:
    admin = {"x-api-key": server.admin}
    body = {"name": "demo", "purpose": "CompreFace SDK test", "legal_basis": "test"}
    assert httpx.post(f"{server.url}/api/v1/galleries", json=body, headers=admin).status_code == 201
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "yingyan.cli.main",
            "keys",
            "create",
            "--role",
            "admin",
            "--name",
            "compreface",
            "--gallery",
            "demo",
            "--json",
            "--data-dir",
            str(server.data),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    key = json.loads(created.stdout)["token"]

    host, port = server.url.rsplit(":", 1)
    compre_face = CompreFace(
        host, port, {"limit": 0, "det_prob_threshold": 0.5, "prediction_count": 2, "status": True}
    )
    recognition = compre_face.init_face_recognition(key)
    faces = recognition.get_face_collection()
    subjects = recognition.get_subjects()

    assert subjects.add("biden") == {"subject": "biden"}
    added = {
        "obama": faces.add(str(stills / "obama.jpg"), "obama"),
        "biden": faces.add(str(stills / "biden.jpg"), "biden"),
    }
    assert {a["subject"] for a in added.values()} == {"obama", "biden"}
    assert sorted(subjects.list()["subjects"]) == ["biden", "obama"]
    listed = faces.list()
    assert listed["total_elements"] == 2
    assert {f["image_id"] for f in listed["faces"]} == {a["image_id"] for a in added.values()}

    recognized = recognition.recognize(str(stills / "obama2.jpg"))
    (face,) = recognized["result"]
    assert face["subjects"][0]["subject"] == "obama"
    assert face["subjects"][0]["similarity"] > face["subjects"][1]["similarity"]
    assert set(face["box"]) == {"probability", "x_max", "y_max", "x_min", "y_min"}
    assert "plugins_versions" in recognized

    two = recognition.recognize(str(stills / "two_people.jpg"))
    assert len(two["result"]) == 2

    verification = compre_face.init_face_verification(key)
    same = verification.verify(str(stills / "obama.jpg"), str(stills / "obama2.jpg"))
    other = verification.verify(str(stills / "obama.jpg"), str(stills / "biden.jpg"))
    s_same = same["result"][0]["face_matches"][0]["similarity"]
    s_other = other["result"][0]["face_matches"][0]["similarity"]
    assert s_same > 0.9 > s_other

    by_id = faces.verify(str(stills / "obama2.jpg"), added["obama"]["image_id"])
    assert by_id["result"][0]["similarity"] > 0.9

    detection = compre_face.init_face_detection(key)
    detected = detection.detect(str(stills / "two_people.jpg"), {"face_plugins": "landmarks"})
    assert len(detected.get("result", [])) == 2, detected
    assert all(len(f["landmarks"]) == 5 for f in detected["result"])

    assert subjects.update("biden", "joe_biden") == {"updated": True}
    assert faces.delete(added["obama"]["image_id"]) == {
        "image_id": added["obama"]["image_id"],
        "subject": "obama",
    }
    assert faces.delete_all("joe_biden") == {"deleted": 1}
    assert faces.list()["total_elements"] == 0
    after = recognition.recognize(str(stills / "obama2.jpg"))
    assert after["result"][0]["subjects"] == []
    assert subjects.delete("obama") == {"subject": "obama"}
    assert subjects.delete_all() == {"deleted": 1}  # joe_biden, without faces
    assert subjects.list() == {"subjects": []}


def test_compreface_errors_use_its_body_shape(server: Server, stills: Path) -> None:
    r = httpx.post(
        f"{server.url}/api/v1/recognition/recognize",
        files={"file": ("x.jpg", b"not an image", "image/jpeg")},
        headers={"x-api-key": "wrong"},
    )
    assert r.status_code == 401 and set(r.json()) == {"message", "code"}
