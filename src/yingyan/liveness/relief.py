"""Stereo relief: is the triangulated shape a face, or a sheet (flat, bent or folded)?

Many facial points, matched in both cameras, are triangulated and the whole cloud is explained
two ways: as the 3D mean face under a similarity (Procrustes), and as the best plane, cylinder
(any axis, any radius) or V-fold (any crease). A print is one of those sheets exactly; a face
is none of them. Both residuals are normalised by the depth noise expected at that distance,
σ_Z = Z²·σ_d/(f·B) (plus the spread of real faces around the mean one for the face model), and

    score = ln(q_sheet / q_face),   q = depth RMS / its expected σ,

so a face scores high, a sheet below zero. Scoring the whole shape matters: the nose's relief
alone lets folded prints through. The cue abstains when the expected depth noise is too large
for the relief to show ("come closer"), outside the working range, or with too few points.

`refine_matches` finds facial points of camera 1 in camera 2 along the epipolar row by
normalised cross-correlation, for real images (the simulator gives correspondences directly).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from yingyan.extras import lazy
from yingyan.liveness.cues import COME_CLOSER, LOOK_AT_CAMERA, STEP_BACK, CueResult
from yingyan.station.calibration import Rectification

_optimize = lazy("scipy.optimize", "station", "stereo relief")

FloatArray = npt.NDArray[np.float64]

_PHI = np.linspace(0, math.pi, 18, endpoint=False)
_RADII = np.geomspace(0.025, 0.6, 8)


@dataclass(frozen=True, slots=True)
class ReliefConfig:
    point_noise: float = 0.3  # px per view, of the matched facial points
    face_sigma: float = 0.003  # m, how far real faces lie from the mean face (assumed)
    sheet_sigma: float = 0.0005  # m, how far a real sheet lies from a perfect plane/cylinder
    min_points: int = 30
    max_depth_noise: float = 0.010  # m; beyond it the relief drowns in noise: "come closer"
    threshold: float = 0.0  # the face model explains the shape better than any sheet
    range_margin: float = 0.05  # the working range widened by 5%: the distance cue holds it


@dataclass(frozen=True, slots=True)
class ShapeFit:
    """Depth RMS (m) of each explanation of the cloud, and the best sheet's name."""

    face: float
    plane: float
    cylinder: float
    fold: float
    scale: float  # of the mean face fitted (a face-sized face is near 1)

    @property
    def sheet(self) -> tuple[str, float]:
        return min(
            (("plane", self.plane), ("cylinder", self.cylinder), ("fold", self.fold)),
            key=lambda kv: kv[1],
        )


def relief_cue(
    rect: Rectification,
    pixels1: npt.ArrayLike,
    pixels2: npt.ArrayLike | None,
    model: npt.ArrayLike,
    config: ReliefConfig = ReliefConfig(),
) -> CueResult:
    """Raw pixel correspondences of the model's points (NaN rows: not seen) -> a decision."""
    if pixels2 is None:
        return CueResult.abstain("relief", "no face found in the second camera")
    p1 = np.asarray(pixels1, dtype=np.float64).reshape(-1, 2)
    p2 = np.asarray(pixels2, dtype=np.float64).reshape(-1, 2)
    m = np.asarray(model, dtype=np.float64).reshape(-1, 3)
    seen = np.isfinite(p1).all(axis=1) & np.isfinite(p2).all(axis=1)
    pts = np.full((len(p1), 3), np.nan)
    if seen.any():
        pts[seen] = rect.triangulate(
            rect.rectify_points(p1[seen], 1), rect.rectify_points(p2[seen], 2)
        )
    ok = np.isfinite(pts).all(axis=1)
    if ok.sum() < config.min_points:
        return CueResult.abstain("relief", LOOK_AT_CAMERA, {"points": float(ok.sum())})
    cloud, ref = pts[ok], m[ok]
    z = float(np.median(cloud[:, 2]))
    sigma_z = rect.depth_noise(z, config.point_noise)
    details = {"points": float(ok.sum()), "distance_m": z, "depth_noise_m": sigma_z}
    near, far = rect.calibration.working_range
    if z > far * (1 + config.range_margin) or sigma_z > config.max_depth_noise:
        return CueResult.abstain("relief", COME_CLOSER, details)
    if z < near * (1 - config.range_margin):
        return CueResult.abstain("relief", STEP_BACK, details)
    fit = fit_shapes(cloud, ref)
    name, sheet_rms = fit.sheet
    q_sheet = sheet_rms / math.hypot(sigma_z, config.sheet_sigma)
    q_face = fit.face / math.hypot(sigma_z, config.face_sigma)
    score = math.log(q_sheet / q_face)
    details |= {
        "face_rms_m": fit.face,
        "plane_rms_m": fit.plane,
        "cylinder_rms_m": fit.cylinder,
        "fold_rms_m": fit.fold,
        "face_scale": fit.scale,
    }
    return CueResult.judge(
        "relief",
        score,
        config.threshold,
        f"the shape is a {name} (depth RMS {sheet_rms * 1000:.1f} mm from it, "
        f"{fit.face * 1000:.1f} mm from a face; noise {sigma_z * 1000:.1f} mm): a print?",
        f"a face's relief ({fit.face * 1000:.1f} mm from the mean face, "
        f"{sheet_rms * 1000:.1f} mm from the nearest {name})",
        details,
    )


