"""Open-set 1:N accuracy on LFW (NIST FRVT 1:N style): FNIR at FPIR for watchlists of 100 and
1,000 people, with the threshold the watch service chooses, against the closed-set 1:1 threshold
measured in the same run.

    python benchmarks/open_set.py [--root ../shared/datasets/lfw] [--seeds 11,12,13]
                                  [--json out/open_set.json]

Every LFW image (13,233, deep-funneled) is embedded once with `EngineConfig()` (most central
face, centre box if none, chip + mirror averaged), 500 at a time into a resumable cache
(`--cache`; LFW-derived biometric data: the user cache, never the repository).

Split: the watch threshold's FPIR model is fitted on the 1,468 LFW people in no pair of view 2
(`benchmarks/fit_watch_threshold.py`); this benchmark uses only the other 4,281 people
(`--people view2`, the default; `--people all` is every LFW person, the fit's people included).

Per watchlist size N and seed (people drawn with a seeded generator from those with two or more
images; one enrolment photo each, the first by file name): mated searches are their other
photos, non-mated searches every image of every person not on the list. The search is plain
numpy (the probes' dot products with the N enrolment templates, one template per subject, so
the best score is the subject-level best score). At FPIR 1e-2, 1e-3 and 1e-4 it prints FNIR
(a) at the threshold of `yingyan.watch.threshold.threshold_for_fpir` (the deployed rule) with
the FPIR it actually gives, its false alerts over the non-mated searches and their binomial 95%
interval (Clopper-Pearson; passers' images are not independent, so it is a lower bound on the
uncertainty), (b) at the rule this replaced (the independent rule FMR = 1-(1-FPIR)^(1/N) on the
view-2 impostor tail of `comparison.similarity`), and (c) at the empirical threshold giving
that FPIR on the non-mated searches; track fusion (the normalised mean of a mated person's
probe templates, people with >= 3 probe photos) against their best single shot (highest quality
score); and the expected false alerts per 60,000 passers (60,000 x measured FPIR).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from yingyan import Engine, EngineConfig
from yingyan.comparison.similarity import measured_tail
from yingyan.comparison.thresholds import default_threshold
from yingyan.evaluation import open_set as osm
from yingyan.evaluation.lfw import extract_images, image_dir, read_pairs
from yingyan.evaluation.lfw_identification import identification_protocol
from yingyan.watch.threshold import comparison_fmr, threshold_for_fpir

SHARED = Path(os.environ.get("YINGYAN_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CACHE = Path.home() / ".cache" / "yingyan" / "lfw-all-templates"
CHUNK = 500
Vectors = npt.NDArray[np.float32]
FPIRS = (1e-2, 1e-3, 1e-4)


def lfw_templates(
    root: Path, cache: Path, workers: int | None, limit: int | None = None
) -> tuple[list[str], Vectors, npt.NDArray[np.float64], int]:
    """(image names, flip templates, quality scores, centre fallbacks) of every LFW image (or
    the first `limit` by name), embedded 500 at a time into `cache` (resumable)."""
    images = image_dir(root)
    proto = identification_protocol(root)
    order = sorted(p.relative_to(images).as_posix() for _, p in proto.gallery + proto.probes)
    order = order[:limit] if limit else order
    config = EngineConfig()
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    names: list[str] = []
    vectors: list[Vectors] = []
    quality: list[npt.NDArray[np.float64]] = []
    fallbacks = 0
    started = time.perf_counter()
    for start in range(0, len(order), CHUNK):
        todo = order[start : start + CHUNK]
        chunk = cache / f"chunk{start:05d}-{len(todo)}.npz"
        if not chunk.is_file():
            got = extract_images(images, todo, config, workers=workers)
            kept = [n for n in todo if got[n].views is not None]
            np.savez(
                chunk,
                names=np.array(kept),
                vectors=np.stack(
                    [got[n].template_vector(flip=config.flip, jitter=config.jitter) for n in kept]
                ),
                quality=np.array([got[n].quality for n in kept]),
                fallback=np.array([got[n].fallback for n in kept]),
            )
            os.chmod(chunk, 0o600)
            done = start + len(todo)
            rate = done / (time.perf_counter() - started)
            print(f"embedded {done}/{len(order)} ({rate:.1f} images/s incl. cached)", flush=True)
        with np.load(chunk) as z:
            names += [str(n) for n in z["names"]]
            vectors.append(z["vectors"].astype(np.float32))
            quality.append(z["quality"].astype(np.float64))
            fallbacks += int(z["fallback"].sum())
    return names, np.concatenate(vectors), np.concatenate(quality), fallbacks


def view2_people(root: Path) -> set[str]:
    """The evaluation split: LFW people in some pair of view 2 (the FPIR model is fitted on the
    others)."""
    return {n.split("/")[0] for p in read_pairs(root / "pairs.txt") for n in (p.a, p.b)}


def previous_rule(model: str, size: int, target: float) -> float:
    """The rule this benchmark first measured: independent comparisons on the view-2 tail."""
    tail = measured_tail(model)
    assert tail is not None
    return tail.score_of(-math.log10(comparison_fmr(target, size)))


def watchlist_run(
    names: list[str],
    vectors: Vectors,
    quality: npt.NDArray[np.float64],
    size: int,
    seed: int,
    people: set[str] | None = None,
) -> dict[str, object]:
    """Every figure for one seeded watchlist of `size` people, drawn (with the passers) from
    `people` (None: everyone)."""
    model = Engine(EngineConfig()).model_id.name
    person = [n.split("/")[0] for n in names]
    by_person: dict[str, list[int]] = {}
    for k, p in enumerate(person):  # names are sorted: a person's first image comes first
        if people is None or p in people:
            by_person.setdefault(p, []).append(k)
    eligible = sorted(p for p, ks in by_person.items() if len(ks) >= 2)
    if len(eligible) < size:
        raise SystemExit(f"only {len(eligible)} people with two or more images: lower --sizes")
    chosen = sorted(np.random.default_rng(seed).choice(eligible, size, replace=False).tolist())
    listed = set(chosen)
    watch = np.stack([vectors[by_person[p][0]] for p in chosen])
    probes = [(i, k) for i, p in enumerate(chosen) for k in by_person[p][1:]]
    mates = np.array([i for i, _ in probes])
    mated = vectors[[k for _, k in probes]]
    nonmated = vectors[[k for p, ks in by_person.items() if p not in listed for k in ks]]
    s = osm.search(watch, mated, mates, nonmated)
    tracks = [(i, by_person[p][1:]) for i, p in enumerate(chosen) if len(by_person[p]) >= 4]
    t_mates = np.array([i for i, _ in tracks])
    fused = np.stack([osm.fuse(vectors[ks]) for _, ks in tracks])
    single = vectors[[max(ks, key=lambda k: quality[k]) for _, ks in tracks]]
    fused_s = osm.Searches(*osm.mated_scores(watch, fused, t_mates), s.nonmated_best)
    single_s = osm.Searches(*osm.mated_scores(watch, single, t_mates), s.nonmated_best)

    def point(t: float) -> dict[str, Any]:
        fpir = osm.fpir_at(s.nonmated_best, t)
        alerts = int(np.sum(s.nonmated_best >= t))
        low, high = osm.binomial_interval(alerts, len(s.nonmated_best))
        return {
            "threshold": round(t, 5),
            "fpir": fpir,
            "false_alerts": alerts,
            "fpir_ci95": [low, high],
            "fnir": osm.fnir_at(s, t),
            "fnir_track_fused": osm.fnir_at(fused_s, t),
            "fnir_best_single_shot": osm.fnir_at(single_s, t),
            "false_alerts_per_60000": osm.expected_false_alerts(fpir),
        }

    rows = []
    for target in FPIRS:
        auto = threshold_for_fpir(model, size, target)
        empirical = osm.threshold_at_fpir(s.nonmated_best, target)
        rows.append(
            {
                "target_fpir": target,
                "observable": len(s.nonmated_best) * target >= 1,
                "auto": {**point(auto.score), "source": auto.source},
                "previous": point(previous_rule(model, size, target)),
                "empirical": point(empirical),
            }
        )
    base = default_threshold(model)
    return {
        "watchlist": size,
        "seed": seed,
        "mated_searches": len(mated),
        "nonmated_searches": len(nonmated),
        "track_people": len(tracks),
        "track_photos": sum(len(ks) for _, ks in tracks),
        "rank1_any_threshold": float(np.mean(s.mate_first)),
        "points": rows,
        "baseline": {"name": f"1:1 default ({base.name})", **point(base.score)},
    }


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def print_run(r: dict[str, Any]) -> None:
    print(
        f"\nwatchlist {r['watchlist']} (seed {r['seed']}): {r['mated_searches']} mated, "
        f"{r['nonmated_searches']} non-mated searches; track fusion over {r['track_people']} "
        f"people with >= 3 probe photos ({r['track_photos']} photos)"
    )
    print(
        "| target FPIR | threshold rule | cosine | measured FPIR | false alerts / searches "
        "| FPIR 95% CI | FNIR | FNIR track fused | FNIR best single shot "
        "| false alerts / 60,000 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")

    def line(label: str, rule: str, p: dict[str, Any]) -> None:
        low, high = p["fpir_ci95"]
        print(
            f"| {label} | {rule} | {p['threshold']:.4f} | {p['fpir']:.2e} | "
            f"{p['false_alerts']} / {r['nonmated_searches']} | {low:.1e}-{high:.1e} | "
            f"{_pct(p['fnir'])} | {_pct(p['fnir_track_fused'])} | "
            f"{_pct(p['fnir_best_single_shot'])} | {p['false_alerts_per_60000']:.0f} |"
        )

    for row in r["points"]:
        label = f"{row['target_fpir']:g}" + ("" if row["observable"] else " (unobservable)")
        line(label, "auto (threshold_for_fpir)", row["auto"])
        line(label, "previous (independent, view-2 tail)", row["previous"])
        line(label, "empirical", row["empirical"])
    base = r["baseline"]
    line("baseline", base["name"], base)


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per size, target and rule: false alerts pooled over the seeds, their 95% interval, and
    the range of the seeds' FPIR and FNIR."""
    out = []
    for size in dict.fromkeys(r["watchlist"] for r in runs):
        mine = [r for r in runs if r["watchlist"] == size]
        for k, target in enumerate(FPIRS):
            for rule in ("auto", "previous"):
                pts = [r["points"][k][rule] for r in mine]
                alerts = sum(p["false_alerts"] for p in pts)
                searches = sum(r["nonmated_searches"] for r in mine)
                out.append(
                    {
                        "watchlist": size,
                        "target_fpir": target,
                        "rule": rule,
                        "seeds": [r["seed"] for r in mine],
                        "false_alerts": alerts,
                        "searches": searches,
                        "fpir": alerts / searches,
                        "fpir_ci95": list(osm.binomial_interval(alerts, searches)),
                        "fpir_range": [min(p["fpir"] for p in pts), max(p["fpir"] for p in pts)],
                        "fnir_range": [min(p["fnir"] for p in pts), max(p["fnir"] for p in pts)],
                    }
                )
    return out


