"""Stereo calibration files (OpenCV's format), their validation, rectification, triangulation."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from yingyan.errors import ConfigError
from yingyan.liveness.simulator import default_rig
from yingyan.station import load_calibration, make_calibration, rectify, save_calibration
from yingyan.station.calibration import StereoCalibration

RIG = default_rig()


def _write_opencv(path: Path, **fields: object) -> None:
    """Write fields the way an OpenCV calibration program does (cv2.FileStorage)."""
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    for name, value in fields.items():
        fs.write(name, value)
    fs.release()


def _fields(c: StereoCalibration = RIG) -> dict[str, object]:
    return {
        "K1": c.k1,
        "D1": c.d1.reshape(1, -1),
        "K2": c.k2,
        "D2": c.d2.reshape(1, -1),
        "R": c.r,
        "T": c.t.reshape(3, 1),
        "image_size": np.array([list(c.image_size)]),
    }


def _same(a: StereoCalibration, b: StereoCalibration) -> None:
    for name in ("k1", "d1", "k2", "d2", "r", "t"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-12)
    assert a.image_size == b.image_size and a.working_range == b.working_range


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json", ".xml"])
def test_filestorage_round_trip(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"stereo{suffix}"
    save_calibration(RIG, path)
    _same(load_calibration(path), RIG)


def test_opencv_sample_names_and_units(tmp_path: Path) -> None:
    """OpenCV's stereo_calib sample writes M1/M2; T in millimetres with units = "mm"."""
    f = _fields()
    f["M1"], f["M2"] = f.pop("K1"), f.pop("K2")
    f["T"] = RIG.t.reshape(3, 1) * 1000
    f["units"] = "mm"
    f["working_range"] = np.array([[0.35, 0.7]])
    path = tmp_path / "intrinsics_extrinsics.yml"
    _write_opencv(path, **f)
    c = load_calibration(path)
    np.testing.assert_allclose(c.t, RIG.t, atol=1e-12)
    assert c.working_range == (0.35, 0.7)
    assert abs(c.baseline - 0.05) < 1e-3


def test_toml_and_rodrigues_rotation(tmp_path: Path) -> None:
    rvec = cv2.Rodrigues(RIG.r)[0].ravel()
    rows = lambda m: "[" + ", ".join("[" + ", ".join(map(repr, r)) + "]" for r in m) + "]"  # noqa: E731
    vec = lambda v: "[" + ", ".join(map(repr, v)) + "]"  # noqa: E731
    text = "\n".join(
        [
            f"K1 = {rows(RIG.k1.tolist())}",
            f"D1 = {vec(RIG.d1.tolist())}",
            f"K2 = {rows(RIG.k2.tolist())}",
            f"D2 = {vec(RIG.d2.tolist())}",
            f"R = {vec(rvec.tolist())}",
            f"T = {vec((RIG.t * 1000).tolist())}",
            'units = "mm"',
            "image_size = [1280, 720]",
            "working_range = [0.3, 0.8]",
        ]
    )
    path = tmp_path / "station.toml"
    path.write_text(text)
    c = load_calibration(path)
    np.testing.assert_allclose(c.r, RIG.r, atol=1e-9)
    np.testing.assert_allclose(c.t, RIG.t, atol=1e-12)


def _bad(**changes: object) -> dict[str, object]:
    f = _fields()
    f.update(changes)
    return {k: v for k, v in f.items() if v is not None}


