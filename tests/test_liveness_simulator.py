"""The stereo station simulator: seeded, plausible face, attack geometry as documented, and
projection -> triangulation round trips within the noise it claims."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from yingyan.liveness.simulator import (
    ATTACKS,
    SCREENS,
    SimulatorConfig,
    Species,
    default_rig,
    mean_face,
    simulate_many,
)
from yingyan.station import rectify

RIG = default_rig()
RECT = rectify(RIG)


def test_mean_face_is_plausible() -> None:
    mf = mean_face()
    pts, lm = mf.points * 1000, mf.landmarks
    assert 50 <= len(pts) <= 200
    eyes, nose = pts[lm[:2]], pts[lm[2]]
    assert abs(np.linalg.norm(eyes[0] - eyes[1]) - 63) < 1e-9
    assert np.allclose(eyes[:, 2], 0)
    assert 20 <= -nose[2] <= 30  # nose tip 2-3 cm in front of the eye plane
    assert eyes[0, 0] < 0 < eyes[1, 0]  # image-left eye first
    span = pts[:, 2].max() - pts[:, 2].min()
    assert 20 <= span <= 200  # librealsense's face-depth bounds, mm
    assert np.argmin(pts[:, 2]) == lm[2]  # the nose tip is the nearest point


def test_seeded_and_reproducible() -> None:
    a = simulate_many(Species.BENT_PRINT, 5, seed=7)
    b = simulate_many(Species.BENT_PRINT, 5, seed=7)
    c = simulate_many(Species.BENT_PRINT, 5, seed=8)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.pixels1, y.pixels1)
        assert dict(x.params) == dict(y.params)
    assert not np.allclose(a[0].pixels1, c[0].pixels1, equal_nan=True)


@pytest.mark.parametrize("species", list(Species))
def test_projection_triangulation_round_trip(species: Species) -> None:
    cfg = SimulatorConfig(point_noise=0.0, second_camera="rgb")
    for s in simulate_many(species, 20, seed=11, config=cfg):
        ok = np.isfinite(s.pixels1).all(axis=1)
        assert ok.sum() >= 100
        got = RECT.triangulate(
            RECT.rectify_points(s.pixels1[ok], 1), RECT.rectify_points(s.pixels2[ok], 2)
        )
        assert np.max(np.abs(RECT.to_camera1(got) - s.points[ok])) < 1e-6


def test_noisy_round_trip_matches_the_depth_noise_model() -> None:
    """Depth errors over 200 bona fide faces across 0.3-0.8 m, in units of σ_Z at each face's
    distance: standard normal (the noise model the relief cue normalises by)."""
    errors = []
    for s in simulate_many(Species.BONA_FIDE, 200, seed=12):
        ok = np.isfinite(s.pixels1).all(axis=1)
        got = RECT.triangulate(
            RECT.rectify_points(s.pixels1[ok], 1), RECT.rectify_points(s.pixels2[ok], 2)
        )
        true = s.points[ok] @ RECT.r1.T
        errors.append((got[:, 2] - true[:, 2]) / RECT.depth_noise(true[:, 2], 0.3))
        assert 0.3 <= s.distance <= 0.8
    e = np.concatenate(errors)
    assert abs(np.mean(e)) < 0.05
    assert 0.93 < np.std(e) < 1.07


def _plane_rms(p: np.ndarray) -> float:
    c = p - p.mean(axis=0)
    return float(np.linalg.svd(c, compute_uv=False)[-1] / np.sqrt(len(p)))


def test_attack_geometry_ground_truth() -> None:
    for sp in (Species.FLAT_PRINT, Species.TILTED_PRINT, Species.NIR_PRINT, *SCREENS):
        for s in simulate_many(sp, 10, seed=13):
            assert _plane_rms(s.points) < 1e-12
    for s in simulate_many(Species.TILTED_PRINT, 20, seed=13):
        assert 15 <= s.params["tilt"] <= 45
    for s in simulate_many(Species.BENT_PRINT, 20, seed=13):
        assert 0.04 <= s.params["radius"] <= 0.2
        assert _plane_rms(s.points) > 1e-3  # bent: not a plane
    for s in simulate_many(Species.FOLDED_PRINT, 20, seed=13):
        assert 100 <= s.params["fold_angle"] <= 170
    for s in simulate_many(Species.BONA_FIDE, 20, seed=13):
        assert _plane_rms(s.points) > 5e-3
    for s in simulate_many(Species.SMALL_PHOTO, 20, seed=13):
        iod = np.linalg.norm(
            s.points[mean_face().landmarks[0]] - s.points[mean_face().landmarks[1]]
        )
        assert abs(iod - s.face_iod) < 1e-3  # within the photographed head's own pose
        assert s.face_iod < 0.045 and s.distance < s.params["apparent_distance"]


def test_screens_show_nothing_to_an_nir_second_camera() -> None:
    for sp in ATTACKS:
        s = simulate_many(sp, 1, seed=14)[0]
        assert (s.pixels2 is None) == (sp in SCREENS)
        assert (s.landmarks2 is None) == (sp in SCREENS)
    rgb = simulate_many(
        Species.PHONE_REPLAY, 1, seed=14, config=SimulatorConfig(second_camera="rgb")
    )
    assert rgb[0].pixels2 is not None


def test_rendered_nir_face_is_where_it_projects_and_screens_are_dark() -> None:
    cfg = SimulatorConfig(render=True)
    rvec = cv2.Rodrigues(RIG.r)[0]
    for sp, lo, hi in ((Species.BONA_FIDE, 8, 255), (Species.TABLET_REPLAY, 0, 8)):
        for s in simulate_many(sp, 5, seed=15, config=cfg, distance=0.5):
            assert s.nir is not None and s.nir_off is not None
            assert s.nir.shape == (720, 1280)
            cheek = s.points[mean_face().landmarks[2]] + [0.0, -0.01, 0.0]  # above the nose tip
            px = cv2.projectPoints(cheek[None], rvec, RIG.t, RIG.k2, RIG.d2)[0]
            x, y = np.round(px.ravel()).astype(int)
            on = s.nir[y - 3 : y + 4, x - 3 : x + 4].astype(float)
            off = s.nir_off[y - 3 : y + 4, x - 3 : x + 4].astype(float)
            assert lo <= (on - off).mean() <= hi, (sp, (on - off).mean())
            assert s.nir[:40, :40].mean() < 3  # away from the face: ambient light and noise