def print_summary(rows: list[dict[str, Any]]) -> None:
    print("\npooled over seeds " + ",".join(str(s) for s in rows[0]["seeds"]) + ":")
    print(
        "| list | target FPIR | rule | false alerts / searches | FPIR | 95% CI | FPIR per seed "
        "| FNIR per seed |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for x in rows:
        (lo, hi), (f0, f1), (n0, n1) = x["fpir_ci95"], x["fpir_range"], x["fnir_range"]
        print(
            f"| {x['watchlist']:,} | {x['target_fpir']:g} | {x['rule']} | "
            f"{x['false_alerts']} / {x['searches']} | {x['fpir']:.2e} | {lo:.1e}-{hi:.1e} | "
            f"{f0:.1e}-{f1:.1e} | {_pct(n0)}-{_pct(n1)} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", type=Path, default=SHARED / "datasets" / "lfw")
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None, help="only the first N images by name")
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--seeds", default="11,12,13")
    ap.add_argument("--people", choices=("view2", "all"), default="view2")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    start = time.perf_counter()
    names, vectors, quality, fallbacks = lfw_templates(
        args.root, args.cache, args.workers, args.limit
    )
    people = view2_people(args.root) if args.people == "view2" else None
    t_embed = time.perf_counter() - start
    start = time.perf_counter()
    runs = [
        watchlist_run(names, vectors, quality, int(n), int(seed), people)
        for n in args.sizes.split(",")
        for seed in args.seeds.split(",")
    ]
    t_search = time.perf_counter() - start
    split = "people in view 2 only" if people is not None else "every person"
    print(
        f"LFW deep-funneled: {len(names)} images embedded with EngineConfig() "
        f"({fallbacks} centre fallbacks) in {t_embed:.0f} s "
        f"(cache {args.cache}: only missing chunks are embedded); evaluated on {split}; "
        f"search: numpy exact dot products, {t_search:.1f} s"
    )
    for r in runs:
        print_run(r)
    pooled = summary(runs)
    print_summary(pooled)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "images": len(names),
            "centre_fallbacks": fallbacks,
            "people": args.people,
            "runs": runs,
            "pooled": pooled,
        }
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
