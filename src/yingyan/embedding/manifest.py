"""Recognizer manifests: what a face recognizer needs is data, not code paths.

A manifest (TOML) states the input size, colour order, normalisation, layout, batch handling,
alignment template, output dimension, the model's name and pinned sha256, its licence and what
it was trained on; for pinned weights also the shipped thresholds (`[[threshold]]`) and the
impostor tail the CompreFace similarity is read through (`[tail]`). Nothing is sniffed from the
graph: the graph is only checked against the manifest, so a wrong manifest fails loudly at load
instead of giving quietly wrong templates.

Where a manifest comes from, for a recognizer file at `path` (first match wins):
1. the one configured (`recognizer_manifest`: a file, or a built-in name such as "arcface");
2. a file beside the model: `<stem>.toml` or `<name>.toml` (e.g. `MobileFaceNet.toml`);
3. a built-in manifest whose pinned sha256 is the file's (MobileFaceNet).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast

from yingyan.comparison.similarity import Tail, parse_tail, register_tail
from yingyan.comparison.thresholds import ThresholdSet, parse_thresholds
from yingyan.errors import ConfigError, ModelError
from yingyan.models import file_sha256

Colour = Literal["RGB", "BGR"]
Layout = Literal["NCHW", "NHWC"]
Batch = Literal["dynamic", "fixed-1"]
AlignmentName = Literal["arcface-112", "dlib-5-point-150"]
Format = Literal["onnx", "dlib"]

BUILT_IN = ("dlib_resnet_v1", "arcface", "mobilefacenet")
_SECTIONS: dict[str, set[str]] = {
    "model": {"name", "format", "file", "sha256", "licence", "training_data", "notes"},
    "input": {"size", "colour", "layout", "dtype", "scale", "mean", "std", "batch"},
    "alignment": {"template"},
    "output": {"dimension"},
}
_THRESHOLDS = "threshold"  # [[threshold]]: named operating points measured for these weights
_TAIL = "tail"  # [tail]: the impostor tail the CompreFace similarity is read through
_CHOICES: dict[str, tuple[str, ...]] = {
    "format": ("onnx", "dlib"),
    "colour": ("RGB", "BGR"),
    "layout": ("NCHW", "NHWC"),
    "dtype": ("float32", "uint8"),
    "batch": ("dynamic", "fixed-1"),
    "template": ("arcface-112", "dlib-5-point-150"),
}


@dataclass(frozen=True, slots=True)
class RecognizerManifest:
    """One recognizer described by data. `sha256` None = a family (any file of that recipe)."""

    name: str
    format: Format
    input_size: int
    colour: Colour
    layout: Layout
    dtype: Literal["float32", "uint8"]
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    batch: Batch
    alignment: AlignmentName
    dimension: int
    licence: str
    training_data: str
    file: str | None = None
    sha256: str | None = None
    notes: str = ""
    source: str = "built-in"  # where the manifest was read from
    thresholds: ThresholdSet | None = None  # shipped operating points (pinned weights only)
    tail: Tail | None = None  # measured impostor tail (pinned weights only)

    def model_name(self, model_path: Path) -> str:
        """The name templates carry: a family names the file too, so weights never mix."""
        return self.name if self.sha256 else f"{self.name}:{model_path.stem}"

    def check_file(self, model_path: Path) -> str:
        """The file's sha256, refused if the manifest pins another."""
        digest = file_sha256(model_path)
        if self.sha256 and digest != self.sha256:
            raise ModelError(
                f"{model_path}: sha256 {digest[:12]}… is not the {self.name} weights its manifest "
                f"({self.source}) pins ({self.sha256[:12]}…)"
            )
        return digest

    def card(self) -> dict[str, str]:
        """What a model card needs, for `describe()` and the README."""
        return {
            "name": self.name,
            "licence": self.licence,
            "training_data": self.training_data,
            "manifest": self.source,
        }


def _fail(source: str, message: str) -> ModelError:
    return ModelError(f"recognizer manifest {source}: {message}")


