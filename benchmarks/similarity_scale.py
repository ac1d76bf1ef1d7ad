"""The CompreFace similarity scale of one recognizer (or fusion), measured on LFW view 2.

    python benchmarks/similarity_scale.py [--root ../shared/datasets/lfw] [--max-images N]
        [--detector yunet --yunet-model FILE] [--fit [--into FUSION]]

The recognizer is the one the CLI would use: dlib's ResNet by default, another with
YINGYAN_RECOGNIZER_MODEL (its manifest found as usual), a fusion with YINGYAN_FUSION or
`--into FUSION`. The images of `pairs.txt` (7,701; `--max-images`: the first N in the order the
folds use them) are embedded once with that engine (flip: chip + mirror averaged), 400 at a time
into a resumable cache per model id and detector (`--cache`; LFW-derived biometric data: the
user cache, never the repository). Two impostor sets are scored: the protocol's
different-person pairs, and every pair of images of different people (29 million pairs for all
7,701 images, enough to observe FMRs near 1e-6).

Prints, for similarity 0.5, 0.8, 0.9, 0.95 and 0.99 (the mapping of
`yingyan.comparison.similarity` at the model's default threshold): the cosine score it
corresponds to, the FMR it promises, the FMR measured on both impostor sets, and the FNMR on
the protocol's same-person pairs. Without `--fit` the scale is the shipped one (the model's
measured tail, else the uncalibrated logistic); with `--fit` the impostor tail is fitted on the
all-pairs impostor set (-log10 FMR every 0.25 decade), the table is computed with it, and
- for a recognizer, the `[tail]` table to put in its manifest is printed;
- with `--into FUSION`, the tail is stored in that fusion file as its next tail version (its
  model id, hence its templates, unchanged).
`yingyan calibrate tail` measures and stores the same tail (`yingyan.evaluation.similarity_tail`)
without the cache and the check table.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

from yingyan import Engine
from yingyan.cli.options import DEFAULT_DETECTOR, engine_config
from yingyan.comparison.similarity import (
    SimilarityScale,
    Tail,
    measured_tail,
    scale_for,
    tail_toml,
    threshold_score_at,
)
from yingyan.comparison.thresholds import default_threshold
from yingyan.embedding.fusion import fusion_json, load_fusion, with_tail
from yingyan.errors import ConfigError, YingyanError
from yingyan.evaluation.similarity_tail import (
    all_impostor_scores,
    protocol_scores,
    view2_tail,
    view2_templates,
)

SHARED = Path(os.environ.get("YINGYAN_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CACHE = Path.home() / ".cache" / "yingyan" / "lfw-view2"
LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99)


def command_line() -> str:
    """This run's command, with the environment that chose the recognizer."""
    env = [
        f"{k}={shlex.quote(os.environ[k])}"
        for k in ("YINGYAN_RECOGNIZER_MODEL", "YINGYAN_RECOGNIZER_MANIFEST", "YINGYAN_FUSION")
        if os.environ.get(k)
    ]
    args = [a for a in sys.argv[1:] if a != "--help"]
    return " ".join([*env, "python benchmarks/similarity_scale.py", *map(shlex.quote, args)])


def store_in_fusion(into: Path, tail: Tail) -> None:
    spec = with_tail(load_fusion(into), tail)
    into.write_text(fusion_json(spec))
    print(f"\n{spec.model_id}: tail stored, tail version {spec.tail_version} -> {into}")


def compare_tails(shipped: Tail, new: Tail) -> None:
    """How far the fitted knots lie from the shipped ones, at the shipped knots' decades."""
    at = np.array(shipped.decades)
    at = at[at <= new.decades[-1]]
    moved = [new.score_of(float(d)) - s for d, s in zip(at, shipped.scores, strict=False)]
    worst = int(np.argmax(np.abs(moved)))
    print(
        f"\nagainst the shipped tail ({shipped.measured or 'undated'}): largest knot shift "
        f"{moved[worst]:+.4f} in score at {at[worst]:g} decades"
    )


