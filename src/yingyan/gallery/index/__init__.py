"""Vector indexes for 1:N search: a rebuildable cache of templates keyed by template id.

`open_index` picks the implementation: faiss (flat, flat16, ivf, hnsw; in-process, one file)
or Milvus (a server, or Milvus Lite on a local file). faiss and pymilvus are imported only by
the implementation that needs them.
"""

from yingyan.gallery.index.base import (
    KINDS,
    Fingerprint,
    IndexKind,
    IndexSpec,
    SearchResult,
    VectorIndex,
    VectorIndexError,
    open_index,
)

__all__ = [
    "KINDS",
    "Fingerprint",
    "IndexKind",
    "IndexSpec",
    "SearchResult",
    "VectorIndex",
    "VectorIndexError",
    "open_index",
]
