"""Fit the watch threshold's FPIR model (`yingyan.watch.threshold.FpirModel`) on LFW people who
are in no pair of view 2, and write it to `src/yingyan/watch/fpir_fits.py`.

    python benchmarks/fit_watch_threshold.py [--root ../shared/datasets/lfw] [--write]

Split: the reference set is the 1,468 LFW people in no pair of `pairs.txt` (1,549 images;
`yingyan.evaluation.fairness.read_lfw_unpaired`, the fairness profile's reference set).
`benchmarks/open_set.py` draws its watchlists and passers only from the other 4,281 people, so
no image or person of the fit is evaluated. Templates come from the cache of
`benchmarks/open_set.py` (every LFW image, `EngineConfig()`; only missing chunks are embedded).

Each reference person enrols their first photo (by file name); every reference image is a
passer, compared with the enrolment photo of every other reference person. From these scores:

- q(t), the passer-versus-enrolled impostor tail: -log10 of the share of comparisons >= t at
  knots every 0.25 decade down to the FMR that 30 comparisons still observe (a `Tail`,
  log-linear beyond its last knots);
- FPIR_N(t) measured as passers' best scores over random watchlists of N reference people: for
  a passer with k of its M comparisons >= t, a random N of the M miss t with probability
  C(M-k, N)/C(M, N) (exact, every watchlist at once); the mean over passers at N = 10 ... 1,000
  and every knot the passers still resolve;
- α, the gamma shape in FPIR_N(t) = 1 - (1 + N·q(t)/α)^(-α), by least squares in log FPIR
  over those points (α = inf, the independent rule, is among the candidates);
- c(t), the spread between watchlists: at each knot 2+ decades down with >= 100 exceedances,
  the coefficient of variation over enrolled people of the share of passers each attracts
  (less the binomial noise of 1,549 passers), fitted as log10 c linear in decades. The
  threshold uses it for the 90th percentile over watchlists (`FpirModel.margin`).

It prints the measured mean FPIR of random watchlists beside the model and the independent
rule; `--write` regenerates the data module (then formatted with ruff).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

from open_set import CACHE, SHARED, lfw_templates
from similarity_scale import tail_knots
from yingyan import Engine, EngineConfig
from yingyan.comparison.similarity import Tail
from yingyan.evaluation import open_set as osm
from yingyan.evaluation.fairness import read_lfw_unpaired
from yingyan.watch.threshold import MAX_FPIR, FpirModel

Floats = npt.NDArray[np.float64]
SIZES = (10, 30, 100, 300, 1000)
MIN_EXCEEDANCES = 100  # a spread point needs this many passer-subject scores above its knot
MIN_PASSERS = 5.0  # a point of the fit needs this many passers' worth of alerts
OUT = Path(__file__).resolve().parents[1] / "src" / "yingyan" / "watch" / "fpir_fits.py"
ALPHAS = (*np.round(np.logspace(-2, 3, 101), 4).tolist(), math.inf)


def reference_people(root: Path) -> set[str]:
    """The fit split: LFW people in no pair of view 2."""
    return {img.identity for img in read_lfw_unpaired(root) if img.identity}


def passer_scores(
    names: list[str], vectors: npt.NDArray[np.float32], people: set[str]
) -> tuple[Floats, npt.NDArray[np.int_]]:
    """Scores of every image of `people` (rows) against every one of them's first photo
    (columns), a passer's own person masked to -inf; and the comparisons each row has."""
    rows = [k for k, n in enumerate(names) if n.split("/")[0] in people]
    person = [names[k].split("/")[0] for k in rows]
    first: dict[str, int] = {}
    for k, p in zip(rows, person, strict=True):
        first.setdefault(p, k)  # names are sorted: a person's first photo comes first
    enrolled = sorted(first)
    column = {p: i for i, p in enumerate(enrolled)}
    s = (vectors[rows] @ vectors[[first[p] for p in enrolled]].T).astype(np.float64)
    s[np.arange(len(rows)), [column[p] for p in person]] = -np.inf
    return s, np.full(len(rows), len(enrolled) - 1)


def fit_points(
    scores: Floats, available: npt.NDArray[np.int_], tail: Tail
) -> list[tuple[int, float, float]]:
    """(N, t, measured FPIR_N(t)) at every knot and size the passers resolve."""
    floor, out = MIN_PASSERS / len(scores), []
    for n in SIZES:
        if n >= int(available.min()):
            continue
        for t in tail.scores:
            f = osm.expected_fpir(scores, available, n, t)
            if floor <= f <= MAX_FPIR:
                out.append((n, t, f))
    return out


def fit_alpha(tail: Tail, points: list[tuple[int, float, float]]) -> tuple[float, float]:
    """(α, RMS error in log10 FPIR) minimising the squared log error over `points`."""

    def error(alpha: float) -> float:
        m = FpirModel(tail.model, tail, alpha, "")
        errors = [math.log10(m.mean_fpir(t, n) / f) ** 2 for n, t, f in points]
        return float(np.sqrt(np.mean(errors)))

    best = min(ALPHAS, key=error)
    return best, error(best)


