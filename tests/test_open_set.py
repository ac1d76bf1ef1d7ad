"""Open-set 1:N metrics: FNIR at FPIR on synthetic scores with known answers, and a small real
watchlist on LFW (the full figure is `benchmarks/open_set.py`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from yingyan import Engine, EngineConfig
from yingyan.comparison.similarity import measured_tail
from yingyan.comparison.thresholds import get_threshold
from yingyan.errors import ConfigError
from yingyan.evaluation import open_set as osm
from yingyan.evaluation.lfw import extract_images, image_dir
from yingyan.watch.threshold import FpirModel, fpir_model, threshold_for_fpir

MODEL = "dlib_resnet_v1"


def _unit(rows: list[list[float]]) -> np.ndarray:
    v = np.array(rows, np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_fpir_and_empirical_threshold_on_known_scores() -> None:
    best = np.arange(1000, dtype=np.float64) / 1000  # 0.000 .. 0.999
    assert osm.fpir_at(best, 0.99) == pytest.approx(0.01)
    t = osm.threshold_at_fpir(best, 1e-2)
    assert osm.fpir_at(best, t) == pytest.approx(0.01)
    assert 0.989 < t <= 0.990
    # 1e-4 of 1,000 searches: no alert allowed, the threshold sits just above the top score
    assert osm.fpir_at(best, osm.threshold_at_fpir(best, 1e-4)) == 0.0
    assert osm.expected_false_alerts(1e-3) == pytest.approx(60.0)


def test_fnir_counts_a_mate_outranked_or_below_threshold_as_a_miss() -> None:
    s = osm.Searches(
        mate_scores=np.array([0.9, 0.95, 0.5, 0.99]),
        mate_first=np.array([True, False, True, True]),
        nonmated_best=np.array([0.1]),
    )
    assert osm.fnir_at(s, 0.8) == pytest.approx(0.5)  # outranked one, below-threshold one
    assert osm.fnir_at(s, 0.0) == pytest.approx(0.25)
    assert osm.fnir_at(s, 1.0) == pytest.approx(1.0)


def test_search_scores_and_fusion() -> None:
    watch = _unit([[1, 0, 0], [0, 1, 0]])
    mated = _unit([[1, 0.1, 0], [0.9, 1, 0]])
    s = osm.search(watch, mated, np.array([0, 0]), _unit([[0, 0, 1], [0.5, 0, 1]]))
    assert s.mate_first.tolist() == [True, False]
    assert s.mate_scores[0] == pytest.approx(1 / np.sqrt(1.01))
    assert s.nonmated_best == pytest.approx([0.0, 0.5 / np.sqrt(1.25)])
    fused = osm.fuse(_unit([[1, 0, 0], [0, 1, 0]]))
    assert fused == pytest.approx([1 / np.sqrt(2), 1 / np.sqrt(2), 0], abs=1e-6)
    with pytest.raises(ValueError):
        osm.mated_scores(watch, mated, np.array([0]))


def test_expected_fpir_is_the_mean_over_every_watchlist() -> None:
    """The hypergeometric mean equals brute force over all C(5, 2) watchlists, and keeps a
    passer's hubness: one passer scoring high against two subjects alerts on 7 of 10 lists,
    not on 1 - (1 - 2/5)^2 = 64%."""
    scores = np.array([[0.9, 0.95, 0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4, 0.5]])
    lists = [(a, b) for a in range(5) for b in range(a + 1, 5)]
    brute = np.mean([[max(row[a], row[b]) >= 0.85 for a, b in lists] for row in scores])
    got = osm.expected_fpir(scores, np.array([5, 5]), 2, 0.85)
    assert got == pytest.approx(brute) == pytest.approx(0.35)
    masked = scores.copy()
    masked[0, 4] = -np.inf  # its own subject: not comparable, one subject fewer
    assert osm.expected_fpir(masked, np.array([4, 5]), 1, 0.85) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        osm.expected_fpir(scores, np.array([5, 5]), 6, 0.85)


def test_binomial_interval() -> None:
    low, high = osm.binomial_interval(0, 1000)
    assert low == 0.0 and high == pytest.approx(3.68e-3, rel=0.01)  # the "rule of three"
    low, high = osm.binomial_interval(10, 1000)
    assert low < 0.01 < high and high < 0.02
    with pytest.raises(ValueError):
        osm.binomial_interval(3, 2)


def test_fpir_model_round_trip_and_hubness() -> None:
    """The threshold for a target gives back the target on the model; an uneven spread of
    passers (small alpha) needs a lower threshold than the independent rule for the same
    target, and the two agree when N·FMR is small."""
    fitted = fpir_model(MODEL)
    assert fitted is not None and fitted.alpha > 0
    assert "in no pair of view 2" in fitted.source  # the split it was fitted on
    for n, target in [(1, 1e-3), (100, 1e-2), (1000, 1e-4), (10_000, 1e-3)]:
        t = threshold_for_fpir(MODEL, n, target)
        assert fitted.fpir(t.score, n) == pytest.approx(target, rel=1e-6)
        assert f"FPIR {target:g} over {n} subject(s)" in t.source
        assert fitted.source in t.source
    # the margin for the 90th percentile over watchlists shrinks as lists grow, never below 1
    assert 1.0 <= fitted.margin(0.95, 10_000) < fitted.margin(0.95, 1000) < fitted.margin(0.95, 100)
    assert fitted.fpir(0.95, 100) > fitted.mean_fpir(0.95, 100)
    uneven = FpirModel(MODEL, fitted.tail, 0.05, "test")
    even = FpirModel(MODEL, fitted.tail, float("inf"), "test")
    t = 0.95
    assert uneven.fpir(t, 1000) < even.fpir(t, 1000)
    assert uneven.fpir(0.99, 1) == pytest.approx(even.fpir(0.99, 1), rel=1e-3)
    assert uneven.score_for(1e-2, 100) < even.score_for(1e-2, 100)


def test_threshold_rises_with_the_list_and_refuses_what_it_cannot_promise() -> None:
    sizes = [threshold_for_fpir(MODEL, n, 1e-3).score for n in (1, 10, 100, 1000, 10_000)]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    targets = [threshold_for_fpir(MODEL, 100, f).score for f in (1e-2, 1e-3, 1e-4)]
    assert targets == sorted(targets)
    view2 = measured_tail(MODEL)
    assert view2 is not None
    assert "view 2" in threshold_for_fpir(MODEL, 100, 1e-3, tail=view2).source
    with pytest.raises(ConfigError):
        threshold_for_fpir("some_other_model", 100, 1e-3)
    with pytest.raises(ConfigError):
        threshold_for_fpir(MODEL, 100, 0.5)


def test_small_lfw_watchlist(lfw_root: Path) -> None:
    """Ten people with >= 4 photos on a watchlist (first photo enrolled), twenty others passing
    by: the mates are found at the 1:1 threshold, and fusing a person's other photos into a
    track template finds every one of them."""
    images = image_dir(lfw_root)
    people = sorted(p for p in images.iterdir() if p.is_dir())
    listed = [p for p in people if len(list(p.glob("*.jpg"))) >= 4][:10]
    others = [p for p in people if len(list(p.glob("*.jpg"))) <= 2][:20]
    files = {
        p.name: sorted(f.relative_to(images).as_posix() for f in p.glob("*.jpg")) for p in listed
    }
    passers = [f.relative_to(images).as_posix() for p in others for f in sorted(p.glob("*.jpg"))]
    names = [n for fs in files.values() for n in fs[:5]] + passers
    got = extract_images(images, names, EngineConfig(), workers=1, show_progress=False)
    vec = {n: r.template_vector(flip=True, jitter=0) for n, r in got.items()}
    watch = np.stack([vec[fs[0]] for fs in files.values()])
    probes = [(i, n) for i, fs in enumerate(files.values()) for n in fs[1:5]]
    s = osm.search(
        watch,
        np.stack([vec[n] for _, n in probes]),
        np.array([i for i, _ in probes]),
        np.stack([vec[n] for n in passers]),
    )
    model = Engine(EngineConfig()).model_id.name
    t_1to1 = get_threshold(model, "lfw-devtrain").score  # LFW-tuned 1:1, not the strict
    t_watch = threshold_for_fpir(model, len(watch), 1e-2).score
    assert t_watch > t_1to1  # a watchlist of 10 needs a stricter threshold than 1:1 at this FPIR
    assert osm.fnir_at(s, t_1to1) <= 0.25
    assert osm.fpir_at(s.nonmated_best, t_watch) <= 0.1
    assert s.mate_scores.mean() > s.nonmated_best.mean() + 0.05  # dlib: ~0.96 vs ~0.88
    tracks = [osm.fuse(np.stack([vec[n] for n in fs[1:5]])) for fs in files.values()]
    fused, first = osm.mated_scores(watch, np.stack(tracks), np.arange(len(tracks)))
    assert first.all()
    assert np.mean(fused >= t_1to1) >= 0.9
