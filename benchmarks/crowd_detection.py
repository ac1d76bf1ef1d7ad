"""What each detector configuration finds and costs on composed 1280x720 crowd frames.

Faces of 24-120 px (HOG-style box width) from LFW and UTKFace walk across a textured scene
(benchmarks/_crowd_scene.py). Per configuration: recall by face-size bucket at IoU >= 0.4,
false positives per frame and ms per frame, against dlib HOG without upsampling on the whole
frame (the baseline, measured in the same run). Faces cut by the frame edge or more than 30%
hidden by nearer passers are neither counted nor held against a detector.

    .venv/bin/python benchmarks/crowd_detection.py [--frames 24] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _crowd_scene import CrowdScene, FaceTruth, lfw_sources, random_passers, utk_sources
from yingyan.detection.base import Detector
from yingyan.detection.dlib_hog import HogDetector
from yingyan.detection.yunet import YuNetDetector
from yingyan.types import Box, Detection, RGBImage
from yingyan.video.crowd import MotionConfig, Region, TiledDetector, TilingConfig

from _common import SHARED

BUCKETS = ((24.0, 40.0), (40.0, 60.0), (60.0, 121.0))
YUNET = SHARED / "models" / "yunet" / "face_detection_yunet_2023mar.onnx"


@dataclass
class Tally:
    found: list[int]
    total: list[int]
    false_positives: int = 0
    frames: int = 0
    seconds: float = 0.0
    tiles_run: int = 0
    tiles: int = 0
    area_share: float = 0.0


def bucket(width: float) -> int | None:
    for i, (lo, hi) in enumerate(BUCKETS):
        if lo <= width < hi:
            return i
    return None


def score_frame(dets: list[Detection], truth: list[FaceTruth], tally: Tally) -> None:
    """Greedy one-to-one matching by IoU; ignored faces absorb their detections."""
    pairs = sorted(
        ((d.box.iou(t.box), i, j) for i, d in enumerate(dets) for j, t in enumerate(truth)),
        reverse=True,
    )
    used_d: set[int] = set()
    used_t: set[int] = set()
    for iou, i, j in pairs:
        if iou < 0.4:
            break
        if i not in used_d and j not in used_t:
            used_d.add(i)
            used_t.add(j)
    for j, t in enumerate(truth):
        b = bucket(t.box.width)
        if t.clipped or t.hidden > 0.3 or b is None:
            continue
        tally.total[b] += 1
        tally.found[b] += j in used_t
    tally.false_positives += len(dets) - len(used_d)


def configurations() -> dict[str, Callable[[], Detector]]:
    hog_tiles = TilingConfig.uniform(1.5, tile_px=512, overlap_px=128)
    yunet_tiles = TilingConfig.uniform(2.0, tile_px=512, overlap_px=128)
    motion = MotionConfig(method="diff")
    whole_tiles = MotionConfig(method="diff", crop=False)
    regions = (Region(0.0, 0.0, 1.0, 0.55, 1.5), Region(0.0, 0.45, 1.0, 1.0, 1.0))
    configs: dict[str, Callable[[], Detector]] = {
        "hog u0 whole (baseline)": lambda: HogDetector(upsample=0),
        "hog u1 whole": lambda: HogDetector(upsample=1),
        "tiled hog 1.5x+u1": lambda: TiledDetector(HogDetector(upsample=1), hog_tiles),
        "tiled hog 1.5x+u1 motion tiles": lambda: TiledDetector(
            HogDetector(upsample=1), TilingConfig.uniform(1.5, motion=whole_tiles)
        ),
        "tiled hog 1.5x+u1 motion crop": lambda: TiledDetector(
            HogDetector(upsample=1), TilingConfig.uniform(1.5, motion=motion)
        ),
        # Region upsampling: the far (upper) part of the scene, where faces are small, at 1.5x;
        # the near part at 1x (HOG u1 finds >= 40 px there). Bands overlap by 72 px.
        "regions hog 1.5x top/1x bottom +u1": lambda: TiledDetector(
            HogDetector(upsample=1), TilingConfig(regions=regions)
        ),
    }
    if YUNET.is_file():
        configs["yunet whole"] = lambda: YuNetDetector(YUNET, upsample=0)
        configs["tiled yunet 2x"] = lambda: TiledDetector(YuNetDetector(YUNET, 0), yunet_tiles)
        configs["tiled yunet 2x motion crop"] = lambda: TiledDetector(
            YuNetDetector(YUNET, 0), TilingConfig.uniform(2.0, motion=motion)
        )
    else:
        print(f"YuNet not found at {YUNET}: skipped")
    return configs


def scene(seed: int, frames: int, step: int, rate: float) -> tuple[CrowdScene, int]:
    """A scene with `rate` passers entering per second, each crossing in 3-6 s."""
    lfw = SHARED / "datasets" / "lfw" / "lfw-deepfunneled"
    utk = SHARED / "datasets" / "utkface-balanced"
    if not lfw.is_dir() or not utk.is_dir():
        raise SystemExit(f"LFW or UTKFace not found under {SHARED}; set YINGYAN_SHARED")
    sources = lfw_sources(lfw) + utk_sources(utk)
    warmup_s = 6.0  # the scene fills up first
    span = warmup_s + frames * step / 10.0
    passers = random_passers(seed, sources, round(rate * span), span, distinct=True)
    return CrowdScene(seed, passers, fps=10.0), round(warmup_s * 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--step", type=int, default=5, help="detect every N-th frame (10 fps)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--rates", default="3.5,0.7", help="passers entering per second, one scene each"
    )
    args = parser.parse_args()
    configs = configurations()
    for rate in (float(r) for r in args.rates.split(",")):
        run_scene(args, rate, configs)


def run_scene(
    args: argparse.Namespace, rate: float, configs: dict[str, Callable[[], Detector]]
) -> None:
    crowd, first = scene(args.seed, args.frames, args.step, rate)
    stop = first + args.frames * args.step
    samples: list[tuple[RGBImage, list[FaceTruth]]] = [
        (img, truth) for _, img, truth in crowd.frames(first, stop, args.step)
    ]
    tallies = {name: Tally([0] * len(BUCKETS), [0] * len(BUCKETS)) for name in configs}
    for name, make in configs.items():
        detector = make()  # a fresh motion background per scene
        tally = tallies[name]
        for image, truth in samples:
            t = time.perf_counter()
            dets = detector.detect(image)
            tally.seconds += time.perf_counter() - t
            tally.frames += 1
            if isinstance(detector, TiledDetector):
                tally.tiles += detector.last_run.tiles
                tally.tiles_run += detector.last_run.run
                tally.area_share += detector.last_run.area_share
            score_frame(dets, truth, tally)
    faces = sum(len(truth) for _, truth in samples) / max(len(samples), 1)
    print(f"\nscene: {rate} passers/s, {faces:.1f} faces per frame")
    report(tallies, args, os.getloadavg()[0])


def report(tallies: dict[str, Tally], args: argparse.Namespace, load: float) -> None:
    any_tally = next(iter(tallies.values()))
    print(
        f"{args.frames} frames 1280x720 (every {args.step}th at 10 fps, seed {args.seed}); "
        f"faces per bucket: {any_tally.total}; load average {load:.1f} on {os.cpu_count()} cores"
    )
    heads = " | ".join(f"recall {lo:.0f}-{min(hi, 120):.0f}" for lo, hi in BUCKETS)
    print(f"| configuration | {heads} | FP/frame | ms/frame | x baseline | tiles run | px run |")
    print("|---|" + "---|" * (len(BUCKETS) + 5))
    base = next(iter(tallies.values()))
    base_ms = 1000 * base.seconds / max(base.frames, 1)
    for name, t in tallies.items():
        recall = " | ".join(
            f"{f / n:.2f}" if n else "-" for f, n in zip(t.found, t.total, strict=True)
        )
        ms = 1000 * t.seconds / max(t.frames, 1)
        tiles = f"{t.tiles_run}/{t.tiles}" if t.tiles else "-"
        share = f"{t.area_share / t.frames:.0%}" if t.tiles else "-"
        print(
            f"| {name} | {recall} | {t.false_positives / max(t.frames, 1):.2f} | {ms:.0f} "
            f"| {ms / base_ms:.1f} | {tiles} | {share} |"
        )


if __name__ == "__main__":
    main()


__all__ = ["Box", "score_frame"]
