"""LFW view-2 accuracy of each pipeline variant, with the plain single-pass HOG pipeline as the
baseline measured in the same run.

    python benchmarks/lfw_variants.py --root ../shared/datasets/lfw [--detectors hog,hog+cnn,yunet]

For every detector, each image is detected, aligned and embedded once (chip and mirror), and
every variant is scored from those descriptors: 'plain' (one pass, cosine), 'flip' (chip and
mirror averaged) and 'plain-euclidean-raw' (dlib's own distance on unnormalised descriptors).
Prints a Markdown table: 10-fold accuracy, EER, TAR@FAR=1e-3, and each variant's error rate
relative to the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from yingyan import EngineConfig
from yingyan.evaluation.lfw import VariantResult, run_lfw

SHARED = Path(os.environ.get("YINGYAN_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", type=Path, default=SHARED / "datasets" / "lfw")
    ap.add_argument("--pairs", default="pairs.txt")
    ap.add_argument("--detectors", default="hog,hog+cnn,yunet")  # hog+cnn: the default engine
    ap.add_argument(
        "--yunet-model",
        type=Path,
        default=SHARED / "models" / "yunet" / "face_detection_yunet_2023mar.onnx",
    )
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()

    rows: list[tuple[str, VariantResult, float, int]] = []
    dumps = []
    for det in args.detectors.split(","):
        config = EngineConfig(
            detector=det, yunet_model=args.yunet_model if det == "yunet" else None
        )  # type: ignore[arg-type]
        start = time.perf_counter()
        report = run_lfw(args.root, args.root / args.pairs, config, workers=args.workers)
        seconds = time.perf_counter() - start
        dumps.append(report.as_dict() | {"seconds": seconds})
        for v in report.variants:
            rows.append((det, v, seconds, report.fallback_images))

    baseline = next(v for d, v, _, _ in rows if v.name == "plain")
    base_err = 1 - baseline.mean
    print(
        f"\nLFW {args.pairs}: baseline = {rows[0][0]} + 5-point + plain single pass "
        f"({100 * baseline.mean:.2f}%)\n"
    )
    print(
        "| detector | variant | 10-fold accuracy | EER | TAR@FAR=1e-3 | error vs baseline "
        "| centre fallbacks | run time |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for det, v, seconds, fallbacks in rows:
        tar = v.tar_at_far["0.001"]
        print(
            f"| {det} | {v.name} | {100 * v.mean:.2f} ± {100 * v.std:.2f}% | {100 * v.eer:.2f}% | "
            f"{'n/a' if tar is None else f'{100 * tar:.2f}%'} | "
            f"{(1 - v.mean) / base_err:.2f}× | {fallbacks} | {seconds:.0f} s |"
        )
    if args.json_out:
        args.json_out.write_text(json.dumps(dumps, indent=2))


if __name__ == "__main__":
    main()
