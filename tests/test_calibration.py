"""Fair score normalisation: fitting equalises cluster FMRs on constructed data, and profiles
are versioned, self-checking files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from yingyan.calibration import fit_profile, load_profile
from yingyan.calibration.fair_score import CalibrationError
from yingyan.errors import DatasetError


def _two_regions(rng: np.random.Generator, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """A dense region (different people close together) and a sparse one, 32-d; the regions'
    centres are fixed, the people in them drawn from `rng`."""
    centre = np.random.default_rng(99).standard_normal((2, 32)) * 3
    dense = centre[0] + rng.standard_normal((n, 32)) * 1.0
    sparse = centre[1] + rng.standard_normal((n, 32)) * 1.4
    x = np.concatenate([dense, sparse]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, np.array([0] * n + [1] * n)


def _fmr_by_region(scores: np.ndarray, region: np.ndarray, target: float) -> list[float]:
    iu = np.triu_indices(len(region), 1)
    s = scores[iu]
    t = np.quantile(s, 1 - target)
    same = region[iu[0]] == region[iu[1]]
    return [float(np.mean(s[same & (region[iu[0]] == r)] >= t)) for r in (0, 1)]


def test_normalisation_evens_out_false_matches() -> None:
    rng = np.random.default_rng(0)
    fit, _ = _two_regions(rng)
    test, region = _two_regions(np.random.default_rng(1))
    raw = _fmr_by_region(test @ test.T, region, 1e-2)
    assert raw[0] > 10 * raw[1]  # the dense region takes nearly all false matches
    profile = fit_profile(fit, model="toy", name="toy", clusters=4, target_fmr=1e-2)
    fair = _fmr_by_region(profile.scores(test, test), region, 1e-2)  # people not fitted on
    assert max(fair) / min(fair) < 2


def test_profile_round_trip_and_tamper_check(tmp_path: Path) -> None:
    x, _ = _two_regions(np.random.default_rng(2), 100)
    profile = fit_profile(x, model="toy", name="p", clusters=4, fitted_on={"dataset": "toy"})
    path = tmp_path / "p.json"
    profile.save(path)
    again = load_profile(path)
    assert again == profile and again.version == profile.version
    assert np.allclose(again.scores(x[:5], x[:5]), profile.scores(x[:5], x[:5]))
    data = json.loads(path.read_text())
    data["deltas"][0] += 0.1
    path.write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match="does not match its version"):
        load_profile(path)
    path.write_text("{}")
    with pytest.raises(CalibrationError, match="not a Yingyan"):
        load_profile(path)
    with pytest.raises(CalibrationError, match="expects 32-d"):
        profile.offsets(np.ones((2, 8), np.float32))
    with pytest.raises(DatasetError, match="too few"):
        fit_profile(x[:10], model="toy", name="p", clusters=8)
