"""The gallery service of a configured deployment: one factory for every process that opens it
(service workers, camera workers, stations), so they all see the same store, index and keys."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from yingyan.config import EngineConfig
from yingyan.engine import Engine
from yingyan.errors import ModelMismatchError
from yingyan.gallery.index import IndexSpec
from yingyan.gallery.service import GalleryService
from yingyan.privacy import DEFAULT_KEY_FILE, ENV_KEY, TemplateCipher, key_source, open_cipher
from yingyan.privacy.files import private_dir
from yingyan.settings import Settings
from yingyan.store import open_database


def service_cipher(settings: Settings) -> TemplateCipher:
    """Templates are encrypted by default: without a configured key, a keyring is created in
    the data folder (production should keep it elsewhere: YINGYAN_KEY_FILE)."""
    environ = {ENV_KEY: settings.template_key} if settings.template_key else {}
    default = settings.data_dir / DEFAULT_KEY_FILE
    return open_cipher(key_source(settings.key_file, environ, default))


def open_gallery_service(settings: Settings) -> GalleryService:
    """Database (migrated), keyring and index of `settings`; the caller closes the service
    and its database (`service.close(); service.db.close()`)."""
    private_dir(settings.data_dir)  # database, keyring, index files, initial admin key
    db = open_database(settings.database_url, settings.data_dir)
    cipher = service_cipher(settings)
    milvus = None
    if settings.index == "milvus":
        milvus = settings.milvus_uri or str(settings.data_dir / "milvus.db")
    return GalleryService(
        db, settings.index_dir, IndexSpec(kind=settings.index), milvus, cipher=cipher
    )


def engine_config_for(settings: Settings, model: str) -> EngineConfig:
    """The deployment's engine config (main or `also_recognizers`) whose templates are of
    `model`; ModelMismatchError naming the setting when it has none."""
    for config in settings.engine_configs():
        if str(Engine(config).model_id) == model:
            return config
    raise ModelMismatchError(
        f"no recognizer configured for model {model}: set it as the recognizer or add it to "
        "also_recognizers"
    )


class EnginesByModel:
    """The engine that makes probes of a given model, built on first use from the configs a
    deployment knows (its current recognizer and any migration target): a search must probe a
    gallery with the gallery's current model, which a migration changes at run time."""

    def __init__(self, configs: Sequence[EngineConfig]) -> None:
        if not configs:
            raise ValueError("EnginesByModel needs at least one engine config")
        self._configs = list(configs[1:])
        self.main = Engine(configs[0])  # the first config's: what new galleries are made of
        self._engines: dict[str, Engine] = {str(self.main.model_id): self.main}
        self._lock = threading.Lock()

    def all(self) -> list[Engine]:
        """Every configured engine, built now (the main one first)."""
        with self._lock:
            while self._configs:
                engine = Engine(self._configs.pop(0))
                self._engines.setdefault(str(engine.model_id), engine)
            return list(self._engines.values())

    def add(self, config: EngineConfig) -> Engine:
        """Make `config`'s engine known (e.g. a migration's target); returns it."""
        engine = Engine(config)
        with self._lock:
            self._engines.setdefault(str(engine.model_id), engine)
            return self._engines[str(engine.model_id)]

    def engine_for(self, model: str) -> Engine:
        """The engine whose templates are of `model`; ModelMismatchError if none is configured."""
        with self._lock:
            if model in self._engines:
                return self._engines[model]
            while self._configs:
                engine = Engine(self._configs.pop(0))
                self._engines.setdefault(str(engine.model_id), engine)
                if str(engine.model_id) == model:
                    return engine
        raise ModelMismatchError(
            f"no recognizer configured for model {model}: set it as the recognizer or add it "
            "to also_recognizers"
        )
