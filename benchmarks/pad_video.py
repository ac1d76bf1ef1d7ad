"""The passive RGB texture cue on the shared real video pair: a live face (`real.mov`) and a
replay of it on a phone (`fake.mp4`), 960x540 at 15 fps.

    python benchmarks/pad_video.py [--every K] [--window N] [--threads T] [--scores-out FILE]

Every K-th frame of each video is decoded (PyAV through the project's video source), YuNet
finds the face, the two MiniFASNet models score it (softmax averaged; one onnxruntime thread
each unless --threads). Printed:

- frame-level APCER (replay frames scored live) and BPCER (live frames scored attack) at the
  models' own boundary, P(live) >= 0.5;
- the same at a threshold chosen on the first half of each video (the highest whose BPCER on
  the live frames is at most 5%, chosen on bona fide frames only) and measured on the second
  half. Halves in time order: neighbouring frames are near-duplicates, an interleaved split
  would measure on the frames it chose on;
- attempts: consecutive, non-overlapping windows of N scored frames, each decided as a station
  would (mean P(live) >= threshold), and the video-level decision (the majority of attempts;
  the first attempt is what a kiosk would answer);
- time per scored frame: decode (with --every K, the K frames decoded to reach it), YuNet,
  the texture cue (crops + both models); p50 and p95; and the machine's load.

All of it twice in the same run: with the cue's default square face box and with YuNet's own
(taller) box, the baseline. The replay's first 27 frames (1.8 s) show the presenter's own live
face beside the phone (checked by eye; YuNet finds his face in each of them, the largest, so
the one a station judges): they are not attack presentations and are left out of the replay's,
counted and printed apart.

These two videos are the only real attack data here: any threshold chosen on them is fitted on
the test, and so is the box shape (chosen after seeing both); one phone, one face, one room.
With --scores-out the default's frame scores are written as a scores file for `yingyan eval
pad`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from yingyan.config import EngineConfig
from yingyan.detection import make_detector
from yingyan.evaluation.pad import (
    BONA_FIDE,
    Presentation,
    apcer,
    bpcer,
    presentation_rows,
    threshold_for_bpcer,
)
from yingyan.liveness.texture import FrameScore, TextureConfig, TextureCue, decide
from yingyan.runtime.onnx_session import available_cores
from yingyan.video.source import SourceSpec, open_source

from _common import SHARED

VIDEOS = SHARED / "datasets" / "liveness"
MODELS = SHARED / "models" / "minifasnet"
YUNET = SHARED / "models" / "yunet" / "face_detection_yunet_2023mar.onnx"
SPECIES = "phone_replay"
REPLAY_FROM = 27  # fake.mp4 frames 0-26: the presenter in view beside the phone (by eye)
CHOSEN_BPCER = 0.05  # the target on the first half's live frames


@dataclass
class Run:
    """One video's frames: the scores with each box shape, faces found, times (seconds)."""

    species: str
    frames: dict[str, list[FrameScore]] = field(default_factory=dict)
    faces: list[int] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    decode: list[float] = field(default_factory=list)
    detect: list[float] = field(default_factory=list)
    texture: list[float] = field(default_factory=list)

    def kept(self, shape: str, presenter: bool = False) -> list[FrameScore]:
        """The presentations of this video: the replay's from REPLAY_FROM on (or, with
        `presenter`, its earlier frames, where the presenter stands beside the phone)."""
        if self.species == BONA_FIDE:
            return self.frames[shape]
        pairs = zip(self.frames[shape], self.indices, strict=True)
        return [f for f, k in pairs if (k < REPLAY_FROM) == presenter]

    def scores(self, shape: str) -> np.ndarray:
        return np.array([f.score for f in self.kept(shape) if f.score is not None])


def score_video(
    path: Path, species: str, cues: dict[str, TextureCue], every: int, threads: int
) -> Run:
    """Every `every`-th frame detected once and scored by each cue; the first cue is timed."""
    detector = make_detector(EngineConfig(detector="yunet", yunet_model=YUNET, threads=threads))
    run = Run(species, {shape: [] for shape in cues})
    first = next(iter(cues))
    with open_source(SourceSpec(url=str(path))) as reader:
        t0 = time.perf_counter()
        for frame in reader.frames():
            if frame.index % every:
                continue
            t1 = time.perf_counter()
            detections = detector.detect(frame.image)
            t2 = time.perf_counter()
            result = cues[first].score(frame.image, detections)
            t3 = time.perf_counter()
            run.frames[first].append(result)
            for shape, cue in cues.items():
                if shape != first:
                    run.frames[shape].append(cue.score(frame.image, detections))
            run.faces.append(len(detections))
            run.indices.append(frame.index)
            run.decode.append(t1 - t0)
            run.detect.append(t2 - t1)
            if result.outcome == "scored":
                run.texture.append(t3 - t2)
            t0 = time.perf_counter()
    return run


