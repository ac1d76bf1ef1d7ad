"""Passive RGB texture cue: Minivision's MiniFASNet models (Apache-2.0), loaded by path.

Each model sees the face box scaled about its centre by the factor in its file name (2.7 and
4.0: the context around the face, where a screen's bezel, moiré or a print's edge shows, not a
tight face crop), limited to the frame and shifted inside it, resized to 80x80, BGR, raw 0-255.
Class 1 of its softmax is a live face; the models' softmax outputs are averaged, as the
reference implementation does, and a frame's score is that P(live).

The face box is made square first (side = the detector box's width, same centre): YuNet's box
runs from the hairline to the chin, about 1.4 times as tall as wide, and scaling it as it is
gives a portrait crop that the 80x80 resize squeezes sideways. On the shared live video the
detector's own box scores a median P(live) of 0.62 (40% of frames below 0.5), the square one
0.97 (`box_shape="detector"` keeps the former; see benchmarks/pad_video.py). That choice was
seen on the only real data here, so it is a fit on it, reported as such.

One frame is never the decision: motion blur, a hand or a reflection makes single frames
flicker, so the cue decides on the mean score of the last few scored frames (`TextureWindow`)
and abstains until it has enough of them. It is one cue among several: good screen replays and
edge-less prints are known to fool it.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Final, Literal, get_args

import cv2
import numpy as np
import numpy.typing as npt

from yingyan.errors import ConfigError, ModelError
from yingyan.liveness.cues import COME_CLOSER, LOOK_AT_CAMERA, CueResult
from yingyan.models import configured_model
from yingyan.runtime.onnx_session import OnnxSession
from yingyan.types import Box, Detection, ModelId, RGBImage

LIVE_CLASS: Final = 1  # classes 0 and 2 are attacks
CLASSES: Final = 3
# Minivision's file names: <scale>[_<shift x>_<shift y>]_<H>x<W>_<architecture>
_NAME = re.compile(
    r"^(?P<scale>\d+(?:\.\d+)?)(?:_(?P<sx>\d+(?:\.\d+)?)_(?P<sy>\d+(?:\.\d+)?))?"
    r"_(?P<h>\d+)x(?P<w>\d+)_(?P<arch>MiniFASNet\w+)$"
)
Outcome = Literal["scored", "abstain", "fta"]  # the vocabulary of evaluation.pad
CUE: Final = "rgb_texture"
HOLD_STILL: Final = "hold still"  # too few frames yet, none of them refused
BoxShape = Literal["square", "detector"]
BOX_SHAPES: Final[tuple[str, ...]] = get_args(BoxShape)


@dataclass(frozen=True, slots=True)
class MiniFasModel:
    """One model file and the crop it was trained on, read from Minivision's file name."""

    path: Path
    scale: float  # the crop's side over the face box's side
    height: int
    width: int
    architecture: str

    @property
    def id(self) -> ModelId:
        return configured_model(f"minifasnet-{self.scale:g}-{self.architecture}", self.path).id


def minifasnet_model(path: Path) -> MiniFasModel:
    """The model at `path`, its crop taken from the file name the vendor gave it (the graph
    does not record it); a name in another form is refused rather than guessed."""
    configured_model("minifasnet", path)  # a clear ModelError when the file is missing
    m = _NAME.match(path.stem)
    if m is None:
        raise ModelError(
            f"{path.name}: not a MiniFASNet file name <scale>[_0_0]_<H>x<W>_MiniFASNet<...>; "
            "the crop scale is read from it"
        )
    if float(m["sx"] or 0) or float(m["sy"] or 0):
        raise ModelError(f"{path.name}: shifted crops are not supported")
    return MiniFasModel(path, float(m["scale"]), int(m["h"]), int(m["w"]), m["arch"])


