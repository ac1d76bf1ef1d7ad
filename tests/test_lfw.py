"""The LFW protocol: pairs parsing, and the development split's accuracy (the CI accuracy bar)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from yingyan import EngineConfig
from yingyan.comparison import get_threshold
from yingyan.errors import DatasetError
from yingyan.evaluation.lfw import ImageResult, Pair, _pair_scores, read_pairs, run_lfw


def test_reads_view2_folds(lfw_root: Path) -> None:
    pairs = read_pairs(lfw_root / "pairs.txt")
    assert len(pairs) == 6000
    assert {p.fold for p in pairs} == set(range(10))
    for fold in range(10):
        in_fold = [p for p in pairs if p.fold == fold]
        assert sum(p.same for p in in_fold) == 300 and len(in_fold) == 600
    first = pairs[0]
    assert first.same and first.a == "Abel_Pacheco/Abel_Pacheco_0001.jpg"
    assert first.b == "Abel_Pacheco/Abel_Pacheco_0004.jpg"


def test_malformed_pairs_files_are_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "pairs.txt"
    bad.write_text("1 2\nAlice 1 2\nBob 1\n")
    with pytest.raises(DatasetError, match="malformed"):
        read_pairs(bad)
    bad.write_text("1 2\nAlice 1 2\n")
    with pytest.raises(DatasetError, match="promises 4 pairs"):
        read_pairs(bad)


@pytest.mark.slow
def test_dev_split_accuracy_at_the_frozen_threshold(
    lfw_root: Path, lfw_extracted: dict[str, ImageResult]
) -> None:
    """pairsDevTest (1,000 pairs) at the threshold tuned on pairsDevTrain: >= 98.5%."""
    pairs = lfw_root / "pairsDevTest.txt"
    report = run_lfw(lfw_root, pairs, EngineConfig(), known=lfw_extracted, show_progress=False)
    assert report.n_pairs == 1000 and report.failed_images == []
    flip = report.variants[0]
    assert flip.name == "flip"
    accuracy = flip.accuracy_at(get_threshold("dlib_resnet_v1", "lfw-devtrain").score)
    print(f"LFW DevTest accuracy (flip, frozen threshold): {accuracy:.4f}")
    assert accuracy >= 0.985


@pytest.mark.slow
def test_view2_ten_fold_accuracy_with_the_fast_backend(
    lfw_root: Path, lfw_extracted: dict[str, ImageResult]
) -> None:
    """All 6,000 pairs of pairs.txt, default engine (HOG+CNN cascade, ONNX backend, flip
    TTA): >= 98.9% (measured 99.05%; with the HOG detector alone 98.93%)."""
    pairs = lfw_root / "pairs.txt"
    report = run_lfw(lfw_root, pairs, EngineConfig(), known=lfw_extracted, show_progress=False)
    assert report.n_pairs == 6000 and report.n_images == 7701 and report.failed_images == []
    flip, plain = report.variants[0], report.variants[1]
    assert (flip.name, plain.name) == ("flip", "plain")
    print(f"LFW view 2: flip {flip.mean:.4f} ± {flip.std:.4f}, plain {plain.mean:.4f}")
    assert flip.mean >= 0.989
    assert plain.mean >= 0.987  # single pass: measured 98.87% (98.77% with HOG alone)


def test_pair_scores_through_a_calibration() -> None:
    """Row-wise scores through a pair-score function; a pair with a failed image is a
    non-match whatever the function."""
    vecs = {"a": np.array([1, 0], np.float32), "b": np.array([0.6, 0.8], np.float32)}
    pairs = [Pair("a", "b", True, 0), Pair("a", "gone", False, 0)]
    assert _pair_scores(vecs, pairs).tolist() == pytest.approx([0.6, -1e9])
    doubled = _pair_scores(vecs, pairs, lambda x, y: 2 * np.einsum("ij,ij->i", x, y))
    assert doubled.tolist() == pytest.approx([1.2, -1e9])


@pytest.mark.slow
def test_view2_accuracy_with_the_fairness_normalisation(
    lfw_root: Path, lfw_extracted: dict[str, ImageResult]
) -> None:
    """The cohort normalisation fitted in LFW's domain on the 1,468 people who are in no
    pair of view 2 costs at most 0.2 points of 10-fold accuracy (measured -0.03)."""
    from yingyan.calibration import fit_cohort_profile
    from yingyan.evaluation.fairness import read_dataset

    reference, seen = [], set()
    for im in read_dataset("lfw-unpaired", lfw_root):
        r = lfw_extracted[f"{im.path.parent.name}/{im.path.name}"]
        if im.identity not in seen and r.views is not None and not r.fallback:
            seen.add(im.identity)
            reference.append(r.template_vector(flip=True, jitter=0))
    profile = fit_cohort_profile(np.stack(reference), model="dlib", name="lfw-unpaired")
    report = run_lfw(
        lfw_root,
        lfw_root / "pairs.txt",
        EngineConfig(),
        known=lfw_extracted,
        show_progress=False,
        calibration=("fair", profile.pair_scores),
    )
    flip, fair = report.variants[0], report.variants[1]
    assert (flip.name, fair.name) == ("flip", "flip+fair")
    print(f"LFW view 2: flip {flip.mean:.4f}, normalised {fair.mean:.4f}")
    assert fair.mean >= flip.mean - 0.002
