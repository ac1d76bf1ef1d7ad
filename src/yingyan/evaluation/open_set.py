"""Open-set 1:N metrics (NIST FRVT 1:N): FNIR at FPIR for a watchlist of one template per subject.

A non-mated search (someone not on the list) is a false positive when its best subject score
reaches the threshold: FPIR(t) = share of non-mated best scores >= t. A mated search is a miss
when its own subject does not come first at or above the threshold (rank 1, NIST's R = 1):
FNIR(t) = share of mated searches whose mate score < t or whose mate is outranked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from yingyan.embedding import normalise
from yingyan.evaluation import metrics
from yingyan.extras import lazy

_special = lazy("scipy.special", "eval", "open-set statistics")
_stats = lazy("scipy.stats", "eval", "open-set statistics")

Vectors = npt.NDArray[np.float32]
Floats = npt.NDArray[np.float64]
PASSERS = 60_000  # the 60,000-person concert of issue 11


@dataclass(frozen=True, slots=True)
class Searches:
    """Scores of mated and non-mated searches against one watchlist."""

    mate_scores: Floats  # mated search: its own subject's score
    mate_first: npt.NDArray[np.bool_]  # mated search: its own subject ranks first
    nonmated_best: Floats  # non-mated search: best score over the watchlist


def best_scores(watchlist: Vectors, probes: Vectors, block: int = 4096) -> Floats:
    """Each probe's best score over the watchlist (one unit template per subject, so the
    subject-level best score), by exact dot products in blocks."""
    out = np.empty(len(probes), np.float64)
    for i in range(0, len(probes), block):
        out[i : i + block] = (probes[i : i + block] @ watchlist.T).max(axis=1)
    return out


def mated_scores(
    watchlist: Vectors, probes: Vectors, mates: npt.NDArray[np.int_]
) -> tuple[Floats, npt.NDArray[np.bool_]]:
    """(own subject's score, own subject ranks first) of each mated probe."""
    if len(probes) != len(mates):
        raise ValueError("one mate index per mated search")
    m = (probes @ watchlist.T).astype(np.float64)
    own = m[np.arange(len(mates)), mates]
    return own, own >= m.max(axis=1)


def search(
    watchlist: Vectors, mated: Vectors, mates: npt.NDArray[np.int_], nonmated: Vectors
) -> Searches:
    """Mated and non-mated searches of unit templates (rows) against the watchlist."""
    own, first = mated_scores(watchlist, mated, mates)
    return Searches(own, first, best_scores(watchlist, nonmated))


def fpir_at(nonmated_best: npt.ArrayLike, threshold: float) -> float:
    """Share of non-mated searches that raise an alert at `threshold`."""
    return metrics.fmr_at(nonmated_best, threshold)


def fnir_at(s: Searches, threshold: float) -> float:
    """Share of mated searches whose mate is not first at or above `threshold`."""
    hit = s.mate_first & (s.mate_scores >= threshold)
    return float(1.0 - np.mean(hit)) if hit.size else float("nan")


def threshold_at_fpir(nonmated_best: npt.ArrayLike, target_fpir: float) -> float:
    """Lowest threshold whose measured FPIR does not exceed the target (the empirical point)."""
    return metrics.threshold_at_fmr(nonmated_best, target_fpir)


def thresholds_at_fpir(nonmated_best: npt.ArrayLike, targets: Sequence[float]) -> list[float]:
    """`threshold_at_fpir` for each target, from one pass over the scores."""
    return metrics.thresholds_at_fmr(nonmated_best, targets)


def expected_fpir(scores: Floats, available: npt.NDArray[np.int_], size: int, t: float) -> float:
    """FPIR at `t` averaged over every watchlist of `size` subjects drawn from a reference set,
    exactly: passer i (row i of `scores`: its scores against the set, -inf where not
    comparable) with k of its `available[i]` = M comparisons >= t misses t on a random `size`
    of them with probability C(M-k, size) / C(M, size). The mean over passers, so each passer's
    own hubness is kept (its comparisons are not pooled)."""
    k = (scores >= t).sum(axis=1)
    m = np.asarray(available, np.float64)
    free = m - k
    if size > int(m.min()):
        raise ValueError(f"watchlists of {size} need {size} comparable subjects per passer")
    gammaln = _special.gammaln
    with np.errstate(invalid="ignore"):
        log_miss = (
            gammaln(free + 1) - gammaln(free - size + 1) - gammaln(m + 1) + gammaln(m - size + 1)
        )
    miss = np.where(free >= size, np.exp(log_miss), 0.0)
    return float(np.mean(1.0 - miss))


def binomial_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact) interval of a rate observed as k of n; it assumes independent
    trials, so for passers with several images each it is a lower bound on the uncertainty."""
    if not 0 <= k <= n or n == 0:
        raise ValueError("need 0 <= k <= n and n > 0")
    a = (1 - level) / 2
    low = float(_stats.beta.ppf(a, k, n - k + 1)) if k > 0 else 0.0
    high = float(_stats.beta.ppf(1 - a, k + 1, n - k)) if k < n else 1.0
    return low, high


def expected_false_alerts(fpir: float, passers: int = PASSERS) -> float:
    """False alerts expected when `passers` people not on the list walk past: passers x FPIR."""
    return passers * fpir


def fuse(templates: Vectors) -> Vectors:
    """A track template: the normalised mean of its samples' unit templates."""
    if len(templates) == 0:
        raise ValueError("no templates to fuse")
    return normalise(templates.astype(np.float32).mean(axis=0))