REFLECTION = np.diag([1.0, 1.0, -1.0])
K_NEG = np.array([[-1000.0, 0, 640], [0, 1000, 360], [0, 0, 1]])
K_OUT = np.array([[1000.0, 0, 2000], [0, 1000, 360], [0, 0, 1]])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (_bad(K1=np.eye(3)[:2]), "K1 must be a 3x3 matrix"),
        (_bad(K2=K_NEG), "K2 focal lengths"),
        (_bad(K1=K_OUT), "principal point lies outside"),
        (_bad(D1=np.zeros((1, 3))), "D1 must have 4, 5, 8, 12, 14 coefficients"),
        (_bad(R=REFLECTION), "det(R) must be 1"),
        (_bad(R=np.eye(3) * 1.1), "not orthonormal"),
        (_bad(R=np.zeros((2, 2))), "R must be a 3x3 rotation"),
        (_bad(T=np.zeros((3, 1))), "baseline |T| must be > 0"),
        (_bad(T=np.array([[-50.0], [0.0], [0.0]])), 'units = "mm"'),
        (_bad(T=np.array([[0.0], [-0.05], [0.0]])), "side by side"),
        (_bad(T=np.zeros((2, 1)) + 0.1), "T must have 3 elements"),
        (_bad(T=None), "missing T"),
        (_bad(image_size=np.array([[1280, 0]])), "image_size must be [width, height]"),
        (_bad(working_range=np.array([[0.8, 0.3]])), "working_range must be [near, far]"),
        (_bad(units="inches"), "units must be one of"),
    ],
)
def test_invalid_calibration_is_a_clear_config_error(
    tmp_path: Path, fields: dict[str, object], message: str
) -> None:
    path = tmp_path / "bad.yaml"
    _write_opencv(path, **fields)
    with pytest.raises(ConfigError) as err:
        load_calibration(path)
    assert message in err.value.message
    assert str(path) in err.value.message


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_calibration(tmp_path / "absent.yaml")
    (tmp_path / "c.ini").write_text("K1 = 1")
    with pytest.raises(ConfigError, match="unknown calibration format"):
        load_calibration(tmp_path / "c.ini")
    (tmp_path / "broken.yaml").write_text("%YAML:1.0\nK1: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml"):
        load_calibration(tmp_path / "broken.yaml")
    (tmp_path / "broken.toml").write_text("K1 = [[1, 2]")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_calibration(tmp_path / "broken.toml")
    with pytest.raises(ConfigError, match="K1 must be numbers"):
        make_calibration("abc", RIG.d1, RIG.k2, RIG.d2, RIG.r, RIG.t, (1280, 720))


def _scene(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.3, 0.8, n)
    return np.stack([rng.uniform(-0.15, 0.15, n), rng.uniform(-0.1, 0.1, n), z], axis=1)


def _project(c: StereoCalibration, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), c.k1, c.d1)[0].reshape(-1, 2)
    b = cv2.projectPoints(pts, cv2.Rodrigues(c.r)[0], c.t, c.k2, c.d2)[0].reshape(-1, 2)
    return a, b


def test_rectification_puts_corresponding_points_on_one_row() -> None:
    rect = rectify(RIG)
    a, b = _project(RIG, _scene(500, 1))
    raw_rows = np.abs(a[:, 1] - b[:, 1])
    ra, rb = rect.rectify_points(a, 1), rect.rectify_points(b, 2)
    assert np.max(np.abs(ra[:, 1] - rb[:, 1])) < 0.01  # px, after the slight toe-in and distortion
    assert np.median(raw_rows) > 1.0  # the raw pair was not already aligned
    assert np.all(ra[:, 0] - rb[:, 0] > 0)  # camera 2 on the right: positive disparity


def test_rectify_maps_agree_with_rectified_points() -> None:
    """cv2.remap tables: the raw pixel they fetch for a rectified pixel projects back to it."""
    rect = rectify(RIG)
    mx, my = rect.rectify_maps(2)
    ys, xs = np.mgrid[100:600:97, 100:1200:151]
    raw = np.stack([mx[ys, xs], my[ys, xs]], axis=-1).reshape(-1, 2)
    back = rect.rectify_points(raw, 2)
    np.testing.assert_allclose(back, np.stack([xs, ys], axis=-1).reshape(-1, 2), atol=0.02)


def test_triangulation_round_trip_exact_and_within_noise() -> None:
    rect = rectify(RIG)
    pts = _scene(2000, 2)
    a, b = _project(RIG, pts)
    got = rect.to_camera1(rect.triangulate(rect.rectify_points(a, 1), rect.rectify_points(b, 2)))
    assert np.max(np.abs(got - pts)) < 1e-6  # m
    # With 0.3 px noise per view the depth error at 0.5 m matches σ_Z = Z²·√2·σ/(f·B).
    rng = np.random.default_rng(3)
    flat = np.column_stack([pts[:, :2], np.full(len(pts), 0.5)])
    a, b = _project(RIG, flat)
    a, b = a + rng.normal(0, 0.3, a.shape), b + rng.normal(0, 0.3, b.shape)
    got = rect.triangulate(rect.rectify_points(a, 1), rect.rectify_points(b, 2))
    true = flat @ rect.r1.T
    ratio = np.std(got[:, 2] - true[:, 2]) / rect.depth_noise(0.5, 0.3)
    assert 0.9 < ratio < 1.1
    # Against OpenCV's own triangulation from the rectified projection matrices.
    h = cv2.triangulatePoints(
        rect.p1, rect.p2, rect.rectify_points(a, 1).T, rect.rectify_points(b, 2).T
    )
    np.testing.assert_allclose((h[:3] / h[3]).T[:, 2], got[:, 2], rtol=2e-3)


def test_points_behind_the_cameras_are_nan() -> None:
    rect = rectify(RIG)
    got = rect.triangulate([[600.0, 300.0]], [[610.0, 300.0]])  # negative disparity
    assert np.isnan(got).all()
