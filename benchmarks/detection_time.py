"""Detection time per image: dlib's MMOD CNN on dlib (reference) vs on onnxruntime, in the same
run, at 640x480, 1280x720 and 1920x1080; HOG and YuNet for context.

    python benchmarks/detection_time.py [--threads N]

Frames are a real photo (two_people.jpg) resized to each size. Upsample 0 everywhere, so every
detector sees the same pixels; dlib runs single-threaded, onnxruntime with `--threads`
(default: every core) and also with one thread.
"""

from __future__ import annotations

import argparse
import time

import cv2

from yingyan import Engine, EngineConfig, load_image
from yingyan.runtime.onnx_session import available_cores

from _common import SHARED

SIZES = ((640, 480), (1280, 720), (1920, 1080))
YUNET = SHARED / "models" / "yunet" / "face_detection_yunet_2023mar.onnx"


def per_image(engine: Engine, frame: object, repeat: int) -> tuple[float, int]:
    faces = engine.detect(frame)  # type: ignore[arg-type]  # warm-up (and model load)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        engine.detect(frame)  # type: ignore[arg-type]
        times.append(time.perf_counter() - t)
    return min(times), len(faces)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=available_cores())
    args = ap.parse_args()
    photo = load_image(SHARED / "datasets" / "video" / "two_people.jpg")
    engines = {
        "MMOD, dlib (reference)": (
            Engine(EngineConfig(detector="cnn", backend="dlib", upsample=0)),
            1,
        ),
        f"MMOD, onnxruntime, {args.threads} thread(s)": (
            Engine(EngineConfig(detector="cnn", upsample=0, threads=args.threads)),
            3,
        ),
        "MMOD, onnxruntime, 1 thread": (
            Engine(EngineConfig(detector="cnn", upsample=0, threads=1)),
            3,
        ),
        "HOG, dlib": (Engine(EngineConfig(detector="hog", upsample=0)), 3),
    }
    if YUNET.is_file():
        engines["YuNet, OpenCV"] = (
            Engine(EngineConfig(detector="yunet", yunet_model=YUNET, upsample=0)),
            5,
        )
    results: dict[str, dict[tuple[int, int], tuple[float, int]]] = {}
    for name, (engine, repeat) in engines.items():
        results[name] = {}
        for w, h in SIZES:
            frame = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
            results[name][(w, h)] = per_image(engine, frame, repeat)
    ref = results["MMOD, dlib (reference)"]
    print(f"\nDetection time per image (upsample 0; {available_cores()} core(s))\n")
    print("| detector | " + " | ".join(f"{w}×{h}" for w, h in SIZES) + " |")
    print("|---|" + "---|" * len(SIZES))
    for name, row in results.items():
        cells = []
        for size in SIZES:
            s, n = row[size]
            cells.append(f"{1000 * s:.0f} ms ({ref[size][0] / s:.1f}×, {n} faces)")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n(×: speed-up over dlib's MMOD at the same size)")


if __name__ == "__main__":
    main()
