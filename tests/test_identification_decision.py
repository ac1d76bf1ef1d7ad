"""Subject-level ranking from template hits, on constructed hits with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from yingyan.decision import rank_subjects

# Templates 10, 11 belong to subject 1; 20 to subject 2; 30 to subject 3.
SUBJECT_OF = {10: 1, 11: 1, 20: 2, 30: 3}
SCORES = np.array([0.95, 0.93, 0.80, 0.40, 0.0], np.float32)
IDS = np.array([11, 10, 20, 30, -1], np.int64)


def test_investigation_mode_ranks_subjects_by_their_best_template() -> None:
    c = rank_subjects(SCORES, IDS, SUBJECT_OF, k=5, mode="investigation", threshold=None)
    assert [(x.rank, x.subject_id, x.template_id) for x in c] == [
        (1, 1, 11),
        (2, 2, 20),
        (3, 3, 30),
    ]
    assert c[0].score == pytest.approx(0.95)


def test_threshold_mode_keeps_only_scores_at_or_above_the_threshold() -> None:
    c = rank_subjects(SCORES, IDS, SUBJECT_OF, k=5, mode="threshold", threshold=0.80)
    assert [x.subject_id for x in c] == [1, 2]
    assert rank_subjects(SCORES, IDS, SUBJECT_OF, k=5, mode="threshold", threshold=0.99) == []


def test_k_limits_and_unknown_or_empty_ids_are_ignored() -> None:
    c = rank_subjects(SCORES, IDS, {11: 1, 30: 3}, k=1, mode="investigation", threshold=None)
    assert [x.subject_id for x in c] == [1]
    with pytest.raises(ValueError):
        rank_subjects(SCORES, IDS, SUBJECT_OF, k=1, mode="threshold", threshold=None)
