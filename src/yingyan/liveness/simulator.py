"""A seeded simulator of a two-camera face station, for tests and benchmarks of the PAD cues.

Two pinhole cameras with lens distortion (camera 1 colour, camera 2 near-infrared with its
illuminator, 50 mm apart) look at a bona fide face or at one attack species, placed across the
working range. Each sample gives the facial points as both cameras see them (with pixel noise),
five detector landmarks (noisier), the ground truth, and optionally camera 2's NIR images.

The face is an analytic mean face, not a scanned one: a surface z(x, y) built from textbook
adult proportions (pupils 63 mm apart at the eye plane z = 0; nose tip 25 mm in front of it,
32 mm below the pupils; lips 14 mm, chin 7 mm, brow and nasion 9-10 mm in front; the cheeks,
temples and jaw receding up to 48 mm behind it; eye sockets 3 mm deep), on an 11 mm grid over the
face oval plus the five landmarks (164 points). Faces differ from it by their interocular
distance (N(63, 3.6) mm), width, relief and nose depth (±8-12%), and a few smooth bumps (1.5 mm):
these spreads are assumptions, not measurements. No model data of anyone is used.

Attacks are a photo of such a face on a sheet or a screen: flat, tilted, bent around a cylinder,
V-folded, a small photo held close, phone / tablet / monitor replays (glass: nothing in NIR; with
an NIR second camera there is no face to match in camera 2) and a photo printed for NIR (carbon
ink: the face shows in NIR at a grey the attacker chooses). A 3D mask is out of scope.

`simulate_scene` also returns the `Scene` (the person and the pose of their face or of the sheet
carrying their photo) for renderers: `liveness.render` draws both cameras' images from it with a
real face photo as texture.

Rendering here is flat-shaded triangles lit by the illuminator (intensity = gain·albedo·cosθ/d²,
plus ambient NIR), with skin and paper albedos from published ranges at 850 nm; it models no
subsurface scattering, specular highlights, motion blur or auto-exposure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from types import MappingProxyType

import cv2
import numpy as np
import numpy.typing as npt
from scipy.interpolate import PchipInterpolator  # type: ignore[import-untyped]
from scipy.spatial import Delaunay  # type: ignore[import-untyped]

from yingyan.station.calibration import StereoCalibration, make_calibration

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

IOD_MEAN_MM = 63.0
IOD_SD_MM = 3.6
GRID_MM = 11.0


class Species(StrEnum):
    BONA_FIDE = "bona_fide"
    FLAT_PRINT = "flat_print"
    TILTED_PRINT = "tilted_print"
    BENT_PRINT = "bent_print"
    FOLDED_PRINT = "folded_print"
    SMALL_PHOTO = "small_photo_close"
    PHONE_REPLAY = "phone_replay"
    TABLET_REPLAY = "tablet_replay"
    MONITOR_REPLAY = "monitor_replay"
    NIR_PRINT = "nir_print"


ATTACKS = tuple(s for s in Species if s is not Species.BONA_FIDE)
SCREENS = (Species.PHONE_REPLAY, Species.TABLET_REPLAY, Species.MONITOR_REPLAY)


@dataclass(frozen=True, slots=True, eq=False)
class MeanFace:
    """Facial points in metres, face frame: x to the image's right, y down, z away from the
    camera; origin between the pupils. `landmarks` index the five points (image-left eye,
    image-right eye, nose tip, mouth corners); `texture` is each point's albedo factor."""

    points: FloatArray  # (N, 3)
    landmarks: IntArray  # (5,)
    texture: FloatArray  # (N,)
    triangles: IntArray  # (M, 3), over the frontal layout, for rendering


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    point_noise: float = 0.3  # px, each view: facial points matched along the epipolar line
    landmark_noise: float = 1.0  # px, each view: a landmark detector
    second_camera: str = "nir"  # "nir" (screens show nothing) or "rgb"
    render: bool = False  # also render camera 2's NIR frames (illuminator on and off)
    nir_gain: float = 30.0  # grey levels · m² per unit albedo, illuminator on
    ambient_max: float = 20.0  # grey levels per unit albedo of ambient NIR
    image_noise: float = 1.5  # grey levels


