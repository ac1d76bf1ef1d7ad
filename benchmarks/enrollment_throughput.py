"""Bulk enrollment throughput on LFW images: `yingyan enroll` (1 and N worker processes) vs a
straightforward script doing the same job with dlib's Python API, in the same run.

    python benchmarks/enrollment_throughput.py [--images 1000] [--workers 1,2]

Each side runs as a fresh process, start-up included, and ends with the templates committed
to a SQLite file. The baseline is what one would write without Yingyan: for each image, dlib's
HOG detector (upsample 1, as the default engine), the 5-point model, one ResNet pass, then one
INSERT and one COMMIT (so a crash loses nothing, as Yingyan guarantees). Yingyan does more
work per image (quality measures, flip-averaged templates, the image hash for resumption,
the vector index file) and commits per batch.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import lfw_images

BASELINE = """
import sqlite3, sys, dlib, numpy as np, face_recognition_models as m
db = sqlite3.connect(sys.argv[1])
db.execute("create table templates (external_id text, descriptor blob)")
detector = dlib.get_frontal_face_detector()
sp = dlib.shape_predictor(m.pose_predictor_five_point_model_location())
rec = dlib.face_recognition_model_v1(m.face_recognition_model_location())
enrolled = 0
for line in open(sys.argv[2]).read().splitlines()[1:]:
    external_id, path = line.split(",")[:2]
    img = dlib.load_rgb_image(path)
    boxes = detector(img, 1)
    if len(boxes) != 1:
        continue
    d = rec.compute_face_descriptor(img, sp(img, boxes[0]))
    blob = np.array(d, np.float32).tobytes()
    db.execute("insert into templates values (?, ?)", (external_id, blob))
    db.commit()
    enrolled += 1
print(enrolled)
"""


def manifest(path: Path, n: int) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["external_id", "image", "name"])
        for image in lfw_images(n):
            w.writerow([image.parent.name, str(image), image.parent.name.replace("_", " ")])
    return path


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--workers", default="1,2", help="worker process counts for yingyan")
    args = ap.parse_args()
    yingyan = str(Path(sys.executable).with_name("yingyan"))
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        m = manifest(Path(tmp) / "manifest.csv", args.images)
        seconds, _ = timed([sys.executable, "-c", BASELINE, str(Path(tmp) / "base.db"), str(m)])
        rows.append(("dlib Python API, one INSERT+COMMIT per image (baseline)", seconds, 1.0))
        for workers in [int(w) for w in args.workers.split(",")]:
            data = Path(tmp) / f"data-{workers}"
            create = [yingyan, "gallery", "create", "lfw", "--purpose", "benchmark"]
            subprocess.run(
                [*create, "--legal-basis", "research", "--data-dir", str(data)],
                check=True,
                capture_output=True,
            )
            cmd = [yingyan, "enroll", "--gallery", "lfw", "--manifest", str(m)]
            seconds, _ = timed([*cmd, "--threads", str(workers), "--data-dir", str(data)])
            rows.append((f"`yingyan enroll`, {workers} worker process(es)", seconds, 0.0))
    base = rows[0][1]
    print(f"\nBulk enrollment of {args.images} LFW images (one per person), start-up included\n")
    print("| enrollment | seconds | images/s | speed-up |\n|---|---|---|---|")
    for name, seconds, _ in rows:
        print(f"| {name} | {seconds:.1f} | {args.images / seconds:.1f} | {base / seconds:.2f}x |")


if __name__ == "__main__":
    main()
