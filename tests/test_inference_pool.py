"""The service's inference pool: models run in a worker process and the event loop is free
while they do; worker errors come back as the same YingyanError."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from yingyan.api.app import INITIAL_KEY_FILE
from yingyan.api.inference import InferencePool
from yingyan.config import EngineConfig
from yingyan.errors import NoFaceError, SeveralFacesError, TooManyFacesError

pytestmark = pytest.mark.shared


def test_the_event_loop_runs_while_a_worker_process_embeds(stills: Path) -> None:
    big = (stills / "obama-1080p.jpg").read_bytes()
    two = (stills / "two_people.jpg").read_bytes()

    async def scenario() -> list[str]:
        pool = InferencePool(EngineConfig(threads=1), workers=1, max_faces=1)
        order: list[str] = []
        try:
            info = await pool.start()
            assert info.model.name == "dlib_resnet_v1"

            async def infer() -> None:
                faces = await pool.faces(big)
                order.append(f"faces:{len(faces)}")

            async def other_request() -> None:
                order.append("other")

            # `infer` starts first; if inference ran on the loop, `other` would wait for it.
            await asyncio.gather(infer(), other_request())
            with pytest.raises(TooManyFacesError):
                await pool.faces(two)
            with pytest.raises(NoFaceError):
                await pool.faces(_blank(), policy="largest")
        finally:
            pool.close()
        return order

    assert asyncio.run(scenario()) == ["other", "faces:1"]


def test_face_policies(stills: Path) -> None:
    two = (stills / "two_people.jpg").read_bytes()

    async def scenario() -> tuple[int, int]:
        pool = InferencePool(EngineConfig(), workers=0, max_faces=5)
        try:
            await pool.start()
            every = await pool.faces(two)
            largest = await pool.faces(two, policy="largest")
            with pytest.raises(SeveralFacesError):
                await pool.faces(two, policy="single")
            return len(every), len(largest)
        finally:
            pool.close()

    assert asyncio.run(scenario()) == (2, 1)


def _blank() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (200, 200), "white").save(buffer, "PNG")
    return buffer.getvalue()


# -- worker faults: a real worker process, a real SIGKILL ----------------------------------


def worker_pids(parent: int) -> set[int]:
    """The spawned multiprocessing workers among the children of `parent` (from /proc; the
    spawn start method also runs a resource tracker, which is not a worker)."""
    pids: set[int] = set()
    for children in Path(f"/proc/{parent}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:  # gone meanwhile
                continue
            if b"spawn_main" in cmdline:
                pids.add(int(pid))
    return pids


def kill_and_reap(pid: int) -> None:
    """SIGKILL, then wait until the process is gone (the executor reaps its children)."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still alive after SIGKILL"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, just not reaped


@contextlib.asynccontextmanager
async def one_worker_pool() -> AsyncIterator[tuple[InferencePool, set[int], int]]:
    """A started pool of one real worker process: (pool, pids of workers from before, that
    worker's pid); closed at the end."""
    before = worker_pids(os.getpid())
    pool = InferencePool(EngineConfig(threads=1), workers=1, max_faces=5)
    try:
        await pool.start()
        (worker,) = worker_pids(os.getpid()) - before
        yield pool, before, worker
    finally:
        pool.close()


def test_a_killed_idle_worker_is_replaced_and_the_next_request_succeeds(stills: Path) -> None:
    image = (stills / "obama.jpg").read_bytes()

    async def scenario() -> None:
        async with one_worker_pool() as (pool, before, worker):
            assert pool.unready_reason() is None
            kill_and_reap(worker)
            # The request after the death runs on a new pool, not on the broken one.
            faces = await pool.faces(image)
            assert len(faces) == 1 and faces[0].template is not None
            assert pool.replacements == 1
            (replacement,) = worker_pids(os.getpid()) - before
            assert replacement != worker
            assert pool.unready_reason() is None

    asyncio.run(scenario())


