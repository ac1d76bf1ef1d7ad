"""Engine configuration: validated once, passed down explicitly (no globals, no env reads here)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from yingyan.errors import ConfigError

DetectorName = Literal["hog", "cnn", "yunet", "hog+cnn"]
DETECTORS: tuple[str, ...] = ("hog", "cnn", "yunet", "hog+cnn")
BackendName = Literal["onnx", "dlib"]
BACKENDS: tuple[str, ...] = ("onnx", "dlib")
MAX_JITTER = 8
MIN_WORK_PIXELS = 1_000_000  # a 250x250 LFW image upsampled once, as a CNN canvas
MAX_WORK_PIXELS = 32_000_000  # default of ImageLimits.max_work_pixels


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """Refuse inputs before decoding them, so a crafted file cannot exhaust memory."""

    max_bytes: int = 40 * 1024 * 1024
    max_pixels: int = 40_000_000  # 40 MP: bigger than any phone photo, far below a bomb
    min_side: int = 16
    max_aspect: float = 20.0
    # The largest array a detector may build from an image: the upsampled image (HOG, YuNet)
    # or the MMOD CNN's tiled pyramid canvas (~3.6x the upsampled image; ~43 bytes of
    # onnxruntime memory per canvas pixel, so 32 MP is ~1.4 GB). The input limit alone is not
    # enough: one upsampling quadruples the pixels, so a blank 40 MP PNG would make a 576 MP
    # canvas. Detectors upsample less (the MMOD CNN also shrinks) to stay within it; full HD
    # keeps dlib's one upsampling.
    max_work_pixels: int = MAX_WORK_PIXELS

    def __post_init__(self) -> None:
        if self.max_work_pixels < MIN_WORK_PIXELS:
            raise ConfigError(f"max_work_pixels must be at least {MIN_WORK_PIXELS}")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    # HOG, and dlib's MMOD CNN only on images where HOG finds no face: HOG's speed on most
    # images, and no group-dependent failures to acquire (HOG alone missed 6.4% of Black men's
    # UTKFace crops against 1.6% of White men's; the cascade misses none; see the README).
    detector: DetectorName = "hog+cnn"
    # Upsampling passes for small faces; None = the detector's default. HOG/CNN: 1 (faces down
    # to ~40 px instead of ~80). YuNet: 0 (it finds ~10 px faces, and upscaling lowers its
    # scores for large ones).
    upsample: int | None = None
    # None with detector "yunet": the copy installed in model_dir (`yingyan models fetch yunet`).
    yunet_model: Path | None = None
    yunet_score_threshold: float = 0.8  # below ~0.7 it fires on fingers in the test photos
    min_detection_score: float = 0.0  # HOG/CNN raw score floor (dlib's default)
    # dlib's models run on onnxruntime (converted from dlib's files) or, for reference, on dlib.
    backend: BackendName = "onnx"
    threads: int | None = None  # onnxruntime intra-op threads; None = every core
    # An ONNX recognizer instead of dlib's ResNet, described by a manifest: a file, a built-in
    # name ("arcface", "mobilefacenet"), or None to find one beside the model or by its sha256.
    # recognizer_model may also name a supported model installed in model_dir ("mobilefacenet").
    recognizer_model: Path | None = None
    recognizer_manifest: str | Path | None = None
    # A fitted fusion of several recognizers (`yingyan calibrate fusion`): one template holds
    # each model's weighted embedding, so one inner product gives the fused score.
    fusion: Path | None = None
    flip: bool = True  # average the template of the chip and its mirror image
    jitter: int = 0  # extra shifted/scaled views per chip (test-time augmentation), 0..8
    centre_fallback: bool = False  # assume one centred face when none is found (LFW protocol)
    keep_chips: bool = False
    limits: ImageLimits = ImageLimits()
    # Where `yingyan models fetch/add` installed the optional models; None = the default
    # (models/ in the user data folder). Only read when a model above is not given by path.
    model_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ConfigError(f"unknown detector {self.detector!r}; choose one of {DETECTORS}")
        if self.upsample is not None and not 0 <= self.upsample <= 3:
            raise ConfigError("upsample must be between 0 and 3")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; choose one of {BACKENDS}")
        if not 0 <= self.jitter <= MAX_JITTER:
            raise ConfigError(f"jitter must be between 0 and {MAX_JITTER}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("threads must be >= 1")
        if self.recognizer_model is not None and not Path(self.recognizer_model).is_file():
            self._set("recognizer_model", self._installed_recognizer(str(self.recognizer_model)))
        if self.recognizer_manifest is not None and self.recognizer_model is None:
            raise ConfigError("recognizer_manifest needs recognizer_model (the weights file)")
        if self.fusion is not None and self.recognizer_model is not None:
            raise ConfigError("set either a fusion or one recognizer_model, not both")
        if self.fusion is not None and not Path(self.fusion).is_file():
            raise ConfigError(f"fusion file not found: {self.fusion}")
        if self.detector == "yunet" and self.yunet_model is None:
            self._set("yunet_model", self._installed("yunet"))
        if self.yunet_model is not None and not Path(self.yunet_model).is_file():
            raise ConfigError(f"YuNet model file not found: {self.yunet_model}")

    def _set(self, name: str, value: Path) -> None:
        object.__setattr__(self, name, value)  # frozen: only while validating

    def _installed(
        self, name: str, what: str = "the yunet detector", by: str = "yunet_model"
    ) -> Path:
        """A supported model's file in model_dir, or a ConfigError saying how to get it."""
        from yingyan.modelstore.store import installed_model, model_folder

        path = installed_model(name, self.model_dir)
        if path is None:
            raise ConfigError(
                f"{what} needs a model path ({by}) or the model installed in "
                f"{model_folder(self.model_dir)}: `yingyan models fetch {name}` "
                "(offline: `yingyan models add FILE`)"
            )
        return path

    def _installed_recognizer(self, name: str) -> Path:
        """recognizer_model names a supported recognizer (not a file): its installed copy."""
        from yingyan.modelstore.registry import SUPPORTED

        model = SUPPORTED.get(name)
        if model is None or model.kind != "recognizer":
            raise ConfigError(f"recognizer model file not found: {self.recognizer_model}")
        return self._installed(name, f"recognizer {name!r}", "a file for recognizer_model")

    @property
    def pyramid_upsample(self) -> int:
        if self.upsample is not None:
            return self.upsample
        return 0 if self.detector == "yunet" else 1

    def with_(self, **changes: object) -> EngineConfig:
        return replace(self, **changes)  # type: ignore[arg-type]
