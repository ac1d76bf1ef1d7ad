"""The PAD cues on a station's images: detect the face in both cameras, then run the geometric,
NIR and texture cues on what was found, as a real station does.

- Camera 1 (colour) is searched first; no face there is a "no face" answer (never an error);
  several faces: the largest (nearest) is the subject, and the analysis says so. Camera 2 (NIR,
  given to the detector as a grey image in three channels) is searched too; of its faces, the
  one whose landmarks lie on camera 1's landmarks' epipolar rows (in front of the cameras) is
  the same face. None there: the geometry cues abstain and the NIR cue decides (a screen).
- `epipolar_cue` and `distance_cue` run on the two five-point landmark sets.
- Relief needs many points whose place on the face is known: the mean face's 3D landmarks are
  posed on camera 1's five (PnP, started frontal at the measured distance), and its 164 points,
  projected with that pose, are the sample points (those facing camera 1). Both images are
  rectified around the face and each point is matched along its row by normalised
  cross-correlation (`refine_matches`), camera 1's grey against camera 2's; the search covers
  both hypotheses, a face (the posed mean face's disparity) and a sheet (the plane through the
  landmarks' disparities), so neither is favoured; a match must come back to its start when
  matched the other way (left-right check). The correspondences go to `relief_cue`.
- `nir_cue` on camera 2's NIR frame (with the illuminator-off frame when the station strobes),
  and `nir_face`: whether the detector found the face in the NIR frame at all (a screen shows
  none; a phone held close can pass `nir_cue`, whose region is then placed at the wrong depth);
  the texture cue (MiniFASNet) on camera 1's colour frame when one is given: a single frame's
  score (the decision over several frames is the caller's, `texture.TextureWindow`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from yingyan.liveness.cues import LOOK_AT_CAMERA, CueResult, Decision
from yingyan.liveness.geometry import IOD_MEAN, GeometryConfig, distance_cue, epipolar_cue
from yingyan.liveness.nir import NirConfig, nir_cue
from yingyan.liveness.relief import ReliefConfig, refine_matches, relief_cue
from yingyan.liveness.simulator import mean_face
from yingyan.liveness.texture import FrameScore, TextureCue, decide
from yingyan.station.calibration import Rectification
from yingyan.station.frames import FramePair
from yingyan.types import Detection, RGBImage

FloatArray = npt.NDArray[np.float64]
GreyImage = npt.NDArray[np.float32]

NO_FACE = "no face found: look at the camera"
NO_LANDMARKS = "the detector gives no landmarks"
GEOMETRY_CUES = ("epipolar", "distance", "relief")
NIR_FACE = "nir_face"  # the detector found the colour camera's face in the NIR frame


class SupportsDetect(Protocol):
    def detect(self, image: RGBImage) -> Sequence[Detection]: ...


DetectFn = Callable[[RGBImage], Sequence[Detection]]


@dataclass(frozen=True, slots=True)
class AnalysisConfig:
    """The cues' settings and the image matching's. The relief's `point_noise` is 0.45 px, the
    matching error measured on rendered pairs (median 0.3-0.5 px from the renderer's depth
    map), not the simulator's 0.3 px: it sets the depth noise the relief is judged against
    (7.8 mm at 0.78 m). The geometry cues keep 1 px: camera 2's landmarks are matched, not
    detected (`refine_landmarks`)."""

    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    relief: ReliefConfig = field(default_factory=lambda: ReliefConfig(point_noise=0.45))
    nir: NirConfig = field(default_factory=NirConfig)
    window: float = 0.15  # the NCC template's side, in interocular distances (odd, >= 11 px)
    bandpass: float = 10.0  # px: each rectified image minus its blur at this sigma (shading off)
    agree_px: float = 1.0  # a match must agree with the one of a twice larger window
    min_ncc: float = 0.6  # a weaker peak is no match (cross-modal RGB-to-NIR)
    max_lr_px: float = 1.0  # a match must return within this when matched back
    margin_px: float = 3.0  # added to the search either side of the face/sheet hypotheses
    max_search_px: int = 40  # the widest row search
    min_facing: float = 0.35  # cos(view ray, the posed mean face's normal): skip grazing points
    edge_px: int = 16  # sample points nearer the image border are skipped
    neighbours: int = 6  # for the smoothness check of the matches
    local_relief_m: float = 0.008  # depth a surface may change between neighbouring points
    min_jump_px: float = 1.0
    refine_landmarks: bool = True  # camera 2's landmarks re-found by matching camera 1's
    landmark_window: float = 0.25  # the landmark template's side, in interocular distances
    landmark_search: float = 0.2  # how far from camera 2's detected landmark to look (IOD)
    landmark_min_ncc: float = 0.5


@dataclass(frozen=True, slots=True, eq=False)
class PairAnalysis:
    """What the cues found on one capture.

    `face` is camera 1's face (the one to verify), `faces_seen` how many camera 1 showed;
    `reason` is empty when a face was analysed, else what the person should do. `timings`
    are seconds per stage ("detect1", "detect2", "geometry", "relief_pose", "relief_match",
    "relief_fit", "nir", "texture", "total"). `notes` say what was chosen or skipped."""

    cues: tuple[CueResult, ...]
    face: Detection | None
    faces_seen: int
    timings: Mapping[str, float]
    reason: str = ""
    face2: Detection | None = None
    notes: tuple[str, ...] = ()
    texture_frame: FrameScore | None = None
    details: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def ran(self) -> tuple[str, ...]:
        """The cues that ran (each answered pass, fail or abstain)."""
        return tuple(c.cue for c in self.cues)

    def cue(self, name: str) -> CueResult | None:
        return next((c for c in self.cues if c.cue == name), None)


def analyse_pair(
    pair: FramePair,
    rect: Rectification,
    detect: DetectFn | SupportsDetect,
    texture: TextureCue | None = None,
    config: AnalysisConfig = AnalysisConfig(),
) -> PairAnalysis:
    """Detect the face in both cameras and run every cue the pair allows."""
    find = _detect_fn(detect)
    timings: dict[str, float] = {}
    start = t = time.perf_counter()
    image1 = _as_rgb(pair.first)
    faces1 = list(find(image1))
    timings["detect1"], t = _lap(t)
    if not faces1:
        timings["total"] = time.perf_counter() - start
        return PairAnalysis((), None, 0, MappingProxyType(timings), NO_FACE)
    face = max(faces1, key=lambda d: d.box.area)
    notes = []
    if len(faces1) > 1:
        notes.append(f"{len(faces1)} faces in camera 1: the largest analysed")
    faces2 = list(find(_as_rgb(pair.second)))
    timings["detect2"], t = _lap(t)
    cues: list[CueResult] = []
    face2: Detection | None = None
    details: dict[str, float] = {"faces_camera2": float(len(faces2))}
    if face.landmarks is None:
        notes.append(NO_LANDMARKS)
        cues += [CueResult.abstain(name, NO_LANDMARKS) for name in (*GEOMETRY_CUES, "nir")]
        if pair.second_kind == "nir":
            cues.append(_nir_face(faces2[0] if faces2 else None, len(faces2)))
    else:
        lm1 = np.asarray(face.landmarks.points, dtype=np.float64)
        face2 = _match_second(rect, lm1, faces2)
        if faces2 and face2 is None:
            notes.append("no face in camera 2 matches camera 1's (rows or disparity)")
        lm2 = None if face2 is None or face2.landmarks is None else face2.landmarks.points
        if lm2 is not None and config.refine_landmarks:
            lm2, refined = _refine_landmarks(pair.first, pair.second, lm1, lm2, config)
            details["landmarks_refined"] = float(refined)
        cues.append(epipolar_cue(rect, lm1, lm2, config.geometry))
        distance = distance_cue(rect, lm1, lm2, config.geometry)
        cues.append(distance)
        z = distance.details.get("distance_disparity_m", _distance_from_size(rect, lm1))
        details["distance_m"] = z
        timings["geometry"], t = _lap(t)
        if lm2 is None:
            cues.append(relief_cue(rect, np.zeros((0, 2)), None, np.zeros((0, 3))))
        else:
            relief, t = _relief(pair, rect, lm1, np.asarray(lm2), z, config, timings, details, t)
            cues.append(relief)
        if pair.second_kind == "nir":
            cues.append(nir_cue(pair.second, rect, lm1, z, pair.second_off, config.nir))
            cues.append(_nir_face(face2, len(faces2)))
            timings["nir"], t = _lap(t)
        else:
            notes.append("camera 2 is not NIR: no NIR cue")
    frame = None
    if texture is not None:
        if pair.first_kind == "rgb":
            frame = texture.score(image1, [face])
            cues.append(decide([frame], texture.config.threshold, 1))
        else:
            notes.append("camera 1 is not colour: no texture cue")
        timings["texture"], t = _lap(t)
    timings["total"] = time.perf_counter() - start
    return PairAnalysis(
        tuple(cues),
        face,
        len(faces1),
        MappingProxyType(timings),
        "",
        face2,
        tuple(notes),
        frame,
        MappingProxyType(details),
    )


def analyse_rgb(
    image: RGBImage,
    detect: DetectFn | SupportsDetect,
    texture: TextureCue | None = None,
) -> PairAnalysis:
    """A station with only a colour camera (a phone, a webcam): the texture cue alone; its
    result says so (`ran` is ("rgb_texture",) or empty without a texture model)."""
    timings: dict[str, float] = {}
    start = t = time.perf_counter()
    faces = list(_detect_fn(detect)(_as_rgb(image)))
    timings["detect1"], t = _lap(t)
    if not faces:
        timings["total"] = time.perf_counter() - start
        return PairAnalysis((), None, 0, MappingProxyType(timings), NO_FACE)
    face = max(faces, key=lambda d: d.box.area)
    notes = ["RGB only: no geometry or NIR cue"]
    if len(faces) > 1:
        notes.append(f"{len(faces)} faces in camera 1: the largest analysed")
    cues: tuple[CueResult, ...] = ()
    frame = None
    if texture is not None:
        frame = texture.score(_as_rgb(image), [face])
        cues = (decide([frame], texture.config.threshold, 1),)
        timings["texture"], t = _lap(t)
    else:
        notes.append("no texture model: no cue ran")
    timings["total"] = time.perf_counter() - start
    return PairAnalysis(
        cues, face, len(faces), MappingProxyType(timings), "", None, tuple(notes), frame
    )


# --- detection ------------------------------------------------------------------------------


def _detect_fn(detect: DetectFn | SupportsDetect) -> DetectFn:
    method = getattr(detect, "detect", None)
    if callable(method):
        return method  # type: ignore[no-any-return]
    return detect  # type: ignore[return-value]


def _as_rgb(image: npt.NDArray[np.uint8]) -> RGBImage:
    """The detector's input: an NIR (grey) frame stretched to the full range (its 0.5th to
    99.5th percentile; an NIR frame lit for 0.3-0.8 m is dark and YuNet was trained on
    colour photos), in three equal channels. The NIR cue reads the raw frame."""
    if image.ndim == 3:
        return image
    lo, hi = np.percentile(image[::4, ::4], [0.5, 99.5])
    scale = 255.0 / max(float(hi - lo), 1.0)
    grey = cv2.convertScaleAbs(image, alpha=scale, beta=-float(lo) * scale)
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def _lap(t: float) -> tuple[float, float]:
    now = time.perf_counter()
    return now - t, now


def _match_second(
    rect: Rectification, lm1: FloatArray, faces2: Sequence[Detection]
) -> Detection | None:
    """Camera 2's face nearest camera 1's landmarks' rows, among those in front of the
    cameras (the epipolar cue then judges how near)."""
    a = rect.rectify_points(lm1, 1)
    best, best_rms = None, math.inf
    for d in faces2:
        if d.landmarks is None:
            continue
        b = rect.rectify_points(d.landmarks.points, 2)
        z = rect.triangulate(a, b)[:, 2]
        if not np.isfinite(z).all():
            continue
        rms = float(np.sqrt(np.mean((a[:, 1] - b[:, 1]) ** 2)))
        if rms < best_rms:
            best, best_rms = d, rms
    return best


def _refine_landmarks(
    first: npt.NDArray[np.uint8],
    second: npt.NDArray[np.uint8],
    lm1: FloatArray,
    lm2: npt.ArrayLike,
    config: AnalysisConfig,
) -> tuple[FloatArray, int]:
    """Camera 2's landmarks as the points that look like camera 1's landmarks (normalised
    cross-correlation in 2D, near what camera 2's detector found). The detector places a
    landmark by the face's overall look, several pixels off and differently in colour and in
    NIR (measured on rendered pairs: 5-20 px at 0.6 m, up to 25 px for the mouth in NIR);
    matching finds the same physical point to about a pixel, so the epipolar and distance
    cues measure the geometry, not the detector. The nose is left out (NaN) and so is a
    landmark matched weaker than `landmark_min_ncc`: no correspondence rather than a wrong
    one (the epipolar cue needs three, the distance cue both eyes, else they abstain)."""
    detected = np.array(lm2, dtype=np.float64).reshape(5, 2)
    out = np.full((5, 2), np.nan)
    iod = float(np.linalg.norm(lm1[1] - lm1[0]))
    half = max(3, round(config.landmark_window * iod / 2))
    reach = max(3, round(config.landmark_search * iod))
    g1, g2 = _grey(first).astype(np.float32), _grey(second).astype(np.float32)
    for i in (0, 1, 3, 4):  # not the nose: a ridge, its row is ill-defined for a template
        if i < 2:
            start = detected[i]
        else:
            # The mouth is searched where the eyes' match puts it: camera 2's detector is
            # furthest off there (up to 0.25 IOD in NIR).
            if not np.isfinite(out[:2]).all():
                break
            start = lm1[i] + np.mean(out[:2] - lm1[:2], axis=0)
        p = lm1[i]
        tpl = cv2.getRectSubPix(g1, (2 * half + 1, 2 * half + 1), (float(p[0]), float(p[1])))
        side = 2 * (half + reach) + 1
        area = cv2.getRectSubPix(g2, (side, side), (float(start[0]), float(start[1])))
        if tpl.std() < 1e-3 or area.std() < 1e-3:
            continue
        ncc = np.asarray(cv2.matchTemplate(area, tpl, cv2.TM_CCOEFF_NORMED), dtype=np.float32)
        _, peak, _, (kx, ky) = cv2.minMaxLoc(ncc)
        if peak < config.landmark_min_ncc:
            continue
        dx, dy = _parabola(ncc[ky, kx - 1 : kx + 2]), _parabola(ncc[ky - 1 : ky + 2, kx])
        out[i] = (start[0] - reach + kx + dx, start[1] - reach + ky + dy)
    return out, int(np.isfinite(out).all(axis=1).sum())


def _parabola(v: npt.NDArray[np.float32]) -> float:
    """Sub-pixel offset of a peak from its two neighbours (0 at an edge)."""
    if len(v) != 3:
        return 0.0
    denom = float(v[0] - 2 * v[1] + v[2])
    return 0.5 * float(v[0] - v[2]) / denom if denom < 0 else 0.0


def _nir_face(face2: Detection | None, seen: int) -> CueResult:
    """Whether the detector found camera 1's face in the NIR frame: a screen shows none, and
    an office print's dye inks mostly vanish in NIR. Scored by the matched face's detection
    score (0 without one). `nir_cue` alone cannot refuse a phone held close when camera 2
    finds nothing: its reflectance is read where a face-sized face would be, and a phone's
    glass near the illuminator, normalised at that wrong distance, can look like skin."""
    if face2 is None:
        why = "no face in the NIR image" if seen == 0 else "no NIR face matches the colour one"
        return CueResult(
            NIR_FACE,
            Decision.FAIL,
            0.0,
            f"{why} (a screen, or a print whose ink vanishes in near-infrared?)",
            MappingProxyType({"faces": float(seen)}),
        )
    return CueResult(
        NIR_FACE,
        Decision.PASS,
        float(face2.score),
        "the face appears in the NIR image",
        MappingProxyType({"faces": float(seen)}),
    )


def _distance_from_size(rect: Rectification, lm1: FloatArray) -> float:
    a = rect.rectify_points(lm1[:2], 1)
    return rect.focal * IOD_MEAN / max(float(np.linalg.norm(a[0] - a[1])), 1e-6)


# --- relief on images -----------------------------------------------------------------------


@cache
def _model() -> tuple[FloatArray, FloatArray, FloatArray]:
    """The mean face's points, its five landmarks (3D, m) and its unit normals (towards the
    camera, -z, for a frontal face)."""
    mf = mean_face()
    pts, tri = mf.points, mf.triangles
    v = pts[tri]
    n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    n[n[:, 2] > 0] *= -1
    normals = np.zeros_like(pts)
    for k in range(3):
        np.add.at(normals, tri[:, k], n)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    return pts, pts[mf.landmarks], normals


_MAPS: dict[int, tuple[Rectification, tuple[npt.NDArray[np.float32], ...]]] = {}


def _maps(rect: Rectification) -> tuple[npt.NDArray[np.float32], ...]:
    """The rectification's remap tables, built once per Rectification."""
    hit = _MAPS.get(id(rect))
    if hit is not None and hit[0] is rect:
        return hit[1]
    maps = (*rect.rectify_maps(1), *rect.rectify_maps(2))
    if len(_MAPS) >= 8:
        _MAPS.pop(next(iter(_MAPS)))
    _MAPS[id(rect)] = (rect, maps)
    return maps


