"""The time of a face station's decision: one kiosk attempt of one frame pair, end to end, and
the 1:1 verification alone, measured in the same run on the same frames.

    python benchmarks/station_timing.py [--attempts 50] [--frames 1] [--threads N] [--seed 12]
        [--policy FILE]

Frames are rendered by the station simulator (`liveness.render`, the default 1280x720 rig,
camera 2 NIR with the illuminator strobed) showing a bona fide face textured with an LFW photo,
person i's first photo, at distances spread across the 0.3-0.8 m working range. Rendering is
not timed. Each attempt is then timed twice, in alternating order:

- the station decision: `station.kiosk.analyse_attempt` (YuNet in camera 1 and camera 2, the
  epipolar, distance, relief, NIR and MiniFASNet texture cues, the PAD fusion, the quality gate,
  camera 1's face embedded by dlib's ResNet) and the 1:1 comparison with the person's reference
  template (their second LFW photo, embedded beforehand, as an enrolled subject's would be);
- the verification alone: YuNet on camera 1, that face embedded, the same comparison.

Printed: p50 and p95 of each, the ratio, the stage means of the station decision, and how many
attempts were accepted (an attempt refused or asked to retry ends before the embedding, so it is
faster: the p50/p95 of the attempts that reached the comparison are printed apart). The
machine, its cores and its load average before and after: other jobs may be running.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from yingyan import Engine, EngineConfig, load_image
from yingyan.comparison import compare, get_threshold
from yingyan.detection.base import largest
from yingyan.liveness.render import render_pair
from yingyan.liveness.simulator import Species, default_rig
from yingyan.station.calibration import save_calibration
from yingyan.station.frames import FramePair
from yingyan.station.kiosk import analyse_attempt, open_station
from yingyan.station.profile import load_profile
from yingyan.types import Template

from _common import LFW, SHARED

YUNET = SHARED / "models" / "yunet" / "face_detection_yunet_2023mar.onnx"
MINIFASNET = SHARED / "models" / "minifasnet"
DISTANCES = (0.35, 0.45, 0.55, 0.65, 0.75)


def people(n: int) -> list[tuple[Path, Path]]:
    """(texture photo, reference photo) of the first `n` LFW people with two photos or more."""
    if not LFW.is_dir():
        raise SystemExit(f"LFW not found under {LFW}; set YINGYAN_SHARED")
    out = []
    for folder in sorted(p for p in LFW.iterdir() if p.is_dir()):
        photos = sorted(folder.glob("*.jpg"))
        if len(photos) >= 2:
            out.append((photos[0], photos[1]))
        if len(out) == n:
            break
    return out


def write_profile(folder: Path, frames: int, policy: Path | None) -> Path:
    save_calibration(default_rig(), folder / "rig.yaml")
    policy_line = f'policy = "{policy}"\n' if policy else ""
    # One frame: decided on that frame alone; more: the policy's own window (3, 2 responding).
    single = "window = 1\nmin_frames = 1\n" if frames == 1 else ""
    path = folder / "bench.toml"
    path.write_text(
        f'cameras = "rgb+nir"\ncalibration = "rig.yaml"\nmax_frames = {max(frames, 3)}\n\n'
        f'[pad]\n{policy_line}minifasnet = "{MINIFASNET}"\n{single}\n'
        "[verify]\nid_photo = true\n",
        encoding="utf-8",
    )
    return path


def render(
    engine: Engine, n: int, frames: int, seed: int
) -> list[tuple[list[FramePair], Template]]:
    """Each attempt's frames and the person's reference template (not timed)."""
    rng = np.random.default_rng(seed)
    attempts = []
    for i, (texture, reference) in enumerate(people(n)):
        photo = load_image(texture)
        found = largest(engine.detect(photo))
        ref = largest(engine.detect(load_image(reference)))
        if found is None or found.landmarks is None or ref is None:
            continue
        (ref_face,) = engine.faces(load_image(reference), [ref])
        assert ref_face.template is not None
        distance = DISTANCES[i % len(DISTANCES)]
        pairs = [
            render_pair(
                Species.BONA_FIDE, photo, found.landmarks.points, rng, distance=distance
            ).pair
            for _ in range(frames)
        ]
        attempts.append((pairs, ref_face.template))
    return attempts


def pct(values: list[float]) -> str:
    if not values:
        return "n/a"
    p50, p95 = np.percentile(values, [50, 95])
    return f"p50 {p50:.0f} ms, p95 {p95:.0f} ms (n={len(values)})"


def machine() -> str:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({model})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--attempts", type=int, default=50)
    ap.add_argument("--frames", type=int, default=1, help="frame pairs per attempt")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads (all cores)")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument(
        "--policy", type=Path, default=None, help="a PAD policy file (default: shipped)"
    )
    args = ap.parse_args()

    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}")
    print("before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    config = EngineConfig(detector="yunet", yunet_model=YUNET, threads=args.threads)
    engine = Engine(config)
    started = time.perf_counter()
    attempts = render(engine, args.attempts, args.frames, args.seed)
    print(
        f"rendered {len(attempts)} attempts of {args.frames} pair(s) in "
        f"{time.perf_counter() - started:.0f} s (not timed)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        profile = load_profile(write_profile(Path(tmp), args.frames, args.policy))
        station = open_station(profile, engine)
        print(
            f"policy {station.policy.version}: gates {', '.join(station.policy.gates)}; "
            f"combined {', '.join(station.policy.cues) or 'none'}; "
            f"window {station.policy.window}, min_frames {station.policy.min_frames}"
        )
        threshold = get_threshold(str(engine.model_id))

        refused_by: Counter[str] = Counter()

        def decision(pairs: list[FramePair], ref: Template) -> tuple[float, str, dict[str, float]]:
            t = time.perf_counter()
            a = analyse_attempt(station, pairs, engine)
            outcome = a.outcome or "verify"
            if outcome in ("attack", "retry"):
                refused_by[f"{outcome} by {'+'.join(a.pad.decided_by) or '-'}"] += 1
            if a.probe is not None and a.probe.template is not None:
                match = compare(a.probe.template, ref).score >= threshold.score
                outcome = "accepted" if match else "no_match"
            return (time.perf_counter() - t) * 1000, outcome, dict(a.timings_ms)

        def verification(pairs: list[FramePair], ref: Template) -> float:
            t = time.perf_counter()
            image = pairs[-1].first
            face = largest(engine.detect(image))
            if face is not None:
                (probe,) = engine.faces(image, [face])
                assert probe.template is not None
                compare(probe.template, ref)
            return (time.perf_counter() - t) * 1000

        # Warm-up: models load, ONNX sessions and remap tables built.
        decision(*attempts[0])
        verification(*attempts[0])
        refused_by.clear()
        full, verified, alone, outcomes = [], [], [], Counter[str]()
        stages: dict[str, list[float]] = {}
        for i, (pairs, ref) in enumerate(attempts):
            if i % 2:
                alone.append(verification(pairs, ref))
            ms, outcome, timings = decision(pairs, ref)
            if not i % 2:
                alone.append(verification(pairs, ref))
            full.append(ms)
            outcomes[outcome] += 1
            if outcome in ("accepted", "no_match"):
                verified.append(ms)
            for k, v in timings.items():
                stages.setdefault(k, []).append(v)
    print("after: ", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(
        f"\nStation decision ({args.frames} pair(s), 1280x720, YuNet x2, PAD incl. MiniFASNet, "
        f"embed, 1:1): {pct(full)}"
    )
    print(f"  of which reached 1:1 (accepted or no_match): {pct(verified)}")
    print(f"Verification alone (YuNet camera 1, embed, 1:1), same run:     {pct(alone)}")
    if full and alone:
        ratio = np.percentile(full, 95) / np.percentile(alone, 95)
        print(f"Ratio of the p95s: {ratio:.2f}x")
    print("Outcomes:", ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
    print("  (every attempt shows a bona fide rendered face; refusals:", end=" ")
    print(", ".join(f"{k} {v}" for k, v in refused_by.most_common()) + ")")
    print("Stage means (ms):", ", ".join(f"{k} {np.mean(v):.1f}" for k, v in stages.items()))
    print(
        f"threads: recognizer (onnxruntime) {args.threads or 'all cores'}, MiniFASNet 1 per "
        f"model, OpenCV (YuNet, remap) {cv2.getNumThreads()}"
    )


if __name__ == "__main__":
    main()
