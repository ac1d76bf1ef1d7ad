"""Erasure on Milvus (Lite): a removed vector cannot be fetched by id and its bytes leave the
collection's files, even when the process is killed right after `remove`; a dropped collection
is gone from the server, seen from a new process. Each writer runs in its own real process (one
Milvus Lite per file and process, like a restarted service)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from yingyan.gallery.index.milvus_index import drop_collection

from .conftest import PROJECT_ROOT, start_milvus_lite

DIM = 64
N = 300
ERASED = [7, 150, 299]
KEPT = 42
COLLECTION = "g_erasure_test"

# The writer: fills a collection, then removes / drops / does nothing, then dies or exits.
WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from yingyan.gallery.index import IndexSpec
    from yingyan.gallery.index.milvus_index import MilvusIndex

    path, collection, action, erased = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((int(sys.argv[5]), int(sys.argv[6])), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = MilvusIndex.open(
        IndexSpec(kind="milvus"), vectors.shape[1], model="m@1", collection=collection, uri=path
    )
    index.add(np.arange(len(vectors)), vectors)
    index.save()
    if action == "remove-then-kill":
        removed = index.remove([int(i) for i in erased.split(",")])
        print(removed, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no close, no exit handlers
    if action == "drop":
        index.drop()
    """
)


def vectors() -> npt.NDArray[np.float32]:
    """The writer's vectors (same seed)."""
    rng = np.random.default_rng(3)
    v = rng.standard_normal((N, DIM), dtype=np.float32)
    return np.asarray(v / np.linalg.norm(v, axis=1, keepdims=True), np.float32)


def writer_args() -> list[str]:
    return [",".join(map(str, ERASED)), str(N), str(DIM)]


def run_writer(path: Path, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WRITER, str(path), COLLECTION, action, *writer_args()],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_ROOT,
    )


def files_holding(root: Path, data: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]


@pytest.fixture
def lite(tmp_path: Path) -> Path:
    """A Milvus Lite file no process has opened yet (skips, or fails under CI=true, if Milvus
    Lite cannot start here: probed on another file, so this process holds no lock on it)."""
    probe = tmp_path / "probe.db"
    start_milvus_lite(probe).close()
    return tmp_path / "milvus.db"


def test_removed_vector_cannot_be_fetched_and_leaves_the_files_after_a_kill(lite: Path) -> None:
    writer = run_writer(lite, "remove-then-kill")
    assert writer.returncode == -signal.SIGKILL, writer.stderr
    assert writer.stdout.split() == [str(len(ERASED))]
    v = vectors()
    client = start_milvus_lite(lite)  # "the restart": a new process opens the same file
    try:
        client.load_collection(COLLECTION)  # a restarted Milvus holds collections released
        got = client.get(COLLECTION, ids=[*ERASED, KEPT], output_fields=["id", "vector"])
        assert [r["id"] for r in got] == [KEPT]
        np.testing.assert_array_equal(np.asarray(got[0]["vector"], np.float32), v[KEPT])
        assert client.query(COLLECTION, filter="", output_fields=["count(*)"])[0]["count(*)"] == (
            N - len(ERASED)
        )
    finally:
        client.close()
    assert files_holding(lite, v[KEPT].tobytes())  # the files do store vectors as float32
    for i in ERASED:
        assert files_holding(lite, v[i].tobytes()) == [], f"vector {i} is still on disk"


def test_dropped_collection_is_gone_for_a_new_process(lite: Path) -> None:
    writer = run_writer(lite, "drop")
    assert writer.returncode == 0, writer.stderr
    client: Any = start_milvus_lite(lite)
    try:
        assert not client.has_collection(COLLECTION)
    finally:
        client.close()
    assert files_holding(lite, vectors()[KEPT].tobytes()) == []


def test_drop_collection_erases_a_collection_this_process_never_opened(lite: Path) -> None:
    writer = run_writer(lite, "fill")
    assert writer.returncode == 0, writer.stderr
    assert files_holding(lite, vectors()[KEPT].tobytes())
    assert drop_collection(str(lite), COLLECTION) is True
    client = start_milvus_lite(lite)
    try:
        assert not client.has_collection(COLLECTION)
    finally:
        client.close()
    assert files_holding(lite, vectors()[KEPT].tobytes()) == []
    assert drop_collection(str(lite), COLLECTION) is False  # already gone: nothing to do


CI_PROBE = textwrap.dedent(
    """
    from pathlib import Path
    from tests.conftest import start_milvus_lite

    def test_start(tmp_path: Path) -> None:
        blocker = tmp_path / "milvus.db"
        blocker.write_text("a file where Milvus Lite wants its folder")
        start_milvus_lite(blocker)
    """
)


@pytest.mark.parametrize(("ci", "outcome"), [("true", "1 failed"), ("", "1 skipped")])
def test_milvus_lite_start_failure_fails_under_ci(tmp_path: Path, ci: str, outcome: str) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text(CI_PROBE)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(probe), "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_ROOT,
        env=os.environ | {"CI": ci},
    )
    assert outcome in result.stdout, result.stdout + result.stderr
