"""Templates encrypted at rest, key rotation, and erasure that really erases, on SQLite and
PostgreSQL: what is stored is checked in the raw bytes of the database and of the index files,
never only through the API that wrote it."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from yingyan import Engine, load_image
from yingyan.gallery.index import IndexSpec, VectorIndexError
from yingyan.gallery.index.faiss_index import FaissIndex, reseal_file
from yingyan.gallery.service import EnrollItem, GalleryService
from yingyan.privacy import (
    DecryptionError,
    KeyInUseError,
    KeyMissingError,
    Keyring,
    KeyringError,
    KeySource,
    PlaintextRefusedError,
    TemplateCipher,
    UnknownKeyError,
    add_key,
    blob_key_id,
    create_keyring,
    key_source,
    load_cipher,
    read_keyring,
)
from yingyan.privacy.cipher import MAGIC
from yingyan.privacy.rotation import (
    count_templates_to_scan,
    key_usage,
    reseal_index_files,
    retire_key,
    rotate_templates,
)
from yingyan.store import (
    ConflictError,
    Database,
    NotFoundError,
    SubjectRow,
    TemplateOwner,
    TemplateRow,
    add_template,
    create_gallery,
    get_or_create_subject,
    iter_template_batches,
    template_vector,
    unpack_vector,
)
from yingyan.store.repository import stage_no_face, stage_template
from yingyan.store.tables import StagedTemplateRow
from yingyan.types import ModelId, Template

from ._index import stored_gallery
from .conftest import Target

MODEL = ModelId("dlib_resnet_v1", "55533b28a958")
DIM = 128
PEOPLE = ["alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"]
Faces = dict[str, tuple[str, Template]]


def _cipher(*ids: str, active: str | None = None) -> TemplateCipher:
    keys = {k: np.random.default_rng().bytes(32) for k in ids or ("k1",)}
    return TemplateCipher(Keyring(active or next(iter(keys)), keys))


def _unit(seed: int) -> npt.NDArray[np.float32]:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _gallery(db: Database, name: str = "staff", model: ModelId = MODEL) -> int:
    with db.session() as s:
        g = create_gallery(
            s, name=name, kind="enrollment", purpose="test", legal_basis="consent", model=model
        )
        return g.id


def _add(
    db: Database, gallery_id: int, external_id: str, seed: int, cipher: TemplateCipher | None
) -> int:
    with db.session() as s:
        subject, _ = get_or_create_subject(s, gallery_id=gallery_id, external_id=external_id)
        row, _ = add_template(
            s,
            subject=subject,
            template=Template(_unit(seed), MODEL),
            quality=0.9,
            source_sha256=hashlib.sha256(str(seed).encode()).hexdigest(),
            cipher=cipher,
        )
        return row.id


def _raw(db: Database, template_id: int) -> bytes:
    with db.engine.connect() as c:
        query = text("SELECT embedding FROM templates WHERE id = :id")
        return bytes(c.execute(query, {"id": template_id}).scalar_one())


def _set_raw(db: Database, template_id: int, blob: bytes) -> None:
    with db.engine.begin() as c:
        query = text("UPDATE templates SET embedding = :b WHERE id = :id")
        c.execute(query, {"b": blob, "id": template_id})


def _read(db: Database, template_id: int, cipher: TemplateCipher | None) -> np.ndarray:
    with db.session() as s:
        row = s.get(TemplateRow, template_id)
        assert row is not None
        return template_vector(row, cipher)


def _windows(data: bytes, size: int = 16) -> set[bytes]:
    """Every 16-byte slice of a vector (4 floats): none may appear in ciphertext."""
    return {data[i : i + size] for i in range(0, len(data) - size + 1, 4)}


# -- the stored blob ---------------------------------------------------------------------------


def test_stored_template_is_ciphertext_and_round_trips_exactly(db: Database) -> None:
    cipher = _cipher("k1")
    gid = _gallery(db)
    tid = _add(db, gid, "alice", 1, cipher)
    raw, plain = _raw(db, tid), _unit(1).tobytes()
    assert len(raw) > len(plain)
    assert not any(w in raw for w in _windows(plain))
    assert np.array_equal(_read(db, tid, cipher), _unit(1))
    with db.session() as s:
        (batch,) = iter_template_batches(s, gallery_id=gid, cipher=cipher)
    assert batch.ids.tolist() == [tid] and np.array_equal(batch.vectors[0], _unit(1))
    # Two writes of the same vector differ (random nonce): equal templates are not linkable.
    other = _add(db, gid, "alice-again", 1, cipher)
    assert _raw(db, other) != raw


def test_wrong_or_missing_key_is_a_clear_error(db: Database) -> None:
    gid = _gallery(db)
    tid = _add(db, gid, "alice", 1, _cipher("k1"))
    with pytest.raises(DecryptionError) as wrong:
        _read(db, tid, _cipher("k1"))  # same id, another key
    assert wrong.value.code == "template_decryption_failed"
    with pytest.raises(UnknownKeyError, match="'k1'") as unknown:
        _read(db, tid, _cipher("k7"))
    assert unknown.value.code == "template_key_unknown"
    with pytest.raises(KeyMissingError) as missing:
        _read(db, tid, None)
    assert missing.value.code == "template_key_missing"
    with db.session() as s, pytest.raises(KeyMissingError):
        list(iter_template_batches(s, gallery_id=gid))


def test_tampered_or_moved_blob_fails_to_decrypt(db: Database) -> None:
    cipher = _cipher("k1")
    gid = _gallery(db)
    alice, bob = _add(db, gid, "alice", 1, cipher), _add(db, gid, "bob", 2, cipher)
    blob = _raw(db, alice)
    flipped = bytearray(blob)
    flipped[-40] ^= 0x01
    _set_raw(db, alice, bytes(flipped))
    with pytest.raises(DecryptionError):
        _read(db, alice, cipher)
    _set_raw(db, alice, blob)
    assert np.array_equal(_read(db, alice, cipher), _unit(1))
    _set_raw(db, bob, blob)  # alice's template copied onto bob's row
    with pytest.raises(DecryptionError, match="moved"):
        _read(db, bob, cipher)


# -- rotation ----------------------------------------------------------------------------------


def test_rotation_reencrypts_everything_then_the_old_key_retires(
    db: Database, tmp_path: Path
) -> None:
    key_file = tmp_path / "keys.json"
    create_keyring(key_file)
    old = load_cipher(key_file, None)
    assert old is not None
    gid = _gallery(db)
    ids = [_add(db, gid, f"s{i}", i, old) for i in range(3)]
    ids += [_add(db, gid, f"legacy{i}", 10 + i, None) for i in range(2)]  # plaintext rows
    assert key_usage(db).by_key == {"k1": 3} and key_usage(db).plaintext == 2

    assert add_key(key_file) == "k2"
    new = load_cipher(key_file, None)
    assert new is not None and new.active_key_id == "k2"
    with pytest.raises(KeyInUseError, match="3 stored"):
        retire_key(db, key_file, "k1")
    with pytest.raises(KeyringError, match="active"):
        retire_key(db, key_file, "k2")

    seen: list[int] = []
    report = rotate_templates(db, new, batch_size=2, progress=seen.append)
    assert (report.scanned, report.rewritten) == (5, 5) and seen == [2, 2, 1]
    assert key_usage(db).by_key == {"k2": 5} and key_usage(db).plaintext == 0
    assert rotate_templates(db, new).rewritten == 0  # nothing left to do

    retire_key(db, key_file, "k1")
    assert sorted(read_keyring(key_file).keys) == ["k2"]
    final = load_cipher(key_file, None)
    assert final is not None
    seeds = [0, 1, 2, 10, 11]
    for tid, seed in zip(ids, seeds, strict=True):
        assert np.array_equal(_read(db, tid, final), _unit(seed))
        assert not any(w in _raw(db, tid) for w in _windows(_unit(seed).tobytes()))
    with pytest.raises(UnknownKeyError):
        _read(db, ids[0], old)


def test_plaintext_template_is_refused_with_a_cipher_until_migrated(db: Database) -> None:
    gid = _gallery(db)
    old = _cipher("k1")
    sealed = _add(db, gid, "sealed", 4, old)
    tid = _add(db, gid, "legacy", 3, None)
    assert _raw(db, tid) == _unit(3).tobytes()  # what databases before encryption hold
    assert np.array_equal(_read(db, tid, None), _unit(3))  # no key configured: nothing sealed
    cipher = TemplateCipher(Keyring("k2", {**old.keyring.keys, "k2": bytes(32)}))
    with pytest.raises(PlaintextRefusedError, match="yingyan encryption migrate") as refused:
        _read(db, tid, cipher)  # unauthenticated: it could have been planted
    assert refused.value.code == "plaintext_refused"
    with db.session() as s, pytest.raises(PlaintextRefusedError):
        list(iter_template_batches(s, gallery_id=gid, cipher=cipher))
    sealed_blob = _raw(db, sealed)

    report = rotate_templates(db, cipher, only_plaintext=True)  # the migration step
    assert (report.scanned, report.rewritten) == (2, 1)
    assert _raw(db, sealed) == sealed_blob  # a sealed row is left as it is, under k1
    assert blob_key_id(_raw(db, tid)) == "k2" and _unit(3).tobytes() not in _raw(db, tid)
    assert np.array_equal(_read(db, tid, cipher), _unit(3))
    assert np.array_equal(_read(db, sealed, cipher), _unit(4))
    assert key_usage(db).by_key == {"k1": 1, "k2": 1} and key_usage(db).plaintext == 0


def _staged_blobs(db: Database) -> dict[int, bytes | None]:
    """Staged template blobs by source template id, as stored."""
    with db.engine.connect() as c:
        query = text("SELECT source_template_id, embedding FROM staged_templates")
        return {int(t): (bytes(b) if b is not None else None) for t, b in c.execute(query)}


def test_staged_templates_are_sealed_rotated_and_hold_their_key(
    db: Database, tmp_path: Path
) -> None:
    """A migration's staged templates (`staged_templates`), on their own: `encryption migrate`
    seals those in clear, rotation re-seals them (first, counted in the progress), and a key
    that one of them still uses is not retired; rows without a face are left alone."""
    other = ModelId("mobilefacenet", "0123456789ab")
    key_file = tmp_path / "keys.json"
    create_keyring(key_file)
    old = load_cipher(key_file, None)
    assert old is not None
    gid = _gallery(db)
    ids = [_add(db, gid, f"s{i}", i, old) for i in range(3)]
    with db.session() as s:
        rows = [s.get(TemplateRow, t) for t in ids]
        assert all(r is not None for r in rows)
        a, b, c = (r for r in rows if r is not None)
        stage_template(s, source=a, template=Template(_unit(101), other), quality=0.8, cipher=old)
        stage_template(s, source=b, template=Template(_unit(102), other), quality=0.8)  # clear
        stage_no_face(s, source=c, target_model=str(other))
    usage = key_usage(db)
    assert (usage.staged_by_key, usage.plaintext_staged) == ({"k1": 1}, 1)
    assert usage.by_key == {"k1": 3} and usage.uses("k1") == 4
    assert count_templates_to_scan(db) == 6  # 3 templates, 3 staged rows

    assert add_key(key_file) == "k2"
    new = load_cipher(key_file, None)
    assert new is not None
    report = rotate_templates(db, new, only_plaintext=True)  # `yingyan encryption migrate`
    assert (report.staged, report.staged_scanned, report.rewritten) == (1, 3, 0)
    blobs = _staged_blobs(db)
    sealed = blobs[ids[1]] or b""
    assert blob_key_id(sealed) == "k2" and _unit(102).tobytes() not in sealed
    assert key_usage(db).staged_by_key == {"k1": 1, "k2": 1}

    seen: list[int] = []
    report = rotate_templates(db, new, batch_size=2, progress=seen.append)
    assert (report.staged, report.staged_scanned, report.rewritten) == (1, 3, 3)
    assert seen == [2, 1, 2, 1] and sum(seen) == count_templates_to_scan(db)
    assert key_usage(db).staged_by_key == {"k2": 2} and _staged_blobs(db)[ids[2]] is None

    # Staged under k1 after the pass (a process still sealing with k1): k1 stays needed.
    late = TemplateCipher(Keyring("k1", read_keyring(key_file).keys))
    third = ModelId("mobilefacenet", "ba9876543210")
    with db.session() as s:
        row = s.get(TemplateRow, ids[2])
        assert row is not None
        stage_template(
            s, source=row, template=Template(_unit(103), third), quality=0.8, cipher=late
        )
    with pytest.raises(KeyInUseError, match=r"1 stored template.*1 of them staged"):
        retire_key(db, key_file, "k1")
    assert rotate_templates(db, new).staged == 1
    retire_key(db, key_file, "k1")
    final = load_cipher(key_file, None)
    assert final is not None and final.key_ids == ("k2",)
    with db.session() as s:
        staged = {
            (r.source_template_id, r.target_model): r for r in s.scalars(select(StagedTemplateRow))
        }
        for (source, model), seed in [
            ((ids[0], str(other)), 101),
            ((ids[1], str(other)), 102),
            ((ids[2], str(third)), 103),
        ]:
            r = staged[(source, model)]
            assert r.embedding is not None
            owner = TemplateOwner(r.gallery_id, r.subject_id)
            vector = unpack_vector(r.embedding, r.dimension, final, owner=owner)
            assert np.array_equal(vector, _unit(seed))
        assert staged[(ids[2], str(other))].embedding is None


# -- key sources -------------------------------------------------------------------------------


def test_key_file_is_private_and_key_sources_resolve(tmp_path: Path) -> None:
    path = tmp_path / "data" / "keys.json"
    keyring = create_keyring(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    body = json.loads(path.read_text())
    assert body["format"] == "yingyan-keyring-1" and body["active"] == "k1"
    assert len(base64.b64decode(body["keys"]["k1"])) == 32
    with pytest.raises(KeyringError, match="already exists"):
        create_keyring(path)
    assert read_keyring(path).keys == keyring.keys  # not overwritten
    add_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    single = base64.b64encode(bytes(range(32))).decode()
    env_cipher = load_cipher(None, single)
    assert env_cipher is not None and env_cipher.active_key_id.startswith("env-")
    json_cipher = load_cipher(None, path.read_text())
    assert json_cipher is not None and json_cipher.key_ids == ("k1", "k2")
    assert load_cipher(None, None) is None
    with pytest.raises(KeyringError):
        load_cipher(path, single)
    with pytest.raises(KeyringError, match="32"):
        load_cipher(None, base64.b64encode(b"short").decode())
    with pytest.raises(KeyringError, match="no key file"):
        load_cipher(tmp_path / "absent.json", None)

    default = tmp_path / "default.json"
    assert key_source(None, {}, default) == KeySource(default, None, is_default=True)
    assert key_source(None, {"YINGYAN_TEMPLATE_KEY": single}, default) == KeySource(None, single)
    env = {"YINGYAN_TEMPLATE_KEY": single, "YINGYAN_KEY_FILE": str(path)}
    assert key_source(None, env, default) == KeySource(path, None)
    assert key_source(tmp_path / "opt.json", env, default).key_file == tmp_path / "opt.json"


# -- the index file ----------------------------------------------------------------------------


def test_index_file_is_encrypted_on_disk(tmp_path: Path) -> None:
    cipher = _cipher("k1")
    path = tmp_path / "gallery-1-m.faiss"
    vectors = np.stack([_unit(i) for i in range(20)])
    index = FaissIndex.open(IndexSpec(), path, DIM, model="m", cipher=cipher)
    index.add(np.arange(1, 21), vectors)
    index.save()
    raw = path.read_bytes()
    assert not any(w in raw for v in vectors for w in _windows(v.tobytes()))
    assert raw.startswith(MAGIC) and b"IxMp" not in raw[:64]  # not even faiss's header

    reopened = FaissIndex.open(IndexSpec(), path, DIM, model="m", cipher=cipher)
    assert reopened.search(vectors[4:5], 1).ids[0, 0] == 5
    with pytest.raises(KeyMissingError):
        FaissIndex.open(IndexSpec(), path, DIM, model="m")
    with pytest.raises(VectorIndexError, match="decrypt"):
        FaissIndex.open(IndexSpec(), path, DIM, model="m", cipher=_cipher("k1"))
    renamed = tmp_path / "gallery-2-m.faiss"  # another gallery's file name
    path.rename(renamed)
    (tmp_path / "gallery-1-m.faiss.json").rename(tmp_path / "gallery-2-m.faiss.json")
    with pytest.raises(VectorIndexError):
        FaissIndex.open(IndexSpec(), renamed, DIM, model="m", cipher=cipher)


def test_plaintext_index_file_is_refused_until_resealed(tmp_path: Path) -> None:
    path = tmp_path / "gallery-1-m.faiss"
    vectors = np.stack([_unit(i) for i in range(5)])
    plain = FaissIndex.open(IndexSpec(), path, DIM, model="m")
    plain.add(np.arange(1, 6), vectors)
    plain.save()
    assert vectors[0].tobytes() in path.read_bytes()  # the legacy file holds vectors in clear
    assert FaissIndex.open(IndexSpec(), path, DIM, model="m").ids().tolist() == [1, 2, 3, 4, 5]
    old, new = _cipher("k1"), _cipher("k1", "k2", active="k2")
    with pytest.raises(VectorIndexError, match=r"not encrypted.*yingyan encryption migrate"):
        FaissIndex.open(IndexSpec(), path, DIM, model="m", cipher=old)
    assert reseal_file(path, old) is True and reseal_file(path, old) is False
    legacy = FaissIndex.open(IndexSpec(), path, DIM, model="m", cipher=old)
    assert legacy.ids().tolist() == [1, 2, 3, 4, 5]
    assert vectors[0].tobytes() not in path.read_bytes()
    rotated = TemplateCipher(
        Keyring("k2", {"k1": old.keyring.keys["k1"], "k2": new.keyring.keys["k2"]})
    )
    assert reseal_index_files(tmp_path, rotated) == (1, [])
    assert not rotated.is_current(b"") and rotated.is_current(path.read_bytes())
    loaded = FaissIndex.open(IndexSpec(), path, DIM, model="m", cipher=rotated)
    assert loaded.search(vectors[2:3], 1).ids[0, 0] == 3
    # A file under a key no longer held is dropped (the service rebuilds it from the database).
    assert reseal_index_files(tmp_path, _cipher("k9")) == (0, [path])
    assert not path.exists()


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_faiss_remove_erases_the_vector_bytes(kind: str) -> None:
    vectors = np.stack([_unit(i) for i in range(200)])
    index = FaissIndex.open(IndexSpec(kind=kind), None, DIM, model="m")  # type: ignore[arg-type]
    index.add(np.arange(1, 201), vectors)
    gone = vectors[41].tobytes()
    assert gone in faiss.serialize_index(index._index).tobytes()  # the check can fail
    assert index.remove([42]) == 1
    serialized = faiss.serialize_index(index._index).tobytes()
    assert gone not in serialized and vectors[42].tobytes() in serialized


# -- the service: erasure with real faces, and the template API --------------------------------


@pytest.fixture(scope="module")
def faces(stills: Path, engine: Engine) -> Faces:
    """person → (sha256, template) of the first training photo of each person."""
    out = {}
    for person in PEOPLE:
        f = sorted((stills / "knn/train" / person).iterdir())[0]
        (template,) = engine.templates(load_image(f))
        out[person] = (hashlib.sha256(f.read_bytes()).hexdigest(), template)
    return out


def _service(db: Database, tmp_path: Path, cipher: TemplateCipher | None) -> GalleryService:
    return GalleryService(db, tmp_path / "index", cipher=cipher)


def _decrypted_index(cipher: TemplateCipher, index_file: Path) -> bytes:
    """The faiss bytes of an index file, sealed bound to its name."""
    return cipher.decrypt(index_file.read_bytes(), f"yingyan-index/1|{index_file.name}".encode())


def test_erased_subject_is_gone_from_database_index_and_files(
    db: Database, target: Target, tmp_path: Path, engine: Engine, faces: Faces
) -> None:
    cipher = _cipher("k1")
    _gallery(db, model=engine.model_id)
    service = _service(db, tmp_path, cipher)
    items = [EnrollItem(p, faces[p][1], 0.9, faces[p][0]) for p in PEOPLE]
    ids = dict(zip(PEOPLE, (t for t, _ in service.enroll("staff", items)), strict=True))
    probe = faces["obama"][1]  # the very image that was enrolled
    (before,) = service.identify("staff", [probe], k=5)
    assert before[0].external_id == "obama" and before[0].score > 0.99
    obama_id, obama_plain = ids["obama"], faces["obama"][1].vector.astype(np.float32).tobytes()
    blob = _raw(db, obama_id)
    index_file = next((tmp_path / "index").glob("*.faiss"))
    decrypted = _decrypted_index(cipher, index_file)
    assert obama_plain in decrypted  # the index held it; on disk only sealed
    assert obama_plain not in index_file.read_bytes()
    db_file = target.data_dir / "yingyan.db"
    if target.backend == "sqlite":
        db.purge_deleted()  # fold the log into the file: the blob is there
        assert blob in db_file.read_bytes()  # so the raw check below can fail

    assert service.erase_subject("staff", "obama") == 1

    (after,) = service.identify("staff", [probe], k=10)
    assert "obama" not in [c.external_id for c in after] and len(after) == 4
    with db.engine.connect() as c:
        assert (
            c.execute(
                text("SELECT count(*) FROM templates WHERE id = :i"), {"i": obama_id}
            ).scalar()
            == 0
        )
        assert (
            c.execute(text("SELECT count(*) FROM subjects WHERE external_id = 'obama'")).scalar()
            == 0
        )
    # The index itself, not identify (which drops ids the database no longer has): in memory,
    # then its encrypted file as the erasure left it, before anything reopens (repairs) it.
    with db.session() as s:
        g = service.gallery(s, "staff")
        s.expunge(g)
    hits = service.index(g).search(probe.vector[None, :], 10).ids.tolist()[0]
    assert obama_id not in hits and ids["biden"] in hits
    stored = stored_gallery(db, tmp_path / "index", "staff", cipher)
    assert stored.ids == {ids[p] for p in PEOPLE if p != "obama"}
    assert not stored.holds_bytes(faces["obama"][1].vector)
    assert stored.holds_bytes(faces["biden"][1].vector)
    assert obama_plain not in index_file.read_bytes()
    service.close()
    reopened = _service(db, tmp_path, cipher)  # from the saved, encrypted index file
    (again,) = reopened.identify("staff", [probe], k=10)
    assert "obama" not in [c.external_id for c in again]
    if target.backend == "sqlite":
        for f in (db_file, db_file.with_name("yingyan.db-wal")):
            assert not f.exists() or blob not in f.read_bytes(), f
    reopened.close()


def test_template_operations_of_the_service(db: Database, tmp_path: Path) -> None:
    cipher = _cipher("k1")
    gid = _gallery(db)
    _gallery(db, "other")
    service = _service(db, tmp_path, cipher)
    items = [
        EnrollItem(
            ext, Template(_unit(seed), MODEL), 0.9, hashlib.sha256(bytes([seed])).hexdigest()
        )
        for ext, seed in (("alice", 1), ("alice", 2), ("bob", 3), ("carol", 4))
    ]
    ids = [t for t, _ in service.enroll("staff", items)]
    assert all(_raw(db, t) != _unit(s).tobytes() for t, s in zip(ids, (1, 2, 3, 4), strict=True))

    vectors = service.subject_vectors("staff", "alice")
    assert [t for t, _ in vectors] == ids[:2]
    assert all(np.array_equal(v, _unit(s)) for (_, v), s in zip(vectors, (1, 2), strict=True))

    page, total = service.list_templates("staff", offset=1, limit=2)
    assert page == [(ids[1], "alice"), (ids[2], "bob")] and total == 4
    assert service.list_templates("staff", external_id="alice") == (
        [(ids[0], "alice"), (ids[1], "alice")],
        2,
    )
    assert service.list_templates("other") == ([], 0)

    assert service.erase_template("staff", ids[1]) == "alice"
    assert [t for t, _ in service.subject_vectors("staff", "alice")] == [ids[0]]
    stored = stored_gallery(db, tmp_path / "index", "staff", cipher)  # the file, not identify
    assert stored.ids == {ids[0], ids[2], ids[3]} and stored.vector(ids[1]) is None
    assert not stored.holds_bytes(_unit(2)) and stored.holds_bytes(_unit(1))
    hit = service.identify("staff", [Template(_unit(2), MODEL)], k=3)[0]
    assert all(c.template_id != ids[1] for c in hit)
    with pytest.raises(NotFoundError):
        service.erase_template("staff", ids[1])
    with pytest.raises(NotFoundError):
        service.erase_template("other", ids[0])  # not in that gallery

    service.rename_subject("staff", "bob", "robert")
    assert [t for t, _ in service.subject_vectors("staff", "robert")] == [ids[2]]
    assert np.array_equal(service.subject_vectors("staff", "robert")[0][1], _unit(3))
    with pytest.raises(ConflictError):
        service.rename_subject("staff", "robert", "carol")
    with pytest.raises(NotFoundError):
        service.subject_vectors("staff", "bob")
    with db.session() as s:
        names = {r.external_id for r in s.query(SubjectRow).filter_by(gallery_id=gid)}
    assert names == {"alice", "robert", "carol"}
    service.close()


# -- the CLI -----------------------------------------------------------------------------------


def test_encryption_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from yingyan.cli.main import app

    for var in ("YINGYAN_KEY_FILE", "YINGYAN_TEMPLATE_KEY", "YINGYAN_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()
    data = tmp_path / "data"
    created = runner.invoke(
        app,
        [
            "gallery",
            "create",
            "staff",
            "--purpose",
            "t",
            "--legal-basis",
            "c",
            "--data-dir",
            str(data),
        ],
    )
    assert created.exit_code == 0, created.output
    key_file = data / "template-keys.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600  # privacy by default
    init = runner.invoke(app, ["encryption", "init", "--data-dir", str(data)])
    assert init.exit_code == 2 and "already exists" in init.output

    from yingyan.cli.gallery import open_service

    with open_service(data, None) as service:
        assert service.cipher is not None and service.cipher.active_key_id == "k1"
        with service.db.session() as s:
            model = service.gallery(s, "staff").model
        name, version = model.split("@")
        items = [
            EnrollItem(
                f"p{i}",
                Template(_unit(i), ModelId(name, version)),
                0.9,
                hashlib.sha256(bytes([i])).hexdigest(),
            )
            for i in range(3)
        ]
        service.enroll("staff", items)
        tids = [t for t, _ in service.list_templates("staff")[0]]
        assert all(_raw(service.db, t) != _unit(i).tobytes() for i, t in enumerate(tids))

    status = runner.invoke(app, ["encryption", "status", "--data-dir", str(data)])
    assert status.exit_code == 0 and "k1" in status.output and "3" in status.output
    rotated = runner.invoke(app, ["encryption", "rotate", "--data-dir", str(data), "--no-progress"])
    assert rotated.exit_code == 0, rotated.output
    assert "3 of 3" in rotated.output and "1 index file" in rotated.output
    refused = runner.invoke(app, ["encryption", "retire", "k2", "--data-dir", str(data)])
    assert refused.exit_code == 2 and "active" in refused.output
    retired = runner.invoke(app, ["encryption", "retire", "k1", "--data-dir", str(data)])
    assert retired.exit_code == 0, retired.output
    assert sorted(read_keyring(key_file).keys) == ["k2"]
    with open_service(data, None) as service:
        assert service.identify("staff", [items[1].template], k=1)[0][0].external_id == "p1"
