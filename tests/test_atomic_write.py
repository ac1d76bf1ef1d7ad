"""The one atomic-write helper: a file is replaced whole or not at all, private from its
creation, fsynced (the file and its folder), no temporary file left behind; and every writer of
a file that is read back (keyring, ONNX cache, faiss file and sidecar, resealed index) goes
through it. fsync is observed by wrapping the real `os.fsync` (it still runs): the file's and
the folder's inodes must have been synced."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from yingyan.gallery.index import IndexSpec
from yingyan.gallery.index.faiss_index import FaissIndex, reseal_file, sidecar_path
from yingyan.privacy.cipher import Keyring, KeyringError, TemplateCipher
from yingyan.privacy.files import atomic_write
from yingyan.privacy.keyring import add_key, create_keyring, read_keyring
from yingyan.runtime.onnx_convert import cached_onnx

Synced = set[tuple[int, int]]  # (device, inode) of every descriptor fsynced


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> Synced:
    seen: Synced = set()
    real = os.fsync

    def recording(fd: int) -> None:
        info = os.fstat(fd)
        real(fd)
        seen.add((info.st_dev, info.st_ino))

    monkeypatch.setattr(os, "fsync", recording)
    return seen


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _inode(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino


def _durable(path: Path, synced: Synced) -> bool:
    """The file now at `path` was fsynced, and so was its folder (after the rename)."""
    return _inode(path) in synced and _inode(path.parent) in synced


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("kind", ["bytes", "text", "writer"])
def test_content_arrives_whole_private_and_durable(
    tmp_path: Path, synced: Synced, permissive_umask: None, kind: str
) -> None:
    path = tmp_path / "f.bin"
    payload = "äöü template keys\n" * 1000
    content: bytes | str | object = {
        "bytes": payload.encode(),
        "text": payload,
        "writer": lambda tmp: tmp.write_bytes(payload.encode()),
    }[kind]
    atomic_write(path, content)  # type: ignore[arg-type]
    assert path.read_bytes() == payload.encode()
    assert _mode(path) == 0o600  # with umask 0: the mode is set at creation
    assert _durable(path, synced)
    assert _names(tmp_path) == ["f.bin"]


def test_a_mode_can_be_asked_for(tmp_path: Path, permissive_umask: None) -> None:
    atomic_write(tmp_path / "model.onnx", b"x", mode=0o644)
    assert _mode(tmp_path / "model.onnx") == 0o644


def test_replacing_makes_a_new_inode_so_nothing_of_the_old_file_carries_over(
    tmp_path: Path, permissive_umask: None
) -> None:
    path, link = tmp_path / "keys.json", tmp_path / "elsewhere.json"
    path.write_bytes(b"old")
    path.chmod(0o644)
    os.link(path, link)
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new" and _mode(path) == 0o600
    assert link.read_bytes() == b"old"  # the other name still holds the old inode, untouched


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "index.faiss"
    path.write_bytes(b"the old index")

    def half_then_crash(tmp: Path) -> None:
        tmp.write_bytes(b"half of a new ind")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_crash)
    assert path.read_bytes() == b"the old index"
    assert _names(tmp_path) == ["index.faiss"]


def test_exclusive_creates_but_never_replaces(tmp_path: Path, synced: Synced) -> None:
    path = tmp_path / "keys.json"
    atomic_write(path, b"first", exclusive=True)
    assert path.read_bytes() == b"first" and _durable(path, synced)
    with pytest.raises(FileExistsError):
        atomic_write(path, b"second", exclusive=True)
    assert path.read_bytes() == b"first"
    assert _names(tmp_path) == ["keys.json"]


def test_concurrent_writers_and_a_reader_never_see_a_partial_file(tmp_path: Path) -> None:
    """Eight threads replace one file with their own 256 kB payloads while a reader reads it:
    every read is one payload whole (a shared temporary name, or a write in place, would mix
    them or show a short file)."""
    path = tmp_path / "cursor.json"
    payloads = [bytes([65 + n]) * 256_000 for n in range(8)]
    atomic_write(path, payloads[0])
    stop = threading.Event()
    seen: set[bytes] = set()
    errors: list[BaseException] = []

    def write(payload: bytes) -> None:
        try:
            for _ in range(15):
                atomic_write(path, payload)
        except BaseException as exc:  # reported below
            errors.append(exc)

    def read() -> None:
        while not stop.is_set():
            seen.add(path.read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    reader.join()
    assert not errors
    assert seen and seen <= set(payloads)
    assert path.read_bytes() in payloads
    assert _names(tmp_path) == ["cursor.json"]


# -- every writer of a file read back goes through it ---------------------------------------


def test_the_keyring_is_written_durably_and_created_exclusively(
    tmp_path: Path, synced: Synced
) -> None:
    path = tmp_path / "keys" / "template-keys.json"
    create_keyring(path)
    assert _durable(path, synced) and _mode(path) == 0o600
    with pytest.raises(KeyringError, match="already exists"):
        create_keyring(path)
    synced.clear()
    new_id = add_key(path)
    assert read_keyring(path).active == new_id
    assert _durable(path, synced)
    assert _names(path.parent) == ["template-keys.json"]


def _identity_model(_source: Path) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph)


def test_the_onnx_cache_is_written_durably(tmp_path: Path, synced: Synced) -> None:
    """The variant that did not fsync: a crash after its rename could leave an empty or
    partial model that every later start would trust, its name being its source's hash."""
    source = tmp_path / "weights.dat"
    source.write_bytes(b"weights")
    cache = tmp_path / "cache"
    path = cached_onnx(source, name="identity", version=1, build=_identity_model, cache_dir=cache)
    assert _durable(path, synced)
    assert onnx.load(str(path)).graph.node[0].op_type == "Identity"
    assert _names(cache) == [path.name]


def _cipher() -> TemplateCipher:
    return TemplateCipher(Keyring("k1", {"k1": os.urandom(32)}))


@pytest.mark.parametrize("encrypted", [False, True])
def test_index_files_are_written_durably(tmp_path: Path, synced: Synced, encrypted: bool) -> None:
    path = tmp_path / "g1.faiss"
    cipher = _cipher() if encrypted else None
    index = FaissIndex.open(IndexSpec(), path, 8, model="m", cipher=cipher)
    vectors = np.eye(8, dtype=np.float32)[:3]
    index.add(np.arange(1, 4), vectors)
    assert index.save()
    assert _durable(path, synced) and _durable(sidecar_path(path), synced)
    again = FaissIndex.open(IndexSpec(), path, 8, model="m", cipher=cipher)
    assert sorted(again.ids().tolist()) == [1, 2, 3]
    assert not [n for n in _names(tmp_path) if n.endswith(".tmp")]


def test_a_resealed_index_file_is_written_durably(tmp_path: Path, synced: Synced) -> None:
    path = tmp_path / "g1.faiss"
    index = FaissIndex.open(IndexSpec(), path, 8, model="m")
    index.add(np.arange(1, 3), np.eye(8, dtype=np.float32)[:2])
    index.save()
    synced.clear()
    cipher = _cipher()
    assert reseal_file(path, cipher) is True
    assert _durable(path, synced)
    assert sorted(FaissIndex.open(IndexSpec(), path, 8, model="m", cipher=cipher).ids()) == [1, 2]
