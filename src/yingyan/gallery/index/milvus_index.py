"""`VectorIndex` over Milvus through `pymilvus.MilvusClient`: one collection per gallery+model.

The collection has two fields, `id` (INT64 primary key = template id, not auto-generated) and
`vector` (FLOAT_VECTOR of the model's dimension), and records the model id string and the
format in its properties (`yingyan.model`, `yingyan.format`); opening a collection whose
dimension, model or metric differs raises VectorIndexError. `add` upserts (insert or replace),
`save` flushes. Scores are Milvus's COSINE or IP similarity, which for unit vectors both equal
the faiss kinds' inner product.

Erasure: Milvus deletes are tombstones; the vector stays in its segment files until a compaction
rewrites them. So `remove` deletes, flushes (the tombstone is durable: a crash cannot bring the
vector back) and then purges: on a cluster it runs a manual compaction and waits for it (up to
`compaction_wait` seconds; past that the server finishes it alone); Milvus Lite's compaction
request is a no-op, so there the collection is rewritten without the erased rows (drop, create,
insert the rest), which deletes the old segment files. `drop()` and the module-level
`drop_collection(uri, name)` (for a gallery whose index this process never opened) drop the
whole collection, files included.

Milvus Lite (tests, a laptop): `open_index(IndexSpec(kind="milvus"), "gallery.db", ...)` starts
an embedded Milvus Lite on that file (one process per file; it takes a file lock). It supports
FLAT, IVF_FLAT, IVF_SQ8, HNSW and HNSW_SQ; FLAT (exact) is the default here.

A Milvus cluster (standalone or distributed): give its URI (the CLI reads YINGYAN_MILVUS_URI,
e.g. `http://user:password@milvus.example:19530`, credentials passed as the token), or build
the client yourself and pass it in:

    client = MilvusClient(uri="https://milvus.example:19530", token="user:password")
    index = open_index(
        IndexSpec(kind="milvus", milvus_index="HNSW", hnsw_m=32, ef_construction=200,
                  ef_search=128, consistency="Bounded"),
        None, 128, model=str(model_id), collection=collection_name("border", str(model_id)),
        client=client,
    )

What changes on a cluster: choose an approximate index for tens of millions of templates
(`HNSW`, or `IVF_FLAT`/`IVF_SQ8` with `nlist`, searched with `nprobe`); choose the consistency
level: "Strong" (the default here) makes a search see every write acknowledged before it, at
some latency, while "Bounded" lets searches lag writes by a few seconds for throughput (an
enrollment may then be unfindable for that long). `len()`, `ids()` and `fingerprint()` page
through every primary key: minutes for tens of millions, so run them as background checks.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from yingyan.extras import require
from yingyan.gallery.index.base import (
    Fingerprint,
    IdArray,
    IndexSpec,
    SearchResult,
    VectorIndexError,
    check_ids,
    check_ids_vectors,
    check_k,
    check_queries,
)

require("pymilvus", "milvus", "the Milvus index")  # the [milvus] extra, named, if it is missing
from pymilvus import DataType, MilvusClient  # noqa: E402

FORMAT = "yingyan-vector-index/1"
ID_FIELD = "id"
VECTOR_FIELD = "vector"
MODEL_PROPERTY = "yingyan.model"
FORMAT_PROPERTY = "yingyan.format"
MAX_TOPK = 16_384  # Milvus's limit on `limit`
BATCH = 5_000  # rows per insert/get/delete request (a few MB, far below gRPC's 64 MB)
COMPACTION_WAIT = 60.0  # seconds `remove` waits for a cluster's compaction to complete
_COMPACTION_POLL = 0.2
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


def collection_name(gallery: str, model: str) -> str:
    """A valid, stable collection name for one gallery and one model id string."""
    slug = re.sub(r"[^A-Za-z0-9_]", "_", gallery)[:200]
    digest = hashlib.sha256(model.encode()).hexdigest()[:12]
    return f"g_{slug}_{digest}"


class MilvusIndex:
    """One Milvus collection of one model's templates."""

    def __init__(
        self,
        client: MilvusClient,
        collection: str,
        dimension: int,
        *,
        model: str,
        spec: IndexSpec,
        owns_client: bool = False,
        compaction_wait: float = COMPACTION_WAIT,
    ) -> None:
        self._client = client
        self._name = collection
        self._dim = dimension
        self._model = model
        self._spec = spec
        self._owns_client = owns_client
        self._compaction_wait = compaction_wait
        self._lite: bool | None = None  # asked on the first purge
        self.seq = 0  # the gallery change seq replayed into it (kept by the gallery service)

    @classmethod
    def open(
        cls,
        spec: IndexSpec,
        dimension: int,
        *,
        model: str,
        collection: str,
        uri: str | Path | None = None,
        client: MilvusClient | None = None,
    ) -> MilvusIndex:
        """Open (creating it if absent) `collection` on `client`, or on a client for `uri`."""
        if not _NAME.match(collection):
            raise VectorIndexError(f"invalid Milvus collection name {collection!r}")
        owns = client is None
        if client is None:
            if uri is None:
                raise VectorIndexError("a milvus index needs a URI or a client")
            client = _connect(str(uri))
        index = cls(client, collection, dimension, model=model, spec=spec, owns_client=owns)
        try:
            index._prepare()
        except BaseException:
            index.close()
            raise
        return index

    # --- VectorIndex --------------------------------------------------------------------------

    @property
    def dimension(self) -> int:
        return self._dim

    @property
    def model(self) -> str:
        return self._model

    @property
    def collection(self) -> str:
        return self._name

    def __len__(self) -> int:
        rows = self._client.query(self._name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def ids(self) -> IdArray:
        it = self._client.query_iterator(self._name, batch_size=10_000, output_fields=[ID_FIELD])
        parts: list[IdArray] = []
        try:
            while batch := it.next():
                parts.append(np.fromiter((r[ID_FIELD] for r in batch), np.int64, len(batch)))
        finally:
            it.close()
        return np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64)

    def fingerprint(self) -> Fingerprint:
        return Fingerprint.of(self.ids())

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        ids_, vecs = check_ids_vectors(ids, vectors, self._dim)
        for start in range(0, len(ids_), BATCH):
            rows = [
                {ID_FIELD: int(i), VECTOR_FIELD: v}
                for i, v in zip(
                    ids_[start : start + BATCH], vecs[start : start + BATCH], strict=True
                )
            ]
            self._client.upsert(self._name, rows)

    def remove(self, ids: npt.ArrayLike) -> int:
        """Delete the held ones of `ids`, then flush and purge them from the segment files (see
        the module's docstring): when it returns, the vectors cannot be fetched, even after a
        crash, and their bytes are gone from Milvus Lite's files (a cluster's once its
        compaction ends)."""
        wanted = np.unique(check_ids(ids)).tolist()
        removed = 0
        for start in range(0, len(wanted), BATCH):
            chunk = wanted[start : start + BATCH]
            # delete() reports the ids it was given, held or not: count the held ones first
            held = [
                r[ID_FIELD]
                for r in self._client.get(self._name, ids=chunk, output_fields=[ID_FIELD])
            ]
            if held:
                self._client.delete(self._name, ids=held)
            removed += len(held)
        if removed:
            self._client.flush(self._name)
            self._purge()
        return removed

    def search(self, queries: npt.ArrayLike, k: int) -> SearchResult:
        check_k(k)
        if k > MAX_TOPK:
            raise VectorIndexError(f"Milvus returns at most {MAX_TOPK} results per query")
        q = check_queries(queries, self._dim)
        result = SearchResult.empty(len(q), k)
        if not len(q):
            return result
        hits = self._client.search(
            self._name,
            data=q,
            limit=k,
            output_fields=[ID_FIELD],  # milvus-lite returns the vectors too when this is empty
            search_params={"metric_type": self._spec.metric, "params": self._search_params(k)},
        )
        for row, row_hits in enumerate(hits):
            for col, hit in enumerate(row_hits[:k]):
                result.ids[row, col] = int(hit["id"])
                result.scores[row, col] = float(hit["distance"])
        return result

    def save(self) -> None:
        self._client.flush(self._name)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def drop(self) -> None:
        """Erase the whole collection (its vectors and files) and close: the index is unusable
        afterwards. Dropping an absent collection is not an error."""
        try:
            self._client.drop_collection(self._name)
        finally:
            self.close()

    # --- erasure ------------------------------------------------------------------------------

    def _purge(self) -> None:
        """Make deleted rows leave the segment files: compact a cluster, rewrite Milvus Lite."""
        if self._lite is None:
            # Milvus Lite answers a compaction request without compacting: rewrite there.
            self._lite = is_milvus_lite(self._client)
        if self._lite:
            self._rewrite()
            return
        job = self._client.compact(self._name)
        deadline = time.monotonic() + self._compaction_wait
        while self._client.get_compaction_state(job) != "Completed":
            if time.monotonic() > deadline:
                return  # the server carries on; the tombstones already hide the rows
            time.sleep(_COMPACTION_POLL)

    def _rewrite(self) -> None:
        """Drop and recreate the collection with its remaining rows. A crash half-way leaves a
        collection missing rows, never one holding erased ones; the service's reconciliation
        with the database adds the missing rows back when it next opens the index."""
        ids: list[IdArray] = []
        vectors: list[npt.NDArray[np.float32]] = []
        it = self._client.query_iterator(
            self._name, batch_size=BATCH, output_fields=[ID_FIELD, VECTOR_FIELD]
        )
        try:
            while batch := it.next():
                ids.append(np.fromiter((r[ID_FIELD] for r in batch), np.int64, len(batch)))
                vectors.append(np.asarray([r[VECTOR_FIELD] for r in batch], np.float32))
        finally:
            it.close()
        self._client.drop_collection(self._name)
        self._create()
        if ids:
            self.add(np.concatenate(ids), np.concatenate(vectors))
        self._client.flush(self._name)

    # --- collection set-up --------------------------------------------------------------------

    def _prepare(self) -> None:
        if self._client.has_collection(self._name):
            self._check_existing()
            self._client.load_collection(self._name)
        else:
            self._create()

    def _create(self) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(ID_FIELD, DataType.INT64, is_primary=True)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=self._dim)
        index_params = self._client.prepare_index_params()
        index_params.add_index(
            field_name=VECTOR_FIELD,
            index_type=self._spec.milvus_index,
            metric_type=self._spec.metric,
            params=self._build_params(),
        )
        self._client.create_collection(
            self._name,
            schema=schema,
            index_params=index_params,
            consistency_level=self._spec.consistency,
            properties={MODEL_PROPERTY: self._model, FORMAT_PROPERTY: FORMAT},
        )

    def _check_existing(self) -> None:
        info = self._client.describe_collection(self._name)
        props = info.get("properties") or {}
        if props.get(FORMAT_PROPERTY) != FORMAT:
            raise VectorIndexError(f"collection {self._name} was not created by this code")
        if props.get(MODEL_PROPERTY) != self._model:
            raise VectorIndexError(
                f"collection {self._name} holds model {props.get(MODEL_PROPERTY)!r}, "
                f"expected {self._model!r}"
            )
        dims = [int(f["params"]["dim"]) for f in info["fields"] if f["name"] == VECTOR_FIELD]
        if dims != [self._dim]:
            raise VectorIndexError(
                f"collection {self._name} has dimension {dims}, expected {self._dim}"
            )
        metric = self._client.describe_index(self._name, VECTOR_FIELD).get("metric_type")
        if metric != self._spec.metric:
            raise VectorIndexError(
                f"collection {self._name} uses metric {metric}, expected {self._spec.metric}"
            )

    def _build_params(self) -> dict[str, Any]:
        kind = self._spec.milvus_index.upper()
        if kind.startswith("HNSW"):
            return {"M": self._spec.hnsw_m, "efConstruction": self._spec.ef_construction}
        if kind.startswith("IVF"):
            return {"nlist": self._spec.nlist or 1024}
        return {}

    def _search_params(self, k: int) -> dict[str, Any]:
        kind = self._spec.milvus_index.upper()
        if kind.startswith("HNSW"):
            return {"ef": max(self._spec.ef_search, k)}
        if kind.startswith("IVF"):
            return {"nprobe": self._spec.nprobe}
        return {}