@dataclass(frozen=True, slots=True, eq=False)
class Sample:
    """One presentation: what the station sees and the ground truth behind it."""

    species: Species
    params: Mapping[str, float]
    distance: float  # m, camera 1 to the face's origin (between the eyes)
    points: FloatArray  # (N, 3) true positions, camera 1 frame, m
    pixels1: FloatArray  # (N, 2) raw pixels in camera 1, NaN where outside the image
    pixels2: FloatArray | None  # camera 2; None when it sees no face (a screen in NIR)
    landmarks1: FloatArray  # (5, 2)
    landmarks2: FloatArray | None
    face_iod: float  # m, the interocular distance of the face as presented (a print's scale)
    nir: npt.NDArray[np.uint8] | None = None  # camera 2, illuminator on
    nir_off: npt.NDArray[np.uint8] | None = None
    extra: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def is_attack(self) -> bool:
        return self.species is not Species.BONA_FIDE


def default_rig(
    focal: float = 1000.0, baseline: float = 0.05, working_range: tuple[float, float] = (0.3, 0.8)
) -> StereoCalibration:
    """A plausible station: 1280x720 cameras, slight toe-in and distortion, camera 2 right."""
    k1 = np.array([[focal, 0, 643.0], [0, focal, 358.0], [0, 0, 1]])
    k2 = np.array([[focal * 1.005, 0, 636.0], [0, focal * 1.005, 363.0], [0, 0, 1]])
    r = cv2.Rodrigues(np.array([0.003, -0.010, 0.002]))[0]
    return make_calibration(
        k1,
        [-0.04, 0.02, 0, 0, 0],
        k2,
        [-0.06, 0.03, 0.0005, -0.0003, 0],
        r,
        [-baseline, 0.0004, 0.0008],
        (1280, 720),
        working_range,
    )


# --- the face -------------------------------------------------------------------------------

_MIDLINE = PchipInterpolator(
    [-75, -55, -35, -20, -8, 10, 30, 44, 58, 68, 78, 88, 100, 112, 125],
    [2, -7, -11, -12, -9, -9, -10, -12, -13, -12, -11, -5, -8, -6, 10],
)
_HALF_WIDTH = PchipInterpolator([-75, -40, 0, 40, 70, 95, 125], [62, 70, 74, 72, 62, 45, 28])


def _gauss(x: FloatArray, y: FloatArray, cx: float, cy: float, sx: float, sy: float) -> FloatArray:
    out: FloatArray = np.exp(-((x - cx) ** 2) / (2 * sx**2) - (y - cy) ** 2 / (2 * sy**2))
    return out


def _surface(x: FloatArray, y: FloatArray, relief: float = 1.0, nose: float = 1.0) -> FloatArray:
    """Depth (mm, + away from the camera) of the face surface at (x, y) mm."""
    w = _HALF_WIDTH(y)
    lateral = 70.0 * (1 - np.sqrt(1 - np.minimum(0.97, (x / w) ** 2)))
    base = _MIDLINE(y) + lateral
    t = np.clip((y + 8) / 40, 0, None)
    h = np.where(y <= 32, 15.0 * t**1.2, 15.0 * np.clip(1 - ((y - 32) / 12) ** 2, 0, None))
    h = np.where(y < -8, 0.0, h)
    sigma_n = np.clip(4 + 6 * t, 4, 10)
    nose_z = -h * np.exp(-(x**2) / (2 * sigma_n**2))
    ax = np.abs(x)
    features = (
        3.0 * _gauss(ax, y, 32, 0, 12, 9)  # eye sockets
        - 4.0 * _gauss(ax, y, 40, 22, 12, 12)  # cheekbones
        - 3.0 * _gauss(x, y, 0, 68, 16, 7)  # lips
    )
    out: FloatArray = relief * (base + features) + nose * nose_z
    return out


