"""A station profile: one TOML file saying what a face station is and how it decides.

It names the cameras (`rgb+nir`, `rgb+rgb` or `rgb` alone), the stereo calibration (OpenCV's
format, `station.calibration.load_calibration`), the working range, the PAD settings (a fusion
policy file or the built-in default and its multi-frame rule, the MiniFASNet files of the
texture cue and its threshold), the quality gate on camera 1's face, and what a face is
verified against 1:1: an enrolled subject of one gallery, an ID-document photo sent with the
attempt, or either. Nothing of an attempt is stored unless `store = true`. Relative paths are
read from the profile's own folder; every problem is a ConfigError naming the file and key.

    name = "branch-12"                  # optional: the file's stem
    cameras = "rgb+nir"
    calibration = "branch-12.yaml"
    working_range = [0.3, 0.8]          # optional: the calibration's
    max_frames = 5                      # frame pairs one attempt may send

    [detection]
    yunet_model = "face_detection_yunet_2023mar.onnx"   # optional: the engine's or installed

    [quality]
    min_score = 0.4                     # the engine's quality score of camera 1's face
    min_inter_eye_px = 30

    [pad]
    policy = "pad-policy.json"          # optional: rendered_policy() (rgb+nir) / default_policy()
    window = 3                          # optional: the frames decided together (the policy's)...
    min_frames = 2                      # ...and how many must respond; every cue, the texture
                                        # cue included, is judged per frame, then fused over them
    minifasnet = "models/minifasnet"    # a folder, a list of files, or false; optional: installed
    texture_threshold = 0.5             # a frame's P(live) below it fails the texture cue

    [verify]
    gallery = "customers"               # verify against an enrolled subject of this gallery
    id_photo = true                     # accept an ID photo in the request instead
    threshold = "strict"                # a named threshold of the model (a gallery's own wins)
    store = false                       # true: an accepted face joins the subject's templates
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from yingyan.errors import ConfigError, ModelError
from yingyan.liveness.texture import TextureConfig
from yingyan.station.calibration import StereoCalibration, load_calibration

Cameras = Literal["rgb+nir", "rgb+rgb", "rgb"]
NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_FRAMES: Final = 10  # an attempt is a few consecutive frames, not a video


class _Detection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    yunet_model: Path | None = None


class _Quality(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    min_score: float = Field(default=0.4, ge=0.0, le=1.0)
    min_inter_eye_px: float = Field(default=30.0, ge=0.0)


class _Pad(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    policy: Path | None = None
    window: int | None = Field(default=None, ge=1, le=MAX_FRAMES)
    min_frames: int | None = Field(default=None, ge=1, le=MAX_FRAMES)
    minifasnet: Path | list[Path] | bool | None = None
    texture_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)


class _Verify(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    gallery: str | None = Field(default=None, min_length=1, max_length=200)
    id_photo: bool = False
    threshold: str = Field(default="strict", min_length=1)
    store: bool = False

    @model_validator(mode="after")
    def _a_target(self) -> _Verify:
        if self.gallery is None and not self.id_photo:
            raise ValueError("say what faces are verified against: gallery, id_photo or both")
        if self.store and self.gallery is None:
            raise ValueError("store = true adds accepted faces to a subject: it needs a gallery")
        return self


class _Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = None
    cameras: Cameras
    calibration: Path | None = None
    working_range: tuple[float, float] | None = None
    max_frames: int = Field(default=5, ge=1, le=MAX_FRAMES)
    detection: _Detection = _Detection()
    quality: _Quality = _Quality()
    pad: _Pad = _Pad()
    verify: _Verify

    @model_validator(mode="after")
    def _consistent(self) -> _Profile:
        if self.name is not None and not NAME.match(self.name):
            raise ValueError("name: letters, digits, '_', '-', '.' (at most 64), not a path")
        if self.cameras != "rgb" and self.calibration is None:
            raise ValueError(f"a {self.cameras} station needs its stereo calibration file")
        if self.cameras == "rgb" and self.calibration is not None:
            raise ValueError("an rgb-only station has no stereo calibration; remove it")
        if self.working_range is not None and not 0 < self.working_range[0] < self.working_range[1]:
            raise ValueError("working_range must be [near, far] metres with 0 < near < far")
        pad = self.pad
        if pad.window is not None and pad.min_frames is not None and pad.min_frames > pad.window:
            raise ValueError("pad.min_frames must not exceed pad.window")
        if self.pad.minifasnet is False and self.cameras == "rgb":
            raise ValueError("an rgb-only station decides on the texture cue alone: it needs it")
        return self


@dataclass(frozen=True, slots=True, eq=False)
class StationProfile:
    """A loaded, validated profile. `calibration` is None for an rgb-only station; `texture`
    None when the profile turned the texture cue off (`pad.minifasnet = false`)."""

    name: str
    path: Path
    cameras: Cameras
    calibration: StereoCalibration | None
    calibration_path: Path | None
    max_frames: int
    yunet_model: Path | None
    min_quality: float
    min_inter_eye_px: float
    policy_path: Path | None
    pad_window: int | None  # overrides the policy's multi-frame rule when set
    pad_min_frames: int | None
    texture: TextureConfig | None
    gallery: str | None
    id_photo: bool
    threshold: str
    store: bool

    @property
    def stereo(self) -> bool:
        return self.cameras != "rgb"

    @property
    def working_range(self) -> tuple[float, float] | None:
        return self.calibration.working_range if self.calibration else None

    def describe(self) -> dict[str, Any]:
        """What was found, for `yingyan station check` and the logs (paths, no secrets)."""
        c = self.calibration
        return {
            "name": self.name,
            "profile": str(self.path),
            "cameras": self.cameras,
            "calibration": None
            if c is None
            else {
                "file": str(self.calibration_path),
                "image_size": list(c.image_size),
                "baseline_m": round(c.baseline, 4),
                "focal_px": round(float(c.k1[0, 0]), 1),
            },
            "working_range_m": list(self.working_range) if self.working_range else None,
            "max_frames": self.max_frames,
            "detector": str(self.yunet_model) if self.yunet_model else "the engine's YuNet",
            "quality": {"min_score": self.min_quality, "min_inter_eye_px": self.min_inter_eye_px},
            "pad": {
                "policy": str(self.policy_path) if self.policy_path else "shipped",
                "window": self.pad_window,
                "min_frames": self.pad_min_frames,
                "texture": None
                if self.texture is None
                else {
                    "models": [str(p) for p in self.texture.models],
                    "threshold": self.texture.threshold,
                },
            },
            "verify": {
                "gallery": self.gallery,
                "id_photo": self.id_photo,
                "threshold": self.threshold,
                "store": self.store,
            },
        }


def load_profile(path: str | Path, model_dir: Path | None = None) -> StationProfile:
    """Read and check a profile; `model_dir` is where `yingyan models` installed MiniFASNet
    (used when the profile names no model files)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"station profile not found: {p}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    try:
        raw = _Profile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{p}: {_problems(exc)}") from None
    name = raw.name if raw.name is not None else p.stem
    if not NAME.match(name):
        raise ConfigError(f'{p}: the file\'s stem is not a station name; set name = "..."')
    base = p.parent
    calibration, calibration_path = None, None
    if raw.calibration is not None:
        calibration_path = _resolve(base, raw.calibration)
        calibration = load_calibration(calibration_path)
        if raw.working_range is not None:
            calibration = replace(calibration, working_range=raw.working_range)
    yunet = _resolve(base, raw.detection.yunet_model) if raw.detection.yunet_model else None
    if yunet is not None and not yunet.is_file():
        raise ConfigError(f"{p}: detection.yunet_model: file not found: {yunet}")
    policy = _resolve(base, raw.pad.policy) if raw.pad.policy else None
    if policy is not None and not policy.is_file():
        raise ConfigError(f"{p}: pad.policy: file not found: {policy}")
    return StationProfile(
        name=name,
        path=p.resolve(),
        cameras=raw.cameras,
        calibration=calibration,
        calibration_path=calibration_path,
        max_frames=raw.max_frames,
        yunet_model=yunet,
        min_quality=raw.quality.min_score,
        min_inter_eye_px=raw.quality.min_inter_eye_px,
        policy_path=policy,
        pad_window=raw.pad.window,
        pad_min_frames=raw.pad.min_frames,
        texture=_texture(p, base, raw.pad, model_dir),
        gallery=raw.verify.gallery,
        id_photo=raw.verify.id_photo,
        threshold=raw.verify.threshold,
        store=raw.verify.store,
    )


