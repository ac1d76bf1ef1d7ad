"""Service settings: read once at start-up from `YINGYAN_*` environment variables and, if
`YINGYAN_SETTINGS_FILE` names one, a TOML file (the environment wins). Nothing else in the
package reads the environment for the service; everything is passed down from here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from yingyan.config import (
    DETECTORS,
    MAX_WORK_PIXELS,
    MIN_WORK_PIXELS,
    EngineConfig,
    ImageLimits,
)
from yingyan.errors import ConfigError

IndexKind = Literal["flat", "flat16", "ivf", "hnsw", "milvus"]


def default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("yingyan"))


class RecognizerChoice(BaseModel):
    """One more recognizer a deployment can make probes for: a fusion file, or an ONNX model
    (with its manifest); `detector` overrides the service's for it (e.g. "yunet")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fusion: Path | None = None
    model: Path | None = None
    manifest: str | None = None
    detector: str | None = None

    @model_validator(mode="after")
    def _one_recognizer(self) -> RecognizerChoice:
        if (self.fusion is None) == (self.model is None):
            raise ValueError("a recognizer is either a fusion file or a model file")
        if self.detector is not None and self.detector not in DETECTORS:
            raise ValueError(f"unknown detector {self.detector!r}; choose one of {DETECTORS}")
        return self