def _texture(x: FloatArray, y: FloatArray) -> FloatArray:
    ax = np.abs(x)
    dark = (
        0.35 * _gauss(ax, y, 32, -16, 13, 3.5)  # eyebrows
        + 0.40 * _gauss(ax, y, 32, 0, 8, 3)  # eyes, lashes
        + 0.40 * _gauss(ax, y, 8, 42, 3, 3)  # nostrils
        + 0.15 * _gauss(x, y, 0, 68, 18, 6)  # lips
    )
    out: FloatArray = np.clip(1 - dark, 0.4, 1)
    return out


_LANDMARKS_MM = np.array([[-31.5, 0], [31.5, 0], [0, 32], [-25, 68], [25, 68]], dtype=np.float64)


def _layout() -> FloatArray:
    g = np.arange(-66, 67, GRID_MM)
    gx, gy = np.meshgrid(g, np.arange(-70, 121, GRID_MM))
    inside = (gx / 66) ** 2 + ((gy - 25) / 95) ** 2 <= 1
    grid = np.stack([gx[inside], gy[inside]], axis=1)
    # Drop grid points within 4 mm of a landmark (duplicates for rendering).
    d = np.linalg.norm(grid[:, None, :] - _LANDMARKS_MM[None], axis=2).min(axis=1)
    out: FloatArray = np.vstack([grid[d > 4], _LANDMARKS_MM])
    return out


def _face_mm(
    layout: FloatArray, relief: float = 1.0, nose: float = 1.0, bumps: FloatArray | None = None
) -> FloatArray:
    x, y = layout[:, 0], layout[:, 1]
    z = _surface(x, y, relief, nose)
    if bumps is not None:
        for cx, cy, amp, s in bumps:
            z = z + amp * _gauss(x, y, cx, cy, s, s)
    z = z - z[-5:-3].mean()  # the pupils on z = 0
    return np.stack([x, y, z], axis=1)


@cache
def mean_face() -> MeanFace:
    layout = _layout()
    pts = _face_mm(layout) / 1000.0
    tri = Delaunay(layout).simplices.astype(np.int64)
    n = layout.shape[0]
    return MeanFace(
        pts, np.arange(n - 5, n, dtype=np.int64), _texture(layout[:, 0], layout[:, 1]), tri
    )


@dataclass(frozen=True, slots=True, eq=False)
class Person:
    """One person's face: the mean face's layout scaled to their interocular distance and
    aspect, its relief and nose depth, and a few smooth bumps (cx, cy, amplitude, sigma; mm)."""

    iod_mm: float
    aspect: float
    relief: float
    nose: float
    bumps: FloatArray  # (4, 4)

    def points(self, layout: FloatArray) -> FloatArray:
        """Face-frame points (m) of layout positions (mm, the mean face's frontal layout,
        which must end with its five landmarks: the pupils set z = 0)."""
        k = self.iod_mm / IOD_MEAN_MM
        scaled = layout * np.array([k, k * self.aspect])
        out: FloatArray = _face_mm(scaled, self.relief, self.nose, self.bumps) / 1000.0
        return out

    @property
    def iod(self) -> float:
        """Interocular distance, m."""
        return self.iod_mm / 1000.0


def random_person(rng: np.random.Generator) -> Person:
    """One person drawn from the population (the draws `random_face` has always made)."""
    iod = float(np.clip(rng.normal(IOD_MEAN_MM, IOD_SD_MM), 52, 74))
    aspect = 1 + rng.normal(0, 0.04)
    bumps = np.stack(
        [
            rng.uniform(-60, 60, 4),
            rng.uniform(-60, 110, 4),
            rng.normal(0, 1.5, 4),
            rng.uniform(15, 30, 4),
        ],
        axis=1,
    )
    relief = 1 + rng.normal(0, 0.08)
    nose = 1 + rng.normal(0, 0.12)
    return Person(iod, float(aspect), float(relief), float(nose), bumps)


def random_face(rng: np.random.Generator) -> tuple[FloatArray, float]:
    """One person's face points (m, face frame) and their interocular distance (m)."""
    person = random_person(rng)
    return person.points(_layout()), person.iod


# --- attack surfaces ------------------------------------------------------------------------


def _rotation(axis: npt.ArrayLike, angle: float) -> FloatArray:
    a = np.asarray(axis, dtype=np.float64)
    return np.asarray(cv2.Rodrigues((a / np.linalg.norm(a) * angle).reshape(3, 1))[0], np.float64)


