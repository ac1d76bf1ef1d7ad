"""Cheap geometric gates on the five landmarks both cameras found.

- Epipolar consistency: in the rectified pair a point lies on the same row of both images. A
  large vertical residual means the two detections are not the same face at the same instant
  (unsynchronised frames, a wrong match, a moved camera, images injected into one camera). It
  targets no presentation species: every physical object obeys it.
- Distance from disparity against distance from apparent size: triangulating the two eyes gives
  the interocular distance of what is presented, which must be a face's (63 mm ± 12%). A small
  photo held close, a phone close or a big screen far look face-sized in the image but measure
  far too small or too large. The 3D distance is unaffected by head yaw, unlike pixel size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from yingyan.liveness.cues import COME_CLOSER, LOOK_AT_CAMERA, STEP_BACK, CueResult
from yingyan.station.calibration import Rectification

FloatArray = npt.NDArray[np.float64]

IOD_MEAN = 0.063  # m, adult interpupillary distance
IOD_TOLERANCE = 0.12  # the population's ±2σ band (relative)


@dataclass(frozen=True, slots=True)
class GeometryConfig:
    landmark_noise: float = 1.0  # px per view, the landmark detector's (sets the tolerances)
    max_row_residual: float = 3.0  # px RMS; ≈ 99.9% of √2·σ rows at σ = 1 px over 5 points
    iod_sigmas: float = 3.0  # allowed |ln(iod / 63 mm)| in combined σ (population + noise)
    max_relative_noise: float = 0.1  # abstain when the IOD is measured worse than this
    range_margin: float = 0.03  # the working range, give or take the distance's own noise
    gross_ratio: float = 1.5  # outside the range only a mismatch this large fails (else abstain)


def epipolar_cue(
    rect: Rectification,
    landmarks1: npt.ArrayLike,
    landmarks2: npt.ArrayLike | None,
    config: GeometryConfig = GeometryConfig(),
) -> CueResult:
    """Rows of the rectified landmarks agree: score = allowed RMS - RMS (px)."""
    if landmarks2 is None:
        return CueResult.abstain("epipolar", "no face found in the second camera")
    a = rect.rectify_points(_finite(landmarks1), 1)
    b = rect.rectify_points(_finite(landmarks2), 2)
    ok = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    if ok.sum() < 3:
        return CueResult.abstain("epipolar", LOOK_AT_CAMERA)
    rms = float(np.sqrt(np.mean((a[ok, 1] - b[ok, 1]) ** 2)))
    return CueResult.judge(
        "epipolar",
        config.max_row_residual - rms,
        0.0,
        f"the two cameras disagree: landmarks {rms:.1f} px off their epipolar rows",
        f"landmarks on their epipolar rows ({rms:.1f} px)",
        {"row_rms_px": rms},
    )


def distance_cue(
    rect: Rectification,
    landmarks1: npt.ArrayLike,
    landmarks2: npt.ArrayLike | None,
    config: GeometryConfig = GeometryConfig(),
) -> CueResult:
    """The presented face's interocular distance from stereo, against a face's.

    score = iod_sigmas - |ln(iod / 63 mm)| / σ, with σ² = (tolerance/2)² + measurement noise²;
    outside the working range it abstains, unless the size is off by more than `gross_ratio`
    (a small photo held close, a big screen far): that fails wherever it is."""
    if landmarks2 is None:
        return CueResult.abstain("distance", "no face found in the second camera")
    a = rect.rectify_points(_finite(landmarks1), 1)
    b = rect.rectify_points(_finite(landmarks2), 2)
    if not (np.isfinite(a[:2]).all() and np.isfinite(b[:2]).all()):
        return CueResult.abstain("distance", LOOK_AT_CAMERA)
    # Depth from the eyes' mean disparity, size from their rectified pixel distance: the
    # interocular distance they imply (yaw shortens it by cos(yaw): 3.4% at 15°). Each eye's
    # own depth is too noisy to use their 3D distance (1 px is 16 mm of depth at 0.8 m).
    disparity = float(np.mean(a[:2, 0] - b[:2, 0]))
    if not disparity * -rect.p2[0, 3] > 0:
        return CueResult.abstain("distance", LOOK_AT_CAMERA)
    z_disp = abs(rect.p2[0, 3]) / abs(disparity)
    iod_px = float(np.linalg.norm(a[0] - a[1]))
    iod = iod_px * z_disp / rect.focal
    z_size = rect.focal * IOD_MEAN / iod_px
    s = config.landmark_noise
    rel = math.hypot(math.sqrt(2) * s / iod_px, z_disp * s / (rect.focal * rect.baseline))
    details = {
        "iod_m": iod,
        "distance_disparity_m": z_disp,
        "distance_size_m": z_size,
        "relative_noise": rel,
    }
    if rel > config.max_relative_noise:
        return CueResult.abstain("distance", COME_CLOSER, details)
    sigma = math.hypot(IOD_TOLERANCE / 2, rel)
    score = config.iod_sigmas - abs(math.log(iod / IOD_MEAN)) / sigma
    near, far = rect.calibration.working_range
    near, far = near * (1 - config.range_margin), far * (1 + config.range_margin)
    gross = abs(math.log(iod / IOD_MEAN)) > math.log(config.gross_ratio)
    if not near <= z_disp <= far and not gross:
        return CueResult.abstain("distance", COME_CLOSER if z_disp > far else STEP_BACK, details)
    return CueResult.judge(
        "distance",
        score,
        0.0,
        f"the face's size does not match its distance: it measures {iod * 1000:.0f} mm between "
        f"the eyes at {z_disp:.2f} m (a face: 63 mm ± 12%; a photo held close or a screen "
        "held far?)",
        f"a face-sized face at {z_disp:.2f} m",
        details,
    )


def _finite(points: npt.ArrayLike) -> FloatArray:
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)
