"""The REST service follows a gallery's migration to another recognizer without a restart.

A service configured with dlib (its main recognizer) and a dlib + MobileFaceNet fusion in
`also_recognizers` serves a gallery of LFW people enrolled over the API with dlib. The gallery
is migrated to the fusion at the worst instant: between a request's inference (dlib probes) and
its search. The request is answered from the fused templates, with fused probes; later requests,
enrolments and CompreFace searches use the fusion at once. A service that does not know the
fusion answers a clear 422 for that gallery, never a comparison across models. A camera worker
takes the recognizer of its watchlists' model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from yingyan import Engine, EngineConfig
from yingyan.access.keys import create_key
from yingyan.api.app import INITIAL_KEY_FILE, create_app
from yingyan.errors import ModelMismatchError
from yingyan.gallery import migration
from yingyan.gallery.factory import engine_config_for
from yingyan.settings import RecognizerChoice, Settings
from yingyan.store.tables import TemplateRow
from yingyan.watch.camera import video_engine_config

from .conftest import shared_path
from .test_migration import _fusion

pytestmark = pytest.mark.shared

PEOPLE = ("Colin_Powell", "Donald_Rumsfeld", "George_W_Bush", "Gerhard_Schroeder", "Tony_Blair")


def _image(lfw: Path, person: str, k: int) -> bytes:
    return (lfw / "lfw-deepfunneled" / person / f"{person}_{k:04d}.jpg").read_bytes()


def _file(data: bytes, name: str = "image") -> dict[str, tuple[str, bytes, str]]:
    return {name: (f"{name}.jpg", data, "image/jpeg")}


class Service:
    def __init__(self, client: TestClient, settings: Settings) -> None:
        self.client = client
        self.admin = {"x-api-key": (settings.data_dir / INITIAL_KEY_FILE).read_text().strip()}

    @property
    def state(self) -> Any:
        return self.client.app.state.yingyan  # type: ignore[attr-defined]

    def identify(self, probe: bytes) -> dict[str, Any]:
        r = self.client.post(
            "/api/v1/galleries/staff/identify?k=1", files=_file(probe, "probe"), headers=self.admin
        )
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path, str]:
    yunet = shared_path("models", "yunet", "face_detection_yunet_2023mar.onnx")
    mfn = shared_path("models", "mobilefacenet", "MobileFaceNet.onnx")
    lfw = shared_path("datasets", "lfw")
    tmp = tmp_path_factory.mktemp("api-migration")
    base = EngineConfig(detector="yunet", yunet_model=yunet, threads=1)
    fusion = _fusion(tmp, mfn, Engine(base), Engine(base.with_(recognizer_model=mfn)))
    choice = RecognizerChoice(fusion=fusion, detector="yunet")
    settings = Settings(
        data_dir=tmp / "data", workers=0, yunet_model=yunet, also_recognizers=(choice,)
    )
    return settings, lfw, str(Engine(base.with_(fusion=fusion)).model_id)


@pytest.fixture(scope="module")
def service(setup: tuple[Settings, Path, str]) -> Iterator[Service]:
    settings, lfw, _ = setup
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        svc = Service(client, settings)
        body = {"name": "staff", "purpose": "access", "legal_basis": "test", "keep_images": True}
        assert client.post("/api/v1/galleries", json=body, headers=svc.admin).status_code == 201
        for person in PEOPLE:
            url = "/api/v1/galleries/staff/subjects"
            r = client.post(url, json={"external_id": person}, headers=svc.admin)
            assert r.status_code == 201, r.text
            r = client.post(
                f"{url}/{person}/faces", files=_file(_image(lfw, person, 1)), headers=svc.admin
            )
            assert r.status_code == 201, r.text
        yield svc


def _models(svc: Service) -> set[str]:
    """The model ids of the gallery's templates (a version is stored in full)."""
    with svc.state.db.read() as s:
        rows = s.execute(select(TemplateRow.model_name, TemplateRow.model_version)).all()
    return {f"{name}@{version[:12]}" for name, version in rows}


def _migrate(svc: Service, config: EngineConfig) -> None:
    galleries = svc.state.galleries
    engine = Engine(config)
    migration.stage(galleries, "staff", engine)
    migration.switch(galleries, "staff", str(engine.model_id))