def _euler(yaw: float, pitch: float, roll: float) -> FloatArray:
    return _rotation([0, 1, 0], yaw) @ _rotation([1, 0, 0], pitch) @ _rotation([0, 0, 1], roll)


def _sheet(
    uv: FloatArray, species: Species, params: dict[str, float]
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Sheet coordinates (m) -> 3D points of the bent / folded / flat sheet, and visibility."""
    u, v = uv[:, 0], uv[:, 1]
    visible = np.ones(len(u), dtype=bool)
    if species is Species.BENT_PRINT:
        r, sign = params["radius"], params["convex"] * 2 - 1  # convex: edges recede
        s = u - params["axis_offset"]
        theta = s / r
        visible = np.abs(theta) < math.radians(75)
        x = params["axis_offset"] + r * np.sin(theta)
        z = sign * r * (1 - np.cos(theta))
        return np.stack([x, v, z], axis=1), visible
    if species is Species.FOLDED_PRINT:
        alpha = (math.pi - math.radians(params["fold_angle"])) / 2
        s = u - params["crease_offset"]
        sign = params["mountain"] * 2 - 1  # mountain: the crease is nearest
        x = params["crease_offset"] + s * math.cos(alpha)
        z = sign * np.abs(s) * math.sin(alpha)
        return np.stack([x, v, z], axis=1), visible
    return np.stack([u, v, np.zeros_like(u)], axis=1), visible


def _attack_params(species: Species, rng: np.random.Generator) -> dict[str, float]:
    """Each species' parameters: what an attacker would choose, spread over their range."""
    p: dict[str, float] = {
        "tilt": abs(rng.normal(0, 5)),  # degrees, about an in-plane axis at `tilt_axis`
        "tilt_axis": rng.uniform(0, 180),
    }
    if species is Species.TILTED_PRINT:
        p["tilt"] = rng.uniform(15, 45)
    if species is Species.BENT_PRINT:
        p |= {
            "radius": float(np.exp(rng.uniform(math.log(0.04), math.log(0.2)))),
            "convex": float(rng.random() < 0.8),
            "axis_offset": rng.uniform(-0.01, 0.01),
        }
    if species is Species.FOLDED_PRINT:
        p |= {
            "fold_angle": rng.uniform(100, 170),
            "crease_offset": rng.uniform(-0.01, 0.01),
            "mountain": float(rng.random() < 0.8),
        }
    scale = {
        Species.SMALL_PHOTO: (0.25, 0.6),
        Species.PHONE_REPLAY: (0.3, 0.5),
        Species.TABLET_REPLAY: (0.6, 1.0),
        Species.MONITOR_REPLAY: (1.0, 2.5),
    }.get(species, (0.95, 1.05))
    p["scale"] = rng.uniform(*scale)
    return p


# --- the simulator --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Scene:
    """Where a presentation sits, for renderers: the person, and the pose that takes their face
    (bona fide) or the sheet carrying their photo (an attack) into camera 1's frame."""

    species: Species
    person: Person
    params: Mapping[str, float]
    rotation: FloatArray  # (3, 3) object -> camera 1
    offset: FloatArray  # (3,) m
    photo_rotation: FloatArray  # (3, 3) the face's small pose in the photo (attacks)

    def face_to_camera(self, face: FloatArray) -> FloatArray:
        """Face-frame points (m) of a bona fide face -> camera 1's frame."""
        out: FloatArray = face @ self.rotation.T + self.offset
        return out

    def photo_uv(self, face: FloatArray) -> FloatArray:
        """Face-frame points (m) -> where the photo shows them on the sheet (m)."""
        out: FloatArray = (face @ self.photo_rotation.T)[:, :2] * self.params.get("scale", 1.0)
        return out

    def sheet_to_camera(self, uv: FloatArray) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """Sheet positions (m) -> camera 1's frame, bent or folded as the species says, and
        whether each faces the cameras (a tightly bent sheet turns away at its edges)."""
        obj, visible = _sheet(uv, self.species, dict(self.params))
        return obj @ self.rotation.T + self.offset, visible


def simulate(
    species: Species,
    rng: np.random.Generator,
    rig: StereoCalibration | None = None,
    config: SimulatorConfig = SimulatorConfig(),
    distance: float | None = None,
    overrides: Mapping[str, float] | None = None,
) -> Sample:
    """One presentation of `species`; `distance` (m) is where the face appears to be (drawn
    uniformly in the rig's working range when None); `overrides` fix attack parameters."""
    return simulate_scene(species, rng, rig, config, distance, overrides)[0]


def simulate_scene(
    species: Species,
    rng: np.random.Generator,
    rig: StereoCalibration | None = None,
    config: SimulatorConfig = SimulatorConfig(),
    distance: float | None = None,
    overrides: Mapping[str, float] | None = None,
) -> tuple[Sample, Scene]:
    """`simulate`, and the scene behind the sample (same draws from `rng`)."""
    rig = rig or default_rig()
    near, far = rig.working_range
    apparent = float(rng.uniform(near, far)) if distance is None else float(distance)
    person = random_person(rng)
    face, iod = person.points(_layout()), person.iod
    mf = mean_face()
    params: dict[str, float]
    photo_rot = np.eye(3)
    if species is Species.BONA_FIDE:
        params = {
            "yaw": rng.uniform(-15, 15),
            "pitch": rng.uniform(-10, 10),
            "roll": rng.uniform(-8, 8),
            "distance": apparent,
            "scale": 1.0,
        }
        params |= dict(overrides or {})
        obj, visible = face, np.ones(len(face), dtype=bool)
        rot = _euler(*(math.radians(params[k]) for k in ("yaw", "pitch", "roll")))
        z_obj = params["distance"]
    else:
        params = _attack_params(species, rng) | dict(overrides or {})
        if "distance" not in params:
            # Held where it looks the size of a face at `apparent` (a tablet: anywhere).
            tablet = species is Species.TABLET_REPLAY
            params["distance"] = apparent if tablet else params["scale"] * apparent
        params["apparent_distance"] = params["distance"] / params["scale"]
        # The photo on the sheet: the face seen frontally (small pose), scaled.
        photo_rot = _euler(*np.radians(rng.uniform(-5, 5, 3)))
        uv = (face @ photo_rot.T)[:, :2] * params["scale"]
        obj, visible = _sheet(uv, species, params)
        axis_angle = math.radians(params["tilt_axis"])
        tilt_axis = [math.cos(axis_angle), math.sin(axis_angle), 0.0]
        rot = _rotation(tilt_axis, math.radians(params["tilt"]))
        z_obj = params["distance"]
    offset = np.array(
        [
            rig.baseline / 2 + rng.uniform(-0.04, 0.04) * z_obj / 0.5,
            -0.025 + rng.uniform(-0.03, 0.03) * z_obj / 0.5,
            z_obj,
        ]
    )
    pts = obj @ rot.T + offset
    px1, px2 = _project(rig, pts)
    inside = visible & _inside(px1, rig) & _inside(px2, rig)
    noisy1 = px1 + rng.normal(0, config.point_noise, px1.shape)
    noisy2 = px2 + rng.normal(0, config.point_noise, px2.shape)
    noisy1[~inside] = np.nan
    noisy2[~inside] = np.nan
    lm = mf.landmarks
    lm1 = px1[lm] + rng.normal(0, config.landmark_noise, (5, 2))
    lm2 = px2[lm] + rng.normal(0, config.landmark_noise, (5, 2))
    sees = not (species in SCREENS and config.second_camera == "nir")
    face_iod = iod * params.get("scale", 1.0)
    nir = nir_off = None
    extra: dict[str, float] = {}
    if config.render:
        albedo, extra = _albedo(species, rng, mf.texture)
        ambient = float(rng.uniform(0, config.ambient_max))
        nir, nir_off = _render(rig, pts, visible, albedo, mf.triangles, ambient, config, rng)
        extra["ambient"] = ambient
    sample = Sample(
        species,
        MappingProxyType(params),
        float(z_obj),
        pts,
        noisy1,
        noisy2 if sees else None,
        lm1,
        lm2 if sees else None,
        face_iod,
        nir,
        nir_off,
        MappingProxyType(extra),
    )
    frozen = MappingProxyType(dict(params))
    return sample, Scene(species, person, frozen, rot, offset, photo_rot)


def simulate_many(
    species: Species,
    n: int,
    seed: int,
    rig: StereoCalibration | None = None,
    config: SimulatorConfig = SimulatorConfig(),
    **kwargs: float | Mapping[str, float] | None,
) -> list[Sample]:
    """`n` samples of one species from one seed (a fresh generator per species and seed)."""
    rng = np.random.default_rng([seed, list(Species).index(species)])
    return [simulate(species, rng, rig, config, **kwargs) for _ in range(n)]  # type: ignore[arg-type]


def _project(rig: StereoCalibration, pts: FloatArray) -> tuple[FloatArray, FloatArray]:
    zero = np.zeros(3)
    a = cv2.projectPoints(pts, zero, zero, rig.k1, rig.d1)[0].reshape(-1, 2)
    rvec = cv2.Rodrigues(rig.r)[0]
    b = cv2.projectPoints(pts, rvec, rig.t, rig.k2, rig.d2)[0].reshape(-1, 2)
    return np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)