def report(
    scale: SimilarityScale,
    threshold_name: str,
    everyone: npt.NDArray[np.float32],
    genuine: npt.NDArray[np.float64],
    impostor: npt.NDArray[np.float64],
    header: str,
) -> None:
    print(
        f"\n{header}; similarity 0.5 = threshold {threshold_name} ({scale.threshold}), "
        f"scale: {scale.kind}\n"
    )
    print("| similarity | cosine | FMR promised | FMR all pairs | FMR protocol | FNMR protocol |")
    print("|---:|---:|---:|---:|---:|---:|")
    for s in LEVELS:
        cut = threshold_score_at(scale, s)
        promised = scale.fmr_at(s)
        print(
            f"| {s} | {cut:.4f} | {'—' if promised is None else f'{promised:.1e}'} | "
            f"{float(np.mean(everyone >= cut)):.1e} | {float(np.mean(impostor >= cut)):.1e} | "
            f"{100 * float(np.mean(genuine < cut)):.2f}% |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", type=Path, default=SHARED / "datasets" / "lfw")
    ap.add_argument("--cache", type=Path, default=None, help=f"default: {CACHE}/<model>_<det>")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--max-images", type=int, default=None, help="only the first N images")
    ap.add_argument("--detector", default=DEFAULT_DETECTOR)
    ap.add_argument("--yunet-model", type=Path, default=None)
    ap.add_argument("--fit", action="store_true", help="fit the tail (and print or store it)")
    ap.add_argument("--into", type=Path, default=None, help="--fit: store it in this fusion")
    args = ap.parse_args()
    if args.into is not None and not args.fit:
        ap.error("--into stores a fitted tail: give --fit too")
    try:
        run(args)
    except YingyanError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None


def run(args: argparse.Namespace) -> None:
    config = engine_config(args.detector, None, args.yunet_model)
    if args.into is not None:
        if config.recognizer_model is not None:
            raise ConfigError("--into measures a fusion: unset YINGYAN_RECOGNIZER_MODEL")
        if config.fusion is not None and Path(config.fusion).resolve() != args.into.resolve():
            raise ConfigError(f"YINGYAN_FUSION names {config.fusion}, --into {args.into}")
        if not args.into.is_file():
            raise ConfigError(f"--into {args.into}: no such fusion file")
        config = config.with_(fusion=args.into)
    model = str(Engine(config).model_id)  # a fusion is loaded: its thresholds become known
    cache = args.cache or CACHE / re.sub(r"[^\w.@+-]", "_", f"{model}_{config.detector}")
    t = view2_templates(
        args.root, config, cache=cache, workers=args.workers, max_images=args.max_images
    )
    everyone = all_impostor_scores(t.names, t.vectors)
    genuine, impostor = protocol_scores(args.root, t)
    header = (
        f"LFW view 2, {model}, {config.detector}: {len(t.names)} of {len(t.selected)} images, "
        f"{len(genuine)} genuine and {len(impostor)} impostor protocol pairs, "
        f"{len(everyone):,} all-pairs impostors"
    )
    tail = None
    if args.fit:
        name = model.partition("@")[0]
        tail = view2_tail(t, everyone, name, config.detector, command_line())
        print(f"impostor tail knots ({len(everyone):,} all-pairs impostors):")
        print(list(zip(tail.scores, tail.decades, strict=True)))
        shipped = measured_tail(model)
        if shipped is not None:
            compare_tails(shipped, tail)
        if args.into is not None:
            store_in_fusion(args.into, tail)
        elif not model.startswith("fusion:"):
            print(f"\nthe manifest's table ({model}):\n\n{tail_toml(tail)}")
    try:
        threshold = default_threshold(model)
    except ConfigError as exc:
        print(f"\n{header}\nno similarity table: {exc.message}")
        return
    scale = (
        scale_for(model, threshold.score)
        if tail is None
        else SimilarityScale("tail", threshold.score, tail)
    )
    report(scale, threshold.name, everyone, genuine, impostor, header)


if __name__ == "__main__":
    main()