def _grey(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if image.ndim == 2:
        return image
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), dtype=np.uint8)


def _rectified_roi(
    image: npt.NDArray[np.uint8],
    mx: npt.NDArray[np.float32],
    my: npt.NDArray[np.float32],
    x0: int,
    y0: int,
    x1: int,
    y1: int,
) -> GreyImage:
    h, w = mx.shape
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    out = cv2.remap(_grey(image), mx[y0:y1, x0:x1], my[y0:y1, x0:x1], cv2.INTER_LINEAR)
    return np.asarray(out, dtype=np.float32)


def _bandpass(image: GreyImage, sigma: float) -> GreyImage:
    """The image minus its blur: the two cameras' different shading (room light against a
    coaxial NIR illuminator) is smooth; the face's texture is what is matched."""
    if sigma <= 0:
        return image
    return np.asarray(image - cv2.GaussianBlur(image, (0, 0), sigma), dtype=np.float32)


def _pose(rect: Rectification, lm1: FloatArray, z: float) -> tuple[FloatArray, FloatArray]:
    """The mean face posed on camera 1's landmarks: rotation and translation (camera 1)."""
    c = rect.calibration
    _, model_lm, _ = _model()
    mid = cv2.undistortPoints(lm1[:2].mean(axis=0).reshape(1, 1, 2), c.k1, c.d1).reshape(2)
    tvec = np.array([mid[0], mid[1], 1.0]) * z
    ok, rvec, tvec_out = cv2.solvePnP(
        model_lm,
        lm1.reshape(-1, 1, 2),
        c.k1,
        c.d1,
        np.zeros(3),
        tvec,
        True,
        cv2.SOLVEPNP_ITERATIVE,
    )
    r = np.asarray(cv2.Rodrigues(rvec)[0], dtype=np.float64)
    t = np.asarray(tvec_out, dtype=np.float64).reshape(3)
    if not ok or not t[2] > 0:
        r, t = np.eye(3), np.array([mid[0], mid[1], 1.0]) * z
    return r, t


