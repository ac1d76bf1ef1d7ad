"""NIR presence: the face the colour camera found must appear in the NIR image where the
geometry puts it, and reflect the illuminator like skin.

The region is predicted from camera 1's landmarks placed at the face's distance (from disparity
when the NIR camera found the face too, else from its apparent size) and projected into camera
2. Inside it the illuminator's reflection (the on - off difference when the station strobes it)
is normalised by distance: apparent albedo = intensity · Z² / gain, where `gain` is the
station's illuminator constant (grey levels · m² for a white card facing the camera, measured
once). Screens emit and reflect almost no NIR: dark. Office paper reflects more than skin and
its dye inks vanish in NIR: bright and flat. A photo printed for NIR with carbon ink at a
skin-like grey passes this cue by design; the geometry cues are what refuse it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from yingyan.liveness.cues import COME_CLOSER, LOOK_AT_CAMERA, CueResult
from yingyan.station.calibration import Rectification

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class NirConfig:
    gain: float = 30.0  # grey levels · m² per unit albedo (the station's, measured)
    dark_below: float = 0.10  # apparent albedo: no face in NIR (a screen)
    skin_range: tuple[float, float] = (0.17, 0.62)  # apparent albedo of skin, shading included
    min_contrast: float = 0.12  # (p90 - p10) / median in the face region: a face has structure
    min_signal: float = 6.0  # grey levels; below it the illuminator does not reach: come closer


def predict_region(rect: Rectification, landmarks1: npt.ArrayLike, distance: float) -> FloatArray:
    """Camera 1's landmarks (raw px) at depth `distance` (m) -> raw pixels in camera 2."""
    c = rect.calibration
    a = rect.rectify_points(landmarks1, 1)
    cx, cy = rect.principal_point
    rect_pts = np.stack(
        [
            (a[:, 0] - cx) * distance / rect.focal,
            (a[:, 1] - cy) * distance / rect.focal,
            np.full(len(a), distance),
        ],
        axis=1,
    )
    cam1 = rect.to_camera1(rect_pts)
    out = cv2.projectPoints(cam1, cv2.Rodrigues(c.r)[0], c.t, c.k2, c.d2)[0].reshape(-1, 2)
    return np.asarray(out, dtype=np.float64)


def nir_cue(
    nir: npt.ArrayLike,
    rect: Rectification,
    landmarks1: npt.ArrayLike,
    distance: float,
    nir_off: npt.ArrayLike | None = None,
    config: NirConfig = NirConfig(),
) -> CueResult:
    """Score = the smallest log-margin of apparent albedo and contrast inside their bands."""
    on = np.asarray(nir, dtype=np.float64)
    image = on - np.asarray(nir_off, dtype=np.float64) if nir_off is not None else on
    lm = predict_region(rect, landmarks1, distance)
    eyes, mouth = lm[:2], lm[3:]
    iod = float(np.linalg.norm(eyes[1] - eyes[0]))
    x0, x1 = eyes[:, 0].min() - 0.3 * iod, eyes[:, 0].max() + 0.3 * iod
    y0, y1 = eyes[:, 1].mean() - 0.5 * iod, mouth[:, 1].mean() + 0.1 * iod
    h, w = image.shape[:2]
    if not (iod > 4 and x0 >= 0 and x1 < w and y0 >= 0 and y1 < h):
        return CueResult.abstain("nir", LOOK_AT_CAMERA)
    patch = image[int(y0) : int(y1) + 1, int(x0) : int(x1) + 1]
    p10, median, p90 = np.percentile(patch, [10, 50, 90])
    albedo = float(median) * distance**2 / config.gain
    contrast = float((p90 - p10) / max(median, 1.0))
    details = {"apparent_albedo": albedo, "contrast": contrast, "median_grey": float(median)}
    if albedo < config.dark_below:
        return CueResult.judge(
            "nir",
            math.log(max(albedo, 1e-3) / config.skin_range[0]),
            0.0,
            "no face in the NIR image where the colour camera sees one (a screen emits no "
            "near-infrared)",
            "",
            details,
        )
    if config.gain * albedo / distance**2 < config.min_signal:
        return CueResult.abstain("nir", COME_CLOSER, details)
    lo, hi = config.skin_range
    margins = {
        "too dark for skin in NIR": math.log(albedo / lo),
        "reflects NIR like paper, not skin": math.log(hi / albedo),
        "no facial structure in NIR (a print whose ink vanishes in near-infrared?)": math.log(
            max(contrast, 1e-3) / config.min_contrast
        ),
    }
    reason, score = min(margins.items(), key=lambda kv: kv[1])
    return CueResult.judge(
        "nir", score, 0.0, reason, f"skin-like NIR reflection (albedo {albedo:.2f})", details
    )
