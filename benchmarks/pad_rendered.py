"""The PAD cues on rendered station images of real LFW faces: pass / fail / abstain rates per
cue and species, and the time of each stage of `analyse_pair`.

    python benchmarks/pad_rendered.py [--n 20] [--identities 10] [--seed 12] [--species ...]
        [--second nir|rgb] [--ink-contrast C]

Each presentation is rendered by `yingyan.liveness.render.render_pair` (default station: 1280x720,
f 1000 px, B 50 mm, camera 2 NIR with a strobed illuminator) with one of `--identities` LFW
photos (the first frontal one, by YuNet's landmarks, among every 50th person in sorted order)
as the face's texture, at a distance drawn across the working range; then YuNet (the shared
model) finds the face in both frames and `yingyan.station.analysis.analyse_pair` runs the
epipolar, distance, relief and NIR cues. The texture cue is left out (it is measured on real
video by pad_video.py; on these renders it would judge the renderer).

Printed: for each species, each cue's pass / fail / abstain rate; "refused" = at least one cue
failed; "accepted" = every cue that ran passed (the geometry and NIR cues; what fusion would
see before its own threshold; `--second rgb`: no NIR cue runs); "camera 2 face" = YuNet found
the face in camera 2's frame. Then each stage's p50 / p95 time and the machine's load.
Simulated presentations: the figures show what the cues do on images drawn by this renderer,
not on a real station's cameras.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from yingyan import load_image
from yingyan.config import EngineConfig
from yingyan.detection import make_detector
from yingyan.liveness.cues import Decision
from yingyan.liveness.render import RenderConfig, is_frontal, photo_landmarks, render_pair
from yingyan.liveness.simulator import Species, default_rig
from yingyan.station import rectify
from yingyan.station.analysis import AnalysisConfig, analyse_pair

SHARED = Path(os.environ.get("YINGYAN_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CUES = ("epipolar", "distance", "relief", "nir", "nir_face")


def photos(detect, n: int, stride: int = 50):  # type: ignore[no-untyped-def]
    """`n` frontal LFW photos and their landmarks: every `stride`-th person's first image."""
    root = SHARED / "datasets" / "lfw" / "lfw-deepfunneled"
    if not root.is_dir():
        raise SystemExit(f"LFW not found under {root}; set YINGYAN_SHARED")
    out = []
    for person in sorted(p for p in root.iterdir() if p.is_dir())[::stride]:
        image = load_image(sorted(person.iterdir())[0])
        lm = photo_landmarks(image, detect)
        if lm is not None and is_frontal(lm):
            out.append((person.name, image, lm))
        if len(out) == n:
            return out
    raise SystemExit(f"only {len(out)} frontal photos found")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="presentations per species")
    ap.add_argument("--identities", type=int, default=10)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--species", nargs="*", default=[s.value for s in Species])
    ap.add_argument("--second", choices=("nir", "rgb"), default="nir", help="camera 2's kind")
    ap.add_argument(
        "--ink-contrast",
        type=float,
        default=None,
        help="office prints' ink contrast in NIR (default: drawn 0.05-0.3; a laser print ~0.8)",
    )
    args = ap.parse_args()
    yunet = SHARED / "models" / "yunet" / "face_detection_yunet_2023mar.onnx"
    detector = make_detector(EngineConfig(detector="yunet", yunet_model=yunet))
    people = photos(detector.detect, args.identities)
    print("identities:", ", ".join(name for name, _, _ in people))
    rig = default_rig()
    rect = rectify(rig)
    config = AnalysisConfig()
    render_config = RenderConfig(second_camera=args.second)
    print(f"camera 2: {args.second}; ink contrast: {args.ink_contrast or 'drawn 0.05-0.3'}")
    timings: dict[str, list[float]] = defaultdict(list)
    render_times: list[float] = []
    print(f"load average at start: {os.getloadavg()}")
    header = "| species | n | camera 2 face | " + " | ".join(f"{c} pass/fail/abst." for c in CUES)
    print(header + " | refused | accepted |")
    print("|" + "---|" * (5 + len(CUES)))
    by_distance: dict[str, dict[int, Counter[Decision]]] = {}
    for name in args.species:
        species = Species(name)
        counts: dict[str, Counter[Decision]] = {c: Counter() for c in CUES}
        refused = accepted = seen2 = 0
        bins: dict[int, Counter[Decision]] = defaultdict(Counter)
        by_distance[name] = bins
        for i in range(args.n):
            _, photo, lm = people[i % len(people)]
            rng = np.random.default_rng([args.seed, list(Species).index(species), i])
            t = time.perf_counter()
            over = None if args.ink_contrast is None else {"ink_contrast": args.ink_contrast}
            rendered = render_pair(species, photo, lm, rng, rig, None, over, render_config)
            render_times.append(time.perf_counter() - t)
            result = analyse_pair(rendered.pair, rect, detector.detect, None, config)
            for stage, v in result.timings.items():
                timings[stage].append(v)
            seen2 += result.face2 is not None
            relief = result.cue("relief")
            near, far = rig.working_range
            seen_at = rendered.sample.params.get("apparent_distance", rendered.sample.distance)
            b = min(2, int(3 * (seen_at - near) / (far - near)))
            bins[b][relief.decision if relief else Decision.ABSTAIN] += 1
            decisions = {c.cue: c.decision for c in result.cues}
            for c in CUES:
                counts[c][decisions.get(c, Decision.ABSTAIN)] += 1
            refused += any(d is Decision.FAIL for d in decisions.values())
            accepted += bool(decisions) and all(d is Decision.PASS for d in decisions.values())

        def pct(x: int, n: int = args.n) -> str:
            return f"{100 * x / n:.0f}%"

        cells = [
            "/".join(pct(counts[c][d]) for d in (Decision.PASS, Decision.FAIL, Decision.ABSTAIN))
            for c in CUES
        ]
        print(
            f"| {name} | {args.n} | {pct(seen2)} | "
            + " | ".join(cells)
            + f" | {pct(refused)} | {pct(accepted)} |"
        )
    print("\nrelief pass/fail/abstain by apparent distance (thirds of the working range):")
    for name, bins in by_distance.items():
        thirds = []
        for b in range(3):
            tally, n = bins[b], sum(bins[b].values())
            thirds.append(
                "/".join(str(tally[d]) for d in (Decision.PASS, Decision.FAIL, Decision.ABSTAIN))
                + f" of {n}"
            )
        print(f"  {name}: " + "; ".join(thirds))
    print(f"\nload average at end: {os.getloadavg()}")
    print("stage times (ms) p50 / p95:")
    print(f"  render_pair: {_q(render_times)}")
    for stage, values in timings.items():
        print(f"  {stage}: {_q(values)}")


def _q(values: list[float]) -> str:
    a = np.asarray(values) * 1000
    return f"{np.percentile(a, 50):.1f} / {np.percentile(a, 95):.1f} (n={len(a)})"


if __name__ == "__main__":
    main()
