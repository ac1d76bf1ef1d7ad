"""A face station's stereo calibration, in OpenCV's format, and the rectification built from it.

The file holds what `cv2.stereoCalibrate` returns: camera 1's intrinsics `K1` and distortion
`D1`, camera 2's `K2` and `D2`, and the pose of camera 2 relative to camera 1 (`R`, `T`:
x2 = R·x1 + T), plus the image size both were calibrated at and the station's working range.
Camera 1 is the reference (the colour camera of an RGB + NIR station): every 3D point here is in
camera 1's rectified frame, in metres. Everything is checked when loaded, so a cue never meets a
calibration it cannot use; rectification is computed from it with `cv2.stereoRectify`.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from yingyan.errors import ConfigError

FloatArray = npt.NDArray[np.float64]

DISTORTION_LENGTHS = (4, 5, 8, 12, 14)  # the lengths OpenCV's camera models accept
DEFAULT_WORKING_RANGE = (0.3, 0.8)  # metres from camera 1
MAX_BASELINE_M = 1.0  # a longer one is almost surely millimetres written as metres
UNITS = {"m": 1.0, "mm": 1e-3, "cm": 1e-2}
_ALIASES = {
    "K1": ("K1", "M1", "cameraMatrix1", "camera_matrix_1"),
    "D1": ("D1", "distCoeffs1", "dist_coeffs_1"),
    "K2": ("K2", "M2", "cameraMatrix2", "camera_matrix_2"),
    "D2": ("D2", "distCoeffs2", "dist_coeffs_2"),
    "R": ("R",),
    "T": ("T",),
    "image_size": ("image_size", "imageSize"),
    "working_range": ("working_range",),
    "units": ("units", "T_units"),
}


@dataclass(frozen=True, slots=True, eq=False)
class StereoCalibration:
    """Two calibrated cameras; T in metres. Build it with `make_calibration` (validated)."""

    k1: FloatArray  # (3, 3)
    d1: FloatArray  # (n,) n in DISTORTION_LENGTHS
    k2: FloatArray
    d2: FloatArray
    r: FloatArray  # (3, 3) rotation, camera 1 -> camera 2
    t: FloatArray  # (3,) metres
    image_size: tuple[int, int]  # (width, height) in pixels
    working_range: tuple[float, float] = DEFAULT_WORKING_RANGE

    @property
    def baseline(self) -> float:
        """Distance between the two optical centres, in metres."""
        return float(np.linalg.norm(self.t))


@dataclass(frozen=True, slots=True, eq=False)
class Rectification:
    """The rectified pair: corresponding points lie on the same row of both images.

    `r1`, `r2` rotate each camera's rays into the common rectified frame, `p1`, `p2` project it
    (same focal length and principal point, so disparity = x1 - x2 and depth = f·B / disparity).
    """

    calibration: StereoCalibration
    r1: FloatArray
    r2: FloatArray
    p1: FloatArray  # (3, 4)
    p2: FloatArray  # (3, 4)
    q: FloatArray  # (4, 4)

    @property
    def focal(self) -> float:
        return float(self.p1[0, 0])

    @property
    def baseline(self) -> float:
        return self.calibration.baseline

    @property
    def principal_point(self) -> tuple[float, float]:
        return float(self.p1[0, 2]), float(self.p1[1, 2])

    @property
    def _fb(self) -> float:
        # P2[0, 3] = f·Tx in the rectified frame; negative when camera 2 is to the right.
        return float(-self.p2[0, 3])

    def _camera(self, camera: int) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        c = self.calibration
        if camera == 1:
            return c.k1, c.d1, self.r1, self.p1
        if camera == 2:
            return c.k2, c.d2, self.r2, self.p2
        raise ValueError(f"camera must be 1 or 2, got {camera}")

    def rectify_points(self, points: npt.ArrayLike, camera: int) -> FloatArray:
        """Raw (distorted) pixel coordinates of camera 1 or 2 -> rectified pixel coordinates."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 1, 2)
        k, d, r, p = self._camera(camera)
        if pts.shape[0] == 0:
            return np.zeros((0, 2))
        out = cv2.undistortPoints(pts, k, d, R=r, P=p).reshape(-1, 2)
        return np.asarray(out, dtype=np.float64)

    def triangulate(self, rect1: npt.ArrayLike, rect2: npt.ArrayLike) -> FloatArray:
        """Rectified correspondences -> 3D points (metres) in camera 1's rectified frame.

        Rows with a disparity of the wrong sign (behind the cameras) come back as NaN."""
        a = np.asarray(rect1, dtype=np.float64).reshape(-1, 2)
        b = np.asarray(rect2, dtype=np.float64).reshape(-1, 2)
        disparity = a[:, 0] - b[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            z = self._fb / disparity
        z[~(z > 0)] = np.nan
        cx, cy = self.principal_point
        y = (a[:, 1] + b[:, 1]) / 2
        return np.stack([(a[:, 0] - cx) * z / self.focal, (y - cy) * z / self.focal, z], axis=1)

    def depth_noise(self, z: float, pixel_noise: float) -> float:
        """Expected depth standard deviation (m) at depth z (m): σ_Z = Z²·σ_d/(f·B), where the
        disparity's noise σ_d = √2 · the per-image point noise (two independent measurements)."""
        return z**2 * math.sqrt(2.0) * pixel_noise / abs(self._fb)

    def project(self, points: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """3D points in camera 1's rectified frame -> rectified pixels in both views."""
        x = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        h = np.hstack([x, np.ones((x.shape[0], 1))])
        a, b = h @ self.p1.T, h @ self.p2.T
        return a[:, :2] / a[:, 2:], b[:, :2] / b[:, 2:]

    def to_camera1(self, points: npt.ArrayLike) -> FloatArray:
        """Rectified-frame 3D points -> camera 1's own (unrectified) frame."""
        out: FloatArray = np.asarray(points, dtype=np.float64).reshape(-1, 3) @ self.r1
        return out

    def rectify_maps(self, camera: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """cv2.remap tables turning camera 1's or 2's raw image into its rectified image."""
        c = self.calibration
        k, d, r, p = self._camera(camera)
        mx, my = cv2.initUndistortRectifyMap(k, d, r, p, c.image_size, cv2.CV_32FC1)
        return np.asarray(mx, dtype=np.float32), np.asarray(my, dtype=np.float32)


def make_calibration(
    k1: npt.ArrayLike,
    d1: npt.ArrayLike,
    k2: npt.ArrayLike,
    d2: npt.ArrayLike,
    r: npt.ArrayLike,
    t: npt.ArrayLike,
    image_size: npt.ArrayLike,
    working_range: npt.ArrayLike = DEFAULT_WORKING_RANGE,
    *,
    units: str = "m",
    source: str = "calibration",
) -> StereoCalibration:
    """Validate every field and build the calibration; ConfigError names the first problem.

    `r` may be a 3x3 rotation matrix or a Rodrigues vector; `t` is in `units` (m, cm or mm)."""
    size = _image_size(image_size, source)
    k1a, k2a = _intrinsics(k1, "K1", size, source), _intrinsics(k2, "K2", size, source)
    d1a, d2a = _distortion(d1, "D1", source), _distortion(d2, "D2", source)
    ra = _rotation(r, source)
    if units not in UNITS:
        raise ConfigError(f"{source}: units must be one of {sorted(UNITS)}, got {units!r}")
    ta = _matrix(t, "T", source).ravel()
    if ta.size != 3:
        raise ConfigError(f"{source}: T must have 3 elements, got {ta.size}")
    ta = ta * UNITS[units]
    baseline = float(np.linalg.norm(ta))
    if not baseline > 0:
        raise ConfigError(f"{source}: the baseline |T| must be > 0 (the cameras are distinct)")
    if baseline > MAX_BASELINE_M:
        raise ConfigError(
            f"{source}: baseline {baseline:g} m is implausible for a face station; "
            'if T is in millimetres, set units = "mm"'
        )
    if abs(ta[1]) > abs(ta[0]) or abs(ta[2]) > abs(ta[0]):
        raise ConfigError(f"{source}: the cameras must be side by side (|Tx| largest), got T={ta}")
    wr = _matrix(working_range, "working_range", source).ravel()
    if wr.size != 2 or not (0 < wr[0] < wr[1]):
        raise ConfigError(f"{source}: working_range must be [near, far] metres with 0 < near < far")
    return StereoCalibration(k1a, d1a, k2a, d2a, ra, ta, size, (float(wr[0]), float(wr[1])))


def rectify(calibration: StereoCalibration) -> Rectification:
    """cv2.stereoRectify with zero disparity at infinity (same principal point in both views)."""
    c = calibration
    r1, r2, p1, p2, q, _, _ = cv2.stereoRectify(
        c.k1,
        c.d1,
        c.k2,
        c.d2,
        c.image_size,
        c.r,
        c.t.reshape(3, 1),
        flags=cv2.CALIB_ZERO_DISPARITY,
        alpha=0,
    )
    return Rectification(c, *(np.asarray(m, dtype=np.float64) for m in (r1, r2, p1, p2, q)))


def load_calibration(path: str | Path) -> StereoCalibration:
    """Read a calibration file: YAML, JSON or XML as `cv2.FileStorage` writes it, or TOML."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"calibration file not found: {p}")
    if p.suffix.lower() == ".toml":
        try:
            data: Mapping[str, Any] = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from e
        fields = {key: _first(data.get, names) for key, names in _ALIASES.items()}
    elif p.suffix.lower() in (".yaml", ".yml", ".json", ".xml"):
        fields = _read_filestorage(p)
    else:
        raise ConfigError(f"{p}: unknown calibration format; use .yaml, .yml, .json, .xml or .toml")
    for key in ("K1", "D1", "K2", "D2", "R", "T", "image_size"):
        if fields[key] is None:
            raise ConfigError(f"{p}: missing {key} (also read as: {', '.join(_ALIASES[key])})")
    units = fields["units"] if fields["units"] is not None else "m"
    return make_calibration(
        fields["K1"],
        fields["D1"],
        fields["K2"],
        fields["D2"],
        fields["R"],
        fields["T"],
        fields["image_size"],
        fields["working_range"] if fields["working_range"] is not None else DEFAULT_WORKING_RANGE,
        units=str(units),
        source=str(p),
    )


def save_calibration(calibration: StereoCalibration, path: str | Path) -> None:
    """Write the calibration with cv2.FileStorage (YAML, JSON or XML by the file's suffix)."""
    c = calibration
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    try:
        for name, m in (
            ("K1", c.k1),
            ("D1", c.d1.reshape(1, -1)),
            ("K2", c.k2),
            ("D2", c.d2.reshape(1, -1)),
            ("R", c.r),
            ("T", c.t.reshape(3, 1)),
        ):
            fs.write(name, m)
        fs.write("image_size", np.array(c.image_size, dtype=np.int32).reshape(1, 2))
        fs.write("working_range", np.array(c.working_range, dtype=np.float64).reshape(1, 2))
        fs.write("units", "m")
    finally:
        fs.release()


def _first(get: Callable[[str], Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = get(name)
        if value is not None:
            return value
    return None


def _read_filestorage(p: Path) -> dict[str, Any]:
    try:
        fs = cv2.FileStorage(str(p), cv2.FILE_STORAGE_READ)
    except (cv2.error, SystemError) as e:  # a parse error surfaces as either
        raise ConfigError(f"{p}: not readable as an OpenCV FileStorage file: {e}") from e
    if not fs.isOpened():
        raise ConfigError(f"{p}: not readable as an OpenCV FileStorage file")
    try:

        def get(name: str) -> Any:
            node = fs.getNode(name)
            return None if node.empty() else _node_value(node, name, p)

        return {key: _first(get, names) for key, names in _ALIASES.items()}
    finally:
        fs.release()


def _node_value(node: Any, name: str, p: Path) -> Any:
    if node.isString():
        return node.string()
    if node.isReal() or node.isInt():
        return node.real()
    if node.isSeq():
        return [_node_value(node.at(i), name, p) for i in range(node.size())]
    mat = node.mat()
    if mat is None:
        raise ConfigError(f"{p}: {name} is neither a matrix nor a list of numbers")
    return mat


def _matrix(value: Any, name: str, source: str) -> FloatArray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: {name} must be numbers, got {value!r}") from e
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"{source}: {name} has non-finite values")
    return a


def _image_size(value: Any, source: str) -> tuple[int, int]:
    a = _matrix(value, "image_size", source).ravel()
    if a.size != 2 or np.any(a < 1) or np.any(a != np.round(a)):
        raise ConfigError(f"{source}: image_size must be [width, height] positive integers")
    return int(a[0]), int(a[1])


def _intrinsics(value: Any, name: str, size: tuple[int, int], source: str) -> FloatArray:
    k = _matrix(value, name, source)
    if k.shape != (3, 3):
        raise ConfigError(f"{source}: {name} must be a 3x3 matrix, got shape {k.shape}")
    if not (k[0, 0] > 0 and k[1, 1] > 0):
        raise ConfigError(f"{source}: {name} focal lengths fx, fy must be > 0")
    if abs(k[2, 2] - 1) > 1e-9 or np.any(np.abs(k[[1, 2, 2], [0, 0, 1]]) > 1e-9):
        raise ConfigError(f"{source}: {name} must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]]")
    if not (0 <= k[0, 2] < size[0] and 0 <= k[1, 2] < size[1]):
        raise ConfigError(f"{source}: {name} principal point lies outside the {size} image")
    return k


def _distortion(value: Any, name: str, source: str) -> FloatArray:
    d = _matrix(value, name, source).ravel()
    if d.size not in DISTORTION_LENGTHS:
        raise ConfigError(
            f"{source}: {name} must have {', '.join(map(str, DISTORTION_LENGTHS))} coefficients, "
            f"got {d.size}"
        )
    return d


def _rotation(value: Any, source: str) -> FloatArray:
    r = _matrix(value, "R", source)
    if r.size == 3:
        r = np.asarray(cv2.Rodrigues(r.reshape(3, 1))[0], dtype=np.float64)
    if r.shape != (3, 3):
        raise ConfigError(f"{source}: R must be a 3x3 rotation or a Rodrigues 3-vector")
    if np.max(np.abs(r @ r.T - np.eye(3))) > 1e-4:
        raise ConfigError(f"{source}: R is not orthonormal (R·Rᵀ ≠ I)")
    det = float(np.linalg.det(r))
    if abs(det - 1) > 1e-4:
        raise ConfigError(f"{source}: det(R) must be 1 (a rotation), got {det:.4f}")
    return r