def _inside(px: FloatArray, rig: StereoCalibration) -> npt.NDArray[np.bool_]:
    w, h = rig.image_size
    out: npt.NDArray[np.bool_] = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
    return out


# --- NIR rendering --------------------------------------------------------------------------


def _albedo(
    species: Species, rng: np.random.Generator, texture: FloatArray
) -> tuple[FloatArray, dict[str, float]]:
    """NIR (850 nm) albedo of each point. Skin 0.35-0.65 (darker to lighter skin); office paper
    0.65-0.9 with dye inks that mostly vanish in NIR (contrast 5-30%); an NIR print's carbon
    ink reproduces the face at any grey (0.3-0.8); a screen's black glass about 0.03."""
    if species is Species.BONA_FIDE:
        rho = float(rng.uniform(0.35, 0.65))
        return rho * texture, {"albedo": rho}
    if species in SCREENS:
        return np.full_like(texture, 0.03), {"albedo": 0.03}
    if species is Species.NIR_PRINT:
        rho = float(rng.uniform(0.3, 0.8))
        return rho * texture, {"albedo": rho}
    rho, c = float(rng.uniform(0.65, 0.9)), float(rng.uniform(0.05, 0.3))
    return rho * (1 - c * (1.5 - texture)), {"albedo": rho, "ink_contrast": c}


