"""Bulk enrollment: manifest errors, the per-image report, and a real kill mid-run followed by
a rerun that adds nothing twice and loses nothing."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from yingyan import EngineConfig, load_image
from yingyan.cli.main import app
from yingyan.enrollment import ManifestError, enroll_manifest, read_manifest
from yingyan.gallery.service import GalleryService
from yingyan.models import dlib_model
from yingyan.privacy import load_cipher
from yingyan.store import create_gallery, open_database

from ._index import db_ids, stored_faiss, stored_gallery

runner = CliRunner()


def _manifest(path: Path, rows: list[tuple[str, str]], header: str = "external_id,image") -> Path:
    path.write_text("\n".join([header, *(f"{a},{b}" for a, b in rows)]) + "\n")
    return path


def test_manifest_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="missing column"):
        read_manifest(_manifest(tmp_path / "m.csv", [("a", "b")], header="id,image"))
    with pytest.raises(ManifestError, match="required"):
        read_manifest(_manifest(tmp_path / "m.csv", [("", "x.jpg")]))
    bad = tmp_path / "m.csv"
    bad.write_text('external_id,image,metadata\na,x.jpg,"{not json"\n')
    with pytest.raises(ManifestError, match="not JSON"):
        read_manifest(bad)
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "missing.csv")
    ok = tmp_path / "ok.csv"
    ok.write_text('external_id,image,name,metadata,site\nE1,img/a.jpg,Ann,"{""x"": 1}",north\n')
    (row,) = read_manifest(ok)
    assert row.image == (tmp_path / "img/a.jpg").resolve()
    assert row.name == "Ann" and row.metadata == {"x": 1, "site": "north"}


def test_report_gives_each_refusal_its_reason(tmp_path: Path, stills: Path) -> None:
    img = load_image(stills / "obama.jpg")
    cv2.imwrite(str(tmp_path / "blurred.png"), cv2.GaussianBlur(img, (0, 0), 6)[:, :, ::-1])
    cv2.imwrite(
        str(tmp_path / "noface.png"),
        load_image(stills / "knn/test/obama_and_biden.jpg")[900:, :550],
    )
    (tmp_path / "broken.jpg").write_bytes(b"nope")
    manifest = _manifest(
        tmp_path / "m.csv",
        [
            ("obama", str(stills / "obama.jpg")),
            ("blur", "blurred.png"),
            ("group", str(stills / "two_people.jpg")),
            ("nobody", "noface.png"),
            ("broken", "broken.jpg"),
        ],
    )
    with open_database(None, tmp_path / "data") as db:
        with db.session() as s:
            create_gallery(
                s,
                name="g",
                kind="enrollment",
                purpose="t",
                legal_basis="t",
                model=dlib_model("dlib_resnet_v1").id,
                min_quality=0.5,
            )
        report = enroll_manifest(
            GalleryService(db, tmp_path / "index"),
            "g",
            manifest,
            EngineConfig(),
            show_progress=False,
        )
    status = {row.external_id: (st, why.split(":")[0]) for row, st, why in report.rows}
    assert status == {
        "obama": ("enrolled", ""),
        "blur": ("refused", "low_quality"),
        "group": ("refused", "several_faces"),
        "nobody": ("refused", "no_face"),
        "broken": ("refused", "unreadable"),
    }


def _count(db_file: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=1) as c:
            return int(c.execute("select count(*) from templates").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet, or busy
        return 0


def test_a_killed_enrollment_resumes_without_loss_or_duplicates(
    tmp_path: Path, lfw_root: Path
) -> None:
    people = sorted(p for p in (lfw_root / "lfw-deepfunneled").iterdir() if p.is_dir())[:160]
    rows = [(p.name, str(sorted(p.iterdir())[0])) for p in people]
    manifest = _manifest(tmp_path / "m.csv", rows)
    data = tmp_path / "data"
    env = {**os.environ, "YINGYAN_DATA_DIR": str(data)}
    yingyan = str(Path(sys.executable).with_name("yingyan"))
    r = runner.invoke(
        app,
        [
            "gallery",
            "create",
            "lfw",
            "--purpose",
            "t",
            "--legal-basis",
            "t",
            "--data-dir",
            str(data),
        ],
    )
    assert r.exit_code == 0, r.output
    cmd = [yingyan, "enroll", "-g", "lfw", "--manifest", str(manifest), "--face", "central"]
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while _count(data / "yingyan.db") < 40 and time.monotonic() < deadline:
        time.sleep(0.1)
        assert proc.poll() is None, "enrollment finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _count(data / "yingyan.db")
    assert 40 <= partial < len(rows), partial
    cipher = load_cipher(data / "template-keys.json", None)  # created by the CLI
    with open_database(None, data) as db:
        killed_db = db_ids(db, "lfw")
        files = list((data / "index").glob("gallery-*.faiss"))
        if files:  # a file left by the killed run is behind the database, never ahead
            assert stored_faiss(files[0], cipher, check_sidecar=False).ids <= killed_db

    report = tmp_path / "report.csv"
    done = subprocess.run([*cmd, "--report", str(report)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    statuses = [r["status"] for r in csv.DictReader(report.open())]
    assert statuses.count("already") == partial
    assert statuses.count("already") + statuses.count("enrolled") == len(rows)
    with open_database(None, data) as db:
        # The index file as the rerun left it (read without the service, which would repair
        # it), encrypted with the CLI's default key file: exactly the database's templates.
        assert db_ids(db, "lfw") >= killed_db and len(db_ids(db, "lfw")) == len(rows)
        assert stored_gallery(db, data / "index", "lfw", cipher).ids == db_ids(db, "lfw")
    with sqlite3.connect(data / "yingyan.db") as c:
        pairs = c.execute(
            "select count(*), count(distinct s.external_id || t.source_sha256) "
            "from templates t join subjects s on s.id = t.subject_id"
        ).fetchone()
        plaintext = c.execute(
            "select count(*) from templates where length(embedding) = 4 * dimension"
        ).fetchone()
    assert pairs == (len(rows), len(rows))
    assert plaintext == (0,)  # every template was written encrypted
