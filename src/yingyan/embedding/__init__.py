"""Embedding: aligned chips → templates (L2-normalised vectors stamped with their model).

Backends: dlib's ResNet on onnxruntime (default) or on dlib itself (reference), and any ONNX
recognizer from a configured path, described by a manifest (`manifest.py`); several of them
fused into one template (`fusion.py`)."""

from yingyan.embedding.dlib_resnet import DlibResNet
from yingyan.embedding.onnx_recognizer import OnnxRecognizer
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
    "OnnxDlibResNet",
    "OnnxRecognizer",
    "make_templates",
    "normalise",
    "recipe_name",
    "tta_views",
]
