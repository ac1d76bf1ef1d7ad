"""Vector indexes (faiss flat, flat16, IVF, HNSW; Milvus Lite): search, erasure, persistence,
staleness and refusal, on small synthetic galleries of random unit vectors."""

from __future__ import annotations

import importlib.util
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from yingyan.errors import YingyanError
from yingyan.gallery.index import Fingerprint, IndexSpec, VectorIndex, VectorIndexError, open_index
from yingyan.gallery.index.faiss_index import FaissIndex, read_manifest, sidecar_path

from .conftest import start_milvus_lite

DIM = 128
N = 2000
MODEL = "test-model@00aa11"
MATE_SIMILARITY = 0.95
SPECS = {
    "flat": IndexSpec(kind="flat"),
    "flat16": IndexSpec(kind="flat16"),
    "ivf": IndexSpec(kind="ivf", nprobe=8),  # 2000 vectors: 51 cells
    "hnsw": IndexSpec(kind="hnsw", hnsw_m=16, ef_search=64),
    "milvus": IndexSpec(kind="milvus"),
}
FAISS_KINDS = ["flat", "flat16", "ivf", "hnsw"]
EXACT_KINDS = ["flat", "flat16", "milvus"]
# pymilvus is a dependency: its absence skips only outside CI
NO_PYMILVUS = (
    importlib.util.find_spec("pymilvus") is None and os.environ.get("CI", "").lower() != "true"
)
KINDS = [
    *FAISS_KINDS,
    pytest.param(
        "milvus", marks=pytest.mark.skipif(NO_PYMILVUS, reason="pymilvus is not installed")
    ),
]
Floats = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]
Make = Callable[..., VectorIndex]


def unit_rows(rng: np.random.Generator, n: int, dim: int = DIM) -> Floats:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def probes_near(mates: Floats, similarity: float, rng: np.random.Generator) -> Floats:
    """Unit vectors at exactly `similarity` (cosine) from each mate, in a random direction."""
    noise = unit_rows(rng, len(mates), mates.shape[1])
    noise -= (noise * mates).sum(axis=1, keepdims=True) * mates
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return np.asarray(similarity * mates + np.sqrt(1 - similarity**2) * noise, dtype=np.float32)


@pytest.fixture(scope="module")
def gallery() -> tuple[Ints, Floats]:
    rng = np.random.default_rng(7)
    ids = (np.arange(N, dtype=np.int64) * 3 + 1000)[rng.permutation(N)]  # sparse, unordered
    return ids, unit_rows(rng, N)


