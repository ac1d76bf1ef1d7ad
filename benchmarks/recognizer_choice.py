"""The pipeline per image for each recognizer choice, against the current default, in one run.

    python benchmarks/recognizer_choice.py [--images 200] [--seed 0] [--chunk 10] [--workers 1,2]
        [--fusion out/fusion/dlib+mobilefacenet.json]

Choices (issue 13):
  a  the current default: dlib ResNet, `hog+cnn` detector (no env);
  b  MobileFaceNet alone, YuNet;
  c  the fusion dlib + MobileFaceNet, YuNet;
  d  dlib ResNet, YuNet (separates the detector's cost from the recognizer's).

Per image: load + detect + align + quality + embed (flip-averaged) of every face, the job
`yingyan embed` / `enroll` runs on a file (`extraction.faces_of_files`), one file at a time.
The sample is a fixed random draw (`--seed`) of lfw-deepfunneled images. Each engine is warmed
up first (model load, ONNX conversion cache); then the sample is cut into chunks and every chunk
runs through every choice, choices interleaved round by round (a b c d, b c d a, ...) so that
background load falls on each choice alike. One worker: one process, one onnxruntime thread,
each image timed alone (median and p95 ms/image). Two workers: two processes of one thread
each share a chunk, as `--workers 2` does; the figure is wall time per image (throughput) over
each chunk. The ratio is to choice a measured in the same run. The load average and core count
are printed at the start and the end: figures from a busy machine are not quiet.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from yingyan import Engine, EngineConfig
from yingyan.extraction import faces_of_files

from _common import LFW, SHARED

YUNET = SHARED / "models" / "yunet" / "face_detection_yunet_2023mar.onnx"
MFN = SHARED / "models" / "mobilefacenet" / "MobileFaceNet.onnx"
FUSION = Path(__file__).resolve().parents[1] / "out" / "fusion" / "dlib+mobilefacenet.json"
WARMUP = 3  # images per engine before timing (not in the sample)


@dataclass(frozen=True, slots=True)
class Choice:
    key: str
    label: str
    config: EngineConfig


@dataclass
class Timings:
    seconds: list[float] = field(default_factory=list)  # per image (1 worker) or per chunk image
    faces: int = 0
    no_face: int = 0

    def ms(self, q: float) -> float:
        return 1000 * float(np.percentile(self.seconds, q))


def choices(fusion: Path) -> list[Choice]:
    """a-d, each with one onnxruntime thread (one core per worker, as `--workers N` runs)."""
    yunet = {"detector": "yunet", "yunet_model": YUNET, "threads": 1}
    return [
        Choice("a", "dlib ResNet, hog+cnn (current default)", EngineConfig(threads=1)),
        Choice("b", "MobileFaceNet, YuNet", EngineConfig(recognizer_model=MFN, **yunet)),  # type: ignore[arg-type]
        Choice("c", "fusion dlib + MobileFaceNet, YuNet", EngineConfig(fusion=fusion, **yunet)),  # type: ignore[arg-type]
        Choice("d", "dlib ResNet, YuNet", EngineConfig(**yunet)),  # type: ignore[arg-type]
    ]


def sample(n: int, seed: int) -> tuple[list[str], list[str]]:
    """`n` LFW images drawn with `seed`, and WARMUP others for warming up."""
    if not LFW.is_dir():
        raise SystemExit(f"LFW not found under {LFW}; set YINGYAN_SHARED")
    every = sorted(str(p) for p in LFW.glob("*/*.jpg"))
    drawn = random.Random(seed).sample(every, n + WARMUP)
    return drawn[WARMUP:], drawn[:WARMUP]


def rounds(items: list[str], chunk: int, keys: list[str]) -> list[tuple[list[str], list[str]]]:
    """(chunk of images, order of choices) per round; the order rotates by one each round."""
    out = []
    for r, start in enumerate(range(0, len(items), chunk)):
        k = r % len(keys)
        out.append((items[start : start + chunk], keys[k:] + keys[:k]))
    return out


# --- worker side (also used in-process for one worker) ----------------------------------------

_engines: dict[str, Engine] = {}


def _init(configs: dict[str, EngineConfig], warmup: list[str]) -> None:
    """Build every choice's engine in this process and warm it up."""
    for key, config in configs.items():
        _engines[key] = Engine(config)
        faces_of_files(_engines[key], warmup)


def _one(key: str, path: str) -> tuple[float, int]:
    """Seconds for one file's whole pipeline under choice `key`, and how many faces it found."""
    start = time.perf_counter()
    (result,) = faces_of_files(_engines[key], [path])
    seconds = time.perf_counter() - start
    if result.error is not None:
        raise SystemExit(f"{key}: {path}: {result.error}")
    return seconds, len(result.scores)