def is_milvus_lite(client: MilvusClient) -> bool:
    """Whether `client` talks to an embedded Milvus Lite (its version says so)."""
    return "lite" in str(client.get_server_version()).lower()


def drop_collection(uri: str, collection: str) -> bool:
    """Drop `collection` on the Milvus at `uri` (a server URI or a Milvus Lite file) without
    opening it as an index: erases a gallery whose index this process never opened, e.g.
    after a restart. True if it existed."""
    if not _NAME.match(collection):
        raise VectorIndexError(f"invalid Milvus collection name {collection!r}")
    client = _connect(uri)
    try:
        if not client.has_collection(collection):
            return False
        client.drop_collection(collection)
        return True
    finally:
        client.close()


def split_credentials(uri: str) -> tuple[str, str]:
    """(uri, token): a server URI may carry credentials before the host
    (`http://user:password@milvus:19530`); Milvus takes them as a separate token."""
    if "://" not in uri:
        return uri, ""  # a Milvus Lite file
    scheme, rest = uri.split("://", 1)
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return uri, ""
    token, host = authority.rsplit("@", 1)
    return f"{scheme}://{host}{slash}{path}", token


def _connect(uri: str) -> MilvusClient:
    uri, token = split_credentials(uri)
    if "://" not in uri:
        require("milvus_lite", "milvus", "Milvus Lite (a Milvus index in a local file)")
    try:
        return MilvusClient(uri, token=token)
    except Exception as exc:  # pymilvus raises several unrelated types for a failed start
        raise VectorIndexError(f"cannot open Milvus at {uri}: {exc}") from exc
