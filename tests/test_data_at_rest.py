"""Data at rest: kept enrolment images sealed like templates, private files and folders whatever
the umask, data in clear accepted only through `yingyan encryption migrate`, the initial admin
key file private and removed once it is no longer needed, and no password in what `yingyan
serve` prints. Checked in raw file bytes, `stat` modes and real processes."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import URL, select, text
from typer.testing import CliRunner

from yingyan.access.keys import create_key, revoke_key
from yingyan.api.app import INITIAL_KEY_FILE, bootstrap_admin_key
from yingyan.audit.log import entries
from yingyan.gallery.index import IndexSpec
from yingyan.gallery.index.faiss_index import FaissIndex
from yingyan.gallery.service import EnrollItem, GalleryService
from yingyan.privacy import (
    DecryptionError,
    KeyInUseError,
    Keyring,
    PlaintextRefusedError,
    TemplateCipher,
    create_keyring,
    read_keyring,
)
from yingyan.privacy.cipher import MAGIC
from yingyan.privacy.files import private_dir, private_file
from yingyan.privacy.keyring import write_keyring
from yingyan.privacy.redaction import redact_url
from yingyan.privacy.rotation import key_usage, retire_key, rotate_templates
from yingyan.store import (
    Database,
    TemplateOwner,
    TemplateRow,
    create_gallery,
    open_database,
    pack_vector,
    template_image,
    unpack_vector,
)
from yingyan.types import ModelId, Template

from ._server import running_server
from .conftest import Target

MODEL = ModelId("dlib_resnet_v1", "55533b28a958")
DIM = 128


def _unit(seed: int) -> npt.NDArray[np.float32]:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """What a default shell gives: 0644 files, 0755 folders, unless created private."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture(scope="module")
def photos(stills: Path) -> dict[str, bytes]:
    """The JPEG bytes of two real enrolment photos."""
    root = stills / "knn/train"
    return {p: (root / p / f"{p}.jpg").read_bytes() for p in ("obama", "biden")}


def _keep_images_gallery(db: Database, name: str = "staff") -> None:
    with db.session() as s:
        create_gallery(
            s,
            name=name,
            kind="enrollment",
            purpose="test",
            legal_basis="consent",
            model=MODEL,
            keep_images=True,
        )


def _enroll_photos(service: GalleryService, photos: dict[str, bytes], seed: int = 0) -> None:
    items = [
        EnrollItem(
            person,
            Template(_unit(seed + i), MODEL),
            0.9,
            hashlib.sha256(data).hexdigest(),
            image=data,
        )
        for i, (person, data) in enumerate(sorted(photos.items()))
    ]
    service.enroll("staff", items)


def _raw_images(db: Database) -> dict[str, bytes]:
    query = text(
        "SELECT s.external_id, t.image FROM templates t JOIN subjects s ON s.id = t.subject_id"
    )
    with db.engine.connect() as c:
        return {ext: bytes(img) for ext, img in c.execute(query)}


def _stored_bytes(db: Database, target: Target) -> bytes:
    """Everything the database holds on disk (SQLite: the file, the WAL folded in), or the raw
    column values (PostgreSQL's files are the server's)."""
    if target.backend == "sqlite":
        db.purge_deleted()  # folds the WAL into the file
        return (target.data_dir / "yingyan.db").read_bytes()
    return b"".join(_raw_images(db).values())


def _windows(data: bytes, size: int = 32, step: int = 997) -> list[bytes]:
    """Slices of the JPEG all along it (its header, EXIF and entropy-coded data)."""
    return [data[i : i + size] for i in range(0, len(data) - size, step)]


def _cipher() -> TemplateCipher:
    return TemplateCipher(Keyring("k1", {"k1": os.urandom(32)}))


# -- kept images -------------------------------------------------------------------------------