def _unrectify(rect: Rectification, pts: FloatArray, camera: int) -> FloatArray:
    """Rectified pixels of camera 1 or 2 -> its raw (distorted) pixels."""
    c = rect.calibration
    k, d, r, p = (c.k1, c.d1, rect.r1, rect.p1) if camera == 1 else (c.k2, c.d2, rect.r2, rect.p2)
    h = np.hstack([pts, np.ones((len(pts), 1))])
    rays = h @ np.linalg.inv(p[:, :3]).T @ r  # rectified rays -> the camera's own frame
    out = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), k, d)[0].reshape(-1, 2)
    return np.asarray(out, dtype=np.float64)


def _smooth(
    pts: FloatArray,
    disparity: FloatArray,
    ok: npt.NDArray[np.bool_],
    relief_px: float,
    config: AnalysisConfig,
) -> npt.NDArray[np.bool_]:
    """Points whose disparity agrees with the median of their nearest matched neighbours
    within what a surface's relief allows between neighbours (`local_relief_m` of depth, at
    least `min_jump_px`): a false match stands out from its neighbours, on a face as on a
    sheet, so the test favours neither."""
    keep = ok.copy()
    idx = np.flatnonzero(ok)
    if idx.size <= config.neighbours:
        return keep
    p, d = pts[idx], disparity[idx]
    dist = np.linalg.norm(p[:, None] - p[None], axis=2)
    near = np.argsort(dist, axis=1)[:, 1 : config.neighbours + 1]
    jump = np.abs(d - np.median(d[near], axis=1))
    keep[idx[jump > max(config.min_jump_px, relief_px)]] = False
    return keep


