"""faiss indexes behind `VectorIndex`: exact (float32, float16), IVF and HNSW, inner product.

| kind | faiss index | bytes per 128-d template | when |
|---|---|---|---|
| flat | IndexIDMap(IndexFlatIP) | 512 + 8 | exact; up to a few million |
| flat16 | IndexIDMap(IndexScalarQuantizer fp16) | 256 + 8 | exact to ~1e-3 in score |
| ivf | IndexIVFFlat / IVFScalarQuantizer (fp16, sq8) | 512 (256, 128) + 8 | tens of millions |
| hnsw | IndexIDMap(IndexHNSWFlat) | 512 + 8 + ~8*M | low latency, slow to build |

IVF ids live in its inverted lists; the others map positions to ids through IndexIDMap (not
IndexIDMap2, whose reverse hash map costs ~50 bytes per template and is only needed for
reconstruction by id). A sorted copy of the ids held (8 bytes per template) answers membership
and `ids()` without scanning faiss structures.

Removal erases: flat and IVF remove the codes; HNSW cannot remove graph nodes, so the vector is
overwritten with zeros, its id set to -1 (excluded from results by a search-time selector) and
the graph is rebuilt from the remaining vectors once `compact_fraction` of it is erased.

Persistence: the faiss file and a JSON sidecar (`<file>.json`: kind, dimension, model, params,
fingerprint, and `seq`, the gallery change the contents reflect) are each written by
`atomic_write` (a temporary 0600 sibling, fsynced, renamed into place, the folder fsynced).
A crash between the two renames leaves a sidecar whose fingerprint disagrees with the file,
which loading detects (VectorIndexError): the caller rebuilds from the database. Several
processes share a file: saving holds an exclusive advisory lock (`<file>.lock`) and never
replaces a file saved at a later `seq` (a process that is behind must not bring back what
another erased); loading holds a shared lock, so it never sees the faiss file of one save with
the sidecar of another.

Encryption at rest: given a `TemplateCipher`, the faiss file is serialised in memory, sealed with
AES-GCM (bound to the file's name, which names gallery and model) and written the same atomic
way, so the vectors never reach the disk in clear. A plaintext file, or one under a retired or
wrong key, raises VectorIndexError (rebuild; `yingyan encryption migrate` seals plaintext ones),
and an encrypted file with no key configured raises KeyMissingError.

Threads: faiss uses OpenMP, whose thread count is process-wide; opening an index sets it from
`IndexSpec.threads` (1 suits a server that runs one search per request thread).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import numpy.typing as npt

from yingyan.gallery.index.base import (
    Fingerprint,
    IdArray,
    IndexSpec,
    SearchResult,
    VectorArray,
    VectorIndexError,
    check_ids,
    check_ids_vectors,
    check_k,
    check_queries,
)
from yingyan.privacy.cipher import (
    MAGIC,
    MIGRATE_COMMAND,
    DecryptionError,
    KeyMissingError,
    UnknownKeyError,
    index_context,
)
from yingyan.privacy.files import atomic_write, private_dir, private_file

if TYPE_CHECKING:
    from yingyan.privacy.cipher import TemplateCipher

FORMAT = "yingyan-vector-index/1"
MIN_POINTS_PER_CELL = 39  # below this faiss's k-means warns that centroids are poorly trained


@dataclass(frozen=True, slots=True)
class Manifest:
    """The sidecar of a saved index: enough to refuse a wrong file, or a stale one, unloaded."""

    kind: str  # "flat", "flat16", "hnsw", "ivf/flat", "ivf/fp16", "ivf/sq8"
    dimension: int
    model: str
    fingerprint: Fingerprint
    trained: bool  # false only for an IVF index saved before its first add (no faiss file)
    params: dict[str, Any]
    seq: int = 0  # the gallery change seq the saved contents reflect (0: none recorded)

    def to_json(self) -> str:
        body = {
            "format": FORMAT,
            "kind": self.kind,
            "dimension": self.dimension,
            "model": self.model,
            "fingerprint": self.fingerprint.as_dict(),
            "trained": self.trained,
            "params": self.params,
            "seq": self.seq,
            "faiss": faiss.__version__,
        }
        return json.dumps(body, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} sidecar")
        return cls(
            kind=str(data["kind"]),
            dimension=int(data["dimension"]),
            model=str(data["model"]),
            fingerprint=Fingerprint.from_dict(data["fingerprint"]),
            trained=bool(data["trained"]),
            params=dict(data["params"]),
            seq=int(data.get("seq", 0)),
        )


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextmanager
def file_lock(path: Path, *, exclusive: bool) -> Iterator[None]:
    """An advisory lock over an index file and its sidecar, between processes (flock) and
    between threads (each holder opens the lock file anew, and flock locks belong to the
    open file)."""
    private_dir(path.parent, tighten=False)
    fd = os.open(private_file(lock_path(path)), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def read_manifest(path: str | Path) -> Manifest:
    """The sidecar of the index saved at `path`, without loading the index: compare its
    fingerprint with the database's to decide whether to load or to rebuild."""
    side = sidecar_path(Path(path))
    try:
        return Manifest.from_json(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VectorIndexError(f"no index sidecar at {side}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise VectorIndexError(f"unreadable index sidecar {side}: {exc}") from exc


def variant(spec: IndexSpec) -> str:
    return f"ivf/{spec.ivf_storage}" if spec.kind == "ivf" else spec.kind


class FaissIndex:
    """One faiss index of one model's templates, optionally backed by a file.

    Searches may run concurrently (faiss only reads); add, remove, train and save change the
    index and need the caller's exclusive lock, as a gallery's writer would hold anyway."""

    def __init__(
        self,
        spec: IndexSpec,
        dimension: int,
        *,
        model: str,
        path: Path | None,
        index: Any,
        cipher: TemplateCipher | None = None,
    ) -> None:
        if spec.kind == "milvus":
            raise VectorIndexError("FaissIndex does not serve the milvus kind")
        self._spec = spec
        self._cipher = cipher
        self._dim = dimension
        self._model = model
        self._path = path
        self._index = index if index is not None else _empty_index(spec, dimension)
        self._ids = _held_ids(self._index)
        self.seq = 0  # the gallery change seq this index reflects, saved with it
        faiss.omp_set_num_threads(spec.threads)
        self.tune(nprobe=spec.nprobe, ef_search=spec.ef_search)

    @classmethod
    def open(
        cls,
        spec: IndexSpec,
        path: Path | None,
        dimension: int,
        *,
        model: str,
        cipher: TemplateCipher | None = None,
    ) -> FaissIndex:
        """Load `path` if an index was saved there, else start empty. With `cipher` the file
        is saved encrypted (and an encrypted file can be loaded)."""
        if path is None:
            return cls(spec, dimension, model=model, path=path, index=None, cipher=cipher)
        with file_lock(path, exclusive=False):
            if not sidecar_path(path).exists():
                if path.exists():
                    raise VectorIndexError(f"{path} has no sidecar: not written by this code")
                return cls(spec, dimension, model=model, path=path, index=None, cipher=cipher)
            return cls._load(spec, path, dimension, model, cipher)

    @classmethod
    def _load(
        cls,
        spec: IndexSpec,
        path: Path,
        dimension: int,
        model: str,
        cipher: TemplateCipher | None,
    ) -> FaissIndex:
        manifest = read_manifest(path)
        wanted = {"kind": variant(spec), "dimension": dimension, "model": model}
        for key, value in wanted.items():
            if getattr(manifest, key) != value:
                raise VectorIndexError(
                    f"index {path} has {key} {getattr(manifest, key)!r}, expected {value!r}"
                )
        index = _read(path, cipher) if manifest.trained else None
        if index is not None and index.d != dimension:
            raise VectorIndexError(f"index file {path} has dimension {index.d}, not {dimension}")
        loaded = cls(spec, dimension, model=model, path=path, index=index, cipher=cipher)
        loaded.seq = manifest.seq
        if loaded.fingerprint() != manifest.fingerprint:
            raise VectorIndexError(
                f"index file {path} disagrees with its sidecar (interrupted save?): rebuild it"
            )
        return loaded

    # --- VectorIndex --------------------------------------------------------------------------

    @property
    def dimension(self) -> int:
        return self._dim

    @property
    def model(self) -> str:
        return self._model

    @property
    def kind(self) -> str:
        return variant(self._spec)

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> IdArray:
        return self._ids.copy()

    def fingerprint(self) -> Fingerprint:
        return Fingerprint.of(self._ids)

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        ids_, vecs = check_ids_vectors(ids, vectors, self._dim)
        if not len(ids_):
            return
        if self._index is None:
            self.train(vecs)
        self.remove(self._held(ids_))  # insert-or-replace: each id is held once
        self._index.add_with_ids(vecs, ids_)
        new = np.sort(ids_)
        self._ids = np.insert(self._ids, np.searchsorted(self._ids, new), new)

    def remove(self, ids: npt.ArrayLike) -> int:
        held = self._held(check_ids(ids))
        if not held.size:
            return 0
        if self._spec.kind == "hnsw":
            _erase_hnsw(self._index, held)
        else:
            removed = self._index.remove_ids(faiss.IDSelectorBatch(held))
            if removed != held.size:
                raise VectorIndexError(f"faiss removed {removed} of {held.size} ids")
        self._ids = np.delete(self._ids, np.searchsorted(self._ids, held))
        if self.tombstones > self._spec.compact_fraction * self._index.ntotal:
            self._index = _compact_hnsw(self._index, self._spec, self._dim)
            self.tune(ef_search=self._spec.ef_search)
        return int(held.size)

    def search(self, queries: npt.ArrayLike, k: int) -> SearchResult:
        check_k(k)
        q = check_queries(queries, self._dim)
        if not len(self._ids) or not len(q):
            return SearchResult.empty(len(q), k)
        # OpenMP's thread count is per calling thread: a server searches from pool threads,
        # which would otherwise use every core per search (2.4x slower at 100k, measured).
        faiss.omp_set_num_threads(self._spec.threads)
        scores, ids = self._index.search(q, k, params=self._search_params())
        return SearchResult.from_raw(scores, ids)

    def save(self) -> bool:
        """Write the file and its sidecar, unless the file on disk was saved at a later `seq`
        by another process (then it is newer than this copy: False, nothing written)."""
        if self._path is None:
            raise VectorIndexError("this index has no file: open it with a path to save it")
        path = self._path
        with file_lock(path, exclusive=True):
            if self.seq and _stored_seq(path) > self.seq:
                return False
            if self._index is not None:
                atomic_write(path, self._content(path, self._index))
            atomic_write(sidecar_path(path), self._manifest().to_json())
            if self._index is None:  # a stale file from before would contradict the sidecar
                path.unlink(missing_ok=True)
        return True

    def _content(self, path: Path, index: Any) -> bytes | Callable[[Path], object]:
        """What the faiss file holds: faiss writes it itself, or sealed bytes when encrypting."""
        cipher = self._cipher
        if cipher is None:
            return lambda tmp: faiss.write_index(index, str(tmp))
        return cipher.encrypt(faiss.serialize_index(index).tobytes(), index_context(path.name))

    def close(self) -> None:
        """Free the memory now (not saved: call `save()` first); the object is empty after."""
        self._index = None if self._spec.kind == "ivf" else _empty_index(self._spec, self._dim)
        self._ids = np.empty(0, np.int64)

    # --- faiss specifics ----------------------------------------------------------------------

    @property
    def tombstones(self) -> int:
        """HNSW nodes erased but still in the graph (0 for the other kinds)."""
        return 0 if self._index is None else int(self._index.ntotal) - len(self._ids)

    @property
    def nlist(self) -> int | None:
        return None if self._index is None or self._spec.kind != "ivf" else int(self._index.nlist)

    def train(self, vectors: npt.ArrayLike) -> None:
        """IVF: build the coarse quantizer from these vectors (or a fixed random sample of
        `train_size` of them). The first `add` does this itself, so call it explicitly only
        when bulk-loading in chunks: pass a sample of the whole gallery, not the first chunk."""
        if self._spec.kind != "ivf":
            return
        if self._index is not None and len(self._ids):
            raise VectorIndexError("IVF is already trained and holds vectors: rebuild instead")
        vecs = check_queries(vectors, self._dim)
        if not len(vecs):
            raise VectorIndexError("IVF training needs vectors")
        self._index = _train_ivf(self._spec, self._dim, _sample(vecs, self._spec.train_size))
        self.tune(nprobe=self._spec.nprobe)

    def tune(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change search-time parameters (IVF cells probed, HNSW beam width) in place."""
        if nprobe is not None and self._spec.kind == "ivf" and self._index is not None:
            self._index.nprobe = max(1, min(nprobe, int(self._index.nlist)))
        if ef_search is not None and self._spec.kind == "hnsw":
            _hnsw(self._index).hnsw.efSearch = ef_search

    def _held(self, ids: IdArray) -> IdArray:
        """The distinct ids among `ids` that the index holds."""
        wanted = np.unique(ids)
        pos = np.searchsorted(self._ids, wanted)
        ok = pos < len(self._ids)
        ok[ok] = self._ids[pos[ok]] == wanted[ok]
        return wanted[ok]

    def _search_params(self) -> Any:
        if self._spec.kind != "hnsw" or not self.tombstones:
            return None
        erased = faiss.IDSelectorBatch(np.array([-1], np.int64))  # erased nodes are labelled -1
        return faiss.SearchParametersHNSW(  # type: ignore[attr-defined]  # missing from stubs
            sel=faiss.IDSelectorNot(erased), efSearch=_hnsw(self._index).hnsw.efSearch
        )

    def _manifest(self) -> Manifest:
        params = self._spec.as_dict() | {"nlist": self.nlist}
        return Manifest(
            kind=variant(self._spec),
            dimension=self._dim,
            model=self._model,
            fingerprint=self.fingerprint(),
            trained=self._index is not None,
            seq=self.seq,
            params=params,
        )


def _empty_index(spec: IndexSpec, dim: int) -> Any:
    """A new empty index; None for IVF, which exists only once trained."""
    ip = faiss.METRIC_INNER_PRODUCT
    if spec.kind == "flat":
        return faiss.IndexIDMap(faiss.IndexFlatIP(dim))
    if spec.kind == "flat16":
        return faiss.IndexIDMap(faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, ip))
    if spec.kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, spec.hnsw_m, ip)
        hnsw.hnsw.efConstruction = spec.ef_construction
        return faiss.IndexIDMap(hnsw)
    return None


def _train_ivf(spec: IndexSpec, dim: int, sample: VectorArray) -> Any:
    n = len(sample)
    nlist = spec.nlist or round(4 * math.sqrt(n))
    nlist = max(1, min(nlist, n // MIN_POINTS_PER_CELL))
    quantizer = faiss.IndexFlatIP(dim)
    ip = faiss.METRIC_INNER_PRODUCT
    index: Any
    if spec.ivf_storage == "flat":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, ip)
    else:
        qtype = {"fp16": faiss.ScalarQuantizer.QT_fp16, "sq8": faiss.ScalarQuantizer.QT_8bit}
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, qtype[spec.ivf_storage], ip)
    index.train(sample)
    return index


def _sample(vecs: VectorArray, size: int) -> VectorArray:
    if len(vecs) <= size:
        return vecs
    rows = np.sort(np.random.default_rng(0).choice(len(vecs), size, replace=False))
    return vecs[rows]


def _held_ids(index: Any) -> IdArray:
    """Sorted ids of a faiss index: IndexIDMap's position map, or IVF's inverted lists."""
    if index is None or index.ntotal == 0:
        return np.empty(0, np.int64)
    if hasattr(index, "id_map"):
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        return np.sort(ids[ids >= 0])
    invlists = index.invlists
    parts = [
        faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
        for i in range(invlists.nlist)
        if invlists.list_size(i)
    ]
    return np.sort(np.concatenate(parts).astype(np.int64))


def _hnsw_views(index: Any) -> tuple[IdArray, VectorArray]:
    """Writable views of an IndexIDMap(IndexHNSWFlat)'s labels and stored vectors."""
    n = int(index.ntotal)
    storage: Any = faiss.downcast_index(_hnsw(index).storage)
    labels = faiss.rev_swig_ptr(index.id_map.data(), n)
    vectors = faiss.rev_swig_ptr(storage.get_xb(), n * index.d).reshape(n, index.d)
    return labels, vectors


def _hnsw(index: Any) -> Any:
    """The IndexHNSWFlat inside an IndexIDMap."""
    return faiss.downcast_index(index.index)


def _erase_hnsw(index: Any, ids: IdArray) -> None:
    """Overwrite the vectors of `ids` with zeros and label their nodes -1 (tombstones)."""
    labels, vectors = _hnsw_views(index)
    rows = np.flatnonzero(np.isin(labels, ids))
    vectors[rows] = 0.0
    labels[rows] = -1


def _compact_hnsw(index: Any, spec: IndexSpec, dim: int) -> Any:
    """A new graph over the live vectors only (the old one still routes through tombstones)."""
    labels, vectors = _hnsw_views(index)
    live = labels >= 0
    fresh = _empty_index(spec, dim)
    if live.any():
        fresh.add_with_ids(np.ascontiguousarray(vectors[live]), labels[live].copy())
    return fresh


def reseal_file(path: Path, cipher: TemplateCipher, *, only_plaintext: bool = False) -> bool:
    """Re-encrypt a saved faiss file under the cipher's active key (encrypting a plaintext one:
    the migration, the one place a plaintext file is read once a key is configured) without
    loading it into faiss; the sidecar stays valid (it describes ids, not bytes). With
    `only_plaintext`, a sealed file is left as it is. False if nothing was rewritten;
    VectorIndexError if it cannot be decrypted (rebuild it)."""
    data = path.read_bytes()
    if cipher.is_current(data) or (only_plaintext and data.startswith(MAGIC)):
        return False
    blob = cipher.encrypt(_plain(path, data, cipher, migrating=True), index_context(path.name))
    atomic_write(path, blob)
    return True


def _read(path: Path, cipher: TemplateCipher | None) -> Any:
    """A faiss file: sealed (decrypted with `cipher`, bound to the file's name), or plaintext
    when no cipher is configured."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VectorIndexError(f"cannot read index file {path}: {exc.strerror}") from exc
    plain = _plain(path, data, cipher)
    try:
        return faiss.deserialize_index(np.frombuffer(plain, np.uint8))
    except RuntimeError as exc:
        raise VectorIndexError(f"cannot read index file {path}: {exc}") from exc


def _plain(
    path: Path, data: bytes, cipher: TemplateCipher | None, *, migrating: bool = False
) -> bytes:
    """The faiss bytes of a file's contents: decrypted (bound to the file's name), or as they
    are if plaintext and no cipher is configured, or `migrating`. VectorIndexError if that
    fails or a plaintext file meets a cipher (it is unauthenticated, perhaps planted): the
    service then rebuilds the file from the database."""
    if not data.startswith(MAGIC):
        if cipher is None or migrating:
            return data
        raise VectorIndexError(
            f"index file {path} is not encrypted and is refused while encryption is "
            f"configured: seal it with `{MIGRATE_COMMAND}` (or delete it: it is rebuilt)"
        )
    if cipher is None:
        raise KeyMissingError(f"index file {path} is encrypted but no key is configured")
    try:
        return cipher.decrypt(data, index_context(path.name))
    except (UnknownKeyError, DecryptionError) as exc:
        raise VectorIndexError(f"cannot decrypt index file {path}: {exc.message}") from exc


def _stored_seq(path: Path) -> int:
    """The seq of the index saved at `path` (0 if none, or if its sidecar is unreadable)."""
    try:
        return read_manifest(path).seq
    except VectorIndexError:
        return 0