def _record(t: Timings, faces: int) -> None:
    t.faces += faces
    t.no_face += faces == 0


def run_single(plan: list[tuple[list[str], list[str]]], keys: list[str]) -> dict[str, Timings]:
    """Every image timed alone; prints the share of a core this process got meanwhile (about
    1.0 on a quiet machine, lower when other processes took the core)."""
    out = {k: Timings() for k in keys}
    wall, cpu = time.perf_counter(), time.process_time()
    for images, order in plan:
        for key in order:
            for path in images:
                seconds, faces = _one(key, path)
                out[key].seconds.append(seconds)
                _record(out[key], faces)
    share = (time.process_time() - cpu) / (time.perf_counter() - wall)
    print(f"(1 worker: this process ran {share:.2f} of the wall time)", flush=True)
    return out


def run_pool(
    plan: list[tuple[list[str], list[str]]],
    configs: dict[str, EngineConfig],
    warmup: list[str],
    workers: int,
) -> dict[str, Timings]:
    """Each chunk shared by `workers` processes; wall time per image of the chunk."""
    out = {k: Timings() for k in configs}
    with ProcessPoolExecutor(workers, initializer=_init, initargs=(configs, warmup)) as pool:
        list(pool.map(_sleep, [0.5] * workers * 2))  # every worker initialised before timing
        for images, order in plan:
            for key in order:
                start = time.perf_counter()
                found = list(pool.map(_one, [key] * len(images), images))
                wall = time.perf_counter() - start
                out[key].seconds.extend([wall / len(images)] * len(images))
                for _, faces in found:
                    _record(out[key], faces)
    return out


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


# --- report -----------------------------------------------------------------------------------


def load_line(when: str, load: tuple[float, float, float]) -> str:
    cores = len(os.sched_getaffinity(0))
    one, five, fifteen = load
    return (
        f"{when}: load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min), {cores} cores"
    )


def table(title: str, results: dict[str, Timings], labels: dict[str, str]) -> None:
    ref = results["a"]
    print(f"\n{title}\n")
    print("| choice | faces (images without) | median ms/image | p95 ms/image | × default |")
    print("|---|---|---|---|---|")
    for key, t in results.items():
        ratio = t.ms(50) / ref.ms(50)
        print(
            f"| {key}: {labels[key]} | {t.faces} ({t.no_face}) | {t.ms(50):.0f} | {t.ms(95):.0f} "
            f"| {ratio:.2f}× |"
        )


def timed(label: str, fn: Callable[[], dict[str, Timings]]) -> dict[str, Timings]:
    start = time.perf_counter()
    out = fn()
    print(f"({label}: {time.perf_counter() - start:.0f} s)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=10, help="images per choice per round")
    ap.add_argument("--workers", default="1,2", help="comma-separated: 1, 2 or both")
    ap.add_argument("--fusion", type=Path, default=FUSION)
    args = ap.parse_args()
    for needed in (YUNET, MFN, args.fusion):
        if not needed.is_file():
            raise SystemExit(f"not found: {needed} (set YINGYAN_SHARED, or --fusion)")
    workers = [int(w) for w in args.workers.split(",")]
    cs = choices(args.fusion)
    configs = {c.key: c.config for c in cs}
    labels = {c.key: c.label for c in cs}
    images, warmup = sample(args.images, args.seed)
    plan = rounds(images, args.chunk, list(configs))

    start_load = os.getloadavg()
    print(load_line("start", start_load), flush=True)
    results = {}
    if 1 in workers:
        _init(configs, warmup)
        results[1] = timed("1 worker", lambda: run_single(plan, list(configs)))
    for w in (w for w in workers if w > 1):
        results[w] = timed(f"{w} workers", lambda w=w: run_pool(plan, configs, warmup, w))  # type: ignore[misc]
    end_load = os.getloadavg()

    print(
        f"\n{args.images} LFW images (lfw-deepfunneled, seed {args.seed}), load + detect + align "
        f"+ embed (flip) of every face, {args.chunk} images per choice per round, choices "
        "interleaved; one onnxruntime thread per worker; × default: the choice's median over "
        "choice a's, same run"
    )
    for w, res in results.items():
        title = (
            "1 worker: each image timed alone"
            if w == 1
            else f"{w} workers: wall time per image over each chunk (throughput)"
        )
        table(title, res, labels)
    print(f"\n{load_line('start', start_load)}\n{load_line('end', end_load)}")
    if start_load[0] > 0.5 or end_load[0] > 0.5 + max(workers):
        print("NOT quiet: other processes were running; rerun on a quiet machine for figures")


if __name__ == "__main__":
    main()
