"""Metric code on constructed scores whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from yingyan.evaluation import metrics
from yingyan.evaluation.lfw import k_fold

GENUINE = [0.9, 0.8, 0.7, 0.6, 0.4]
IMPOSTOR = [0.1, 0.2, 0.3, 0.5, 0.65]


def test_fmr_and_fnmr_at_a_threshold() -> None:
    assert metrics.fmr_at(IMPOSTOR, 0.5) == pytest.approx(2 / 5)  # 0.5 and 0.65 accepted
    assert metrics.fnmr_at(GENUINE, 0.5) == pytest.approx(1 / 5)  # 0.4 rejected
    assert metrics.fmr_at(IMPOSTOR, 0.66) == 0.0


def test_error_curve_is_monotone_and_spans_zero_to_one() -> None:
    c = metrics.error_curve(GENUINE, IMPOSTOR)
    assert np.all(np.diff(c.fmr) <= 0) and np.all(np.diff(c.fnmr) >= 0)
    assert c.fmr[0] == 1.0 and c.fnmr[0] == 0.0
    assert c.fmr[-1] == 0.0 and c.fnmr[-1] == 1.0


def test_equal_error_rate_of_separable_and_overlapping_scores() -> None:
    eer, t = metrics.equal_error_rate([0.8, 0.9], [0.1, 0.2])
    assert eer == 0.0 and 0.2 < t <= 0.8
    # Here FMR = FNMR = 0.2 for any threshold in (0.6, 0.65]: one error on each side.
    eer, t = metrics.equal_error_rate(GENUINE, IMPOSTOR)
    assert eer == pytest.approx(0.2)
    assert 0.5 < t <= 0.65


def test_threshold_at_fmr_allows_exactly_the_target_share() -> None:
    impostor = np.arange(1000) / 1000.0  # 0.000 .. 0.999
    t = metrics.threshold_at_fmr(impostor, 1e-2)
    assert metrics.fmr_at(impostor, t) == pytest.approx(0.01)
    # Just above the 11th highest impostor (0.989): any lower threshold lets 11 through.
    assert 0.989 < t <= 0.990
    assert metrics.fmr_at(impostor, 0.989) > 0.01


def _threshold_by_full_sort(impostor: np.ndarray, target_fmr: float) -> float:
    """The implementation before issue 14 (a full sort per call), kept to compare against."""
    i = np.sort(np.asarray(impostor, dtype=np.float64).ravel())
    allowed = int(np.floor(target_fmr * i.size))
    if allowed >= i.size:
        return float(i[0])
    return float(np.nextafter(i[i.size - allowed - 1], np.inf))


TARGETS = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.25, 0.5, 0.999, 1.0, 2.0)


@pytest.mark.parametrize("seed", range(6))
def test_thresholds_from_one_partition_equal_the_full_sort(seed: int) -> None:
    """Random scores, with heavy ties (a few distinct values) in half the cases, in float32
    and float64, small and large: the same thresholds as sorting, bit for bit."""
    rng = np.random.default_rng(seed)
    n = int(rng.choice([1, 2, 7, 1000, 123_457]))
    ties = rng.choice(np.linspace(-1, 1, 5), n)  # five distinct values: ties everywhere
    scores = (ties if seed % 2 else rng.normal(0, 0.2, n)).astype(
        np.float32 if seed % 3 == 0 else np.float64
    )
    expected = [_threshold_by_full_sort(scores, t) for t in TARGETS]
    assert metrics.thresholds_at_fmr(scores, TARGETS) == expected
    assert [metrics.threshold_at_fmr(scores, t) for t in TARGETS] == expected
    shuffled = list(reversed(TARGETS))  # any order, repeats allowed
    assert metrics.thresholds_at_fmr(scores, [*shuffled, 1e-4]) == [
        *reversed(expected),
        expected[TARGETS.index(1e-4)],
    ]


def test_thresholds_leave_the_caller_array_as_it_was() -> None:
    scores = np.array([0.3, 0.9, 0.1, 0.7, 0.5])
    before = scores.copy()
    metrics.thresholds_at_fmr(scores, (0.2, 0.4))
    assert np.array_equal(scores, before)


def test_threshold_targets_must_be_rates() -> None:
    with pytest.raises(ValueError, match="target"):
        metrics.threshold_at_fmr([0.1, 0.2], -0.1)
    with pytest.raises(ValueError, match="target"):
        metrics.thresholds_at_fmr([0.1, 0.2], [1e-3, float("nan")])


def test_tar_at_far_needs_enough_impostors() -> None:
    rng = np.random.default_rng(0)
    impostor = rng.normal(0, 1, 5000)
    genuine = rng.normal(4, 1, 500)
    assert metrics.tar_at_far(genuine, impostor, 1e-4) is None  # 5,000 < 1/1e-4
    tar = metrics.tar_at_far(genuine, impostor, 1e-3)
    assert tar is not None
    # Theory: threshold ~ 3.09 sigma, so TAR ~ P(N(4,1) > 3.09) ~ 0.82.
    assert 0.7 < tar < 0.92


def test_best_accuracy_threshold() -> None:
    t, acc = metrics.best_accuracy_threshold(GENUINE, IMPOSTOR)
    assert acc == pytest.approx(0.8)
    assert metrics.accuracy_at(GENUINE, IMPOSTOR, t) == pytest.approx(0.8)


def test_k_fold_chooses_threshold_on_other_folds() -> None:
    # Fold 0 is separable at 0.5; fold 1 would prefer 0.75, but its threshold comes from fold 0.
    scores = np.array([0.9, 0.6, 0.4, 0.1, 0.9, 0.8, 0.7, 0.55])
    same = np.array([True, True, False, False, True, True, False, False])
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    accs, thrs = k_fold(scores, same, folds)
    assert 0.4 < thrs[1] < 0.6
    assert accs[1] == pytest.approx(0.5)  # both impostors of fold 1 pass 0.5


def test_metrics_refuse_empty_or_nan() -> None:
    with pytest.raises(ValueError):
        metrics.fmr_at([], 0.5)
    with pytest.raises(ValueError):
        metrics.fnmr_at([0.5, float("nan")], 0.5)
