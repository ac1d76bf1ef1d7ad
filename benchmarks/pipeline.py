"""The whole pipeline on 200 LFW images, one thread, start-up included: `yingyan embed` vs
dlib's own Python API doing HOG + 5-point + ResNet on the same images, in the same run.

    python benchmarks/pipeline.py [--images 200] [--upsample 1]

Both sides run as fresh processes pinned to one core (taskset), so start-up (imports, model
loading, the cached ONNX conversion) is included, and both use the same HOG upsampling.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import lfw_images

DLIB_SCRIPT = """
import sys, dlib, face_recognition_models as m
files = sys.argv[2:]
detector = dlib.get_frontal_face_detector()
sp = dlib.shape_predictor(m.pose_predictor_five_point_model_location())
rec = dlib.face_recognition_model_v1(m.face_recognition_model_location())
faces = 0
for f in files:
    img = dlib.load_rgb_image(f)
    for box in detector(img, int(sys.argv[1])):
        rec.compute_face_descriptor(img, sp(img, box))
        faces += 1
print(faces)
"""


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(["taskset", "-c", "0", *cmd], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--upsample", type=int, default=1, help="HOG upsampling, both sides")
    args = ap.parse_args()
    files = [str(p) for p in lfw_images(args.images)]
    yingyan = str(Path(sys.executable).with_name("yingyan"))
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "faces.npz")
        base = [yingyan, "embed", *files, "--out", out, "--threads", "1"]
        runs = {
            "dlib Python API (HOG + 5-point + ResNet)": [
                sys.executable,
                "-c",
                DLIB_SCRIPT,
                str(args.upsample),
                *files,
            ],
            "yingyan embed, ONNX, flip TTA (default)": [*base, "--upsample", str(args.upsample)],
            "yingyan embed, ONNX, single pass": [
                *base,
                "--upsample",
                str(args.upsample),
                "--no-flip",
            ],
        }
        timed(runs["yingyan embed, ONNX, flip TTA (default)"])  # builds the ONNX cache once
        seconds = {name: min(timed(cmd) for _ in range(2)) for name, cmd in runs.items()}
    ref = seconds["dlib Python API (HOG + 5-point + ResNet)"]
    print(
        f"\n{args.images} LFW images, one core, HOG upsample {args.upsample}, start-up included\n"
    )
    print("| pipeline | seconds | ms/image | speed-up vs dlib |")
    print("|---|---|---|---|")
    for name, s in seconds.items():
        print(f"| {name} | {s:.1f} | {1000 * s / args.images:.0f} | {ref / s:.2f}× |")


if __name__ == "__main__":
    main()
