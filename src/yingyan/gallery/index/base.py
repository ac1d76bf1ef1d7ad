"""The vector index interface: a rebuildable cache of templates keyed by integer template ids.

The SQL database is the source of truth. An index holds (template id, unit vector) pairs and
answers top-k inner-product queries; whatever it holds can be checked against the database
through `ids()` and `fingerprint()`, and rebuilt from it when they disagree.

Conventions shared by every implementation:

- ids are int64 template ids from the database, never reused for another vector; -1 is
  reserved (it marks an empty result slot);
- vectors are L2-normalised float32 rows of one model's templates; scores are inner products
  (cosine for unit vectors), higher is more similar;
- `add` inserts or replaces: an id the index already holds gets the new vector, so the index
  holds each id at most once and replaying an add is harmless;
- `remove` erases: the vector's bytes are gone from memory and from the next `save()`, not
  merely hidden from results (erasure requests must be honoured).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from yingyan.errors import YingyanError

if TYPE_CHECKING:
    from yingyan.privacy import TemplateCipher

IndexKind = Literal["flat", "flat16", "ivf", "hnsw", "milvus"]
KINDS: tuple[str, ...] = ("flat", "flat16", "ivf", "hnsw", "milvus")
FAISS_KINDS: tuple[str, ...] = ("flat", "flat16", "ivf", "hnsw")
IvfStorage = Literal["flat", "fp16", "sq8"]
MilvusMetric = Literal["COSINE", "IP"]
IdArray = npt.NDArray[np.int64]
VectorArray = npt.NDArray[np.float32]
UNIT_TOLERANCE = 1e-3

_U64 = np.uint64
_MIX = (_U64(0x9E3779B97F4A7C15), _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB))


class VectorIndexError(YingyanError):
    """The index cannot serve: mismatched model/dimension/kind, torn or foreign file, bad input."""

    code = "index_error"


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Top-k per query, best first. Empty slots (fewer than k hits) have id -1 and score -inf."""

    scores: npt.NDArray[np.float32]  # (m, k)
    ids: IdArray  # (m, k)

    @classmethod
    def empty(cls, m: int, k: int) -> SearchResult:
        return cls(np.full((m, k), -np.inf, np.float32), np.full((m, k), -1, np.int64))

    @classmethod
    def from_raw(cls, scores: npt.ArrayLike, ids: npt.ArrayLike) -> SearchResult:
        """Normalise a backend's answer: int64 ids, float32 scores, -inf wherever id is -1."""
        ids_ = np.asarray(ids, dtype=np.int64)
        scores_ = np.asarray(scores, dtype=np.float32).copy()
        scores_[ids_ < 0] = -np.inf
        return cls(scores_, ids_)


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A state token for the set of ids an index holds, comparable with the database's.

    `checksum` is the sum modulo 2**64 of splitmix64(id) over the ids: independent of order (no
    sort of tens of millions of ids, any SQL row order will do) and updatable one id at a time
    (add h(id) on insert, subtract it on delete), yet any change to the set, even one that keeps
    the count and the largest id, changes it except with probability ~2**-64. Vectors are not
    covered: a template id never names another vector, so the id set is the index's state.
    """

    count: int
    max_id: int  # -1 when empty
    checksum: str  # 16 hex digits

    @classmethod
    def of(cls, ids: npt.ArrayLike) -> Fingerprint:
        """The fingerprint of a set of distinct ids in any order, e.g. the template ids of one
        gallery+model in the database."""
        arr = np.asarray(ids, dtype=np.int64).ravel()
        if arr.size == 0:
            return cls(0, -1, f"{0:016x}")
        z = arr.astype(np.uint64) + _MIX[0]
        z = (z ^ (z >> _U64(30))) * _MIX[1]
        z = (z ^ (z >> _U64(27))) * _MIX[2]
        z ^= z >> _U64(31)
        return cls(int(arr.size), int(arr.max()), f"{int(z.sum(dtype=np.uint64)):016x}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        return cls(int(data["count"]), int(data["max_id"]), str(data["checksum"]))

    def __str__(self) -> str:
        return f"{self.count}:{self.max_id}:{self.checksum}"


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """How to build and search an index. Structural parameters (nlist, storage, M) are fixed
    when the index is built and persisted with it; search parameters (nprobe, ef_search,
    threads) come from the spec of whoever opens it, so they can be tuned without a rebuild."""

    kind: IndexKind = "flat"
    threads: int = 1  # faiss OpenMP threads (process-wide, set when an index is opened)
    # IVF: cells (None: 4*sqrt(n) of the training set, at most n/39 so each cell gets points)
    nlist: int | None = None
    nprobe: int = 32
    ivf_storage: IvfStorage = "flat"  # float32 codes, or float16 / 8-bit scalar quantizer
    train_size: int = 500_000  # at most this many vectors (a random sample) train IVF
    # HNSW (faiss and milvus): graph degree, build and search beam widths
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: int = 128
    compact_fraction: float = 0.2  # faiss HNSW: rebuild the graph once this share is erased
    # milvus: index type on the server ("FLAT" on milvus-lite; "HNSW"/"IVF_FLAT" on a cluster)
    milvus_index: str = "FLAT"
    metric: MilvusMetric = "COSINE"
    consistency: str = "Strong"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise VectorIndexError(f"unknown index kind {self.kind!r}; choose one of {KINDS}")
        if self.threads < 1 or self.nprobe < 1 or self.ef_search < 1 or self.hnsw_m < 2:
            raise VectorIndexError("threads, nprobe and ef_search must be >= 1, hnsw_m >= 2")
        if self.nlist is not None and self.nlist < 1:
            raise VectorIndexError("nlist must be >= 1")
        if not 0.0 < self.compact_fraction <= 1.0:
            raise VectorIndexError("compact_fraction must be in (0, 1]")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class VectorIndex(Protocol):
    """Top-k inner-product search over unit vectors keyed by template id."""

    @property
    def dimension(self) -> int: ...

    @property
    def model(self) -> str:
        """The model id string (e.g. `dlib_resnet@1a2b3c`) of every vector held."""
        ...

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Insert or replace (ids[i], vectors[i]); vectors is (n, dimension) float32."""
        ...

    def remove(self, ids: npt.ArrayLike) -> int:
        """Erase these ids (absent ones are ignored); returns how many were held."""
        ...

    def search(self, queries: npt.ArrayLike, k: int) -> SearchResult:
        """Top-k for each of the (m, dimension) queries."""
        ...

    def __len__(self) -> int: ...

    def ids(self) -> IdArray:
        """Every id held, sorted ascending: for consistency checks against the database."""
        ...

    def fingerprint(self) -> Fingerprint: ...

    # The gallery change seq (`galleries.change_seq`) whose state the index holds; kept by the
    # gallery service, saved with a file (0: unknown, e.g. a new or foreign index).
    seq: int

    def save(self) -> object:
        """Make the current state durable (a file written atomically, or a server flush)."""
        ...

    def close(self) -> None: ...