@dataclass(frozen=True, slots=True)
class TextureConfig:
    """The cue's models and its decision rule. threshold 0.5 on P(live) is the models' own
    boundary made strict: live only when more likely than both attack classes together."""

    models: tuple[Path, ...]
    threshold: float = 0.5  # the window's mean P(live) at or above it: live
    window: int = 5  # frames the decision looks back over
    min_frames: int = 3  # scored frames needed in the window; fewer: abstain
    min_face_px: float = 60.0  # a narrower face box: abstain ("come closer")
    threads: int | None = 1  # onnxruntime intra-op threads per model
    box_shape: BoxShape = "square"  # the detector's box made square (its width), or as it is

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("the texture cue needs at least one MiniFASNet model file")
        for p in self.models:
            if not Path(p).is_file():
                raise ConfigError(f"MiniFASNet model file not found: {p}")
        if not 0 < self.threshold < 1:
            raise ConfigError("texture threshold must lie strictly between 0 and 1")
        if not 1 <= self.min_frames <= self.window:
            raise ConfigError("texture min_frames must lie between 1 and window")
        if not self.min_face_px > 0:
            raise ConfigError("texture min_face_px must be > 0")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("texture threads must be >= 1")
        if self.box_shape not in BOX_SHAPES:
            raise ConfigError(f"texture box_shape must be one of {BOX_SHAPES}")

    @classmethod
    def from_dir(cls, folder: Path, **options: float | int | str | None) -> TextureConfig:
        """Every .onnx model in `folder` (the shared MiniFASNet pair)."""
        models = tuple(sorted(Path(folder).glob("*.onnx")))
        if not models:
            raise ConfigError(f"no MiniFASNet .onnx model in {folder}")
        return cls(models, **options)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class FrameScore:
    """One frame's answer: P(live) averaged over the models, or why there is none."""

    outcome: Outcome
    score: float | None
    reason: str
    box: Box | None = None
    per_model: tuple[float, ...] = ()


def square_box(box: Box) -> Box:
    """The square of the box's width about its centre."""
    cx, cy = box.center
    half = box.width / 2
    return Box(cx - half, cy - half, cx + half, cy + half)


