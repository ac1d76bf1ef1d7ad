"""Render a station's frame pair from a simulated scene, with a real face photo as texture.

The simulator (`simulator.simulate_scene`) says where a face or a sheet is; this module draws
what the two cameras would record, so the cues can run on images as a real station's do
(detection, rectification, matching along rows), not on the simulator's correspondences.

- A bona fide face: the photo mapped onto the person's 3D face surface (a 5 mm mesh over the
  mean face's oval, plus a receding skirt that carries the photo's hair, ears and neck), the
  photo's five landmarks matched to the mesh's five by a similarity.
- A print (flat, tilted, bent, folded, small, NIR): the photo on the sheet, its landmarks where
  the simulator puts the face's; a screen (phone, tablet, monitor): the photo in a black bezel.
- Camera 1 (colour): the texture under view-independent room light (Lambert, light from the
  cameras' side; a screen emits its image unshaded). Camera 2 (NIR): the simulator's lighting
  model (illuminator at camera 2, inverse square, plus ambient NIR; illuminator on and off),
  with the photo's luminance as the albedo's pattern (its contrast scaled down: pigment shows
  less in NIR), office paper bright with faded ink, an NIR print at a chosen grey, a screen dark.
- Triangles are drawn far to near (painter's order) with back faces culled, textures sampled
  per pixel by barycentric coordinates (affine per triangle, not perspective-correct: the
  triangles are a few pixels wide), then a slight optical blur and sensor noise.

Not modelled: skin's own NIR appearance (subsurface scattering, veins), specular highlights,
hair in 3D, moiré and screen glare, motion blur, auto-exposure. A photo's own lighting and pose
are baked into its texture: a turned face in the photo is pasted on a frontal mesh.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from types import MappingProxyType

import cv2
import numpy as np
import numpy.typing as npt
from scipy.spatial import Delaunay  # type: ignore[import-untyped]

from yingyan.liveness.simulator import (
    _LANDMARKS_MM,
    SCREENS,
    Sample,
    Scene,
    SimulatorConfig,
    Species,
    _layout,
    _project,
    default_rig,
    simulate_scene,
)
from yingyan.station.calibration import StereoCalibration
from yingyan.station.frames import FramePair, Illuminator
from yingyan.types import Detection

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Image = npt.NDArray[np.uint8]

_OVAL = (66.0, 95.0, 25.0)  # half-width, half-height, centre y (mm): the mean face's oval
# The skirt around the oval: (scale of the oval, mm further back than its edge).
_SKIRT = ((1.12, 12.0), (1.3, 40.0), (1.55, 85.0))
_BOUNDARY_N = 72


@dataclass(frozen=True, slots=True)
class RenderConfig:
    mesh_mm: float = 5.0  # the face mesh's grid step
    second_camera: str = "nir"  # "nir" or "rgb" (an RGB + RGB station)
    nir_gain: float = 30.0  # as SimulatorConfig: grey levels · m² per unit albedo
    ambient_max: float = 20.0  # grey levels per unit albedo of ambient NIR
    nir_contrast: float = 0.8  # the photo's luminance pattern scaled down in NIR
    rgb_noise: float = 2.0  # grey levels, camera 1
    nir_noise: float = 1.5  # grey levels, camera 2
    blur_sigma: float = 0.7  # px, the optics' blur
    background_m: float = 2.0  # the wall behind the presentation
    skew_s: float = 0.0  # camera 2's exposure after camera 1's


@dataclass(frozen=True, slots=True, eq=False)
class RenderedPair:
    """The frames and the scene behind them: `landmarks1`/`landmarks2` are where the photo's
    five landmarks appear in each camera (raw pixels, noise-free; None where camera 2 shows
    no face: a screen in NIR)."""

    pair: FramePair
    sample: Sample
    landmarks1: FloatArray
    landmarks2: FloatArray | None
    depth1: npt.NDArray[np.float32] | None = None  # camera 1's z (m) per pixel, NaN: the wall


@dataclass(frozen=True, slots=True, eq=False)
class _Mesh:
    points: FloatArray  # (N, 3) camera 1's frame, m
    uv: FloatArray  # (N, 2) photo pixels
    triangles: IntArray  # (M, 3)
    orientation: FloatArray  # (M,) sign of each triangle's area in its texture layout
    visible: npt.NDArray[np.bool_]  # (N,)


def render_pair(
    species: Species,
    photo_rgb: Image,
    photo_landmarks: npt.ArrayLike,
    rng: np.random.Generator,
    rig: StereoCalibration | None = None,
    distance: float | None = None,
    overrides: Mapping[str, float] | None = None,
    config: RenderConfig = RenderConfig(),
) -> RenderedPair:
    """One presentation of `species` showing the person in `photo_rgb` (their five landmarks in
    the photo, in the detector's order), drawn by both cameras of `rig` (default_rig())."""
    rig = rig or default_rig()
    photo = np.asarray(photo_rgb, dtype=np.uint8)
    lm_photo = np.asarray(photo_landmarks, dtype=np.float64).reshape(5, 2)
    sim = SimulatorConfig(second_camera=config.second_camera)
    sample, scene = simulate_scene(species, rng, rig, sim, distance, overrides)
    if species is Species.BONA_FIDE:
        mesh, lm3d = _face_mesh(scene, lm_photo, config.mesh_mm)
    else:
        mesh, lm3d = _sheet_mesh(scene, photo.shape[:2], lm_photo)
    texture, luminance = _textures(photo, lm_photo, species)
    nir_albedo, extra = _nir_albedo(species, rng, luminance, config, overrides or {})
    ambient = float(rng.uniform(0, config.ambient_max))
    background = _background(rng, rig.image_size)
    c2 = -rig.r.T @ rig.t  # camera 2's centre in camera 1's frame
    normals = _vertex_normals(mesh.points, mesh.triangles)
    room = 0.7 + 0.3 * _facing(normals, mesh.points, np.zeros(3))
    if species in SCREENS:
        room = np.full(len(mesh.points), 0.95)  # a screen emits its image
    first, depth1 = _render_rgb(rig, mesh, texture, room, background, 1, config, rng)
    lm1, lm2 = _project(rig, lm3d)
    pair_kwargs: dict[str, object] = {}
    if config.second_camera == "rgb":
        second, _ = _render_rgb(rig, mesh, texture, room, background, 2, config, rng)
        off = None
        kind = "rgb"
    else:
        dist2 = np.linalg.norm(mesh.points - c2, axis=1)
        lit = config.nir_gain * _facing(normals, mesh.points, c2) / dist2**2
        second, off = _render_nir(rig, mesh, nir_albedo, lit, ambient, background, config, rng)
        kind = "nir"
        pair_kwargs["illuminator"] = Illuminator(on=True)
    pair = FramePair(
        first,
        second,
        "rgb",
        kind,
        0.0,
        config.skew_s,
        second_off=off,
        **pair_kwargs,  # type: ignore[arg-type]
    )
    sees2 = not (species in SCREENS and kind == "nir")
    return RenderedPair(
        pair, _with_extra(sample, extra, ambient), lm1, lm2 if sees2 else None, depth1
    )


def photo_landmarks(
    photo: Image, detect: Callable[[Image], Sequence[Detection]], upscale: float = 3.0
) -> FloatArray | None:
    """The photo's largest face's five landmarks, found on the photo enlarged `upscale` times
    (YuNet's landmarks on a 250x250 LFW image move by 3-6 px when the same image is enlarged:
    found at the size the station will see it, they agree with the rendered face's)."""
    big = cv2.resize(photo, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
    faces = [d for d in detect(np.asarray(big, dtype=np.uint8)) if d.landmarks is not None]
    if not faces:
        return None
    best = max(faces, key=lambda d: d.box.area)
    assert best.landmarks is not None
    return np.asarray(best.landmarks.points, dtype=np.float64) / upscale


def is_frontal(landmarks: npt.ArrayLike, max_offset: float = 0.12, max_roll: float = 10.0) -> bool:
    """A photo fit to paste on the frontal mesh: the nose within `max_offset` interocular
    distances of the eyes' midline, the eye line within `max_roll` degrees of level."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eye = lm[1] - lm[0]
    iod = float(np.linalg.norm(eye))
    if iod <= 0:
        return False
    u, nose = eye / iod, lm[2] - (lm[0] + lm[1]) / 2
    along = abs(float(u @ nose))  # the nose's offset along the eye line
    below = float(u[0] * nose[1] - u[1] * nose[0])  # > 0: under the eyes
    roll = math.degrees(math.atan2(abs(eye[1]), eye[0]))
    return along / iod <= max_offset and below > 0 and roll <= max_roll


# --- meshes -----------------------------------------------------------------------------------


def similarity_2d(src: npt.ArrayLike, dst: npt.ArrayLike) -> FloatArray:
    """Least-squares 2D similarity (2x3) taking `src` points onto `dst` (Umeyama)."""
    a = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    ma, mb = a.mean(axis=0), b.mean(axis=0)
    u, d, vt = np.linalg.svd((b - mb).T @ (a - ma) / len(a))
    e = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    r = u @ e @ vt
    s = float(np.trace(np.diag(d) @ e) / np.mean(np.sum((a - ma) ** 2, axis=1)))
    return np.hstack([s * r, (mb - s * r @ ma)[:, None]])


def _apply(m: FloatArray, pts: FloatArray) -> FloatArray:
    out: FloatArray = pts @ m[:, :2].T + m[:, 2]
    return out


@cache
def _face_layout(step: float) -> tuple[FloatArray, FloatArray, IntArray, FloatArray]:
    """The face mesh's frontal layout (mm): a grid inside the oval, the oval's boundary and
    the five landmarks last (they set z = 0); the skirt's layout and its extra depth (mm);
    triangles over both; the triangles' orientation in the layout."""
    ax, ay, cy = _OVAL
    g = np.arange(-ax, ax + 1e-9, step)
    gx, gy = np.meshgrid(g, np.arange(cy - ay, cy + ay + 1e-9, step))
    inside = (gx / ax) ** 2 + ((gy - cy) / ay) ** 2 <= 0.93
    grid = np.stack([gx[inside], gy[inside]], axis=1)
    d = np.linalg.norm(grid[:, None, :] - _LANDMARKS_MM[None], axis=2).min(axis=1)
    t = np.linspace(0, 2 * math.pi, _BOUNDARY_N, endpoint=False)
    boundary = np.stack([0.98 * ax * np.sin(t), cy - 0.98 * ay * np.cos(t)], axis=1)
    face = np.vstack([grid[d > step / 3], boundary, _LANDMARKS_MM])
    centre = np.array([0.0, cy])
    skirt = np.vstack([centre + (boundary - centre) * f for f, _ in _SKIRT])
    extra = np.repeat([e for _, e in _SKIRT], _BOUNDARY_N).astype(np.float64)
    everything = np.vstack([face, skirt])
    tri = Delaunay(everything).simplices.astype(np.int64)
    return face, np.hstack([skirt, extra[:, None]]), tri, _signed_area(everything, tri)


def _signed_area(xy: FloatArray, tri: IntArray) -> FloatArray:
    a, b, c = xy[tri[:, 0]], xy[tri[:, 1]], xy[tri[:, 2]]
    out: FloatArray = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (
        c[:, 0] - a[:, 0]
    )
    return out


def _face_mesh(scene: Scene, lm_photo: FloatArray, step: float) -> tuple[_Mesh, FloatArray]:
    """The person's face surface with the photo on it; the photo's landmarks in 3D."""
    layout, skirt, tri, orient = _face_layout(step)
    person = scene.person
    face = person.points(layout)
    n_boundary = _BOUNDARY_N
    boundary = face[-5 - n_boundary : -5]
    k = person.iod_mm / 63.0
    centre_m = np.array([0.0, _OVAL[2] * k * person.aspect / 1000])
    skirt_pts = []
    for f, e in _SKIRT:
        ring = boundary.copy()
        ring[:, :2] = centre_m + (boundary[:, :2] - centre_m) * f
        ring[:, 2] = boundary[:, 2] + e / 1000
        skirt_pts.append(ring)
    points = scene.face_to_camera(np.vstack([face, *skirt_pts]))
    to_photo = similarity_2d(_LANDMARKS_MM, lm_photo)
    uv = _apply(to_photo, np.vstack([layout, skirt[:, :2]]))
    # The photo's own landmarks on the surface: their layout position, on the person's face.
    lm_layout = _apply(_invert(to_photo), lm_photo)
    lm3d = scene.face_to_camera(person.points(np.vstack([lm_layout, _LANDMARKS_MM]))[:5])
    visible = np.ones(len(points), dtype=bool)
    return _Mesh(points, uv, tri, orient, visible), lm3d


def _invert(m: FloatArray) -> FloatArray:
    a = np.linalg.inv(m[:, :2])
    return np.hstack([a, (-a @ m[:, 2])[:, None]])


def _sheet_mesh(
    scene: Scene, photo_hw: tuple[int, int], lm_photo: FloatArray
) -> tuple[_Mesh, FloatArray]:
    """The photo on the sheet: a grid over a crop around the face (4 x 5 interocular
    distances, within the photo; a screen adds a black bezel beyond the photo)."""
    h, w = photo_hw
    iod = float(np.linalg.norm(lm_photo[1] - lm_photo[0]))
    cx, cy = lm_photo.mean(axis=0)
    x0, x1 = max(0.0, cx - 2.0 * iod), min(w - 1.0, cx + 2.0 * iod)
    y0, y1 = max(0.0, cy - 2.6 * iod), min(h - 1.0, cy + 2.4 * iod)
    if scene.species in SCREENS:
        pad = 0.25 * iod
        x0, x1, y0, y1 = x0 - pad, x1 + pad, y0 - pad, y1 + pad
    gx, gy = np.meshgrid(np.linspace(x0, x1, 25), np.linspace(y0, y1, 31))
    uv_photo = np.stack([gx.ravel(), gy.ravel()], axis=1)
    nx = 25
    idx = np.arange(len(uv_photo)).reshape(-1, nx)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:]
    d = d.ravel()
    tri = np.vstack([np.stack([a, b, c], 1), np.stack([b, d, c], 1)]).astype(np.int64)
    # Photo pixels -> sheet positions: the photo's landmarks onto the face's on the sheet.
    person = scene.person
    face_lm = person.points(_layout())[-5:]
    to_sheet = similarity_2d(lm_photo, scene.photo_uv(face_lm))
    points, visible = scene.sheet_to_camera(_apply(to_sheet, uv_photo))
    lm3d, _ = scene.sheet_to_camera(_apply(to_sheet, lm_photo))
    return _Mesh(points, uv_photo, tri, _signed_area(uv_photo, tri), visible), lm3d


def _vertex_normals(points: FloatArray, tri: IntArray) -> FloatArray:
    v = points[tri]
    n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    out = np.zeros_like(points)
    for k in range(3):
        np.add.at(out, tri[:, k], n)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    result: FloatArray = out / np.maximum(norm, 1e-12)
    return result


def _facing(normals: FloatArray, points: FloatArray, source: FloatArray) -> FloatArray:
    """|cos| of the angle between each normal and the direction to `source`."""
    ray = source - points
    out: FloatArray = np.abs(np.einsum("ij,ij->i", normals, ray)) / np.linalg.norm(ray, axis=1)
    return out


# --- textures and materials -------------------------------------------------------------------


def _textures(
    photo: Image, lm_photo: FloatArray, species: Species
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The photo (float RGB) and its luminance relative to the face's skin (1 = skin), each
    padded with black so a screen's bezel samples black."""
    rgb = photo.astype(np.float32)
    lum = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0
    eyes, mouth = lm_photo[:2], lm_photo[3:]
    x0, x1 = int(eyes[:, 0].min()), int(eyes[:, 0].max()) + 1
    y0, y1 = int(eyes[:, 1].mean()), int(mouth[:, 1].mean()) + 1
    skin = float(np.median(lum[max(0, y0) : max(y0 + 1, y1), max(0, x0) : max(x0 + 1, x1)]))
    rel = (lum / max(skin, 1e-3)).astype(np.float32)
    return rgb, rel


def _nir_albedo(
    species: Species,
    rng: np.random.Generator,
    rel: npt.NDArray[np.float32],
    config: RenderConfig,
    overrides: Mapping[str, float],
) -> tuple[npt.NDArray[np.float32], dict[str, float]]:
    """NIR albedo over the photo, as the simulator's `_albedo` draws it: skin 0.35-0.65, an
    NIR print 0.3-0.8 (both with the photo's pattern), office paper 0.65-0.9 with its ink
    faded (contrast 5-30%; a laser print's carbon toner keeps more: override "ink_contrast"),
    a screen 0.03. `overrides` may fix "albedo" and "ink_contrast" (drawn all the same)."""
    t = np.clip(1 + config.nir_contrast * (rel - 1), 0.15, 1.4)
    if species is Species.BONA_FIDE or species is Species.NIR_PRINT:
        lo, hi = (0.35, 0.65) if species is Species.BONA_FIDE else (0.3, 0.8)
        rho = float(overrides.get("albedo", rng.uniform(lo, hi)))
        return (rho * t).astype(np.float32), {"albedo": rho}
    if species in SCREENS:
        return np.full_like(rel, 0.03), {"albedo": 0.03}
    rho = float(rng.uniform(0.65, 0.9))
    c = float(rng.uniform(0.05, 0.3))
    rho, c = float(overrides.get("albedo", rho)), float(overrides.get("ink_contrast", c))
    paper = rho * (1 - c * (1.5 - np.clip(t, 0.4, 1.0)))
    return paper.astype(np.float32), {"albedo": rho, "ink_contrast": c}


def _background(rng: np.random.Generator, size: tuple[int, int]) -> npt.NDArray[np.float32]:
    """A wall with smooth blotches (RGB, 0-255), the same in both cameras."""
    w, h = size
    grey = rng.uniform(70, 170, (6, 10, 1))
    small = (grey * rng.uniform(0.9, 1.1, (6, 10, 3)) * rng.uniform(0.9, 1.1, 3)).astype(np.float32)
    quarter = cv2.resize(small, ((w + 64) // 4, h // 4), interpolation=cv2.INTER_CUBIC)
    out = cv2.resize(quarter, (w + 64, h), interpolation=cv2.INTER_LINEAR)
    return np.asarray(np.clip(out, 0, 255), dtype=np.float32)


# --- rasterising ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Raster:
    """Which triangle covers each pixel of a region (-1: none) and each triangle's inverse
    vertex matrix, so any per-vertex value becomes an affine field over its pixels."""

    y0: int
    x0: int
    ids: npt.NDArray[np.intp]  # (h, w); -1 maps to the extra last row of every field
    inverse: FloatArray  # (M, 3, 3): [x y 1] rows of the vertices, inverted
    triangles: IntArray

    @property
    def mask(self) -> npt.NDArray[np.bool_]:
        out: npt.NDArray[np.bool_] = self.ids >= 0
        return out

    def field(self, values: FloatArray, fill: float = 0.0) -> npt.NDArray[np.float32]:
        """Per-vertex `values` (N,) interpolated over the covered pixels, `fill` elsewhere."""
        coef = np.einsum("mij,mj->mi", self.inverse, values[self.triangles])  # (M, 3)
        coef = np.vstack([coef, [0.0, 0.0, fill]]).astype(np.float32)
        h, w = self.ids.shape
        xs = np.arange(self.x0, self.x0 + w, dtype=np.float32)[None, :]
        ys = np.arange(self.y0, self.y0 + h, dtype=np.float32)[:, None]
        out: npt.NDArray[np.float32] = (
            coef[self.ids, 0] * xs + coef[self.ids, 1] * ys + coef[self.ids, 2]
        )
        return out

    def region(self, image: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        h, w = self.ids.shape
        return image[self.y0 : self.y0 + h, self.x0 : self.x0 + w]


def _rasterise(
    px: FloatArray, depth: FloatArray, mesh: _Mesh, size: tuple[int, int]
) -> _Raster | None:
    w, h = size
    tri = mesh.triangles
    area = _signed_area(px, tri)
    keep = mesh.visible[tri].all(axis=1) & (np.sign(area) == np.sign(mesh.orientation))
    keep &= np.abs(area) > 1e-6
    keep &= np.isfinite(px[tri]).all(axis=(1, 2)) & (depth[tri] > 0).all(axis=1)
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return None
    used = px[tri[idx]].reshape(-1, 2)
    x0, y0 = max(0, int(np.floor(used[:, 0].min()))), max(0, int(np.floor(used[:, 1].min())))
    x1, y1 = min(w, int(np.ceil(used[:, 0].max())) + 1), min(h, int(np.ceil(used[:, 1].max())) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    ids = np.full((y1 - y0, x1 - x0), -1, dtype=np.int32)
    order = idx[np.argsort(-depth[tri[idx]].mean(axis=1))]  # far first
    polys = np.round((px[tri[order]] - [x0, y0]) * 16).astype(np.int32)
    for k, poly in zip(order, polys, strict=True):
        cv2.fillConvexPoly(ids, poly, int(k), lineType=cv2.LINE_8, shift=4)
    vertices = np.concatenate([px[tri], np.ones((len(tri), 3, 1))], axis=2)
    vertices[~keep] = np.eye(3)  # never drawn; keeps the inverse defined
    return _Raster(y0, x0, ids.astype(np.intp), np.linalg.inv(vertices), tri)


def _camera_view(rig: StereoCalibration, mesh: _Mesh, camera: int) -> tuple[FloatArray, FloatArray]:
    px1, px2 = _project(rig, mesh.points)
    if camera == 1:
        return px1, mesh.points[:, 2]
    return px2, (mesh.points @ rig.r.T + rig.t)[:, 2]


def _sample(
    texture: npt.NDArray[np.float32], raster: _Raster, mesh: _Mesh
) -> npt.NDArray[np.float32]:
    """The texture over the region (black outside the photo and off the mesh)."""
    mx = raster.field(mesh.uv[:, 0], -1e4)
    my = raster.field(mesh.uv[:, 1], -1e4)
    out = cv2.remap(texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return np.asarray(out, dtype=np.float32)


@cache
def _noise_bank(h: int, w: int) -> npt.NDArray[np.float32]:
    """Unit Gaussian noise, drawn once: each frame takes a window at a seeded offset (drawing
    a fresh 1280x720x3 field costs ~50 ms, the whole budget of a frame)."""
    return np.random.default_rng(0).standard_normal((h + 128, w + 128, 3), dtype=np.float32)


def _finish(
    image: npt.NDArray[np.float32], noise: float, blur: float, rng: np.random.Generator
) -> Image:
    if blur > 0:
        image = np.asarray(cv2.GaussianBlur(image, (0, 0), blur), dtype=np.float32)
    h, w = image.shape[:2]
    dy, dx = (int(v) for v in rng.integers(0, 128, 2))
    bank = _noise_bank(h, w)[dy : dy + h, dx : dx + w]
    image = image + noise * (bank if image.ndim == 3 else bank[..., int(rng.integers(0, 3))])
    np.clip(image + 0.5, 0, 255, out=image)
    return image.astype(np.uint8)


def _wall(
    background: npt.NDArray[np.float32], rig: StereoCalibration, camera: int, distance: float
) -> npt.NDArray[np.float32]:
    """The wall in camera 1 or 2: camera 2 sees it shifted by its disparity (up to 32 px)."""
    w = rig.image_size[0]
    shift = 0 if camera == 1 else min(32, round(rig.k1[0, 0] * rig.baseline / distance))
    return np.array(background[:, 32 + shift : 32 + shift + w], dtype=np.float32)


def _render_rgb(
    rig: StereoCalibration,
    mesh: _Mesh,
    texture: npt.NDArray[np.float32],
    shade: FloatArray,
    background: npt.NDArray[np.float32],
    camera: int,
    config: RenderConfig,
    rng: np.random.Generator,
) -> tuple[Image, npt.NDArray[np.float32]]:
    """A colour camera's frame, and its depth map (z in that camera's frame, m)."""
    image = _wall(background, rig, camera, config.background_m)
    zmap = np.full(image.shape[:2], np.nan, dtype=np.float32)
    px, depth = _camera_view(rig, mesh, camera)
    raster = _rasterise(px, depth, mesh, rig.image_size)
    if raster is not None:
        colour = _sample(texture, raster, mesh) * raster.field(shade)[..., None]
        np.copyto(raster.region(image), colour, where=raster.mask[..., None])
        np.copyto(raster.region(zmap), raster.field(depth), where=raster.mask)
    return _finish(image, config.rgb_noise, config.blur_sigma, rng), zmap


def _render_nir(
    rig: StereoCalibration,
    mesh: _Mesh,
    albedo: npt.NDArray[np.float32],
    lit: FloatArray,
    ambient: float,
    background: npt.NDArray[np.float32],
    config: RenderConfig,
    rng: np.random.Generator,
) -> tuple[Image, Image]:
    """Camera 2 with the illuminator on and off (the same instant, as a strobed station)."""
    wall = (
        cv2.cvtColor(_wall(background, rig, 2, config.background_m), cv2.COLOR_RGB2GRAY) / 255.0
    )  # albedo 0.3-0.7
    on = ((config.nir_gain / config.background_m**2 + ambient) * wall).astype(np.float32)
    off = (ambient * wall).astype(np.float32)
    px, depth = _camera_view(rig, mesh, 2)
    raster = _rasterise(px, depth, mesh, rig.image_size)
    if raster is not None:
        rho = _sample(albedo, raster, mesh)
        np.copyto(raster.region(on), (raster.field(lit) + ambient) * rho, where=raster.mask)
        np.copyto(raster.region(off), ambient * rho, where=raster.mask)
    return (
        _finish(on, config.nir_noise, config.blur_sigma, rng),
        _finish(off, config.nir_noise, config.blur_sigma, rng),
    )


def _with_extra(sample: Sample, extra: dict[str, float], ambient: float) -> Sample:
    return replace(sample, extra=MappingProxyType({**extra, "ambient": ambient}))