def _section(doc: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    part = doc.get(name)
    if not isinstance(part, dict):
        raise _fail(source, f"missing section [{name}]")
    unknown = set(part) - _SECTIONS[name]
    if unknown:
        raise _fail(source, f"unknown key(s) in [{name}]: {', '.join(sorted(unknown))}")
    return part


def _get(part: dict[str, Any], key: str, kind: type, source: str, default: Any = None) -> Any:
    value = part.get(key, default)
    if value is None:
        raise _fail(source, f"missing {key!r}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _fail(source, f"{key!r} must be a {kind.__name__}, not {value!r}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise _fail(source, f"{key!r} must be one of {_CHOICES[key]}, not {value!r}")
    return value


def _triple(part: dict[str, Any], key: str, default: float, source: str) -> tuple[float, ...]:
    value = part.get(key, [default] * 3)
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise _fail(source, f"{key!r} must be three numbers (one per channel), not {value!r}")
    return tuple(float(v) for v in value)


def parse_manifest(doc: dict[str, Any], source: str) -> RecognizerManifest:
    """A validated manifest from a parsed TOML document; every problem is named."""
    unknown = set(doc) - set(_SECTIONS) - {_THRESHOLDS, _TAIL}
    if unknown:
        raise _fail(source, f"unknown section(s): {', '.join(sorted(unknown))}")
    model, inp = _section(doc, "model", source), _section(doc, "input", source)
    align, out = _section(doc, "alignment", source), _section(doc, "output", source)
    sha = model.get("sha256")
    if sha is not None and (
        not isinstance(sha, str) or len(sha) != 64 or set(sha) - set("0123456789abcdef")
    ):
        raise _fail(source, "'sha256' must be 64 lowercase hex digits")
    file = model.get("file")
    if file is not None and not isinstance(file, str):
        raise _fail(source, "'file' must be a string")
    size = _get(inp, "size", int, source)
    dim = _get(out, "dimension", int, source)
    if not 16 <= size <= 1024 or not 2 <= dim <= 8192:
        raise _fail(source, "input size must be 16..1024 and output dimension 2..8192")
    std = _triple(inp, "std", 1.0, source)
    scale = _get(inp, "scale", float, source, 1.0)
    if min(std) <= 0 or scale <= 0:
        raise _fail(source, "'std' and 'scale' must be positive")
    name = _get(model, "name", str, source)
    return RecognizerManifest(
        name=name,
        format=_get(model, "format", str, source),
        input_size=size,
        colour=_get(inp, "colour", str, source),
        layout=_get(inp, "layout", str, source),
        dtype=_get(inp, "dtype", str, source),
        scale=scale,
        mean=cast(tuple[float, float, float], _triple(inp, "mean", 0.0, source)),
        std=cast(tuple[float, float, float], std),
        batch=_get(inp, "batch", str, source),
        alignment=_get(align, "template", str, source),
        dimension=dim,
        licence=_get(model, "licence", str, source),
        training_data=_get(model, "training_data", str, source),
        file=file,
        sha256=sha,
        notes=str(model.get("notes", "")),
        source=source,
        thresholds=_thresholds(doc, name, sha, source),
        tail=_tail(doc, name, sha, source),
    )


def _thresholds(
    doc: dict[str, Any], name: str, sha: str | None, source: str
) -> ThresholdSet | None:
    """The manifest's [[threshold]] rows: only pinned weights have measured thresholds."""
    rows = doc.get(_THRESHOLDS, [])
    if not isinstance(rows, list):
        raise _fail(source, "[[threshold]] must be an array of tables")
    if rows and sha is None:
        raise _fail(source, "thresholds are measured for one file: pin its 'sha256'")
    try:
        return parse_thresholds(name, sha, rows, source)
    except ConfigError as exc:
        raise _fail(source, exc.message) from None


def _tail(doc: dict[str, Any], name: str, sha: str | None, source: str) -> Tail | None:
    """The manifest's [tail] table: like thresholds, only measured for one pinned file."""
    if _TAIL not in doc:
        return None
    if sha is None:
        raise _fail(source, "a tail is measured for one file: pin its 'sha256'")
    try:
        return parse_tail(name, doc[_TAIL], "[tail]")
    except ConfigError as exc:
        raise _fail(source, exc.message) from None


def load_manifest(path: Path) -> RecognizerManifest:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(str(path), f"cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise _fail(str(path), f"is not valid TOML ({exc})") from None
    manifest = parse_manifest(doc, str(path))
    if manifest.tail is not None and manifest.sha256 is not None:
        # the templates of these pinned weights carry "<name>@<sha256 prefix>"
        register_tail(f"{manifest.name}@{manifest.sha256[:12]}", manifest.tail)
    return manifest


def built_in_manifest(name: str) -> RecognizerManifest:
    if name not in BUILT_IN:
        raise ModelError(f"no built-in recognizer manifest {name!r}; built in: {BUILT_IN}")
    text = resources.files("yingyan.embedding").joinpath(f"manifests/{name}.toml").read_text()
    return parse_manifest(tomllib.loads(text), f"built-in:{name}")


def _beside(model_path: Path) -> Path | None:
    for candidate in (model_path.with_suffix(".toml"), Path(f"{model_path}.toml")):
        if candidate.is_file():
            return candidate
    return None


def resolve_manifest(model_path: Path, configured: str | Path | None = None) -> RecognizerManifest:
    """The manifest for a recognizer file (see the module docstring for the order)."""
    if configured is not None:
        text = str(configured)
        if text in BUILT_IN:
            return built_in_manifest(text)
        return load_manifest(Path(configured))
    beside = _beside(model_path)
    if beside is not None:
        return load_manifest(beside)
    digest = file_sha256(model_path)
    for name in BUILT_IN:
        manifest = built_in_manifest(name)
        if manifest.sha256 == digest:
            return manifest
    raise ModelError(
        f"{model_path}: no manifest for this recognizer. Write {model_path.with_suffix('.toml')} "
        f"(see docs/models.md), or name a built-in one with recognizer_manifest "
        f"({', '.join(BUILT_IN[1:])})"
    )