def fit_shapes(cloud: npt.ArrayLike, model: npt.ArrayLike) -> ShapeFit:
    """Depth residual RMS (m, degrees of freedom accounted for) of each explanation."""
    p = np.asarray(cloud, dtype=np.float64)
    m = np.asarray(model, dtype=np.float64)
    face, scale = _face_rms(p, m)
    centre = p.mean(axis=0)
    x, y, z = (p - centre).T
    return ShapeFit(face, _plane_rms(x, y, z), _cylinder_rms(x, y, z), _fold_rms(x, y, z), scale)


def similarity(src: FloatArray, dst: FloatArray) -> tuple[float, FloatArray, FloatArray]:
    """Umeyama's least-squares similarity: dst ≈ s·R·src + t."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mu_s, dst - mu_d
    u, d, vt = np.linalg.svd(b.T @ a / len(src))
    e = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[2, 2] = -1
    r = u @ e @ vt
    s = float(np.trace(np.diag(d) @ e) / np.mean(np.sum(a**2, axis=1)))
    return s, r, mu_d - s * r @ mu_s


def _face_rms(p: FloatArray, m: FloatArray) -> tuple[float, float]:
    s, r, t = similarity(m, p)
    resid = p[:, 2] - (s * m @ r.T + t)[:, 2]
    return _rms(resid, 7), s


def _rms(resid: FloatArray, dof: int) -> float:
    return float(np.sqrt(np.sum(resid**2) / max(1, resid.size - dof)))


def _lstsq_batch(design: FloatArray, z: FloatArray) -> FloatArray:
    """Residual sums of squares of z against each design (K, n, p), by normal equations."""
    ata = np.einsum("kni,knj->kij", design, design) + 1e-12 * np.eye(design.shape[2])
    atb = np.einsum("kni,n->ki", design, z)
    coef = np.linalg.solve(ata, atb[..., None])[..., 0]
    resid = z[None] - np.einsum("kni,ki->kn", design, coef)
    out: FloatArray = np.sum(resid**2, axis=1)
    return out


def _plane_rms(x: FloatArray, y: FloatArray, z: FloatArray) -> float:
    design = np.stack([np.ones_like(x), x, y], axis=1)[None]
    return float(np.sqrt(_lstsq_batch(design, z)[0] / max(1, z.size - 3)))


def _fold_design(x: FloatArray, y: FloatArray, phi: float, s: float) -> FloatArray:
    u = x * math.cos(phi) + y * math.sin(phi)
    return np.stack([np.ones_like(x), x, y, np.abs(u - s)], axis=1)


def _fold_rms(x: FloatArray, y: FloatArray, z: FloatArray) -> float:
    """Two planes meeting on a crease: z = c + a·x + b·y + k·|u - s|, crease at u = s."""
    u = np.outer(np.cos(_PHI), x) + np.outer(np.sin(_PHI), y)  # (P, n)
    s_grid = np.quantile(u, np.linspace(0.1, 0.9, 9), axis=1).T  # (P, S)
    hinge = np.abs(u[:, None, :] - s_grid[:, :, None])  # (P, S, n)
    ones = np.broadcast_to(np.stack([np.ones_like(x), x, y], axis=1), (*hinge.shape, 3))
    rss = _lstsq_batch(np.concatenate([ones, hinge[..., None]], axis=-1).reshape(-1, x.size, 4), z)
    combos = [(phi, float(sv)) for phi, row in zip(_PHI, s_grid, strict=True) for sv in row]
    k = int(np.argmin(rss))
    span = float(np.max(np.hypot(x, y)))
    best = _refine(
        lambda q: _fold_design(x, y, q[0], q[1]),
        z,
        np.array(combos[k]),
        lower=[-math.pi, -span],
        upper=[2 * math.pi, span],
        scale=[0.1, 0.01],
    )
    return float(np.sqrt(min(float(rss[k]), best) / max(1, z.size - 6)))


def _cylinder_design(x: FloatArray, y: FloatArray, phi: float, u0: float, r: float) -> FloatArray:
    u = x * math.cos(phi) + y * math.sin(phi)
    v = -x * math.sin(phi) + y * math.cos(phi)
    t = np.minimum(np.abs(u - u0), r)
    arc = r - np.sqrt(np.maximum(0.0, r**2 - t**2))
    return np.stack([np.ones_like(x), u, v, arc], axis=1)


def _cylinder_rms(x: FloatArray, y: FloatArray, z: FloatArray) -> float:
    """A cylinder of radius r, axis along v (any tilt in depth), seen as a height field:
    z = c + a·u + b·v + k·(r - √(r² - (u - u0)²)); k = ±√(1 + tilt²), convex or concave."""
    u = np.outer(np.cos(_PHI), x) + np.outer(np.sin(_PHI), y)  # (P, n)
    v = -np.outer(np.sin(_PHI), x) + np.outer(np.cos(_PHI), y)
    u0_grid = np.quantile(u, np.linspace(0.25, 0.75, 5), axis=1).T  # (P, Q)
    r = _RADII[None, None, :, None]
    t = np.minimum(np.abs(u[:, None, None, :] - u0_grid[:, :, None, None]), r)  # (P, Q, R, n)
    arc = r - np.sqrt(np.maximum(0.0, r**2 - t**2))
    shape = arc.shape
    lin = np.stack([np.ones_like(u), u, v], axis=-1)[:, None, None]  # (P, 1, 1, n, 3)
    design = np.concatenate([np.broadcast_to(lin, (*shape, 3)), arc[..., None]], axis=-1)
    rss = _lstsq_batch(design.reshape(-1, x.size, 4), z)
    combos = [
        (phi, float(u0), float(rr))
        for phi, row in zip(_PHI, u0_grid, strict=True)
        for u0 in row
        for rr in _RADII
    ]
    k = int(np.argmin(rss))
    phi, u0, r0 = combos[k]
    span = float(np.max(np.hypot(x, y)))
    best = _refine(
        lambda q: _cylinder_design(x, y, q[0], q[1], math.exp(q[2])),
        z,
        np.array([phi, u0, math.log(r0)]),
        lower=[-math.pi, -span, math.log(0.01)],
        upper=[2 * math.pi, span, math.log(5.0)],
        scale=[0.1, 0.01, 0.3],
    )
    return float(np.sqrt(min(float(rss[k]), best) / max(1, z.size - 7)))


def _refine(
    design: Callable[[FloatArray], FloatArray],
    z: FloatArray,
    start: FloatArray,
    lower: list[float],
    upper: list[float],
    scale: list[float],
) -> float:
    """Refine a grid optimum's non-linear parameters (the linear ones solved inside):
    the residual sum of squares reached, or inf when the solver fails."""

    def resid(q: FloatArray) -> FloatArray:
        d = design(q)
        coef = np.linalg.lstsq(d, z, rcond=None)[0]
        out: FloatArray = z - d @ coef
        return out

    x0 = np.clip(start, np.array(lower) + 1e-9, np.array(upper) - 1e-9)
    try:
        sol = _optimize.least_squares(
            resid,
            x0,
            bounds=(lower, upper),
            x_scale=scale,
            method="trf",
            ftol=1e-5,
            xtol=1e-5,
            max_nfev=40,
        )
    except (np.linalg.LinAlgError, ValueError):
        return math.inf
    rss = float(np.sum(sol.fun**2))
    return rss if math.isfinite(rss) else math.inf


def refine_matches(
    left: npt.ArrayLike,
    right: npt.ArrayLike,
    points: npt.ArrayLike,
    guess: npt.ArrayLike,
    window: int = 11,
    search: int = 6,
    min_ncc: float = 0.6,
) -> tuple[FloatArray, FloatArray]:
    """Match rectified left-image points in the rectified right image along their row.

    `guess` is each point's expected disparity (from the landmarks' distance). Returns the
    right x (NaN when the best normalised cross-correlation is below `min_ncc`, or at the edge
    of the search) and the peak NCC; the peak is refined to a sub-pixel by a parabola."""
    lf = np.asarray(left, dtype=np.float32)
    rt = np.asarray(right, dtype=np.float32)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    d0 = np.broadcast_to(np.asarray(guess, dtype=np.float64), (len(pts),))
    xr, peak = np.full(len(pts), np.nan), np.full(len(pts), np.nan)
    for i, ((x, y), d) in enumerate(zip(pts, d0, strict=True)):
        tpl = cv2.getRectSubPix(lf, (window, window), (float(x), float(y)))
        x0 = x - d  # centre of the search in the right image
        strip_w = window + 2 * search
        strip = cv2.getRectSubPix(rt, (strip_w, window), (float(x0), float(y)))
        if tpl.std() < 1e-3 or strip.std() < 1e-3:
            continue
        ncc = cv2.matchTemplate(strip, tpl, cv2.TM_CCOEFF_NORMED)[0]
        k = int(np.argmax(ncc))
        peak[i] = float(ncc[k])
        if not 0 < k < len(ncc) - 1 or peak[i] < min_ncc:
            continue
        a, b, c = ncc[k - 1], ncc[k], ncc[k + 1]
        denom = a - 2 * b + c
        sub = 0.5 * (a - c) / denom if denom < 0 else 0.0
        xr[i] = x0 - search + k + sub
    return xr, peak