def test_kept_image_is_sealed_in_the_database_and_decrypts_exactly(
    db: Database, target: Target, tmp_path: Path, photos: dict[str, bytes]
) -> None:
    cipher = _cipher()
    _keep_images_gallery(db)
    service = GalleryService(db, tmp_path / "index", cipher=cipher)
    _enroll_photos(service, photos)
    service.close()

    stored = _stored_bytes(db, target)
    for person, jpeg in photos.items():
        assert not any(w in stored for w in _windows(jpeg)), person
    raw = _raw_images(db)
    assert all(blob.startswith(MAGIC) for blob in raw.values())
    with db.session() as s:
        rows = {r.source_sha256: r for r in s.scalars(select(TemplateRow))}
        for jpeg in photos.values():
            row = rows[hashlib.sha256(jpeg).hexdigest()]
            assert template_image(row, cipher) == jpeg  # exactly the photo enrolled
            with pytest.raises(DecryptionError):
                template_image(row, _cipher())  # another key with the same id
    # Obama's sealed photo copied onto Biden's row does not open as Biden's.
    with db.engine.begin() as c:
        c.execute(
            text(
                "UPDATE templates SET image = :b WHERE subject_id = "
                "(SELECT id FROM subjects WHERE external_id = 'biden')"
            ),
            {"b": raw["obama"]},
        )
    with db.session() as s:
        biden = s.scalars(
            select(TemplateRow).where(
                TemplateRow.source_sha256 == hashlib.sha256(photos["biden"]).hexdigest()
            )
        ).one()
        with pytest.raises(DecryptionError):
            template_image(biden, cipher)


def test_the_raw_check_sees_a_photo_stored_in_clear(
    db: Database, target: Target, tmp_path: Path, photos: dict[str, bytes]
) -> None:
    """The check above can fail: without a key, the photo is in the stored bytes (most slices
    of it: SQLite splits a large blob over overflow pages)."""
    _keep_images_gallery(db)
    service = GalleryService(db, tmp_path / "index", cipher=None)
    _enroll_photos(service, photos)
    service.close()
    stored = _stored_bytes(db, target)
    windows = _windows(photos["obama"])
    assert sum(w in stored for w in windows) > 0.9 * len(windows)


def test_images_rotate_with_templates_and_hold_their_key(
    db: Database, tmp_path: Path, photos: dict[str, bytes]
) -> None:
    key_file = tmp_path / "keys.json"
    keyring = create_keyring(key_file)
    old = TemplateCipher(keyring)
    _keep_images_gallery(db)
    service = GalleryService(db, tmp_path / "index", cipher=old)
    _enroll_photos(service, photos)
    service.close()
    usage = key_usage(db)
    assert usage.by_key == {"k1": 2} and usage.images_by_key == {"k1": 2}

    new_ring, _ = keyring.with_new_key()
    new = TemplateCipher(new_ring)
    write_keyring(key_file, new_ring)
    with db.engine.begin() as c:  # only the templates re-sealed: the photos still need k1
        for tid, blob, sub, gal in c.execute(
            text("SELECT id, embedding, subject_id, gallery_id FROM templates")
        ).all():
            owner = TemplateOwner(gal, sub)
            vec = unpack_vector(bytes(blob), DIM, new, owner=owner)
            c.execute(
                text("UPDATE templates SET embedding = :b WHERE id = :i"),
                {"b": pack_vector(vec, new, owner=owner), "i": tid},
            )
    assert key_usage(db).by_key == {"k2": 2}
    with pytest.raises(KeyInUseError, match="kept image"):
        retire_key(db, key_file, "k1")  # the photos would become unreadable

    report = rotate_templates(db, new)
    assert (report.rewritten, report.images) == (0, 2)
    assert key_usage(db).images_by_key == {"k2": 2}
    retire_key(db, key_file, "k1")
    final = TemplateCipher(read_keyring(key_file))
    with db.session() as s:
        got = {r.source_sha256: template_image(r, final) for r in s.scalars(select(TemplateRow))}
    assert got == {hashlib.sha256(v).hexdigest(): v for v in photos.values()}


# -- the migration step ------------------------------------------------------------------------


