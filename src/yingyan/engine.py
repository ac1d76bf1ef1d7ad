"""The engine: runs the stages in their fixed order and owns the (lazily loaded) models.

image → detection → alignment (landmarks, chip) → quality → template

Each recognizer's manifest decides its alignment: dlib's ResNet needs dlib's 150x150 chips,
ArcFace-style models (MobileFaceNet included) a similarity warp onto their 112x112 template.
A fusion runs every member's own alignment from the one detection and fuses their unit vectors
into one template. One Engine per process; models load on first use and are reused. Not safe
for concurrent calls from several threads: give each worker its own Engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import numpy.typing as npt

from yingyan.alignment import ARCFACE_112, Aligner, DlibAligner, TemplateAligner
from yingyan.config import EngineConfig
from yingyan.detection import Detector, centre_detection, make_detector
from yingyan.embedding import DlibResNet, Embedder, OnnxDlibResNet, make_templates, normalise
from yingyan.embedding.fusion import DLIB, FusionSpec, load_fusion, member_path
from yingyan.embedding.manifest import RecognizerManifest, built_in_manifest, resolve_manifest
from yingyan.embedding.onnx_recognizer import OnnxRecognizer
from yingyan.embedding.template import tta_views
from yingyan.errors import ModelError
from yingyan.io import load_image
from yingyan.io.image import ImageSource
from yingyan.quality import assess_quality
from yingyan.types import Detection, Face, Landmarks, ModelId, RGBImage, Template


@dataclass(frozen=True, slots=True)
class Recognizer:
    """One recognizer with the alignment its manifest asks for."""

    manifest: RecognizerManifest
    aligner: Aligner
    embedder: Embedder


def _aligner(manifest: RecognizerManifest) -> Aligner:
    if manifest.alignment == "dlib-5-point-150":
        if manifest.input_size != 150:
            raise ModelError(
                f"{manifest.source}: dlib's chips are 150px, not {manifest.input_size}"
            )
        return DlibAligner()
    size = manifest.input_size
    return TemplateAligner(ARCFACE_112 * (size / 112.0), size)


def make_recognizer(
    config: EngineConfig, model: Path | None = None, manifest: str | Path | None = None
) -> Recognizer:
    """dlib's ResNet (model None) or an ONNX recognizer file with its manifest."""
    if model is None:
        m = built_in_manifest(DLIB)
        embedder: Embedder = (
            DlibResNet() if config.backend == "dlib" else OnnxDlibResNet(config.threads)
        )
        return Recognizer(m, _aligner(m), embedder)
    m = resolve_manifest(Path(model), manifest)
    return Recognizer(m, _aligner(m), OnnxRecognizer(m, Path(model), config.threads))


def make_recognizers(config: EngineConfig) -> tuple[list[Recognizer], FusionSpec | None]:
    """The engine's recognizers: one, or a fusion's members in the fusion's order (each member's
    model id checked against the one the fusion was fitted with)."""
    if config.fusion is None:
        return [make_recognizer(config, config.recognizer_model, config.recognizer_manifest)], None
    spec = load_fusion(config.fusion)
    members = []
    for member in spec.members:
        r = make_recognizer(config, member_path(config.fusion, member), member.manifest)
        if str(r.embedder.model_id) != member.model_id:
            raise ModelError(
                f"fusion {config.fusion}: member {member.recognizer} is {r.embedder.model_id}, "
                f"the fusion was fitted with {member.model_id}"
            )
        members.append(r)
    return members, spec


def make_embedder(config: EngineConfig) -> Embedder:
    """The single recognizer's embedder (not for fusions)."""
    return make_recognizer(config, config.recognizer_model, config.recognizer_manifest).embedder


class Engine:
    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()

    @cached_property
    def detector(self) -> Detector:
        return make_detector(self.config)

    @cached_property
    def _recognizers(self) -> tuple[list[Recognizer], FusionSpec | None]:
        return make_recognizers(self.config)

    @property
    def recognizers(self) -> list[Recognizer]:
        return self._recognizers[0]

    @property
    def fusion(self) -> FusionSpec | None:
        return self._recognizers[1]

    @property
    def embedder(self) -> Embedder:
        """The primary recognizer's embedder (the only one unless fused)."""
        return self.recognizers[0].embedder

    @property
    def aligner(self) -> Aligner:
        """The primary recognizer's alignment: a face's landmarks and chip come from it."""
        return self.recognizers[0].aligner

    @property
    def model_id(self) -> ModelId:
        return self.fusion.model_id if self.fusion else self.embedder.model_id

    def describe(self) -> dict[str, str]:
        """Which detector, alignment, model, backend and execution provider are in use."""
        rs = self.recognizers
        return {
            "detector": self.detector.name,
            "alignment": "+".join(r.aligner.name for r in rs),
            "model": str(self.model_id),
            "backend": "+".join(r.embedder.backend for r in rs),
            "provider": "+".join(r.embedder.provider for r in rs),
            "licence": " | ".join(f"{r.manifest.name}: {r.manifest.licence}" for r in rs),
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

    def member_chips(self, image: RGBImage, detection: Detection) -> list[RGBImage]:
        """Each recognizer's own aligned chip of one detection (the primary's first)."""
        return [r.aligner.align(image, detection)[1] for r in self.recognizers]

    def view_vectors(self, chips: list[RGBImage], jitter: int = 0) -> list[npt.NDArray[np.float32]]:
        """Every TTA view of each member's chip embedded: unit rows, one array per member."""
        return [
            normalise(r.embedder.embed(tta_views(chip, flip=True, jitter=jitter)))
            for r, chip in zip(self.recognizers, chips, strict=True)
        ]

    def _templates(self, per_member: list[list[RGBImage]]) -> list[Template]:
        flip, jitter = self.config.flip, self.config.jitter
        made = [
            make_templates(r.embedder, chips, flip=flip, jitter=jitter)
            for r, chips in zip(self.recognizers, per_member, strict=True)
        ]
        if self.fusion is None:
            return made[0]
        fused = self.fusion.fuse([np.stack([t.vector for t in ts]) for ts in made])
        recipe = made[0][0].recipe
        return [Template(v, self.fusion.model_id, recipe) for v in fused]

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
        primary = self.aligner
        aligned: list[list[tuple[Landmarks, RGBImage]]] = [
            [primary.align(im, d) for d in ds] for im, ds in zip(images, dets, strict=True)
        ]
        chips = [chip for per_image in aligned for _, chip in per_image]
        templates: list[Template | None] = [None] * len(chips)
        if embed and chips:
            per_member = [chips] + [
                [r.aligner.align(im, d)[1] for im, ds in zip(images, dets, strict=True) for d in ds]
                for r in self.recognizers[1:]
            ]
            templates = list(self._templates(per_member))
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
