"""Subject-level candidate lists for 1:N identification.

The index returns templates; people are subjects with one or more templates. A subject's score
is the best score of its templates. Two modes:

- threshold mode: only subjects scoring at or above the gallery's threshold (for automated
  alerting, e.g. a watchlist), at most k;
- investigation mode: the k best subjects whatever their scores, ranked, for an examiner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Mode = Literal["threshold", "investigation"]


@dataclass(frozen=True, slots=True)
class Candidate:
    rank: int
    subject_id: int
    score: float
    template_id: int  # the subject's best-matching template


def rank_subjects(
    scores: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    template_ids: npt.NDArray[np.int64],
    subject_of: Mapping[int, int],
    *,
    k: int,
    mode: Mode,
    threshold: float | None,
) -> list[Candidate]:
    """Top-k subjects for one probe from its template hits (ids of -1 are empty slots)."""
    if mode == "threshold" and threshold is None:
        raise ValueError("threshold mode needs a threshold")
    best: dict[int, tuple[float, int]] = {}
    for score, tid in zip(scores.tolist(), template_ids.tolist(), strict=True):
        if tid < 0 or tid not in subject_of:
            continue
        sid = subject_of[tid]
        if sid not in best or score > best[sid][0]:
            best[sid] = (float(score), int(tid))
    ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))
    if mode == "threshold":
        assert threshold is not None
        ranked = [r for r in ranked if r[1][0] >= threshold]
    return [
        Candidate(rank=i + 1, subject_id=sid, score=score, template_id=tid)
        for i, (sid, (score, tid)) in enumerate(ranked[:k])
    ]