def attempts(frames: Sequence[FrameScore], window: int, threshold: float) -> list[str]:
    """Decisions of consecutive, non-overlapping windows of `window` scored frames."""
    scored = [f for f in frames if f.outcome == "scored"]
    return [
        decide(scored[k : k + window], threshold, window).decision
        for k in range(0, len(scored) - window + 1, window)
    ]


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def ms(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    p50, p95 = np.percentile(np.array(values) * 1000, [50, 95])
    return f"p50 {p50:.1f} ms, p95 {p95:.1f} ms"


def report(live: Run, fake: Run, shape: str, threshold: float, window: int) -> None:
    """Frame-level rates, the threshold chosen on the first halves, attempts and videos."""
    ls, fs = live.scores(shape), fake.scores(shape)
    t = threshold
    for run, name in ((live, "live"), (fake, "replay")):
        kept = run.kept(shape)
        missing = sum(f.outcome != "scored" for f in kept)
        print(f"  {name}: {len(kept)} frames, not scored (no face or too small) {missing}")
    print(
        f"  frames at P(live) >= {t:g}: APCER ({SPECIES}) {pct(apcer(fs, t))} "
        f"({int(np.sum(fs >= t))}/{fs.size}), BPCER {pct(bpcer(ls, t))} "
        f"({int(np.sum(ls < t))}/{ls.size}); P(live) median live {np.median(ls):.3f}, "
        f"replay {np.median(fs):.3f}"
    )
    half_l, half_f = ls.size // 2, fs.size // 2
    chosen = threshold_for_bpcer(ls[:half_l], CHOSEN_BPCER)
    test_l, test_f = ls[half_l:], fs[half_f:]
    print(
        f"  threshold chosen on the first half's live frames (BPCER <= {pct(CHOSEN_BPCER)}): "
        f"{chosen:.4f}; second half: APCER {pct(apcer(test_f, chosen))} "
        f"({int(np.sum(test_f >= chosen))}/{test_f.size}), BPCER {pct(bpcer(test_l, chosen))} "
        f"({int(np.sum(test_l < chosen))}/{test_l.size})"
    )
    for run, name, expected in ((live, "live", "pass"), (fake, "replay", "fail")):
        d = attempts(run.kept(shape), window, t)
        passed = d.count("pass")
        verdict = "accepted" if passed * 2 > len(d) else "refused"
        right = (verdict == "accepted") == (expected == "pass")
        print(
            f"  {name}: {passed}/{len(d)} attempts of {window} frames pass, first attempt "
            f"{d[0] if d else 'n/a'}: video {verdict} ({'right' if right else 'WRONG'})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--every", type=int, default=1, help="score every K-th frame")
    ap.add_argument("--window", type=int, default=5, help="frames per attempt")
    ap.add_argument("--threads", type=int, default=1, help="threads per model (ORT, OpenCV)")
    ap.add_argument("--scores-out", type=Path, help="write the frame scores (eval pad input)")
    args = ap.parse_args()
    if args.every < 1 or args.window < 1 or args.threads < 1:
        raise SystemExit("--every, --window and --threads must be >= 1")
    for p in (VIDEOS / "real.mov", VIDEOS / "fake.mp4", YUNET, MODELS):
        if not p.exists():
            raise SystemExit(f"not found: {p}; set YINGYAN_SHARED")
    cv2.setNumThreads(args.threads)
    cues = {
        shape: TextureCue(
            TextureConfig.from_dir(
                MODELS, window=args.window, threads=args.threads, box_shape=shape
            )
        )
        for shape in ("square", "detector")
    }
    config = cues["square"].config
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {available_cores()} cores, load "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(json.dumps(cues["square"].describe()))
    live = score_video(VIDEOS / "real.mov", BONA_FIDE, cues, args.every, args.threads)
    fake = score_video(VIDEOS / "fake.mp4", SPECIES, cues, args.every, args.threads)

    for run, name in ((live, "real.mov (live)"), (fake, "fake.mp4 (phone replay)")):
        frames = run.frames["square"]
        print(
            f"{name}: {len(frames)} frames, no face in {run.faces.count(0)}, more than one "
            f"in {sum(n > 1 for n in run.faces)}, too small in "
            f"{sum(f.outcome == 'abstain' for f in frames)}"
        )
    for shape in cues:
        early = [f.score for f in fake.kept(shape, presenter=True) if f.score is not None]
        print(
            f"replay frames 0-{REPLAY_FROM - 1} (presenter beside the phone, left out), "
            f"{shape} box: {len(early)} scored, their largest face (the presenter) P(live) "
            f"median {np.median(early):.3f}"
            if early
            else "none scored"
        )
    for shape in cues:
        box = "square box (the default)" if shape == "square" else "the detector's own box"
        print(f"\n{box}:")
        report(live, fake, shape, config.threshold, args.window)

    print("\ntime per scored frame (this process, one thread per model):")
    decode = live.decode + fake.decode
    detect = live.detect + fake.detect
    texture = live.texture + fake.texture
    print(f"  decode {ms(decode)}; YuNet {ms(detect)}; texture cue (crop + 2 models) {ms(texture)}")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())

    if args.scores_out:
        rows = [
            Presentation(run.species, f.outcome, f.score)
            for run in (live, fake)
            for f in run.kept("square")
        ]
        args.scores_out.write_text(json.dumps({"presentations": presentation_rows(rows)}))
        print(f"scores: {args.scores_out} (yingyan eval pad {args.scores_out} --out-dir DIR)")


if __name__ == "__main__":
    main()
