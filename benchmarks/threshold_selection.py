"""Thresholds at three FMRs from 43 million impostor scores: one partition against three sorts.

    python benchmarks/threshold_selection.py [--scores 43000000] [--rounds 2]

`eval lfw-identification` picks thresholds at FMR 1e-2, 1e-3 and 1e-4 from its ~43 million
gallery x probe impostor scores. The baseline is the code before issue 14: a full sort of every
score per threshold. The figure is `thresholds_at_fmr`: one `np.partition` at the ranks the
targets need. Both run on the same seeded float32 scores, alternating within each round, and
their thresholds are checked equal. The load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from yingyan.evaluation.metrics import thresholds_at_fmr

TARGETS = (1e-2, 1e-3, 1e-4)


def by_full_sort(impostor: np.ndarray, target_fmr: float) -> float:
    """The implementation before issue 14: a full sort per call."""
    i = np.sort(np.asarray(impostor, dtype=np.float64).ravel())
    allowed = int(np.floor(target_fmr * i.size))
    if allowed >= i.size:
        return float(i[0])
    return float(np.nextafter(i[i.size - allowed - 1], np.inf))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scores", type=int, default=43_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"start: load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")
    scores = np.random.default_rng(0).normal(0, 0.08, args.scores).astype(np.float32)
    old_s: list[float] = []
    new_s: list[float] = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        old = [by_full_sort(scores, t) for t in TARGETS]
        old_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        new = thresholds_at_fmr(scores, TARGETS)
        new_s.append(time.perf_counter() - started)
        if old != new:
            raise SystemExit(f"thresholds differ: {old} vs {new}")
    print(f"{args.scores:,} float32 scores, thresholds at FMR {', '.join(map(str, TARGETS))}")
    print(f"baseline, three full sorts: {', '.join(f'{s:.2f}' for s in old_s)} s")
    print(f"one partition (thresholds_at_fmr): {', '.join(f'{s:.2f}' for s in new_s)} s")
    print(f"speed-up (best of each): {min(old_s) / min(new_s):.1f}x; thresholds equal")
    print(f"end: load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