def check_ids_vectors(
    ids: npt.ArrayLike, vectors: npt.ArrayLike, dim: int
) -> tuple[IdArray, VectorArray]:
    """Validate an add batch once, for every backend: shapes, dtypes, reserved and repeated ids."""
    ids_ = check_ids(ids)
    vecs = check_queries(vectors, dim)
    if len(ids_) != len(vecs):
        raise VectorIndexError(f"{len(ids_)} ids for {len(vecs)} vectors")
    if len(np.unique(ids_)) != len(ids_):
        raise VectorIndexError("an add batch repeats an id")
    return ids_, vecs


def check_ids(ids: npt.ArrayLike) -> IdArray:
    arr = np.asarray(ids)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise VectorIndexError("ids must be a 1-d array of integers")
    ids_ = arr.astype(np.int64)
    if (ids_ < 0).any():
        raise VectorIndexError("template ids must be >= 0 (-1 marks empty result slots)")
    return ids_


def check_queries(queries: npt.ArrayLike, dim: int) -> VectorArray:
    """(n, dim) float32 unit rows. Unit length is checked because the faiss kinds score by
    inner product: a raw descriptor would get a score that is not a cosine, silently."""
    arr = np.ascontiguousarray(queries, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise VectorIndexError(f"expected vectors of shape (n, {dim}), got {arr.shape}")
    norms = np.linalg.norm(arr, axis=1)
    if not np.all(np.abs(norms - 1.0) <= UNIT_TOLERANCE):  # also false for NaN
        raise VectorIndexError("vectors must be finite and L2-normalised (unit length)")
    return arr


def check_k(k: int) -> None:
    if k < 1:
        raise VectorIndexError("k must be >= 1")


def open_index(
    spec: IndexSpec | IndexKind,
    path: str | Path | None,
    dimension: int,
    *,
    model: str,
    collection: str | None = None,
    client: Any = None,
    cipher: TemplateCipher | None = None,
) -> VectorIndex:
    """Open the index at `path` (created empty when absent), checked against kind, dimension and
    model; a mismatch raises VectorIndexError rather than serving another model's vectors.

    faiss kinds: `path` is the index file (None: in memory only; `save()` then refuses).
    milvus: `path` is a Milvus URI (a local `*.db` file starts Milvus Lite) or None with an
    existing `client` (a `pymilvus.MilvusClient`, e.g. one built with a cluster URI and token);
    `collection` names the gallery+model collection (see `milvus_index.collection_name`).
    `cipher` encrypts faiss files at rest; Milvus stores vectors server-side (its own storage
    encryption applies).
    """
    spec = spec if isinstance(spec, IndexSpec) else IndexSpec(kind=spec)
    if dimension < 1:
        raise VectorIndexError("dimension must be >= 1")
    if spec.kind == "milvus":
        from yingyan.gallery.index.milvus_index import MilvusIndex

        if collection is None:
            raise VectorIndexError("a milvus index needs a collection name")
        return MilvusIndex.open(
            spec, dimension, model=model, collection=collection, uri=path, client=client
        )
    from yingyan.gallery.index.faiss_index import FaissIndex

    target = None if path is None else Path(path)
    return FaissIndex.open(spec, target, dimension, model=model, cipher=cipher)