def _render(
    rig: StereoCalibration,
    pts: FloatArray,
    visible: npt.NDArray[np.bool_],
    albedo: FloatArray,
    triangles: IntArray,
    ambient: float,
    config: SimulatorConfig,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Camera 2's frames with the illuminator on and off: flat-shaded, far triangles first."""
    w, h = rig.image_size
    on, off = np.zeros((h, w)), np.zeros((h, w))
    cam2 = pts @ rig.r.T + rig.t
    _, px2 = _project(rig, pts)
    tri = triangles[visible[triangles].all(axis=1)]
    v = cam2[tri]  # (M, 3, 3)
    centre = v.mean(axis=1)
    normal = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    dist = np.linalg.norm(centre, axis=1)
    cos = np.abs(np.einsum("ij,ij->i", normal, centre)) / dist
    rho = albedo[tri].mean(axis=1)
    lit = config.nir_gain * rho * cos / dist**2 + ambient * rho
    dark = ambient * rho
    for k in np.argsort(-dist):
        poly = np.round(px2[tri[k]] * 16).astype(np.int32)
        cv2.fillConvexPoly(on, poly, float(lit[k]), lineType=cv2.LINE_8, shift=4)
        cv2.fillConvexPoly(off, poly, float(dark[k]), lineType=cv2.LINE_8, shift=4)
    on += rng.normal(0, config.image_noise, on.shape)
    off += rng.normal(0, config.image_noise, off.shape)
    return (
        np.clip(np.round(on), 0, 255).astype(np.uint8),
        np.clip(np.round(off), 0, 255).astype(np.uint8),
    )