def test_data_in_clear_is_refused_until_yingyan_encryption_migrate(
    tmp_path: Path, photos: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data folder from before encryption (templates, photos and index file in clear): the
    service refuses it with a message naming the migration, which seals everything, audited."""
    from yingyan.cli.gallery import open_service
    from yingyan.cli.main import app

    for var in ("YINGYAN_KEY_FILE", "YINGYAN_TEMPLATE_KEY", "YINGYAN_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    data = tmp_path / "data"
    with open_database(None, data) as db:
        _keep_images_gallery(db)
        legacy = GalleryService(db, data / "index", cipher=None)
        _enroll_photos(legacy, photos)
        legacy.close()
    (index_file,) = (data / "index").glob("*.faiss")
    assert not index_file.read_bytes().startswith(MAGIC)
    assert not (data / "template-keys.json").exists()

    # The service: its rebuild from the database meets the plaintext templates (the refused
    # plaintext index file itself is tested in test_privacy); the index files are put back.
    saved = {f: f.read_bytes() for f in (data / "index").iterdir()}
    for f in saved:
        f.unlink()
    probe = Template(_unit(1), MODEL)  # obama's template (sorted: biden 0, obama 1)
    refused = pytest.raises(PlaintextRefusedError, match="yingyan encryption migrate")
    with open_service(data, None) as service, refused:  # creates the default keyring
        service.identify("staff", [probe], k=1)
    for f, content in saved.items():
        f.write_bytes(content)

    runner = CliRunner()
    migrate = ["encryption", "migrate", "--data-dir", str(data), "--no-progress"]
    migrated = runner.invoke(app, migrate)
    assert migrated.exit_code == 0, migrated.output
    assert "2 plaintext template(s), 2 kept image(s) and 1 index file(s) sealed" in migrated.output
    assert index_file.read_bytes().startswith(MAGIC)
    with open_database(None, data) as db:
        assert all(b.startswith(MAGIC) for b in _raw_images(db).values())
        with db.session() as s:
            (entry,) = [e for e in entries(s) if e.operation == "encryption.migrate"]
        assert entry.details["templates_sealed"] == 2 and entry.details["index_files"] == 1
    with open_service(data, None) as service:
        (hits,) = service.identify("staff", [probe], k=1)
        assert hits[0].external_id == "obama"
        with service.db.session() as s:
            images = {template_image(r, service.cipher) for r in s.scalars(select(TemplateRow))}
        assert images == set(photos.values())
    again = runner.invoke(app, migrate)
    assert again.exit_code == 0 and "0 plaintext template(s)" in again.output


# -- private files and folders ---------------------------------------------------------------


def test_store_keyring_and_folders_are_private_under_a_permissive_umask(
    tmp_path: Path, permissive_umask: None
) -> None:
    probe = tmp_path / "probe"
    probe.touch()
    assert _mode(probe) == 0o644  # the umask would make files readable by everyone
    data = tmp_path / "fresh" / "data"
    with open_database(None, data) as db:
        _keep_images_gallery(db)  # a write: the WAL and shared-memory files exist now
        assert _mode(data) == 0o700 and _mode(data.parent) == 0o700
        for name in ("yingyan.db", "yingyan.db-wal", "yingyan.db-shm"):
            assert _mode(data / name) == 0o600, name
    create_keyring(data / "keys" / "template-keys.json")
    assert _mode(data / "keys") == 0o700
    assert _mode(data / "keys" / "template-keys.json") == 0o600

    # A data folder from an older version, made with the umask: tightened when opened.
    old = tmp_path / "old"
    old.mkdir()
    (old / "yingyan.db").touch()
    (old / "keys.json").write_text((data / "keys" / "template-keys.json").read_text())
    assert _mode(old) == 0o755 and _mode(old / "yingyan.db") == 0o644
    with open_database(None, old):
        pass
    assert _mode(old) == 0o700 and _mode(old / "yingyan.db") == 0o600
    read_keyring(old / "keys.json")
    assert _mode(old / "keys.json") == 0o600


def test_resealed_index_file_is_private(tmp_path: Path, permissive_umask: None) -> None:
    from yingyan.gallery.index.faiss_index import reseal_file

    path = tmp_path / "g1.faiss"
    index = FaissIndex.open(IndexSpec(), path, DIM, model="m")
    index.add(np.arange(1, 4), np.stack([_unit(i) for i in range(3)]))
    index.save()
    assert reseal_file(path, _cipher()) is True
    assert _mode(path) == 0o600


def test_saved_index_files_and_folder_are_private(tmp_path: Path, permissive_umask: None) -> None:
    """Every file in the index folder (faiss file, sidecar, lock) is 0600, the folder 0700."""
    data = tmp_path / "data"
    with open_database(None, data) as db:
        _keep_images_gallery(db)
        service = GalleryService(db, data / "index", cipher=_cipher())
        _enroll_photos(service, {"a": b"x", "b": b"y"})
        service.close()
    files = sorted((data / "index").iterdir())
    assert files and _mode(data / "index") == 0o700
    assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}


def test_private_helpers_keep_what_others_own(tmp_path: Path, permissive_umask: None) -> None:
    folder = tmp_path / "operator"
    folder.mkdir()
    assert private_dir(folder, tighten=False) == folder and _mode(folder) == 0o755
    assert _mode(private_dir(folder)) == 0o700
    made = private_file(tmp_path / "new")
    assert made.read_bytes() == b"" and _mode(made) == 0o600


# -- the initial admin key ---------------------------------------------------------------------


def test_initial_admin_key_file_is_private_and_removed_when_no_longer_needed(
    tmp_path: Path, permissive_umask: None
) -> None:
    data = tmp_path / "data"
    with open_database(None, data) as db:
        path = data / INITIAL_KEY_FILE
        path.write_text("left over\n")  # e.g. from an earlier installation, mode 0644
        other = tmp_path / "hard-link"
        os.link(path, other)
        assert _mode(path) == 0o644
        assert bootstrap_admin_key(db, data) == path
        assert _mode(path) == 0o600 and path.read_text().startswith("yy_")
        assert other.read_text() == "left over\n"  # a new file, not written through a link
        token = path.read_text().strip()

        path.chmod(0o644)  # loosened meanwhile: made private again at the next start
        assert bootstrap_admin_key(db, data) is None
        assert path.read_text().strip() == token and _mode(path) == 0o600

        with db.session() as s:  # the operator makes a key of another role: still needed
            create_key(s, name="gate", role="operator")
        assert bootstrap_admin_key(db, data) is None and path.exists()
        with db.session() as s:  # ... and their own admin key: the hand-over is done
            create_key(s, name="alice", role="admin")
        assert bootstrap_admin_key(db, data) is None
        assert not path.exists()
        with db.session() as s:
            removed = [e for e in entries(s) if e.operation == "key.initial_file_removed"]
        assert [e.details["reason"] for e in removed] == ["another admin key exists"]


def test_initial_admin_key_file_goes_when_its_key_is_revoked(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with open_database(None, data) as db:
        path = bootstrap_admin_key(db, data)
        assert path is not None
        prefix = path.read_text().split("_")[1]
        with db.session() as s:
            create_key(s, name="ops", role="operator")  # keeps the service reachable
            revoke_key(s, prefix=prefix)
        assert bootstrap_admin_key(db, data) is None and not path.exists()


# -- redaction ---------------------------------------------------------------------------------


def test_redact_url_hides_passwords_and_tokens() -> None:
    cases = {
        "postgresql://user:secret@db:5432/yy": "postgresql://user:***@db:5432/yy",
        "postgresql://user@db/yy?password=secret&sslmode=require": (
            "postgresql://user@db/yy?password=***&sslmode=require"
        ),
        "https://secret@milvus:19530": "https://***@milvus:19530",
        "http://root:secret@milvus:19530/db": "http://root:***@milvus:19530/db",
        "sqlite:////var/lib/yy.db": "sqlite:////var/lib/yy.db",
        "/var/lib/milvus.db": "/var/lib/milvus.db",
        "http://u:secret@[::1": "http://***",
    }
    assert {u: redact_url(u) for u in cases} == cases


def test_serve_shows_no_database_password(
    postgres_database: URL, tmp_path: Path, permissive_umask: None
) -> None:
    """A real `yingyan serve` on PostgreSQL with a password in its URL (the test server trusts
    local connections, so any password works): its output never shows it; the data folder,
    keyring and first admin key it creates are private."""
    url = postgres_database.set(password="s3cr3t-pw").render_as_string(hide_password=False)
    data = tmp_path / "serve"
    unset = {"YINGYAN_KEY_FILE": None, "YINGYAN_TEMPLATE_KEY": None}
    with running_server(data, workers=0, database_url=url, env=unset) as server:
        pass
    output = server.output()
    assert "listening" in output, output
    assert "s3cr3t-pw" not in output
    assert f"database: {redact_url(url)}" in output  # the URL is shown, its password is not
    assert _mode(data) == 0o700
    assert _mode(data / INITIAL_KEY_FILE) == 0o600
    assert _mode(data / "template-keys.json") == 0o600
