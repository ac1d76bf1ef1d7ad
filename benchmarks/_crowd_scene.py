"""Seeded crowd frames composed from real faces (LFW deep-funneled, UTKFace chips).

Each passer is one real photo of a known identity, pasted head-and-shoulders (feathered
ellipse, a body below it) at a face width of about 24-120 px and walked across a 1280x720
textured background over a few seconds, with motion blur, defocus, partial occlusion (a scarf,
a hand, a shoulder) and sensor noise. Truth is the face box of every visible passer in frame
pixels. Face size here is the width of dlib's HOG-style face box; the inter-eye distance is
about 0.38 (LFW) to 0.47 (UTKFace) of it.

`random_passers` walk across from side to side (the detection benchmark);
`approaching_passers` walk towards the camera with a sideways drift (the watchlist
benchmark, benchmarks/crowd_watch.py: a moving crowd as a 10 fps camera sees it).

Built for many passers: a passer's photo is read when it enters and dropped when it leaves, its
resized sprite is kept while its size stays the same, and pasting is numpy on small windows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from yingyan.types import Box

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

# Where the face is in each source (fractions of the image side): dlib HOG's median box over
# 120 images of each set (LFW deep-funneled 250x250; UTKFace aligned chips 200x200).
_FACE_BOX = {"lfw": (0.268, 0.32, 0.704, 0.752), "utk": (0.06, 0.06, 0.84, 0.84)}
# The head around it that is pasted (fractions of the face box: left/right, top, bottom).
_HEAD_PAD = (0.2, 0.45, 0.25)


@dataclass(frozen=True, slots=True)
class FaceSource:
    identity: str
    path: Path
    kind: str  # "lfw" | "utk"


def lfw_sources(root: Path, min_images: int = 1) -> list[FaceSource]:
    """Every image of every LFW person with at least `min_images` images (sorted)."""
    out: list[FaceSource] = []
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(person.glob("*.jpg"))
        if len(images) >= min_images:
            out.extend(FaceSource(person.name, path, "lfw") for path in images)
    return out


def utk_sources(root: Path) -> list[FaceSource]:
    """UTKFace chips: no identity labels, so each chip is its own identity."""
    return [FaceSource(f"utk:{p.name.split('.')[0]}", p, "utk") for p in sorted(root.glob("*.jpg"))]


@dataclass(frozen=True, slots=True)
class Passer:
    """One person walking across: the face's box centre moves from off one side to off the
    other in `duration_s`, its width going from `face_px` to `end_face_px`."""

    passer_id: int
    identity: str
    image: Path
    kind: str
    enter_s: float
    duration_s: float
    face_px: float
    end_face_px: float
    y: float  # face centre, fraction of frame height
    direction: int = 1  # 1: left to right
    motion_blur_px: int = 0
    defocus_sigma: float = 0.0
    occlusion: float = 0.0  # fraction of the face box covered by its own occluder
    occluder_side: str = "bottom"  # bottom | left | right | top
    colour: tuple[int, int, int] = (90, 90, 110)  # clothes and occluder
    # (x0, y0, x1, y1): the face centre walks from (x0, y0) to (x1, y1), fractions of the
    # frame, instead of from off one side to off the other (see `approaching_passers`).
    path: tuple[float, float, float, float] | None = None


@dataclass(frozen=True, slots=True)
class FaceTruth:
    """A visible face: unpacks as `(passer_id, box)`. `hidden` is the share of the face box
    covered by nearer passers; `clipped` is true when the box passes the frame edge."""

    passer_id: int
    box: Box
    hidden: float = 0.0
    clipped: bool = False

    def __iter__(self) -> Iterator[object]:
        return iter((self.passer_id, self.box))


def random_passers(
    seed: int,
    sources: Sequence[FaceSource],
    n: int,
    span_s: float,
    *,
    sizes: tuple[float, float] = (24.0, 120.0),
    duration_s: tuple[float, float] = (3.0, 6.0),
    occluded_share: float = 0.2,
    blurred_share: float = 0.3,
    first_id: int = 0,
    distinct: bool = False,
) -> list[Passer]:
    """`n` passers drawn (without replacement while possible) from `sources`, entering over
    `span_s` seconds; sizes log-uniform, nearer (bigger) faces lower in the frame. With
    `distinct`, every passer is another identity (one random photo each)."""
    rng = np.random.default_rng(seed)
    if distinct:
        by_identity: dict[str, list[int]] = {}
        for i, src in enumerate(sources):
            by_identity.setdefault(src.identity, []).append(i)
        if n > len(by_identity):
            raise ValueError(f"{n} distinct passers asked, {len(by_identity)} identities given")
        groups = list(by_identity.values())
        order = rng.permutation(len(groups))[:n]
        picks = np.array([groups[g][int(rng.integers(0, len(groups[g])))] for g in order])
    else:
        picks = rng.permutation(len(sources))
    if n > len(picks):
        picks = np.concatenate([picks, rng.integers(0, len(sources), n - len(picks))])
    lo, hi = math.log(sizes[0]), math.log(sizes[1])
    out = []
    for i in range(n):
        src = sources[int(picks[i])]
        size = float(math.exp(rng.uniform(lo, hi)))
        near = (math.log(size) - lo) / max(hi - lo, 1e-9)
        occluded = rng.random() < occluded_share
        blurred = rng.random() < blurred_share
        out.append(
            Passer(
                passer_id=first_id + i,
                identity=src.identity,
                image=src.path,
                kind=src.kind,
                enter_s=float(rng.uniform(0.0, span_s)),
                duration_s=float(rng.uniform(*duration_s)),
                face_px=size,
                end_face_px=size * float(rng.uniform(0.9, 1.2)),
                y=float(np.clip(0.18 + 0.55 * near + rng.normal(0, 0.06), 0.08, 0.8)),
                direction=1 if rng.random() < 0.5 else -1,
                motion_blur_px=int(rng.integers(3, 8)) if blurred else 0,
                defocus_sigma=float(rng.uniform(0.5, 1.5)) if blurred else 0.0,
                occlusion=float(rng.uniform(0.15, 0.35)) if occluded else 0.0,
                occluder_side=str(rng.choice(["bottom", "bottom", "left", "right", "top"])),
                colour=tuple(int(c) for c in rng.integers(20, 230, 3)),  # type: ignore[arg-type]
            )
        )
    return sorted(out, key=lambda p: (p.enter_s, p.passer_id))


def approaching_passers(
    seed: int,
    photos: Sequence[FaceSource],
    span_s: float,
    *,
    sizes: tuple[float, float] = (24.0, 100.0),
    growth: tuple[float, float] = (1.05, 1.2),
    duration_s: tuple[float, float] = (2.5, 3.5),
    sideways: tuple[float, float] = (0.3, 1.5),
    occluded_share: float = 0.2,
    blurred_share: float = 0.3,
    first_id: int = 0,
    frame: tuple[int, int] = (1280, 720),
) -> list[Passer]:
    """One passer per photo (in order, ids from `first_id`), entering over `span_s` seconds and
    walking towards the camera, as at an entrance a face-recognition camera watches: the face
    grows by `growth` (24-120 px in all), drifts down and sideways at `sideways` face widths
    per second (a lateral walker crosses ~9 face widths a second and shows a profile), so at
    10 fps a face moves a fraction of its width per frame and an IoU tracker can follow it.
    People appear and vanish in the scene (as from behind others) rather than at its edges;
    far (small) faces are higher in the frame. Seeded: the same photos give the same passers."""
    rng = np.random.default_rng(seed)
    lo, hi = math.log(sizes[0]), math.log(sizes[1])
    out = []
    for i, src in enumerate(photos):
        size = float(math.exp(rng.uniform(lo, hi)))
        end = size * float(rng.uniform(*growth))
        near = (math.log(size) - lo) / max(hi - lo, 1e-9)
        duration = float(rng.uniform(*duration_s))
        x0 = float(rng.uniform(0.08, 0.92))
        y0 = float(np.clip(0.14 + 0.55 * near + rng.normal(0, 0.05), 0.08, 0.8))
        side = float(rng.uniform(*sideways)) * (1 if rng.random() < 0.5 else -1)
        x1 = x0 + side * (size + end) / 2 * duration / frame[0]
        y1 = y0 + 1.5 * (end - size) / frame[1]
        occluded = rng.random() < occluded_share
        blurred = rng.random() < blurred_share
        out.append(
            Passer(
                passer_id=first_id + i,
                identity=src.identity,
                image=src.path,
                kind=src.kind,
                enter_s=float(rng.uniform(0.0, span_s)),
                duration_s=duration,
                face_px=size,
                end_face_px=end,
                y=y0,
                direction=1 if side > 0 else -1,
                motion_blur_px=int(rng.integers(3, 8)) if blurred else 0,
                defocus_sigma=float(rng.uniform(0.5, 1.5)) if blurred else 0.0,
                occlusion=float(rng.uniform(0.15, 0.35)) if occluded else 0.0,
                occluder_side=str(rng.choice(["bottom", "bottom", "left", "right", "top"])),
                colour=tuple(int(c) for c in rng.integers(20, 230, 3)),  # type: ignore[arg-type]
                path=(x0, y0, x1, y1),
            )
        )
    return sorted(out, key=lambda p: (p.enter_s, p.passer_id))


@dataclass(frozen=True, slots=True)
class _Sprite:
    rgb: F32  # (h, w, 3)
    alpha: F32  # (h, w, 1), in [0, 1]
    face: tuple[float, float, float, float]  # face box in sprite pixels
    width: int  # face width it was made for


def _background(rng: np.random.Generator, width: int, height: int) -> F32:
    """Colour value noise over four octaves, a floor gradient and a few blurred panels."""
    img = np.zeros((height, width, 3), np.float32)
    for cells, weight in ((4, 0.45), (12, 0.3), (40, 0.15), (160, 0.1)):
        grid = rng.uniform(0, 255, (max(2, cells * height // width), cells, 3)).astype(np.float32)
        img += weight * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    img *= np.linspace(0.8, 1.1, height, dtype=np.float32)[:, None, None]
    for _ in range(int(rng.integers(4, 9))):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height // 2))
        w, h = int(rng.integers(40, 300)), int(rng.integers(20, 200))
        img[y : y + h, x : x + w] = img[y : y + h, x : x + w] * 0.4 + rng.uniform(0, 255, 3) * 0.6
    return np.clip(cv2.GaussianBlur(img, (0, 0), 1.5), 0, 255).astype(np.float32)


def _make_sprite(photo: U8, passer: Passer, width: int) -> _Sprite:
    """The passer's head at a face width of `width` px, with its blur and occluder."""
    h, w = photo.shape[:2]
    fx1, fy1, fx2, fy2 = (v * s for v, s in zip(_FACE_BOX[passer.kind], (w, h, w, h), strict=True))
    fw, fh = fx2 - fx1, fy2 - fy1
    pad_x, pad_top, pad_bottom = _HEAD_PAD
    hx1, hy1 = max(0, round(fx1 - pad_x * fw)), max(0, round(fy1 - pad_top * fh))
    hx2, hy2 = min(w, round(fx2 + pad_x * fw)), min(h, round(fy2 + pad_bottom * fh))
    head = photo[hy1:hy2, hx1:hx2]
    scale = width / fw
    sw, sh = max(2, round((hx2 - hx1) * scale)), max(2, round((hy2 - hy1) * scale))
    rgb = cv2.resize(head, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
    sx, sy = sw / (hx2 - hx1), sh / (hy2 - hy1)
    face = ((fx1 - hx1) * sx, (fy1 - hy1) * sy, (fx2 - hx1) * sx, (fy2 - hy1) * sy)
    alpha = np.zeros((sh, sw), np.float32)
    cv2.ellipse(alpha, (sw // 2, sh // 2), (sw // 2 - 1, sh // 2 - 1), 0, 0, 360, 1.0, -1)
    alpha = np.asarray(cv2.GaussianBlur(alpha, (0, 0), max(0.6, 0.04 * sw)), np.float32)
    if passer.occlusion > 0:
        _occlude(rgb, alpha, face, passer)
    if passer.defocus_sigma > 0:
        rgb = np.asarray(
            cv2.GaussianBlur(rgb, (0, 0), passer.defocus_sigma * width / 60), np.float32
        )
    if passer.motion_blur_px > 1:
        k = np.full((1, passer.motion_blur_px), 1.0 / passer.motion_blur_px, np.float32)
        rgb = np.asarray(cv2.filter2D(rgb, -1, k), np.float32)
        alpha = np.asarray(cv2.filter2D(alpha, -1, k), np.float32)
    return _Sprite(rgb, alpha[:, :, None], face, width)


def _occlude(rgb: F32, alpha: F32, face: tuple[float, float, float, float], p: Passer) -> None:
    """Cover `p.occlusion` of the face box from one side with a flat, noisy patch."""
    x1, y1, x2, y2 = face
    f = p.occlusion
    if p.occluder_side == "bottom":
        r = (x1 - 2, y2 - f * (y2 - y1), x2 + 2, y2 + 4)
    elif p.occluder_side == "top":
        r = (x1 - 2, y1 - 4, x2 + 2, y1 + f * (y2 - y1))
    elif p.occluder_side == "left":
        r = (x1 - 4, y1, x1 + f * (x2 - x1), y2)
    else:
        r = (x2 - f * (x2 - x1), y1, x2 + 4, y2)
    h, w = alpha.shape
    a, b = max(0, int(r[0])), min(w, math.ceil(r[2]))
    c, d = max(0, int(r[1])), min(h, math.ceil(r[3]))
    rgb[c:d, a:b] = np.asarray(p.colour, np.float32)
    alpha[c:d, a:b] = 1.0


class CrowdScene:
    """Frames of `passers` walking across a seeded background at `fps`; `size` is
    (width, height). Deterministic for a seed and a list of passers."""

    def __init__(
        self,
        seed: int,
        passers: list[Passer],
        fps: float = 10.0,
        size: tuple[int, int] = (1280, 720),
        *,
        noise_sigma: float = 3.0,
        bodies: bool = True,
    ) -> None:
        self.seed, self.fps, self.size = seed, fps, size
        self.passers = sorted(passers, key=lambda p: (p.enter_s, p.passer_id))
        self.noise_sigma, self.bodies = noise_sigma, bodies
        rng = np.random.default_rng(seed)
        w, h = size
        self._background = _background(rng, w, h)
        self._noise = [rng.normal(0, noise_sigma, (h, w, 1)).astype(np.float32) for _ in range(4)]
        self.duration_s = max((p.enter_s + p.duration_s for p in passers), default=0.0)
        self.n_frames = math.ceil(self.duration_s * fps) + 1

    def by_id(self) -> dict[int, Passer]:
        return {p.passer_id: p for p in self.passers}

    def _place(self, p: Passer, t: float) -> tuple[float, float, float]:
        """Face centre x, y and face width at time t."""
        progress = (t - p.enter_s) / p.duration_s
        size = p.face_px + (p.end_face_px - p.face_px) * progress
        w, h = self.size
        if p.path is not None:
            x0, y0, x1, y1 = p.path
            x = (x0 + (x1 - x0) * progress) * w
            y = (y0 + (y1 - y0) * progress) * h
            return x, y + 0.04 * size * math.sin(2 * math.pi * 1.8 * (t - p.enter_s)), size
        start, stop = -1.2 * size, w + 1.2 * size
        if p.direction < 0:
            start, stop = stop, start
        x = start + (stop - start) * progress
        y = p.y * h + 0.04 * size * math.sin(2 * math.pi * 1.8 * (t - p.enter_s))
        return x, y, size

    def frames(
        self, start: int = 0, stop: int | None = None, step: int = 1
    ) -> Iterator[tuple[int, U8, list[FaceTruth]]]:
        """(frame_index, RGB uint8 frame, truth of every face at least partly in frame)."""
        stop = self.n_frames if stop is None else min(stop, self.n_frames)
        photos: dict[int, U8] = {}
        sprites: dict[int, _Sprite] = {}
        pending = list(self.passers)
        nxt = 0
        active: list[Passer] = []
        for index in range(start, stop, step):
            t = index / self.fps
            while nxt < len(pending) and pending[nxt].enter_s <= t:
                active.append(pending[nxt])
                nxt += 1
            gone = [p for p in active if t > p.enter_s + p.duration_s]
            for p in gone:
                active.remove(p)
                photos.pop(p.passer_id, None)
                sprites.pop(p.passer_id, None)
            image, truth = self._compose(index, t, active, photos, sprites)
            yield index, image, truth

    def _compose(
        self,
        index: int,
        t: float,
        active: list[Passer],
        photos: dict[int, U8],
        sprites: dict[int, _Sprite],
    ) -> tuple[U8, list[FaceTruth]]:
        canvas = self._background.copy()
        w, h = self.size
        placed = []
        for p in active:
            x, y, size = self._place(p, t)
            placed.append((size, p, x, y))
        placed.sort(key=lambda q: (q[0], q[1].passer_id))  # far (small) first
        drawn: list[tuple[int, Box, tuple[int, int, int, int], F32]] = []
        for size, p, x, y in placed:
            width = max(4, round(size))
            sprite = sprites.get(p.passer_id)
            if sprite is None or sprite.width != width:
                if p.passer_id not in photos:
                    photos[p.passer_id] = _read_rgb(p.image)
                sprite = _make_sprite(photos[p.passer_id], p, width)
                sprites[p.passer_id] = sprite
            fx1, fy1, fx2, fy2 = sprite.face
            ox = round(x - (fx1 + fx2) / 2)
            oy = round(y - (fy1 + fy2) / 2)
            box = Box(ox + fx1, oy + fy1, ox + fx2, oy + fy2)
            if box.x2 <= 0 or box.x1 >= w or box.y2 <= 0 or box.y1 >= h:
                continue
            if self.bodies:
                _body(canvas, box, p.colour)
            sh, sw = sprite.alpha.shape[:2]
            rect = (ox, oy, ox + sw, oy + sh)
            _paste(canvas, sprite, ox, oy)
            drawn.append((p.passer_id, box, rect, sprite.alpha))
        canvas += self._noise[index % len(self._noise)]
        image: U8 = np.clip(canvas, 0, 255).astype(np.uint8)
        return image, _truth(drawn, w, h)


def _read_rgb(path: Path) -> U8:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(path)
    return np.ascontiguousarray(bgr[:, :, ::-1], dtype=np.uint8)


def _window(
    ox: int, oy: int, sw: int, sh: int, w: int, h: int
) -> tuple[slice, slice, slice, slice] | None:
    x1, y1, x2, y2 = max(0, ox), max(0, oy), min(w, ox + sw), min(h, oy + sh)
    if x1 >= x2 or y1 >= y2:
        return None
    return slice(y1, y2), slice(x1, x2), slice(y1 - oy, y2 - oy), slice(x1 - ox, x2 - ox)


def _paste(canvas: F32, sprite: _Sprite, ox: int, oy: int) -> None:
    h, w = canvas.shape[:2]
    sh, sw = sprite.alpha.shape[:2]
    win = _window(ox, oy, sw, sh, w, h)
    if win is None:
        return
    cy, cx, sy, sx = win
    a = sprite.alpha[sy, sx]
    region = canvas[cy, cx]
    region += a * (sprite.rgb[sy, sx] - region)


def _body(canvas: F32, face: Box, colour: tuple[int, int, int]) -> None:
    """Shoulders and torso under the head: a filled ellipse in the passer's colour."""
    cx = (face.x1 + face.x2) / 2
    top = face.y2 + 0.25 * face.height
    axes = (max(2, round(1.15 * face.width)), max(2, round(1.6 * face.height)))
    centre = (round(cx), round(top + axes[1]))
    cv2.ellipse(canvas, centre, axes, 0, 180, 360, tuple(float(c) for c in colour), -1)
    h, w = canvas.shape[:2]
    y1, y2 = min(h, max(0, centre[1])), min(h, max(0, centre[1] + axes[1]))
    x1, x2 = min(w, max(0, centre[0] - axes[0])), min(w, max(0, centre[0] + axes[0]))
    canvas[y1:y2, x1:x2] = np.asarray(colour, np.float32)


def _truth(
    drawn: list[tuple[int, Box, tuple[int, int, int, int], F32]], w: int, h: int
) -> list[FaceTruth]:
    """Each drawn face with the share of its box hidden by heads pasted after it (nearer)."""
    out = []
    for i, (pid, box, _, _) in enumerate(drawn):
        bx1, by1 = math.floor(box.x1), math.floor(box.y1)
        bw, bh = max(1, math.ceil(box.x2) - bx1), max(1, math.ceil(box.y2) - by1)
        cover = np.zeros((bh, bw), np.float32)
        for _, _, (rx1, ry1, rx2, ry2), alpha in drawn[i + 1 :]:
            win = _window(rx1 - bx1, ry1 - by1, rx2 - rx1, ry2 - ry1, bw, bh)
            if win is not None:
                cy, cx, sy, sx = win
                np.maximum(cover[cy, cx], alpha[sy, sx, 0], out=cover[cy, cx])
        clipped = box.x1 < 0 or box.y1 < 0 or box.x2 > w or box.y2 > h
        out.append(FaceTruth(pid, box, float(cover.mean()), clipped))
    return out
