"""Small faces in large frames: run any detector over overlapping, upsampled tiles.

dlib's HOG window is 80 px (about 40 px with one 2x pass) and YuNet's smallest anchors are
about 10 px, so a 24-40 px face in a 720p frame needs 2-3x upsampling; doing that to the whole
frame costs 4-9x the pixels and may pass the work bound. Tiles bound each call, can be
upsampled by region (the far part of a scene, where faces are small), and with a motion gate
only the tiles where something moved are run. One `TiledDetector` per camera: the motion
background belongs to the object.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from yingyan.config import MAX_WORK_PIXELS
from yingyan.detection.base import Detector
from yingyan.errors import ConfigError, ImageError
from yingyan.types import Box, Detection, Landmarks, RGBImage

GreyImage = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Region:
    """A part of the frame (fractions of width and height) tiled at its own upsampling
    `scale`: e.g. the top half of a concourse, where people are far, at 2x."""

    x1: float = 0.0
    y1: float = 0.0
    x2: float = 1.0
    y2: float = 1.0
    scale: float = 2.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.x1 < self.x2 <= 1.0 and 0.0 <= self.y1 < self.y2 <= 1.0):
            raise ConfigError(f"region {self} must lie in [0, 1] with x1 < x2 and y1 < y2")
        if not 0.25 <= self.scale <= 8.0:
            raise ConfigError(f"region scale must be in [0.25, 8], got {self.scale}")


@dataclass(frozen=True, slots=True)
class MotionConfig:
    """Run a tile only where at least `min_fraction` of its pixels moved. `method` "diff"
    compares with the previous frame (cheap, no warm-up); "mog2" keeps OpenCV's adaptive
    background (ignores swaying noise better, learns for `history` frames). With `crop`, only
    the moving part of a tile, grown by the tiling overlap, is run. Every
    `refresh_every` frames every tile runs anyway, so someone who stopped is found again."""

    method: str = "diff"
    threshold: int = 18  # grey-level change that counts as motion (diff)
    min_fraction: float = 0.002
    downscale: int = 4
    history: int = 100  # mog2
    refresh_every: int = 0  # 0: never
    crop: bool = True  # run only the moving part of a tile (grown by the overlap)

    def __post_init__(self) -> None:
        if self.method not in ("diff", "mog2"):
            raise ConfigError(f"motion method must be 'diff' or 'mog2', got {self.method!r}")
        if not 0.0 <= self.min_fraction < 1.0 or self.downscale < 1 or self.refresh_every < 0:
            raise ConfigError("motion min_fraction must be in [0, 1), downscale >= 1")


@dataclass(frozen=True, slots=True)
class TilingConfig:
    """Tiles of about `tile_px` frame pixels overlapping by at least `overlap_px`: a face no
    wider than the overlap lies whole in some tile. Detections cut by an inner tile edge are
    dropped when a whole copy must exist elsewhere; the rest are merged by NMS (IoU, or one
    box mostly inside the other)."""

    tile_px: int = 512
    overlap_px: int = 128
    regions: tuple[Region, ...] = (Region(),)
    nms_iou: float = 0.4
    nms_containment: float = 0.8
    motion: MotionConfig | None = None
    max_work_pixels: int = MAX_WORK_PIXELS

    def __post_init__(self) -> None:
        if self.overlap_px < 0 or self.tile_px <= self.overlap_px:
            raise ConfigError("tiling needs overlap_px >= 0 and tile_px > overlap_px")
        if not self.regions:
            raise ConfigError("tiling needs at least one region")
        if not (0.0 < self.nms_iou <= 1.0 and 0.0 < self.nms_containment <= 1.0):
            raise ConfigError("NMS thresholds must be in (0, 1]")

    @classmethod
    def uniform(cls, scale: float, **kwargs: object) -> TilingConfig:
        """The whole frame at one scale."""
        return cls(regions=(Region(scale=scale),), **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Tile:
    """A frame rectangle in integer pixels, the scale it is run at, and which of its edges are
    inside the frame (where a face can be cut)."""

    x1: int
    y1: int
    x2: int
    y2: int
    scale: float
    inner: tuple[bool, bool, bool, bool] = (False, False, False, False)  # left, top, right, bottom


def _spans(start: int, stop: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Equal spans covering [start, stop) with at least `overlap` shared between neighbours."""
    length = stop - start
    if length <= tile:
        return [(start, stop)]
    n = math.ceil((length - overlap) / (tile - overlap))
    size = math.ceil((length + (n - 1) * overlap) / n)
    step = (length - size) / (n - 1)
    return [(start + round(i * step), start + round(i * step) + size) for i in range(n)]


