"""Embedding: aligned chips → templates (L2-normalised vectors stamped with their model).

Backends: dlib's ResNet on onnxruntime (default) or on dlib itself (reference), and any
ArcFace-style ONNX model from a configured path."""

from yingyan.embedding.dlib_resnet import DlibResNet
from yingyan.embedding.onnx_arcface import OnnxArcFace
from yingyan.embedding.onnx_resnet import OnnxDlibResNet
from yingyan.embedding.template import (
    MAX_JITTER,
    Embedder,
    make_templates,
    normalise,
    recipe_name,
    tta_views,
)

__all__ = [
    "MAX_JITTER",
    "DlibResNet",
    "Embedder",
    "OnnxArcFace",
    "OnnxDlibResNet",
    "make_templates",
    "normalise",
    "recipe_name",
    "tta_views",
]
