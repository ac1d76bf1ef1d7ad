"""The engine: runs the stages in their fixed order and owns the (lazily loaded) models.

image → detection → alignment (landmarks, chip) → quality → template

The recognizer decides the alignment: dlib's ResNet needs dlib's 150x150 chips, ArcFace-style
models a similarity warp onto their 112x112 template. One Engine per process; models load on
first use and are reused. Not safe for concurrent calls from several threads: give each worker
its own Engine.
"""

from __future__ import annotations

from functools import cached_property

from yingyan.alignment import ARCFACE_112, Aligner, DlibAligner, TemplateAligner
from yingyan.config import EngineConfig
from yingyan.detection import Detector, centre_detection, make_detector
from yingyan.embedding import DlibResNet, Embedder, OnnxArcFace, OnnxDlibResNet, make_templates
from yingyan.io import load_image
from yingyan.io.image import ImageSource
from yingyan.quality import assess_quality
from yingyan.types import Detection, Face, ModelId, RGBImage, Template


def make_embedder(config: EngineConfig) -> Embedder:
    if config.recognizer_model is not None:
        return OnnxArcFace(config.recognizer_model, config.threads)
    if config.backend == "dlib":
        return DlibResNet()
    return OnnxDlibResNet(config.threads)


class Engine:
    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()

    @cached_property
    def detector(self) -> Detector:
        return make_detector(self.config)

    @cached_property
    def embedder(self) -> Embedder:
        return make_embedder(self.config)

    @cached_property
    def aligner(self) -> Aligner:
        if isinstance(self.embedder, OnnxArcFace):
            size = self.embedder.input_size
            return TemplateAligner(ARCFACE_112 * (size / 112.0), size)
        return DlibAligner()

    @property
    def model_id(self) -> ModelId:
        return self.embedder.model_id

    def describe(self) -> dict[str, str]:
        """Which detector, alignment, model, backend and execution provider are in use."""
        return {
            "detector": self.detector.name,
            "alignment": self.aligner.name,
            "model": str(self.model_id),
            "backend": self.embedder.backend,
            "provider": self.embedder.provider,
        }

    def load(self, source: ImageSource) -> RGBImage:
        return load_image(source, self.config.limits)

    def detect(self, image: RGBImage) -> list[Detection]:
        """Detections, best first; with `centre_fallback`, one centred box when none is found."""
        found = self.detector.detect(image)
        if not found and self.config.centre_fallback:
            found = [centre_detection(image.shape[1], image.shape[0])]
        return found

    def faces(
        self, image: RGBImage, detections: list[Detection] | None = None, *, embed: bool = True
    ) -> list[Face]:
        """Every detected face aligned, quality-assessed and (by default) embedded.

        Pass `detections` to skip detection (e.g. to embed only a chosen face)."""
        return self.faces_many([image], None if detections is None else [detections], embed=embed)[
            0
        ]

    def faces_many(
        self,
        images: list[RGBImage],
        detections: list[list[Detection]] | None = None,
        *,
        embed: bool = True,
    ) -> list[list[Face]]:
        """`faces` for several images, with the chips of all of them embedded in one batch:
        the recognizer runs markedly faster per face on a batch than one face at a time."""
        dets = [self.detect(im) for im in images] if detections is None else detections
        aligned = [
            [self.aligner.align(im, d) for d in ds] for im, ds in zip(images, dets, strict=True)
        ]
        chips = [chip for per_image in aligned for _, chip in per_image]
        templates: list[Template | None] = [None] * len(chips)
        if embed and chips:
            templates = list(
                make_templates(
                    self.embedder, chips, flip=self.config.flip, jitter=self.config.jitter
                )
            )
        out: list[list[Face]] = []
        k = 0
        for ds, per_image in zip(dets, aligned, strict=True):
            faces = []
            for d, (lm, chip) in zip(ds, per_image, strict=True):
                faces.append(
                    Face(
                        detection=d,
                        landmarks=lm,
                        quality=assess_quality(chip, lm),
                        template=templates[k],
                        chip=chip if self.config.keep_chips else None,
                    )
                )
                k += 1
            out.append(faces)
        return out

    def templates(self, image: RGBImage) -> list[Template]:
        return [f.template for f in self.faces(image) if f.template is not None]