def plan_tiles(width: int, height: int, config: TilingConfig) -> list[Tile]:
    """The tiles of every region of a `width` x `height` frame."""
    tiles = []
    for region in config.regions:
        rx1, rx2 = round(region.x1 * width), round(region.x2 * width)
        ry1, ry2 = round(region.y1 * height), round(region.y2 * height)
        for y1, y2 in _spans(ry1, ry2, config.tile_px, config.overlap_px):
            for x1, x2 in _spans(rx1, rx2, config.tile_px, config.overlap_px):
                area = (x2 - x1) * (y2 - y1)
                scale = min(region.scale, math.sqrt(config.max_work_pixels / area))
                inner = (x1 > 0, y1 > 0, x2 < width, y2 < height)
                tiles.append(Tile(x1, y1, x2, y2, scale, inner))
    return tiles


class MotionGate:
    """Which tiles changed since the last frame; the state of one camera's background."""

    def __init__(self, config: MotionConfig) -> None:
        self.config = config
        self._previous: GreyImage | None = None
        self._mog2: cv2.BackgroundSubtractorMOG2 | None = None
        self._frames = 0

    def reset(self) -> None:
        self._previous, self._mog2, self._frames = None, None, 0

    def _small_grey(self, image: RGBImage) -> GreyImage:
        d = self.config.downscale
        h, w = image.shape[:2]
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if d > 1:
            grey = cv2.resize(grey, (max(1, w // d), max(1, h // d)), interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(grey, (5, 5), 0)  # type: ignore[return-value]

    def mask(self, image: RGBImage) -> GreyImage | None:
        """The motion mask at 1/downscale, or None when every tile must run (first frame, a
        new frame size, or a refresh)."""
        grey = self._small_grey(image)
        first = self._previous is None or self._previous.shape != grey.shape
        self._frames += 1
        refresh = self.config.refresh_every > 0 and self._frames % self.config.refresh_every == 0
        if self.config.method == "mog2":
            if first or self._mog2 is None:
                self._mog2 = cv2.createBackgroundSubtractorMOG2(
                    history=self.config.history, detectShadows=False
                )
            moving: GreyImage = self._mog2.apply(grey)  # type: ignore[assignment]
        else:
            moving = np.zeros_like(grey)
            if not first:
                assert self._previous is not None
                diff = cv2.absdiff(grey, self._previous)
                moving = (diff >= self.config.threshold).astype(np.uint8) * 255
        self._previous = grey
        return None if first or refresh else moving

    def active(self, image: RGBImage, tiles: list[Tile], margin: int) -> list[Tile | None]:
        """Per tile: None when nothing moved in it, else the part of it that needs running
        (with `crop`, the moving pixels' bounding box grown by `margin`, else the whole tile)."""
        moving = self.mask(image)
        if moving is None:
            return list(tiles)
        d = self.config.downscale
        # Dilate by a few cells so a face whose edge moved counts for the tile it lies in.
        moving = cv2.dilate(moving, np.ones((5, 5), np.uint8))  # type: ignore[assignment]
        out: list[Tile | None] = []
        for t in tiles:
            y0, x0 = t.y1 // d, t.x1 // d
            cell = moving[y0 : max(y0 + 1, t.y2 // d), x0 : max(x0 + 1, t.x2 // d)]
            if np.count_nonzero(cell) < max(1.0, self.config.min_fraction * cell.size):
                out.append(None)
            elif not self.config.crop:
                out.append(t)
            else:
                rows = np.flatnonzero(cell.any(axis=1))
                cols = np.flatnonzero(cell.any(axis=0))
                x1, y1 = int(x0 + cols[0]) * d, int(y0 + rows[0]) * d
                x2, y2 = int(x0 + cols[-1] + 1) * d, int(y0 + rows[-1] + 1) * d
                out.append(_crop_tile(t, (x1, y1, x2, y2), margin))
        return out


def _crop_tile(t: Tile, moving: tuple[int, int, int, int], margin: int) -> Tile:
    """The tile cut down to the moving box grown by `margin`; cut edges become inner edges
    (a face cut there did not move, or lies whole in the grown box if it did)."""
    x1, y1 = max(t.x1, moving[0] - margin), max(t.y1, moving[1] - margin)
    x2, y2 = min(t.x2, moving[2] + margin), min(t.y2, moving[3] + margin)
    left, top, right, bottom = t.inner
    inner = (left or x1 > t.x1, top or y1 > t.y1, right or x2 < t.x2, bottom or y2 < t.y2)
    return Tile(x1, y1, x2, y2, t.scale, inner)


@dataclass(frozen=True, slots=True)
class TileRun:
    """What the last call did: tiles planned, tiles run (the rest had no motion)."""

    tiles: int
    run: int
    active: tuple[bool, ...] = field(default=())
    area_share: float = 1.0  # pixels run / pixels of every tile


def _map_back(det: Detection, tile: Tile, sx: float, sy: float) -> Detection:
    """A detection in the resized tile, in frame pixels."""

    def fx(v: float) -> float:
        return v / sx + tile.x1

    def fy(v: float) -> float:
        return v / sy + tile.y1

    b = det.box
    box = Box(fx(b.x1), fy(b.y1), fx(b.x2), fy(b.y2))
    landmarks = None
    if det.landmarks is not None:
        points = det.landmarks.points / np.array([sx, sy]) + np.array([tile.x1, tile.y1])
        landmarks = Landmarks(points, det.landmarks.source)
    return replace(det, box=box, landmarks=landmarks)


def _cut_by_inner_edge(box: Box, tile: Tile, overlap: int) -> bool:
    """A face touching an inner tile edge is whole in the neighbour tile if it fits the overlap."""
    if box.width > overlap or box.height > overlap:
        return False
    margin = 2.0
    left, top, right, bottom = tile.inner
    return (
        (left and box.x1 <= tile.x1 + margin)
        or (top and box.y1 <= tile.y1 + margin)
        or (right and box.x2 >= tile.x2 - margin)
        or (bottom and box.y2 >= tile.y2 - margin)
    )


def _overlaps(a: Box, b: Box, iou: float, containment: float) -> bool:
    ix = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    iy = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = ix * iy
    smaller = min(a.area, b.area)
    return a.iou(b) >= iou or (smaller > 0 and inter / smaller >= containment)


def merge_duplicates(
    detections: list[Detection], iou: float = 0.4, containment: float = 0.8
) -> list[Detection]:
    """Greedy NMS by score: a box overlapping a better one (IoU, or mostly inside it) goes."""
    kept: list[Detection] = []
    for det in sorted(detections, key=lambda d: -d.score):
        if not any(_overlaps(det.box, k.box, iou, containment) for k in kept):
            kept.append(det)
    return kept


class TiledDetector:
    """Any `Detector` run over upsampled tiles of a frame, boxes and landmarks in frame pixels.

    Not thread-safe when a motion gate is configured: it holds one camera's background."""

    def __init__(self, inner: Detector, config: TilingConfig | None = None) -> None:
        self.inner = inner
        self.config = config or TilingConfig()
        self.name = f"tiled-{inner.name}"
        self.gate = MotionGate(self.config.motion) if self.config.motion else None
        self.last_run = TileRun(0, 0)
        self._plan: tuple[tuple[int, int], list[Tile]] | None = None

    def tiles(self, width: int, height: int) -> list[Tile]:
        if self._plan is None or self._plan[0] != (width, height):
            self._plan = ((width, height), plan_tiles(width, height, self.config))
        return self._plan[1]

    def detect(self, image: RGBImage) -> list[Detection]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ImageError(f"expected an RGB uint8 frame, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        tiles = self.tiles(w, h)
        margin = self.config.overlap_px
        runs = self.gate.active(image, tiles, margin) if self.gate else list(tiles)
        found: list[Detection] = []
        for run in runs:
            if run is not None:
                found.extend(self._detect_tile(image, run))
        area = sum((r.x2 - r.x1) * (r.y2 - r.y1) for r in runs if r is not None)
        total = sum((t.x2 - t.x1) * (t.y2 - t.y1) for t in tiles)
        active = tuple(r is not None for r in runs)
        self.last_run = TileRun(len(tiles), sum(active), active, area / max(total, 1))
        merged = merge_duplicates(found, self.config.nms_iou, self.config.nms_containment)
        return sorted(merged, key=lambda d: -d.score)

    def _detect_tile(self, image: RGBImage, tile: Tile) -> list[Detection]:
        crop = image[tile.y1 : tile.y2, tile.x1 : tile.x2]
        th, tw = crop.shape[:2]
        size = (max(1, round(tw * tile.scale)), max(1, round(th * tile.scale)))
        if size != (tw, th):
            interp = cv2.INTER_LINEAR if tile.scale > 1 else cv2.INTER_AREA
            crop = cv2.resize(crop, size, interpolation=interp)  # type: ignore[assignment]
        crop = np.ascontiguousarray(crop)
        sx, sy = size[0] / tw, size[1] / th  # the exact scales after rounding
        out = []
        for det in self.inner.detect(crop):
            mapped = _map_back(det, tile, sx, sy)
            if not _cut_by_inner_edge(mapped.box, tile, self.config.overlap_px):
                out.append(mapped)
        return out


# -- a camera's "crowd" setting --------------------------------------------------------------

_TILING_KEYS = ("tile_px", "overlap_px", "nms_iou", "nms_containment")
_REGION_KEYS = ("x1", "y1", "x2", "y2", "scale")


def _known(settings: Mapping[str, Any], allowed: tuple[str, ...], what: str) -> None:
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown {what} setting(s) {unknown}; allowed: {list(allowed)}")


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    return float(value)


def _region(value: Any) -> Region:
    """A region as {"x1": .., "y1": .., "x2": .., "y2": .., "scale": ..} (missing keys take
    the defaults: the whole frame at 2x) or as [x1, y1, x2, y2, scale]."""
    if isinstance(value, list | tuple):
        if len(value) != len(_REGION_KEYS):
            raise ConfigError(f"a crowd region list is [x1, y1, x2, y2, scale], got {value!r}")
        value = dict(zip(_REGION_KEYS, value, strict=True))
    if not isinstance(value, Mapping):
        raise ConfigError(f"a crowd region must be a table or a list, got {value!r}")
    _known(value, _REGION_KEYS, "crowd region")
    return Region(**{k: _number(v, f"crowd region {k}") for k, v in value.items()})


def _motion(value: Any) -> MotionConfig | None:
    """`true` (frame differencing, the defaults), `false`, or a table of MotionConfig fields."""
    if value is None or value is False:
        return None
    if value is True:
        return MotionConfig()
    if not isinstance(value, Mapping):
        raise ConfigError(f"crowd motion must be true, false or a table, got {value!r}")
    allowed = tuple(f.name for f in fields(MotionConfig))
    _known(value, allowed, "crowd motion")
    types = {"method": str, "crop": bool, "min_fraction": float}
    values: dict[str, Any] = {}
    for key, v in value.items():
        kind = types.get(key, int)
        if kind is float:
            v = _number(v, f"crowd motion {key}")
        elif not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            raise ConfigError(f"crowd motion {key} must be of type {kind.__name__}, got {v!r}")
        values[key] = v
    return MotionConfig(**values)


def crowd_tiling(settings: Any, max_work_pixels: int = MAX_WORK_PIXELS) -> TilingConfig | None:
    """A camera's "crowd" setting as a `TilingConfig`; None (no tiling) when it is absent,
    `false` or null. `true` or `{}` is the whole frame in 512 px tiles at 2x. Keys: tile_px,
    overlap_px, scale (the whole frame at one scale) or regions (a list of regions, see
    `_region`), motion (see `_motion`), nms_iou, nms_containment. Anything else is refused
    with a `ConfigError` that names it, so a typo never silently turns tiling off."""
    if settings is None or settings is False:
        return None
    if settings is True:
        settings = {}
    if not isinstance(settings, Mapping):
        raise ConfigError(f"the crowd setting must be a table (or true/false), got {settings!r}")
    _known(settings, (*_TILING_KEYS, "scale", "regions", "motion"), "crowd")
    if "scale" in settings and "regions" in settings:
        raise ConfigError("give the crowd setting either scale or regions, not both")
    values: dict[str, Any] = {}
    for key in _TILING_KEYS:
        if key in settings:
            number = _number(settings[key], f"crowd {key}")
            if key.endswith("_px") and number != int(number):
                raise ConfigError(f"crowd {key} must be a whole number of pixels, got {number}")
            values[key] = int(number) if key.endswith("_px") else number
    if "regions" in settings:
        regions = settings["regions"]
        if not isinstance(regions, list | tuple) or not regions:
            raise ConfigError("crowd regions must be a non-empty list")
        values["regions"] = tuple(_region(r) for r in regions)
    else:
        values["regions"] = (Region(scale=_number(settings.get("scale", 2.0), "crowd scale")),)
    return TilingConfig(
        motion=_motion(settings.get("motion")), max_work_pixels=max_work_pixels, **values
    )


def crowd_detector(
    inner: Detector, settings: Any, max_work_pixels: int = MAX_WORK_PIXELS
) -> Detector:
    """`inner` wrapped in tiles as a camera's "crowd" setting says, or `inner` itself when it
    asks for none. One per camera (the motion gate holds its background)."""
    tiling = crowd_tiling(settings, max_work_pixels)
    return inner if tiling is None else TiledDetector(inner, tiling)