def profile_path(where: Path, station: str) -> Path:
    """The profile of `station` under the `stations` setting: the file itself (its station
    must be that one) or `<folder>/<station>.toml`. ConfigError if there is none."""
    if not NAME.match(station):
        raise ConfigError(f"{station!r} is not a station name")
    if where.is_dir():
        return where / f"{station}.toml"
    return where


def _texture(p: Path, base: Path, pad: _Pad, model_dir: Path | None) -> TextureConfig | None:
    if pad.minifasnet is False:
        return None
    options = {"threshold": pad.texture_threshold}
    given = pad.minifasnet
    if given is None or given is True:
        from yingyan.modelstore.store import installed_files, model_folder

        try:
            files = installed_files("minifasnet", model_dir)
        except ModelError as e:
            raise ConfigError(f"{p}: pad.minifasnet: {e.message}") from None
        if files is None:
            raise ConfigError(
                f"{p}: pad.minifasnet: no MiniFASNet models are installed in "
                f"{model_folder(model_dir)}: name a folder or files, `yingyan models fetch "
                "minifasnet`, or set minifasnet = false to run without the texture cue"
            )
        models = tuple(files)
    elif isinstance(given, list):
        models = tuple(_resolve(base, f) for f in given)
    else:
        folder = _resolve(base, given)
        if not folder.is_dir():
            models = (folder,)
        else:
            models = tuple(sorted(folder.glob("*.onnx")))
            if not models:
                raise ConfigError(f"{p}: pad.minifasnet: no .onnx model in {folder}")
    try:
        return TextureConfig(models, **options)  # type: ignore[arg-type]
    except ConfigError as e:
        raise ConfigError(f"{p}: pad: {e.message}") from None


def _resolve(base: Path, path: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else base / path


def _problems(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)
