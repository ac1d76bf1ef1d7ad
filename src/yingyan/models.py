"""Model files and their provenance.

dlib's weights come from the `face-recognition-models` PyPI package (never downloaded at run
time). Each file is identified by a sha256 prefix, recorded on every template so galleries never
mix weights. The 68-point landmark model in that package is deliberately never used: its
training data (iBUG 300-W) is licensed for non-commercial use only.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from yingyan.errors import ModelError
from yingyan.types import ModelId

_DLIB_FILES = {
    "dlib_resnet_v1": "dlib_face_recognition_resnet_model_v1.dat",
    "dlib_mmod": "mmod_human_face_detector.dat",
    "dlib_5_landmarks": "shape_predictor_5_face_landmarks.dat",
}


@dataclass(frozen=True, slots=True)
class ModelFile:
    name: str
    path: Path

    @property
    def id(self) -> ModelId:
        return ModelId(self.name, file_sha256(self.path)[:12])


@cache
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dlib_model(name: str) -> ModelFile:
    """Locate one of dlib's model files in the installed face_recognition_models package."""
    if name not in _DLIB_FILES:
        raise ModelError(f"unknown dlib model {name!r}")
    # Found, not imported: the package's __init__ imports pkg_resources (setuptools), which a
    # Python 3.12+ venv does not have.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the face-recognition-models package is not installed (pip install yingyan)"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    path = package / "models" / _DLIB_FILES[name]
    if not path.is_file():
        raise ModelError(f"model file missing from face_recognition_models: {path}")
    return ModelFile(name, path)


def configured_model(name: str, path: Path | str) -> ModelFile:
    """A model file the user supplied (e.g. YuNet ONNX)."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{name} model file not found: {p}")
    return ModelFile(name, p)
