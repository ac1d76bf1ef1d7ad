"""Yingyan (鹰眼): an open, self-hostable, accountable face recognition platform.

The small public API::

    from yingyan import Engine, compare, load_image
    engine = Engine()
    img = load_image("photo.jpg")
    faces = engine.faces(img)          # detection, landmarks, quality, template
    compare(t1, t2).score              # cosine similarity of two templates
"""

from yingyan.comparison import Decision, Threshold, compare, decide, default_threshold
from yingyan.config import EngineConfig, ImageLimits
from yingyan.engine import Engine
from yingyan.errors import YingyanError
from yingyan.io import load_image
from yingyan.types import Box, Detection, Face, Landmarks, ModelId, Quality, Template

__version__ = "0.1.0"

__all__ = [
    "Box",
    "Decision",
    "Detection",
    "Engine",
    "EngineConfig",
    "Face",
    "ImageLimits",
    "Landmarks",
    "ModelId",
    "Quality",
    "Template",
    "Threshold",
    "YingyanError",
    "compare",
    "decide",
    "default_threshold",
    "load_image",
]