def test_a_request_caught_by_the_switch_is_answered_with_the_new_model(
    setup: tuple[Settings, Path, str], service: Service
) -> None:
    settings, lfw, fused = setup
    ready = service.client.get("/ready").json()
    assert ready["models"][1] == fused and ready["models"][0] == ready["model"] != fused

    before = service.identify(_image(lfw, "Tony_Blair", 2))
    assert before["faces"][0]["candidates"][0]["external_id"] == "Tony_Blair"

    # The migration commits between this request's inference (dlib probes) and its search.
    pool = service.state.inference
    real_faces = pool.faces
    models_asked: list[str | None] = []

    async def faces_then_switch(data: bytes, **options: Any) -> Any:
        models_asked.append(options.get("model"))
        found = await real_faces(data, **options)
        if len(models_asked) == 1:
            await run_in_threadpool(_migrate, service, engine_config_for(settings, fused))
        return found

    pool.faces = faces_then_switch
    try:
        caught = service.identify(_image(lfw, "Colin_Powell", 2))
    finally:
        pool.faces = real_faces
    assert models_asked[0] != fused and models_asked[1:] == [fused]  # probes made again
    top = caught["faces"][0]["candidates"][0]
    assert top["external_id"] == "Colin_Powell"
    with service.state.db.read() as s:
        fused_ids = set(s.scalars(select(TemplateRow.id)))
    assert _models(service) == {fused} and top["template_id"] in fused_ids

    # Later requests: fused probes at once, no restart; an enrolment is of the fused model.
    for person in PEOPLE:
        found = service.identify(_image(lfw, person, 2))
        assert found["faces"][0]["candidates"][0]["external_id"] == person
    r = service.client.post(
        "/api/v1/galleries/staff/subjects/Tony_Blair/verify?threshold=0.5",  # fixed weights:
        files=_file(_image(lfw, "Tony_Blair", 3), "probe"),
        headers=service.admin,
    )
    # the test's fusion has no measured thresholds
    assert r.status_code == 200 and r.json()["model"] == fused and r.json()["match"], r.text
    r = service.client.post(
        "/api/v1/galleries/staff/subjects/George_W_Bush/faces",
        files=_file(_image(lfw, "George_W_Bush", 3)),
        headers=service.admin,
    )
    assert r.status_code == 201, r.text
    with service.state.db.read() as s:
        row = s.get(TemplateRow, r.json()["template_id"])
        assert row is not None and fused.startswith(f"{row.model_name}@{row.model_version[:6]}")

    # CompreFace's recognize and faces/{image_id}/verify, scoped to the gallery.
    with service.state.db.session() as s:
        token = create_key(s, name="cf", role="operator", galleries=["staff"]).token
    cf = {"x-api-key": token}
    r = service.client.post(
        "/api/v1/recognition/recognize",
        files=_file(_image(lfw, "Donald_Rumsfeld", 2), "file"),
        headers=cf,
    )
    assert r.status_code == 200, r.text
    assert r.json()["result"][0]["subjects"][0]["subject"] == "Donald_Rumsfeld"
    r = service.client.post(
        f"/api/v1/recognition/faces/{top['template_id']}/verify",
        files=_file(_image(lfw, "Colin_Powell", 3), "file"),
        headers=cf,
    )
    assert r.status_code == 200, r.text
    assert r.json()["result"][0]["similarity"] > 0.5


def test_a_service_without_the_new_model_refuses_clearly(
    setup: tuple[Settings, Path, str], service: Service
) -> None:
    settings, lfw, fused = setup
    assert _models(service) == {fused}  # after the test above
    plain = settings.model_copy(update={"also_recognizers": ()})
    with TestClient(create_app(plain), raise_server_exceptions=False) as client:
        other = Service(client, plain)
        r = client.post(
            "/api/v1/galleries/staff/identify",
            files=_file(_image(lfw, "Tony_Blair", 2), "probe"),
            headers=other.admin,
        )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "model_mismatch"
    assert "also_recognizers" in r.json()["error"]["message"]


def test_a_camera_takes_the_recognizer_of_its_watchlists_model(
    setup: tuple[Settings, Path, str],
) -> None:
    settings, _, fused = setup
    config = video_engine_config(settings, None, fused)
    assert config.fusion == settings.also_recognizers[0].fusion
    assert str(Engine(config).model_id) == fused
    assert video_engine_config(settings).fusion is None  # no watchlist model: the main one
    with pytest.raises(ModelMismatchError, match="also_recognizers"):
        video_engine_config(settings.model_copy(update={"also_recognizers": ()}), None, fused)