def _relief(
    pair: FramePair,
    rect: Rectification,
    lm1: FloatArray,
    lm2: FloatArray,
    z: float,
    config: AnalysisConfig,
    timings: dict[str, float],
    details: dict[str, float],
    t: float,
) -> tuple[CueResult, float]:
    model, _, normals = _model()
    c = rect.calibration
    w, h = c.image_size
    r, tr = _pose(rect, lm1, z)
    cam = model @ r.T + tr
    facing = -np.einsum("ij,ij->i", normals @ r.T, cam) / np.linalg.norm(cam, axis=1)
    px1 = cv2.projectPoints(model, cv2.Rodrigues(r)[0], tr, c.k1, c.d1)[0].reshape(-1, 2)
    e = config.edge_px
    use = (facing >= config.min_facing) & (cam[:, 2] > 0)
    use &= (px1[:, 0] >= e) & (px1[:, 0] < w - e) & (px1[:, 1] >= e) & (px1[:, 1] < h - e)
    details["relief_samples"] = float(use.sum())
    if use.sum() < config.relief.min_points:
        timings["relief_pose"], t = _lap(t)
        return CueResult.abstain("relief", LOOK_AT_CAMERA, {"points": float(use.sum())}), t
    pts1 = rect.rectify_points(px1[use], 1)
    # Two hypotheses for each point's disparity: the posed mean face, and the plane through
    # the landmarks' disparities (a sheet). The search spans both, plus a margin.
    fb = -float(rect.p2[0, 3])  # f·B, > 0 with camera 2 on the right: disparity = f·B / Z
    face_d = fb / (cam[use] @ rect.r1.T)[:, 2]
    a, b = rect.rectify_points(lm1, 1), rect.rectify_points(lm2, 2)
    fin = np.asarray(np.isfinite(b).all(axis=1), dtype=bool)
    design = np.column_stack([np.ones(int(fin.sum())), a[fin]])
    if fin.sum() < 3:  # too few for a plane: a constant disparity
        design[:, 1:] = 0
    coef = np.linalg.lstsq(design, a[fin, 0] - b[fin, 0], rcond=None)[0]
    sheet_d = np.column_stack([np.ones(len(pts1)), pts1]) @ coef
    centre = (face_d + sheet_d) / 2
    half = np.abs(face_d - sheet_d) / 2 + config.margin_px
    search = np.clip(np.ceil(half), 2, config.max_search_px).astype(int)
    m1x, m1y, m2x, m2y = _maps(rect)
    iod = float(np.linalg.norm(a[1] - a[0]))
    if not fin[:2].all() or not np.isfinite(coef).all():
        timings["relief_pose"], t = _lap(t)
        return CueResult.abstain("relief", LOOK_AT_CAMERA), t
    win = max(11, int(config.window * iod) | 1)
    pad = 2 * win + 2
    x0, y0 = int(pts1[:, 0].min()) - pad, int(pts1[:, 1].min()) - pad
    x1, y1 = int(pts1[:, 0].max()) + pad + 1, int(pts1[:, 1].max()) + pad + 1
    left = _bandpass(_rectified_roi(pair.first, m1x, m1y, x0, y0, x1, y1), config.bandpass)
    lo = int(np.min(pts1[:, 0] - centre - search)) - pad
    hi = int(np.max(pts1[:, 0] - centre + search)) + pad + 1
    right = _bandpass(_rectified_roi(pair.second, m2x, m2y, lo, y0, hi, y1), config.bandpass)
    ox1, oy, ox2 = max(0, x0), max(0, y0), max(0, lo)
    timings["relief_pose"], t = _lap(t)
    local = pts1 - [ox1, oy]
    shift = ox2 - ox1  # right ROI x = rectified x - ox2

    def match(window: int) -> FloatArray:
        xr = np.full(len(pts1), np.nan)
        for s in np.unique(search):
            k = search == s
            got, _ = refine_matches(
                left,
                right,
                local[k],
                centre[k] + shift,
                window=window,
                search=int(s),
                min_ncc=config.min_ncc,
            )
            xr[k] = got + ox2
        return xr

    xr, wide = match(win), match(2 * win + 1)
    xr[~(np.abs(xr - wide) <= config.agree_px)] = np.nan
    found = np.isfinite(xr)
    # Left-right check: matched back from camera 2, a point must land where it started.
    back = np.full(len(pts1), np.nan)
    if found.any():
        pts2 = np.column_stack([xr[found] - ox2, local[found, 1]])
        got, _ = refine_matches(
            right,
            left,
            pts2,
            -(pts1[found, 0] - xr[found]) - shift,
            window=win,
            search=2,
            min_ncc=config.min_ncc,
        )
        back[found] = got + ox1
    good = found & (np.abs(back - pts1[:, 0]) <= config.max_lr_px)
    good &= _smooth(pts1, pts1[:, 0] - xr, good, fb / z**2 * config.local_relief_m, config)
    details["relief_matched"] = float(found.sum())
    details["relief_consistent"] = float(good.sum())
    timings["relief_match"], t = _lap(t)
    p1 = px1[use][good]
    p2 = _unrectify(rect, np.column_stack([xr[good], pts1[good, 1]]), 2)
    result = relief_cue(rect, p1, p2, model[use][good], config.relief)
    timings["relief_fit"], t = _lap(t)
    return result, t
