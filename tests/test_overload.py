"""Backpressure (api/backpressure.py): a full inference pool answers 503 with Retry-After
instead of queueing, a key over its role's rate limit answers 429 with Retry-After while other
keys go on, and `yingyan serve` bounds its connections. Real models, real images, real
servers; no timed assertion: every wait is a bounded loop on an observable state."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from yingyan.access.keys import create_key
from yingyan.api.app import INITIAL_KEY_FILE, create_app
from yingyan.api.backpressure import job_limit
from yingyan.api.errors import ApiError
from yingyan.api.inference import InferencePool
from yingyan.cli.serve import concurrency_limit
from yingyan.config import EngineConfig
from yingyan.errors import ConfigError
from yingyan.settings import Settings, load_settings
from yingyan.store import open_database

from ._server import running_server

pytestmark = pytest.mark.shared


def test_a_full_pool_refuses_at_once_instead_of_queueing(stills: Path) -> None:
    """Six jobs at once on a pool that admits two: two run, four are refused before their
    image reaches the executor; once the two are done the pool admits again."""
    image = (stills / "obama.jpg").read_bytes()

    async def scenario() -> tuple[list[object], InferencePool, int]:
        pool = InferencePool(EngineConfig(threads=1), workers=1, max_faces=5, max_jobs=2)
        try:
            await pool.start()
            jobs = [pool.faces(image, embed=False) for _ in range(6)]
            results: list[object] = [*await asyncio.gather(*jobs, return_exceptions=True)]
            assert pool.admitted == 0
            after = len(await pool.faces(image, embed=False))
        finally:
            pool.close()
        return results, pool, after

    results, pool, after = asyncio.run(scenario())
    faces = [r for r in results if isinstance(r, list)]
    refused = [r for r in results if isinstance(r, ApiError)]
    assert len(faces) == 2 and all(len(f) == 1 for f in faces), results
    assert len(refused) == 4, results
    assert all(e.code == "overloaded" and e.retry_after == 1 for e in refused)
    assert pool.peak_admitted == 2 and pool.overloaded == 4
    assert after == 1


def test_a_full_pool_refuses_before_reading_the_body(tmp_path: Path, stills: Path) -> None:
    """The place in the pool is taken when a request arrives: with the one place held, a
    request whose body is not even valid multipart is refused 503 (had the body been read
    first it would be a 4xx about the body), and so is one with an unknown key (had the key
    been looked up first, a 401). A verify's two images share one place: with
    max_queued_jobs=1 it is served, not refused by its own second image."""
    settings = Settings(data_dir=tmp_path, workers=0, max_queued_jobs=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        admin = {"x-api-key": (tmp_path / INITIAL_KEY_FILE).read_text().strip()}
        pool = client.app.state.yingyan.inference  # type: ignore[attr-defined]
        broken = {"content-type": "multipart/form-data; boundary=x", **admin}
        holding, release = threading.Event(), threading.Event()

        def other_request() -> None:  # its own thread: its own context, as a request has
            with pool.admission():
                holding.set()
                release.wait(60)

        holder = threading.Thread(target=other_request)
        holder.start()
        try:
            assert holding.wait(60)
            r = client.post("/api/v1/detect", content=b"not multipart at all", headers=broken)
            # Refused before the key is even looked up: the cheapest refusal there is.
            stranger = client.post("/api/v1/detect", headers={"x-api-key": "nope"})
        finally:
            release.set()
            holder.join()
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "overloaded" and r.headers["retry-after"] == "1"
        assert stranger.status_code == 503, stranger.text
        assert client.post("/api/v1/detect", headers={"x-api-key": "nope"}).status_code == 401
        r = client.post("/api/v1/detect", content=b"not multipart at all", headers=broken)
        assert 400 <= r.status_code < 500 and r.status_code != 429, r.text  # now it is read
        image = (stills / "obama.jpg").read_bytes()
        files = {
            "probe": ("a.jpg", image, "image/jpeg"),
            "reference": ("b.jpg", image, "image/jpeg"),
        }
        r = client.post("/api/v1/verify", files=files, headers=admin)
        assert r.status_code == 200 and r.json()["match"] is True, r.text
        assert pool.admitted == 0 and pool.peak_admitted == 1


def test_bounds_come_from_the_settings() -> None:
    assert job_limit(Settings(workers=0)) == 16
    assert job_limit(Settings(workers=8)) == 32
    assert job_limit(Settings(workers=8, max_queued_jobs=3)) == 3
    # uvicorn refuses once open connections reach its limit, the new one included.
    assert concurrency_limit(64) == 65 and concurrency_limit(None) is None
    limits = Settings(rate_limits={"operator": "2/second; 10/minute", "auditor": ""}).rate_limits
    assert limits["operator"] == "2/second; 10/minute" and limits["auditor"] == ""
    assert limits["enroller"] == "50/second" and limits["admin"] == ""  # the defaults
    with pytest.raises(ConfigError, match="unknown role 'root'"):
        load_settings(rate_limits={"root": "1/second"})
    with pytest.raises(ConfigError, match="rate_limits"):
        load_settings(rate_limits={"operator": "many per day"})


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name} not in /metrics"
    return float(found.group(1))


def test_the_service_sheds_load_and_rate_limits_keys(tmp_path: Path, stills: Path) -> None:
    """One worker, two jobs admitted: a burst of sixteen detect requests gets 200s and 503s
    with Retry-After, nothing else, and the pool never held more than two. An operator key
    limited to 3 requests a minute gets 429 with Retry-After on its 4th (CompreFace routes
    too, in CompreFace's error shape) while another operator key is served; the refusals are
    audited once."""
    big = (stills / "obama-1080p.jpg").read_bytes()  # a slow image: the burst overlaps it
    data = tmp_path / "data"
    env = {
        "YINGYAN_MAX_QUEUED_JOBS": "2",
        "YINGYAN_RATE_LIMITS": json.dumps({"operator": "3/minute"}),
    }
    with running_server(data, workers=1, env=env) as server:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:

                async def detect() -> httpx.Response:
                    files = {"image": ("big.jpg", big, "image/jpeg")}
                    return await http.post("/api/v1/detect", files=files, headers=server.headers)

                return await asyncio.gather(*(detect() for _ in range(16)))

        answers = asyncio.run(burst())
        statuses = sorted(r.status_code for r in answers)
        assert set(statuses) <= {200, 503}, [(r.status_code, r.text) for r in answers]
        assert 200 in statuses and 503 in statuses, statuses
        for r in answers:
            if r.status_code == 503:
                assert r.headers["retry-after"] == "1"
                assert r.json()["error"]["code"] == "overloaded"
            else:
                assert len(r.json()["faces"]) == 1
        metrics = httpx.get(f"{server.url}/metrics", headers=server.headers).text
        assert _metric(metrics, "yingyan_inference_jobs_peak") == 2  # reached, never passed
        assert _metric(metrics, "yingyan_inference_jobs_limit") == 2
        assert _metric(metrics, "yingyan_inference_overloaded_total") == statuses.count(503)

        with open_database(None, data) as db, db.session() as s:
            limited = {"x-api-key": create_key(s, name="limited", role="operator").token}
            other = {"x-api-key": create_key(s, name="other", role="operator").token}
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for _ in range(3):
                assert http.get("/api/v1/galleries", headers=limited).status_code == 200
            refused = http.get("/api/v1/galleries", headers=limited)
            assert refused.status_code == 429, refused.text
            assert 1 <= int(refused.headers["retry-after"]) <= 60
            assert refused.json()["error"]["code"] == "rate_limited"
            files = {"file": ("o.jpg", (stills / "obama.jpg").read_bytes(), "image/jpeg")}
            compreface = http.post("/api/v1/detection/detect", files=files, headers=limited)
            assert compreface.status_code == 429
            assert compreface.json()["code"] == "rate_limited" and "message" in compreface.json()
            assert "retry-after" in compreface.headers
            assert http.get("/api/v1/galleries", headers=other).status_code == 200
            assert http.get("/api/v1/galleries", headers={"x-api-key": "nope"}).status_code == 401
            audit = http.get("/api/v1/audit", params={"limit": 1000}, headers=server.headers)
        entries = [e for e in audit.json()["items"] if e["details"].get("reason") == "rate_limited"]
        assert len(entries) == 1, entries  # two refusals, one entry: at most one a minute
        assert entries[0]["outcome"] == "refused" and entries[0]["details"]["refusals"] == 1
        assert entries[0]["operation"] == "GET /api/v1/galleries"


def test_serve_bounds_its_connections(tmp_path: Path) -> None:
    """With max_connections=2, a request while two other connections are open is answered 503
    by uvicorn; once they close, requests are served again."""
    env = {"YINGYAN_MAX_CONNECTIONS": "2"}
    with running_server(tmp_path / "data", workers=0, env=env) as server:
        host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
        held = [socket.create_connection((host, port), timeout=10) for _ in range(2)]
        try:
            status = 0
            for _ in range(50):  # until uvicorn has accepted both held connections
                status = httpx.get(f"{server.url}/health", timeout=10).status_code
                if status == 503:
                    break
                time.sleep(0.1)
            assert status == 503
        finally:
            for s in held:
                s.close()
        for _ in range(50):  # until uvicorn has seen them closed
            status = httpx.get(f"{server.url}/health", timeout=10).status_code
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200
