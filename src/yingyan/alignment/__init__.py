"""Landmarks and alignment: a detection → five points → an aligned chip for the embedder.

Each recognizer declares its alignment: dlib's ResNet needs dlib's own 150x150 face chips,
ArcFace-style models a similarity warp onto their 112x112 landmark template.
"""

from typing import Protocol

from yingyan.alignment.dlib_chip import CHIP_SIZE, DlibAligner
from yingyan.alignment.similarity import ARCFACE_112, TemplateAligner, similarity_transform
from yingyan.types import Detection, Landmarks, RGBImage


class Aligner(Protocol):
    name: str
    size: int

    def align(self, image: RGBImage, detection: Detection) -> tuple[Landmarks, RGBImage]: ...


__all__ = [
    "ARCFACE_112",
    "CHIP_SIZE",
    "Aligner",
    "DlibAligner",
    "TemplateAligner",
    "similarity_transform",
]