@pytest.fixture(scope="module")
def milvus_client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One Milvus Lite for the module (it takes seconds to start); fails under CI=true."""
    client = start_milvus_lite(tmp_path_factory.mktemp("milvus") / "gallery.db")
    yield client
    client.close()


@pytest.fixture
def make(tmp_path: Path, request: pytest.FixtureRequest) -> Make:
    """Open (or reopen: same `name`) an index of a kind, in tmp_path or the shared Milvus Lite."""
    prefix = f"t{uuid.uuid4().hex[:10]}"

    def _make(
        kind: str, *, name: str = "g", dimension: int = DIM, model: str = MODEL, **spec: Any
    ) -> VectorIndex:
        base = SPECS[kind]
        full = IndexSpec(**(base.as_dict() | spec))
        if kind == "milvus":
            client = request.getfixturevalue("milvus_client")
            return open_index(
                full, None, dimension, model=model, collection=f"{prefix}_{name}", client=client
            )
        return open_index(full, tmp_path / f"{name}.faiss", dimension, model=model)

    return _make


@pytest.fixture
def full(make: Make, gallery: tuple[Ints, Floats]) -> Callable[[str], VectorIndex]:
    def _full(kind: str) -> VectorIndex:
        index = make(kind)
        index.add(*gallery)
        return index

    return _full


def some_rows(count: int, seed: int = 0) -> Ints:
    return np.random.default_rng(seed).choice(N, count, replace=False)


@pytest.mark.parametrize("kind", KINDS)
def test_mate_is_found_first(kind: str, full: Callable[[str], VectorIndex], gallery: Any) -> None:
    ids, vecs = gallery
    index = full(kind)
    rows = some_rows(60)
    probes = probes_near(vecs[rows], MATE_SIMILARITY, np.random.default_rng(1))
    result = index.search(probes, 10)
    assert result.ids.shape == result.scores.shape == (60, 10)
    assert result.ids.dtype == np.int64 and result.scores.dtype == np.float32
    np.testing.assert_array_equal(result.ids[:, 0], ids[rows])
    tolerance = 2e-3 if kind == "flat16" else 1e-4
    np.testing.assert_allclose(result.scores[:, 0], MATE_SIMILARITY, atol=tolerance)
    assert (np.diff(result.scores, axis=1) <= 1e-6).all()  # best first
    if kind in EXACT_KINDS:  # the same top 10 as brute force in numpy
        exact = ids[np.argsort(-(probes @ vecs.T), axis=1)[:, :10]]
        overlap = np.mean(
            [len(set(a) & set(b)) / 10 for a, b in zip(result.ids, exact, strict=True)]
        )
        assert overlap >= (0.98 if kind == "flat16" else 1.0)


@pytest.mark.parametrize("kind", KINDS)
def test_removed_vector_cannot_be_found(
    kind: str, full: Callable[[str], VectorIndex], gallery: Any
) -> None:
    ids, vecs = gallery
    index = full(kind)
    rows = some_rows(5, seed=2)
    absent = int(ids.max()) + 1
    assert index.remove([*ids[rows], absent]) == 5
    assert len(index) == N - 5
    assert not np.isin(ids[rows], index.ids()).any()
    result = index.search(vecs[rows], 10)  # the erased vectors themselves as probes
    assert not np.isin(ids[rows], result.ids).any()
    kept = some_rows(20, seed=3)
    kept = kept[~np.isin(kept, rows)]
    np.testing.assert_array_equal(index.search(vecs[kept], 1).ids[:, 0], ids[kept])
    assert index.remove(ids[rows]) == 0


@pytest.mark.parametrize("kind", FAISS_KINDS)
def test_erasure_removes_the_bytes_from_the_saved_file(
    kind: str, make: Make, gallery: Any, tmp_path: Path
) -> None:
    ids, vecs = gallery
    index = make(kind)
    index.add(ids, vecs)
    erased, kept = 11, 12
    index.remove(ids[[erased]])
    index.save()
    data = (tmp_path / "g.faiss").read_bytes()
    codes = vecs.astype(np.float16) if kind == "flat16" else vecs
    assert codes[kept].tobytes() in data  # the file does store vectors in this encoding
    assert codes[erased].tobytes() not in data


def test_hnsw_erases_in_place_then_compacts(make: Make, gallery: Any) -> None:
    ids, vecs = gallery
    index = make("hnsw", compact_fraction=0.2)
    assert isinstance(index, FaissIndex)
    index.add(ids, vecs)
    index.remove(ids[:10])
    assert index.tombstones == 10  # zeroed and hidden, still in the graph
    index.remove(ids[10:500])
    assert index.tombstones == 0  # past 20%: rebuilt from the 1500 live vectors
    assert len(index) == N - 500
    rows = np.arange(500, 560)
    np.testing.assert_array_equal(index.search(vecs[rows], 1).ids[:, 0], ids[rows])
    assert not np.isin(ids[:500], index.search(vecs[:500], 5).ids).any()


def test_hnsw_tombstones_take_no_result_slots(make: Make, gallery: Any) -> None:
    ids, vecs = gallery
    index = make("hnsw", compact_fraction=1.0)
    index.add(ids[:20], vecs[:20])
    index.remove(ids[:5])
    result = index.search(vecs[10:12], 15)  # every live vector, even those scoring below 0
    for row in result.ids:
        assert set(row.tolist()) == set(ids[5:20].tolist())


@pytest.mark.parametrize("kind", KINDS)
def test_adding_a_held_id_replaces_its_vector(
    kind: str, full: Callable[[str], VectorIndex], gallery: Any
) -> None:
    ids, vecs = gallery
    index = full(kind)
    before = index.fingerprint()
    fresh = unit_rows(np.random.default_rng(5), 1)
    index.add(ids[:1], fresh)
    assert len(index) == N and index.fingerprint() == before
    hit = index.search(fresh, 1)
    assert hit.ids[0, 0] == ids[0] and hit.scores[0, 0] == pytest.approx(1.0, abs=2e-3)
    assert index.search(vecs[:1], 1).ids[0, 0] != ids[0]  # the old vector is gone


@pytest.mark.parametrize("kind", KINDS)
def test_persistence_round_trip(kind: str, make: Make, gallery: Any) -> None:
    ids, vecs = gallery
    index = make(kind)
    index.add(ids, vecs)
    index.remove(ids[:7])
    probes = probes_near(vecs[100:140], MATE_SIMILARITY, np.random.default_rng(4))
    before = index.search(probes, 5)
    index.save()
    index.close()
    again = make(kind)
    assert len(again) == N - 7
    np.testing.assert_array_equal(again.ids(), np.sort(ids[7:]))
    assert again.fingerprint() == Fingerprint.of(ids[7:])
    after = again.search(probes, 5)
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_allclose(after.scores, before.scores, atol=1e-6)
    again.close()


@pytest.mark.parametrize("kind", KINDS)
def test_fingerprint_tracks_the_id_set(
    kind: str, full: Callable[[str], VectorIndex], gallery: Any
) -> None:
    ids, _ = gallery
    index = full(kind)
    in_sync = Fingerprint.of(np.random.default_rng(0).permutation(ids))  # database row order
    assert index.fingerprint() == in_sync
    new_id = int(ids.max()) + 3
    index.add([new_id], unit_rows(np.random.default_rng(6), 1))
    assert index.fingerprint() != in_sync  # the database (without it) would see a stale index
    assert index.fingerprint() == Fingerprint.of([*ids, new_id])
    index.remove([new_id])
    assert index.fingerprint() == in_sync


def test_fingerprint_sees_a_swap_that_keeps_count_and_max() -> None:
    a, b = Fingerprint.of([1, 2, 9]), Fingerprint.of([1, 3, 9])
    assert (a.count, a.max_id) == (b.count, b.max_id) and a.checksum != b.checksum
    assert Fingerprint.of([9, 1, 2]) == a
    assert Fingerprint.of([]) == Fingerprint(0, -1, "0" * 16)
    assert Fingerprint.from_dict(a.as_dict()) == a


@pytest.mark.parametrize("kind", FAISS_KINDS)
def test_saved_sidecar_tells_staleness_without_loading(
    kind: str, full: Callable[[str], VectorIndex], gallery: Any, tmp_path: Path
) -> None:
    ids, _ = gallery
    full(kind).save()
    manifest = read_manifest(tmp_path / "g.faiss")
    assert manifest.fingerprint == Fingerprint.of(ids)
    assert (manifest.kind, manifest.dimension, manifest.model) == (
        FaissIndex.open(SPECS[kind], None, DIM, model=MODEL).kind,
        DIM,
        MODEL,
    )
    enrolled_since = [*ids, int(ids.max()) + 1]
    assert manifest.fingerprint != Fingerprint.of(enrolled_since)


@pytest.mark.parametrize("kind", KINDS)
def test_other_dimension_or_model_is_refused(kind: str, make: Make, gallery: Any) -> None:
    ids, vecs = gallery
    index = make(kind)
    index.add(ids[:50], vecs[:50])
    index.save()
    index.close()
    for wrong in ({"dimension": 64}, {"model": "other-model@99ff00"}):
        with pytest.raises(VectorIndexError) as err:
            make(kind, **wrong)
        assert isinstance(err.value, YingyanError) and err.value.code == "index_error"
    if kind == "milvus":
        with pytest.raises(VectorIndexError, match="metric"):
            make(kind, metric="IP")
    assert len(make(kind)) == 50  # the right dimension and model still open it


def test_other_kind_is_refused(make: Make, gallery: Any, tmp_path: Path) -> None:
    ids, vecs = gallery
    index = make("flat")
    index.add(ids[:50], vecs[:50])
    index.save()
    for kind in ("flat16", "hnsw", "ivf"):
        with pytest.raises(VectorIndexError, match="kind"):
            open_index(kind, tmp_path / "g.faiss", DIM, model=MODEL)
    with pytest.raises(VectorIndexError, match="kind"):
        open_index(
            IndexSpec(kind="ivf", ivf_storage="fp16"), tmp_path / "g.faiss", DIM, model=MODEL
        )


def test_index_and_sidecar_from_different_saves_are_refused(
    make: Make, gallery: Any, tmp_path: Path
) -> None:
    ids, vecs = gallery
    index = make("flat")
    index.add(ids[:100], vecs[:100])
    index.save()
    old_sidecar = tmp_path / "old.json"
    shutil.copy(sidecar_path(tmp_path / "g.faiss"), old_sidecar)
    index.add(ids[100:200], vecs[100:200])
    index.save()
    shutil.copy(old_sidecar, sidecar_path(tmp_path / "g.faiss"))  # a crash between the renames
    with pytest.raises(VectorIndexError, match="disagrees"):
        make("flat")


def test_file_not_written_by_us_is_refused(tmp_path: Path) -> None:
    (tmp_path / "g.faiss").write_bytes(b"not an index")
    with pytest.raises(VectorIndexError, match="sidecar"):
        open_index("flat", tmp_path / "g.faiss", DIM, model=MODEL)


@pytest.mark.parametrize("kind", KINDS)
def test_empty_index_returns_no_hits(kind: str, make: Make, gallery: Any, tmp_path: Path) -> None:
    ids, vecs = gallery
    index = make(kind)
    probes = vecs[:3]
    for result in (index.search(probes, 4), _emptied(index, ids[:20], vecs[:20]).search(probes, 4)):
        assert result.ids.shape == (3, 4)
        assert (result.ids == -1).all() and np.isneginf(result.scores).all()
    assert len(index) == 0 and index.ids().size == 0
    assert index.fingerprint() == Fingerprint.of([])
    index.add(ids[:3], vecs[:3])
    short = index.search(probes, 5)  # fewer held than k: the tail is empty
    np.testing.assert_array_equal(short.ids[:, 0], ids[:3])
    assert (short.ids[:, 3:] == -1).all() and np.isneginf(short.scores[:, 3:]).all()


def _emptied(index: VectorIndex, ids: Ints, vecs: Floats) -> VectorIndex:
    index.add(ids, vecs)
    assert index.remove(ids) == len(ids)
    return index


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_is_refused(kind: str, make: Make, gallery: Any) -> None:
    ids, vecs = gallery
    index = make(kind)
    bad_adds = [
        (ids[:2], vecs[:2, :64] / np.linalg.norm(vecs[:2, :64], axis=1, keepdims=True)),
        (ids[:2], vecs[:2] * 2),  # not unit length
        ([-5, 1], vecs[:2]),  # -1 and below are reserved
        ([1, 1], vecs[:2]),
        (ids[:3], vecs[:2]),
        (np.array([0.5, 1.5]), vecs[:2]),
    ]
    for bad_ids, bad_vecs in bad_adds:
        with pytest.raises(VectorIndexError):
            index.add(bad_ids, bad_vecs)
    assert len(index) == 0
    with pytest.raises(VectorIndexError):
        index.search(vecs[:1], 0)
    with pytest.raises(VectorIndexError):
        index.search(vecs[:1, :64], 1)


def test_ivf_trains_on_a_sample_with_cells_sized_to_it(make: Make, gallery: Any) -> None:
    ids, vecs = gallery
    auto = make("ivf", name="auto")
    assert isinstance(auto, FaissIndex) and auto.nlist is None  # untrained until data arrives
    auto.train(vecs)
    assert auto.nlist == N // 39  # 4*sqrt(2000) = 179 cells would get < 39 points each
    for start in range(0, N, 500):  # bulk load in chunks after training on the whole sample
        auto.add(ids[start : start + 500], vecs[start : start + 500])
    assert len(auto) == N
    fixed = make("ivf", name="fixed", nlist=10, train_size=1000)
    fixed.add(ids, vecs)
    assert isinstance(fixed, FaissIndex) and fixed.nlist == 10


def test_untrained_ivf_saves_and_reopens_empty(make: Make, gallery: Any) -> None:
    ids, vecs = gallery
    make("ivf").save()
    again = make("ivf")
    assert len(again) == 0 and isinstance(again, FaissIndex) and again.nlist is None
    again.add(ids[:100], vecs[:100])
    np.testing.assert_array_equal(again.search(vecs[:5], 1).ids[:, 0], ids[:5])


def test_open_index_refuses_bad_configuration(tmp_path: Path) -> None:
    with pytest.raises(VectorIndexError, match="kind"):
        IndexSpec(kind="annoy")  # type: ignore[arg-type]
    with pytest.raises(VectorIndexError, match="collection"):
        open_index("milvus", tmp_path / "m.db", DIM, model=MODEL)
    with pytest.raises(VectorIndexError, match="no file"):
        open_index("flat", None, DIM, model=MODEL).save()


def test_milvus_uri_credentials_become_the_token() -> None:
    from yingyan.gallery.index.milvus_index import split_credentials

    assert split_credentials("http://u:p@milvus.example:19530") == (
        "http://milvus.example:19530",
        "u:p",
    )
    assert split_credentials("https://milvus:19530/db") == ("https://milvus:19530/db", "")
    assert split_credentials("/data/milvus.db") == ("/data/milvus.db", "")