class Settings(BaseSettings):
    """Everything an operator can set, with the embedded defaults: SQLite + FAISS in a folder."""

    model_config = SettingsConfigDict(env_prefix="YINGYAN_", extra="ignore", frozen=True)

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None  # None: SQLite in data_dir
    index: IndexKind = "flat"
    milvus_uri: str | None = None  # index=milvus: a server URI, else Milvus Lite in data_dir
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Inference runs in worker processes so the event loop never waits on a model (dlib's HOG
    # holds the GIL). 0 runs it in one thread of the server process (tests, tiny machines).
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=0, le=64)
    detector: str = EngineConfig().detector
    yunet_model: Path | None = None
    recognizer_model: Path | None = None
    # Where `yingyan models fetch/add` install the optional models (YuNet, MobileFaceNet,
    # MiniFASNet); None = models/ in the user data folder. detector=yunet without yunet_model,
    # or recognizer_model="mobilefacenet", use the copy installed there.
    model_dir: Path | None = None
    recognizer_manifest: str | None = None  # a manifest file or a built-in name ("arcface")
    fusion: Path | None = None  # a fitted fusion file (`yingyan calibrate fusion`)
    # Recognizers besides the one above that probes can be made with: a gallery migrated to one
    # of them (`yingyan gallery migrate`) is searched with it at once, without a restart. New
    # galleries use the one above. (TOML: [[also_recognizers]]; env: a JSON list.)
    also_recognizers: tuple[RecognizerChoice, ...] = ()
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=40_000_000, ge=4096)
    # The largest array a detector builds from an image (upsampled image / CNN canvas).
    max_work_pixels: int = Field(default=MAX_WORK_PIXELS, ge=MIN_WORK_PIXELS)
    max_faces: int = Field(default=20, ge=1, le=1000)  # an image with more faces is refused
    # Backpressure (api/backpressure.py). Inference jobs admitted at once, running or waiting
    # (a verify is two): one more is answered 503 `overloaded` with Retry-After, so the images
    # queued stay under max_queued_jobs × max_upload_bytes. None: 4 per worker, at least 16.
    max_queued_jobs: int | None = Field(default=None, ge=1, le=100_000)
    # Connections `yingyan serve` serves at once (uvicorn's limit_concurrency; past it uvicorn
    # answers 503 itself): the bodies being read stay under max_connections × max_upload_bytes.
    # None: no limit.
    max_connections: int | None = Field(default=64, ge=1)
    # Requests per API key by the key's role, in the `limits` notation ("20/second",
    # "20/second; 600/minute"; "" for none): over it, 429 `rate_limited` with Retry-After.
    # A role not given: 50/second, admin none (an incident must not lock the administrator
    # out). (TOML: a [rate_limits] table; env: a JSON object.)
    rate_limits: dict[str, str] = Field(default_factory=dict, validate_default=True)

    @field_validator("rate_limits")
    @classmethod
    def _rate_limit_per_role(cls, value: dict[str, str]) -> dict[str, str]:
        from limits import parse_many

        from yingyan.access.roles import ROLE_NAMES

        for role, text in value.items():
            if role not in ROLE_NAMES:
                raise ValueError(f"unknown role {role!r}; the roles are {', '.join(ROLE_NAMES)}")
            if text.strip():
                parse_many(text)  # ValueError naming the malformed limit
        defaults = {role: "" if role == "admin" else "50/second" for role in ROLE_NAMES}
        return defaults | value

    key_file: Path | None = None  # template encryption keyring; default data_dir/template-keys
    template_key: str | None = None  # or the keyring itself (JSON or one base64 key)
    # /docs, /redoc and /openapi.json need a valid key (any role) unless this is set: the schema
    # maps every route and field, which an anonymous caller need not learn.
    public_docs: bool = False
    log_level: str = "INFO"
    log_json: bool = True
    # `yingyan serve` runs one camera worker per enabled camera of each open watch session
    # (off when `yingyan watch` or another host runs them: two runtimes would watch twice).
    watch_cameras: bool = True
    # Alert events (raised, updated, reviewed) POSTed to this URL, signed with HMAC-SHA256
    # under the secret in `webhook_secret_file` (at least 16 bytes; see watch/delivery.py).
    webhook_url: str | None = None
    webhook_secret_file: Path | None = None
    # Face stations (issue 12): one station profile (TOML) or a folder of them, `<name>.toml`
    # each, served at /api/v1/stations/{name}/attempts (see station/profile.py).
    stations: Path | None = None
    settings_file: Path | None = None

    @field_validator("stations")
    @classmethod
    def _stations_exist(cls, value: Path | None) -> Path | None:
        if value is not None and not value.exists():
            raise ValueError(f"no station profile or folder at {value}")
        return value

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, value: str) -> str:
        if value not in DETECTORS:
            raise ValueError(f"unknown detector {value!r}; choose one of {DETECTORS}")
        return value

    @model_validator(mode="after")
    def _webhook_needs_a_secret(self) -> Settings:
        if self.webhook_url is not None and self.webhook_secret_file is None:
            raise ValueError("webhook_url needs webhook_secret_file (the signing secret)")
        return self

    @model_validator(mode="after")
    def _recognizers_exist(self) -> Settings:
        """Model and fusion paths are checked now, so a typo is a settings error at start-up,
        not a failure inside the running service."""
        try:
            self.engine_configs()
        except ConfigError as error:
            raise ValueError(error.message) from None
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        path = os.environ.get("YINGYAN_SETTINGS_FILE")
        if path:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=Path(path)),)
        return sources

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    def engine_config(self) -> EngineConfig:
        limits = ImageLimits(
            max_bytes=self.max_upload_bytes,
            max_pixels=self.max_image_pixels,
            max_work_pixels=self.max_work_pixels,
        )
        return EngineConfig(
            detector=self.detector,  # type: ignore[arg-type]  # checked by _known_detector
            yunet_model=self.yunet_model,
            recognizer_model=self.recognizer_model,
            recognizer_manifest=self.recognizer_manifest,
            fusion=self.fusion,
            model_dir=self.model_dir,
            # One ORT thread per worker process when the workers are the parallelism.
            threads=1 if self.workers > 0 else None,
            limits=limits,
        )

    def engine_configs(self) -> list[EngineConfig]:
        """The main engine's config, then one per `also_recognizers` entry (same limits and
        detector unless the entry names one): every model this deployment can probe with."""
        base = self.engine_config()
        configs = [base]
        for choice in self.also_recognizers:
            configs.append(
                base.with_(
                    recognizer_model=choice.model,
                    recognizer_manifest=choice.manifest,
                    fusion=choice.fusion,
                    **({"detector": choice.detector} if choice.detector else {}),
                )
            )
        return configs


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (and file), with `overrides` on top; invalid values are a
    ConfigError naming each, not a traceback."""
    from yingyan.extras import check_settings

    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            ": ".join(filter(None, (".".join(str(p) for p in e["loc"]), e["msg"])))
            for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    check_settings(settings)  # the extras its database and index need, named if missing
    return settings