def fit_spread(scores: Floats, tail: Tail) -> tuple[float, float, list[tuple[float, float]]]:
    """(log10 c at q = 1e-4, slope per decade, (decade, c) points): c is the coefficient of
    variation over enrolled subjects of the share of passers they attract at a knot, less the
    binomial noise of a finite passer set, at knots 2+ decades down with >= 100 exceedances."""
    points = []
    for t, d in zip(tail.scores, tail.decades, strict=True):
        hits = (scores >= t).sum(axis=0)
        if d < 2.0 or hits.sum() < MIN_EXCEEDANCES:
            continue
        share = hits / len(scores)
        var = share.var() - share.mean() / len(scores)
        if var > 0:
            points.append((d, float(np.sqrt(var) / share.mean())))
    slope, at_4 = np.polyfit([d - 4.0 for d, _ in points], [math.log10(c) for _, c in points], 1)
    return round(float(at_4), 4), round(float(slope), 4), points


def _number(x: float) -> str:
    return 'float("inf")' if math.isinf(x) else repr(x)


def _pieces(text: str, width: int = 76) -> str:
    """`text` as adjacent string literals of at most `width` characters, one per line."""
    lines, current = [], ""
    for word in text.split(" "):
        if current and len(current) + len(word) + 1 > width:
            lines.append(current + " ")
            current = word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return "".join(f"            {line!r}\n" for line in lines)


def render(model: str, tail: Tail, alpha: float, spread: tuple[float, float]) -> str:
    """The generated data module."""
    return (
        '"""Fitted FPIR models of the watch threshold (`yingyan.watch.threshold.FpirModel`).\n\n'
        "Generated by `python benchmarks/fit_watch_threshold.py --write`; do not edit by hand.\n"
        '"""\n\nfrom __future__ import annotations\n\nfrom typing import TypedDict\n\n\n'
        "class Fit(TypedDict):\n    model: str\n    scores: tuple[float, ...]\n"
        "    decades: tuple[float, ...]\n    alpha: float\n    spread_at_4: float\n"
        "    spread_slope: float\n    source: str\n\n\n"
        "FITS: tuple[Fit, ...] = (\n    {\n"
        f"        'model': {model!r},\n        'scores': {tail.scores!r},\n"
        f"        'decades': {tail.decades!r},\n        'alpha': {_number(alpha)},\n"
        f"        'spread_at_4': {spread[0]!r},\n        'spread_slope': {spread[1]!r},\n"
        f"        'source': (\n{_pieces(tail.source)}        ),\n    }},\n)\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", type=Path, default=SHARED / "datasets" / "lfw")
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--write", action="store_true", help=f"write {OUT.name}")
    args = ap.parse_args()
    names, vectors, _, _ = lfw_templates(args.root, args.cache, args.workers)
    people = reference_people(args.root)
    scores, available = passer_scores(names, vectors, people)
    impostor = scores[np.isfinite(scores)]
    knots = tail_knots(impostor.astype(np.float32))
    model = Engine(EngineConfig()).model_id.name
    source = (
        f"LFW people in no pair of view 2 ({len(people):,} people, {len(scores):,} images), "
        f"EngineConfig(): {len(impostor):,} passer-vs-enrolled comparisons, q(t) down to "
        f"1e-{knots[-1][1]:g}; alpha fitted on passers' best scores over random watchlists of "
        f"{SIZES[0]}-{SIZES[-1]:,}, the spread c of subjects' attraction at q 1e-{{lo:g}} to "
        "1e-{hi:g}: `python benchmarks/fit_watch_threshold.py --write`"
    )
    tail = Tail(model, tuple(s for s, _ in knots), tuple(d for _, d in knots), source)
    at_4, slope, spread_points = fit_spread(scores, tail)
    source = source.format(lo=spread_points[0][0], hi=spread_points[-1][0])
    tail = Tail(model, tail.scores, tail.decades, source)
    points = fit_points(scores, available, tail)
    alpha, rms = fit_alpha(tail, points)
    print(f"{len(people)} reference people, {len(scores)} passers, {len(impostor):,} comparisons")
    print(f"tail knots: {knots}")
    print(f"alpha = {alpha} (RMS {rms:.3f} decades over {len(points)} (N, t) points)")
    print(f"spread: log10 c = {at_4} + {slope} (decades - 4); points {spread_points}")
    fitted = FpirModel(model, tail, alpha, source, at_4, slope)
    independent = FpirModel(model, tail, math.inf, source)
    print("| N | t | measured mean FPIR | model (mean) | independent rule |")
    print("|---|---|---|---|---|")
    for n, t, f in points:
        rule = independent.mean_fpir(t, n)
        print(f"| {n} | {t:.4f} | {f:.3g} | {fitted.mean_fpir(t, n):.3g} | {rule:.3g} |")
    if args.write:
        OUT.write_text(render(model, tail, alpha, (at_4, slope)))
        ruff = Path(sys.executable).with_name("ruff")
        if ruff.is_file():
            subprocess.run([str(ruff), "format", "--quiet", str(OUT)], check=False)
        print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
