"""Read a gallery's index AS STORED, without the gallery service: opening an index through
`GalleryService` repairs it against the database, so a test that compares the two that way
agrees by construction. These helpers read the faiss file and its sidecar as files (decrypted
as the index itself does, but never loaded through `FaissIndex` or repaired), or a Milvus
collection through pymilvus directly."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from yingyan.gallery.index import Fingerprint
from yingyan.privacy import TemplateCipher
from yingyan.privacy.cipher import MAGIC, index_context
from yingyan.store import Database, get_gallery, template_ids


@dataclass(frozen=True)
class StoredIndex:
    """What an index holds on disk (or on the Milvus server): its ids, and how to get at a
    stored vector or the stored bytes."""

    ids: frozenset[int]
    manifest: dict[str, Any]  # the faiss sidecar as JSON ({} for Milvus)
    raw: bytes  # the faiss bytes (decrypted); b"" for Milvus
    _vectors: dict[int, npt.NDArray[np.float32]]

    def vector(self, template_id: int) -> npt.NDArray[np.float32] | None:
        """The vector stored under `template_id`, or None if the index holds none."""
        return self._vectors.get(template_id)

    def holds_bytes(self, vector: npt.ArrayLike) -> bool:
        """Whether these float32 bytes are anywhere in the stored index (erasure must remove
        them, not only the id)."""
        data = np.asarray(vector, np.float32).tobytes()
        return data in self.raw or any(v.tobytes() == data for v in self._vectors.values())

    def search(self, vector: npt.ArrayLike, k: int) -> list[int]:
        """The ids of the k best inner-product hits in the stored vectors (exact, brute force)."""
        if not self._vectors:
            return []
        ids = np.array(sorted(self._vectors), np.int64)
        scores = np.stack([self._vectors[int(i)] for i in ids]) @ np.asarray(vector, np.float32)
        return [int(i) for i in ids[np.argsort(-scores)[:k]]]


def db_ids(db: Database, gallery: str) -> frozenset[int]:
    """The gallery's template ids in the database (the truth)."""
    with db.session() as s:
        return frozenset(
            int(i) for i in template_ids(s, gallery_id=get_gallery(s, name=gallery).id)
        )


def gallery_id(db: Database, gallery: str) -> int:
    with db.session() as s:
        return int(get_gallery(s, name=gallery).id)


def faiss_file(index_dir: Path, gallery: int) -> Path:
    """The one faiss file of gallery id `gallery` in `index_dir` (gallery-<id>-<model>.faiss)."""
    found = sorted(index_dir.glob(f"gallery-{gallery}-*.faiss"))
    assert len(found) == 1, f"expected one index file of gallery {gallery}, found {found}"
    return found[0]


def stored_faiss(
    path: Path, cipher: TemplateCipher | None = None, *, check_sidecar: bool = True
) -> StoredIndex:
    """The faiss file at `path` and its sidecar, read as files: the file decrypted with
    `cipher` (bound to its name) if it is sealed, deserialised by faiss, its ids and vectors
    extracted; the sidecar's fingerprint checked against those ids (not after a kill, which
    may fall between the file's and the sidecar's renames)."""
    manifest = json.loads(path.with_name(path.name + ".json").read_text("utf-8"))
    if not path.exists():  # an IVF index saved before its first add has no faiss file
        assert manifest["trained"] is False and manifest["fingerprint"]["count"] == 0
        return StoredIndex(frozenset(), manifest, b"", {})
    data = path.read_bytes()
    if data.startswith(MAGIC):
        assert cipher is not None, f"{path} is encrypted: pass the cipher"
        data = cipher.decrypt(data, index_context(path.name))
    index = faiss.deserialize_index(np.frombuffer(data, np.uint8))
    vectors = _vectors(index)
    stored = Fingerprint.from_dict(manifest["fingerprint"])
    if check_sidecar:
        assert stored == Fingerprint.of(sorted(vectors)), f"{path}: sidecar disagrees with file"
    return StoredIndex(frozenset(vectors), manifest, data, vectors)


def stored_gallery(
    db: Database, index_dir: Path, gallery: str, cipher: TemplateCipher | None = None
) -> StoredIndex:
    """`stored_faiss` of the named gallery's file."""
    return stored_faiss(faiss_file(index_dir, gallery_id(db, gallery)), cipher)


def _vectors(index: Any) -> dict[int, npt.NDArray[np.float32]]:
    """id → stored vector of a deserialised faiss index: IndexIDMap over a flat, scalar
    quantizer or HNSW index (positions labelled -1 are erased HNSW nodes), or an IVF index."""
    if hasattr(index, "id_map"):
        labels = faiss.vector_to_array(index.id_map).astype(np.int64)
        inner = faiss.downcast_index(index.index)
        return {
            int(label): inner.reconstruct(pos) for pos, label in enumerate(labels) if label >= 0
        }
    index = faiss.downcast_index(index)
    index.make_direct_map()  # this copy only: reconstruct by id
    invlists = index.invlists
    ids = [
        faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
        for i in range(invlists.nlist)
        if invlists.list_size(i)
    ]
    every = np.concatenate(ids).astype(np.int64) if ids else np.empty(0, np.int64)
    return {int(i): index.reconstruct(int(i)) for i in every}


def stored_milvus(uri: str, collection_prefix: str) -> StoredIndex:
    """The one collection whose name starts with `collection_prefix` on the Milvus at `uri`,
    queried through pymilvus (another client than the service's): every id and vector."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri)
    try:
        (name,) = [c for c in client.list_collections() if c.startswith(collection_prefix)]
        rows = client.query(name, filter="id >= 0", output_fields=["id", "vector"])
    finally:
        client.close()
    vectors = {int(r["id"]): np.asarray(r["vector"], np.float32) for r in rows}
    return StoredIndex(frozenset(vectors), {}, b"", vectors)
