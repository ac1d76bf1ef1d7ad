"""Label-free score normalisation: both methods equalise region FMRs on constructed data, the
per-template terms have known values, and profiles are versioned, self-checking files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from yingyan.calibration import (
    TemplateNorms,
    fit_cohort_profile,
    fit_profile,
    load_profile,
    normalise_matrix,
    normalise_pairs,
)
from yingyan.calibration.fair_score import CalibrationError, cohort_norms
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


def test_cohort_normalisation_evens_out_false_matches() -> None:
    """The same two regions: AS-norm against a cohort of other people drawn from them."""
    cohort, _ = _two_regions(np.random.default_rng(0))
    test, region = _two_regions(np.random.default_rng(1))
    profile = fit_cohort_profile(cohort, model="toy", name="toy", top_k=20, target_fmr=1e-2)
    fair = _fmr_by_region(profile.scores(test, test), region, 1e-2)
    assert max(fair) / min(fair) < 2
    # the reference pairs meet the recorded threshold's target
    iu = np.triu_indices(len(cohort), 1)
    ref = profile.scores(cohort, cohort)[iu]
    assert np.mean(ref >= profile.global_threshold) == pytest.approx(1e-2, abs=2e-3)


def _at(degrees: list[float]) -> np.ndarray:
    r = np.radians(degrees)
    return np.stack([np.cos(r), np.sin(r)], axis=1).astype(np.float32)


def test_cohort_terms_are_the_top_k_mean_and_spread() -> None:
    """Cohort at cos = 0.9, 0.5, 0.1 and -0.2 from the template, and the template itself
    (left out): the top 2 are 0.9 and 0.5, mean 0.7, standard deviation 0.2."""
    template = _at([0])
    cohort = np.concatenate(
        [template, _at([np.degrees(np.arccos(c)) for c in (0.9, 0.5, 0.1, -0.2)])]
    )
    norms = cohort_norms(template, cohort, 2)
    assert norms.shift[0] == pytest.approx(0.7, abs=1e-5)
    assert norms.scale[0] == pytest.approx(0.2, abs=1e-5)


def test_normalised_score_formula() -> None:
    """((s - shift_a) / scale_a + (s - shift_b) / scale_b) / 2: 0.5 with (0.1, 0.2) and
    (0.3, 0.4) gives (2 + 0.5) / 2."""
    a = TemplateNorms(np.array([0.1]), np.array([0.2]))
    b = TemplateNorms(np.array([0.3]), np.array([0.4]))
    assert normalise_pairs(np.array([0.5]), a, b)[0] == pytest.approx(1.25)
    assert normalise_matrix(np.array([[0.5]]), a, b)[0, 0] == pytest.approx(1.25)


def test_per_template_terms_match_the_score_matrix() -> None:
    """The gallery's path (terms computed once per template, then combined with each raw
    score) gives the same scores as the profile's matrix and row-wise functions."""
    x, _ = _two_regions(np.random.default_rng(4), 60)
    for profile in (
        fit_profile(x, model="toy", name="c", clusters=4),
        fit_cohort_profile(x, model="toy", name="k", top_k=10),
    ):
        probe, gallery = x[:3], x[3:]
        p, g = profile.norms(probe), profile.norms(gallery)  # once each
        raw = probe.astype(np.float64) @ gallery.T.astype(np.float64)
        assert np.allclose(normalise_matrix(raw, p, g), profile.scores(probe, gallery))
        pairs = profile.pair_scores(probe, gallery[:3])
        assert np.allclose(pairs, np.diag(profile.scores(probe, gallery[:3])))
        assert np.allclose(
            profile.scores(probe, gallery[5:7]), normalise_matrix(raw[:, 5:7], p, g[5:7])
        )
    clusters = fit_profile(x, model="toy", name="c", clusters=4)
    assert np.array_equal(clusters.norms(x).shift, clusters.offsets(x))
    assert np.all(clusters.norms(x).scale == 1)


def test_cohort_profile_round_trip_and_tamper_check(tmp_path: Path) -> None:
    x, _ = _two_regions(np.random.default_rng(5), 60)
    profile = fit_cohort_profile(x, model="toy", name="k", top_k=10)
    path = tmp_path / "k.json"
    profile.save(path)
    again = load_profile(path)
    assert again == profile and again.method == "cohort"
    assert np.allclose(again.scores(x[:5], x[5:9]), profile.scores(x[:5], x[5:9]))
    data = json.loads(path.read_text())
    data["cohort"][0][0] += 0.01
    path.write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match="does not match its version"):
        load_profile(path)
    data["method"] = "magic"
    path.write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match="unknown method"):
        load_profile(path)
    with pytest.raises(DatasetError, match="too few"):
        fit_cohort_profile(x[:30], model="toy", name="k", top_k=20)
