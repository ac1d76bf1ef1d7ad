"""The service's inference pool: models run in a worker process and the event loop is free
while they do; worker errors come back as the same YingyanError."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

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