def crop_bounds(box: Box, scale: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Inclusive pixel bounds (x1, y1, x2, y2) of `box` scaled by `scale` about its centre:
    the scale limited so the crop fits in the frame, the crop shifted inside it, as
    Minivision's CropImage does (the models were trained on such crops)."""
    bw, bh = box.width, box.height
    if bw <= 0 or bh <= 0:
        raise ValueError("empty face box")
    s = min((height - 1) / bh, (width - 1) / bw, scale)
    cx, cy = box.center
    x1, y1 = cx - bw * s / 2, cy - bh * s / 2
    x2, y2 = cx + bw * s / 2, cy + bh * s / 2
    if x1 < 0:
        x1, x2 = 0.0, x2 - x1
    if y1 < 0:
        y1, y2 = 0.0, y2 - y1
    if x2 > width - 1:
        x1, x2 = x1 - (x2 - width + 1), float(width - 1)
    if y2 > height - 1:
        y1, y2 = y1 - (y2 - height + 1), float(height - 1)
    return max(0, int(x1)), max(0, int(y1)), int(x2), int(y2)


def model_input(image: RGBImage, model: MiniFasModel, box: Box) -> npt.NDArray[np.float32]:
    """The (1, 3, H, W) BGR float batch of raw 0-255 values the model was trained on."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = crop_bounds(box, model.scale, width, height)
    patch = np.ascontiguousarray(image[y1 : y2 + 1, x1 : x2 + 1])
    resized = cv2.resize(patch, (model.width, model.height), interpolation=cv2.INTER_LINEAR)
    bgr = np.asarray(resized)[:, :, ::-1]
    return np.ascontiguousarray(bgr.transpose(2, 0, 1)[None], dtype=np.float32)


def softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    out: npt.NDArray[np.float64] = z / z.sum(axis=-1, keepdims=True)
    return out


class TextureCue:
    """Scores one frame from its face detections; models load on first use."""

    name = CUE

    def __init__(self, config: TextureConfig) -> None:
        self.config = config
        self.models = [minifasnet_model(Path(p)) for p in config.models]

    @cached_property
    def _sessions(self) -> list[OnnxSession]:
        sessions = []
        for m in self.models:
            try:
                session = OnnxSession(m.path, intra_op_threads=self.config.threads)
            except Exception as exc:  # onnxruntime raises its own untyped errors on bad files
                raise ModelError(f"{m.path.name}: not a loadable ONNX model ({exc})") from None
            shape_in, shape_out = session.input_shape, session.output_shape
            if shape_in[1:] != [3, m.height, m.width] or shape_out[-1:] != [CLASSES]:
                raise ModelError(
                    f"{m.path.name}: graph takes {shape_in} and gives {shape_out}, not a "
                    f"3-class MiniFASNet of {m.height}x{m.width}"
                )
            sessions.append(session)
        return sessions

    def describe(self) -> dict[str, object]:
        return {
            "cue": self.name,
            "models": [str(m.id) for m in self.models],
            "scales": [m.scale for m in self.models],
            "threshold": self.config.threshold,
            "window": self.config.window,
            "min_frames": self.config.min_frames,
            "box_shape": self.config.box_shape,
        }

    def live_probabilities(self, image: RGBImage, box: Box) -> tuple[float, ...]:
        """Each model's P(live) for the face in `box`."""
        out = []
        for m, session in zip(self.models, self._sessions, strict=True):
            probs = softmax(session.run(model_input(image, m, box)))
            out.append(float(probs[0, LIVE_CLASS]))
        return tuple(out)

    def score(self, image: RGBImage, detections: Sequence[Detection]) -> FrameScore:
        """The largest face's score (the station's subject stands nearest), or why none."""
        if not detections:
            return FrameScore("fta", None, LOOK_AT_CAMERA)
        box = max(detections, key=lambda d: d.box.area).box
        if min(box.width, box.height) < self.config.min_face_px:
            return FrameScore("abstain", None, COME_CLOSER, box)
        face = square_box(box) if self.config.box_shape == "square" else box
        per_model = self.live_probabilities(image, face)
        score = float(np.mean(per_model))
        verdict = "live" if score >= self.config.threshold else "attack"
        reason = f"P(live) {score:.3f}: looks {verdict}"
        return FrameScore("scored", score, reason, box, per_model)


def decide(frames: Sequence[FrameScore], threshold: float, min_frames: int) -> CueResult:
    """The decision on these frames: the mean score of the scored ones against `threshold`,
    or abstain with the commonest reason when fewer than `min_frames` were scored."""
    scores = [f.score for f in frames if f.outcome == "scored" and f.score is not None]
    n = len(scores)
    if n < min_frames:
        reasons = Counter(f.reason for f in frames if f.outcome != "scored")
        reason = reasons.most_common(1)[0][0] if reasons else HOLD_STILL
        return CueResult.abstain(CUE, reason, {"frames": n})
    mean = float(np.mean(scores))
    return CueResult.judge(
        CUE,
        mean,
        threshold,
        f"mean P(live) {mean:.3f} over {n} frames < {threshold:g}: a replay or a print",
        f"mean P(live) {mean:.3f} over {n} frames",
        {"frames": n},
    )


class TextureWindow:
    """The rolling decision of one capture: the last `window` frames, decided by `decide`."""

    def __init__(self, config: TextureConfig) -> None:
        self.config = config
        self._frames: deque[FrameScore] = deque(maxlen=config.window)

    def add(self, frame: FrameScore) -> CueResult:
        self._frames.append(frame)
        return decide(self._frames, self.config.threshold, self.config.min_frames)

    def reset(self) -> None:
        """A new person in front of the station: nothing of the last one counts."""
        self._frames.clear()
