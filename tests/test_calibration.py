"""Label-free score normalisation: both methods equalise region FMRs on constructed data, the
per-template terms have known values, and profiles are versioned, self-checking files."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from yingyan.calibration import (
    FairScoreProfile,
    TemplateNorms,
    fit_cohort_profile,
    fit_profile,
    load_profile,
    normalise_matrix,
    normalise_pairs,
)
from yingyan.calibration.fair_score import (
    CalibrationError,
    cohort_norms,
    parse_profile,
    profile_json,
)
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


# -- versions and validation -------------------------------------------------------------------


def _claimed(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with the version its format's spec gives its content, as a tool that writes
    profiles (or someone who edits one) would set it: so what is refused is the content, not a
    stale hash. /2: sha256 of every field as canonical JSON; /1: of the normalisation terms."""
    body = {k: v for k, v in data.items() if k != "version"}
    if body.get("format") == "yingyan.fair-score/1":
        parts = [body["centroids"], body["deltas"], body["model"]]
        if body.get("method", "clusters") != "clusters":
            parts += [body["method"], body["cohort"], body["top_k"]]
        digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]
    else:
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()
    return body | {"version": digest}


def _cohort_profile() -> FairScoreProfile:
    x, _ = _two_regions(np.random.default_rng(6), 30)
    return fit_cohort_profile(x, model="toy", name="k", top_k=10, fitted_on={"dataset": "toy"})


def test_every_field_is_in_the_version(tmp_path: Path) -> None:
    """Each field a score, a decision or a report reads changes the version when edited; an
    edited threshold under the old version is refused."""
    cohort = _cohort_profile()
    x, _ = _two_regions(np.random.default_rng(7), 30)
    clusters = fit_profile(x, model="toy", name="c", clusters=4)
    edits = [
        (cohort, {"global_threshold": -1.0}),
        (cohort, {"target_fmr": 0.5}),
        (cohort, {"top_k": cohort.top_k - 1}),
        (cohort, {"cohort": cohort.cohort[::-1]}),
        (cohort, {"model": "other@000000000000"}),
        (cohort, {"name": "other"}),
        (cohort, {"fitted_on": {"dataset": "other"}}),
        (cohort, {"created": "2020-01-01T00:00:00+00:00"}),
        (cohort, {"rounds": 2}),
        (clusters, {"global_threshold": clusters.global_threshold + 1}),
        (clusters, {"centroids": clusters.centroids[::-1]}),
        (clusters, {"deltas": [d + 0.1 for d in clusters.deltas]}),
    ]
    seen = {cohort.version, clusters.version}
    for profile, change in edits:
        version = replace(profile, **change).version
        assert version not in seen, change
        seen.add(version)
    path = tmp_path / "k.json"
    cohort.save(path)
    data = json.loads(path.read_text())
    data["global_threshold"] = -1.0
    path.write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match="does not match its version"):
        load_profile(path)


def _ragged(d: dict[str, Any]) -> None:
    d["cohort"][3] = d["cohort"][3][:-1]


def _set(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        d[key] = value

    return edit


def _nan_in_cohort(d: dict[str, Any]) -> None:
    d["cohort"][0][0] = float("nan")


def _not_unit(d: dict[str, Any]) -> None:
    d["cohort"][0] = [v * 2 for v in d["cohort"][0]]


MALFORMED: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (_ragged, "not rectangular"),
    (_set("top_k", "5"), "top_k must be an integer"),
    (_set("top_k", True), "top_k must be an integer"),
    (_set("top_k", 0), r"top_k must lie in \[1, 60\]"),
    (_set("top_k", 61), r"top_k must lie in \[1, 60\]"),
    (_set("global_threshold", float("nan")), "global_threshold must be a finite number"),
    (_set("global_threshold", float("inf")), "global_threshold must be a finite number"),
    (_set("global_threshold", "2.46"), "global_threshold must be a finite number"),
    (_set("target_fmr", 2.0), "target_fmr must lie in"),
    (_nan_in_cohort, "NaN or infinite"),
    (_not_unit, "not unit vectors"),
    (_set("cohort", [[1.0, 0.0]]), "at least 2 cohort templates"),
    (_set("cohort", "abc"), "list of rows"),
    (_set("name", "n" * 201), "at most 200"),
    (_set("name", "\ud800"), "lone surrogates"),
    (_set("name", "a\nb"), "control characters"),
    (_set("name", ""), "non-empty"),
    (_set("model", 5), "the model must be a non-empty string"),
    (_set("fitted_on", {"x": float("nan")}), "not finite"),
    (_set("fitted_on", {"x": "\udfff"}), "lone surrogate"),
    (_set("fitted_on", []), "JSON object"),
    (_set("deltas", [0.1]), "no centroids, deltas or clusters"),
    (_set("rounds", 0), "rounds must be at least 1"),
    (_set("extra", 1), "unknown fields 'extra'"),
]


@pytest.mark.parametrize(("edit", "message"), MALFORMED, ids=[m for _, m in MALFORMED])
def test_a_malformed_profile_is_refused_whatever_version_it_claims(
    edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    data = json.loads(profile_json(_cohort_profile()))
    edit(data)
    with pytest.raises(CalibrationError, match=message):
        parse_profile(json.dumps(_claimed(data)), where="upload")


def test_malformed_clusters_are_refused() -> None:
    x, _ = _two_regions(np.random.default_rng(8), 30)
    good = json.loads(profile_json(fit_profile(x, model="toy", name="c", clusters=4)))
    for edit, message in [
        (lambda d: d["centroids"][1].append(0.0), "not rectangular"),
        (lambda d: d["deltas"].pop(), "as many centroids as deltas"),
        (lambda d: d.update(clusters=5), "as many centroids as deltas"),
        (lambda d: d["deltas"].__setitem__(0, "0.1"), "deltas must be a list of numbers"),
        (lambda d: d.update(top_k=3), "no cohort and no top_k"),
    ]:
        data = json.loads(json.dumps(good))
        edit(data)
        with pytest.raises(CalibrationError, match=message):
            parse_profile(json.dumps(_claimed(data)), where="upload")
    profile = parse_profile(json.dumps(good), where="upload", dimension=32)
    assert profile.dimension == 32
    with pytest.raises(CalibrationError, match="holds 32-d templates, the model gives 128-d"):
        parse_profile(json.dumps(good), where="upload", dimension=128)
    with pytest.raises(CalibrationError, match="at most 200"):
        fit_profile(x, model="toy", name="c" * 201, clusters=4)


def test_a_legacy_profile_loads_from_the_store_only() -> None:
    """A /1 profile (its version over the normalisation terms only) still loads where it was
    stored, under the version galleries name it by; an upload or a file of it is refused, and
    so is one whose terms were edited."""
    current = _cohort_profile()
    legacy = _claimed(json.loads(profile_json(current)) | {"format": "yingyan.fair-score/1"})
    text = json.dumps(legacy)
    with pytest.raises(CalibrationError, match="fit it again"):
        parse_profile(text, where="upload")
    stored = parse_profile(text, where="stored", legacy=True)
    assert stored.version == legacy["version"] and len(stored.version) == 12
    assert json.loads(profile_json(stored))["version"] == legacy["version"]
    x, _ = _two_regions(np.random.default_rng(9), 10)
    assert np.array_equal(stored.scores(x, x), current.scores(x, x))
    edited = legacy | {"top_k": 3}
    with pytest.raises(CalibrationError, match="does not match its version"):
        parse_profile(json.dumps(edited), where="stored", legacy=True)