def test_a_request_in_flight_when_its_worker_dies_is_retried(stills: Path) -> None:
    big = (stills / "obama-1080p.jpg").read_bytes()

    async def scenario() -> None:
        async with one_worker_pool() as (pool, _, worker):
            requests = [asyncio.create_task(pool.faces(big)) for _ in range(2)]
            await asyncio.sleep(0.2)  # the first one is in the worker now (it takes seconds)
            assert not any(r.done() for r in requests)
            kill_and_reap(worker)
            results = await asyncio.gather(*requests)
            assert [len(faces) for faces in results] == [1, 1]
            assert pool.replacements == 1  # one replacement, however many requests saw it

    asyncio.run(scenario())


def test_a_probe_alone_replaces_a_pool_whose_worker_died() -> None:
    """With no request coming, /ready's check notices the death, answers not-ready and
    starts the replacement; it answers ready once the new worker has loaded its models."""

    async def scenario() -> list[str | None]:
        before = worker_pids(os.getpid())
        pool = InferencePool(EngineConfig(threads=1), workers=1, max_faces=5)
        seen: list[str | None] = []
        try:
            await pool.start()
            (worker,) = worker_pids(os.getpid()) - before
            kill_and_reap(worker)
            deadline = time.monotonic() + 120
            while (reason := pool.unready_reason()) is not None or not seen:
                if reason is not None and reason not in seen:
                    seen.append(reason)
                assert time.monotonic() < deadline, "the pool was not replaced in 120 s"
                await asyncio.sleep(0.05)
            assert pool.replacements == 1
            faces = await pool.faces(_blank())
            assert faces == []
        finally:
            pool.close()
        return seen

    seen = asyncio.run(scenario())
    assert seen and all("died" in reason for reason in seen if reason)


def test_a_running_server_replaces_a_killed_worker(tmp_path: Path, stills: Path) -> None:
    """`yingyan serve` with one inference worker: after a SIGKILL of that worker, /ready says
    not ready until a new worker has loaded its models, and detect requests succeed (one sent
    right after a kill is run again on the replacement)."""
    port = _free_port()
    env = os.environ | {"YINGYAN_WORKERS": "1", "YINGYAN_LOG_JSON": "false"}
    cmd = [sys.executable, "-m", "yingyan.cli.main", "serve", "--port", str(port)]
    server = subprocess.Popen(
        [*cmd, "--data-dir", str(tmp_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    image = {"image": ("obama.jpg", (stills / "obama.jpg").read_bytes(), "image/jpeg")}
    try:
        assert _ready_codes(url, server, until=200)[-1] == 200
        key = {"x-api-key": (tmp_path / INITIAL_KEY_FILE).read_text().strip()}
        (worker,) = worker_pids(server.pid)

        kill_and_reap(worker)
        codes = _ready_codes(url, server, until=200)
        assert 503 in codes and codes[-1] == 200  # not ready in between, then recovered
        r = httpx.post(f"{url}/api/v1/detect", files=image, headers=key, timeout=120)
        assert r.status_code == 200, r.text
        assert len(r.json()["faces"]) == 1
        (second,) = worker_pids(server.pid)
        assert second != worker

        kill_and_reap(second)  # and at once a request, before any probe
        r = httpx.post(f"{url}/api/v1/detect", files=image, headers=key, timeout=120)
        assert r.status_code == 200, r.text
        assert len(r.json()["faces"]) == 1
        assert worker_pids(server.pid) - {second}
    finally:
        server.terminate()
        server.wait(timeout=30)


def _ready_codes(url: str, server: subprocess.Popen[bytes], *, until: int) -> list[int]:
    """/ready's status codes, polled until it answers `until` (at most 120 s)."""
    codes: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert server.poll() is None, "yingyan serve exited"
        with contextlib.suppress(httpx.TransportError):  # not listening yet
            codes.append(httpx.get(f"{url}/ready", timeout=5).status_code)
        if codes and codes[-1] == until:
            return codes
        time.sleep(0.05)
    pytest.fail(f"/ready did not answer {until} in 120 s: {codes[-5:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
