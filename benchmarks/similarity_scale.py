"""The CompreFace similarity scale, measured on LFW view 2 with the default engine.

    python benchmarks/similarity_scale.py [--root ../shared/datasets/lfw] [--max-images N] [--fit]

The images of `pairs.txt` (7,701; `--max-images`: the first N in the order the folds use
them) are embedded once with `EngineConfig()` (hog+cnn, 5-point chip, chip + mirror averaged),
400 at a time into a resumable cache (`--cache`; LFW-derived biometric data: the user cache,
never the repository). Two impostor sets are scored: the protocol's different-person pairs,
and every pair of images of different people (29 million pairs for all 7,701 images, enough
to observe FMRs near 1e-6).

Prints, for similarity 0.5, 0.8, 0.9, 0.95 and 0.99 (the mapping of
`yingyan.comparison.similarity` at the model's default threshold): the cosine score it
corresponds to, the FMR it promises, the FMR measured on both impostor sets, and the FNMR on
the protocol's same-person pairs. With `--fit`, also prints the impostor tail knots the module
stores (`_DLIB_TAIL`), measured on the all-pairs impostor set.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

from yingyan import EngineConfig
from yingyan.comparison.similarity import scale_for, threshold_score_at
from yingyan.comparison.thresholds import default_threshold
from yingyan.evaluation.lfw import extract_images, image_dir, read_pairs

SHARED = Path(os.environ.get("YINGYAN_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CACHE = Path.home() / ".cache" / "yingyan" / "lfw-view2-chunks"
CHUNK = 400
LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99)
Vectors = npt.NDArray[np.float32]


def templates(
    root: Path, cache: Path, workers: int | None, max_images: int | None
) -> tuple[set[str], list[str], Vectors]:
    """The selected view-2 images (the first `max_images` in the order the folds use them) and
    the names and flip templates of those embedded, 400 at a time into `cache` (resumable)."""
    order = list(dict.fromkeys(n for p in read_pairs(root / "pairs.txt") for n in (p.a, p.b)))
    order = order[:max_images] if max_images else order
    wanted = set(order)
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    names: list[str] = []
    vectors: list[Vectors] = []
    for start in range(0, len(order), CHUNK):
        chunk = cache / f"chunk{start:05d}.npz"
        if not chunk.is_file():
            todo = order[start : start + CHUNK]
            got = extract_images(image_dir(root), todo, EngineConfig(), workers=workers)
            kept = [n for n in todo if got[n].views is not None]
            stack = np.stack([got[n].template_vector(flip=True, jitter=0) for n in kept])
            np.savez(chunk, names=np.array(kept), vectors=stack)
            os.chmod(chunk, 0o600)
        with np.load(chunk) as z:
            keep = [k for k, n in enumerate(z["names"]) if str(n) in wanted]
            names += [str(z["names"][k]) for k in keep]
            vectors.append(z["vectors"][keep].astype(np.float32))
    return wanted, names, np.concatenate(vectors)


def all_impostor_scores(names: list[str], vectors: Vectors) -> npt.NDArray[np.float32]:
    """Cosine scores of every pair of images of different people (upper triangle)."""
    person = np.array([n.split("/")[0] for n in names])
    out = []
    for i in range(0, len(names), 512):
        block = vectors[i : i + 512] @ vectors.T
        rows = np.arange(i, min(i + 512, len(names)))[:, None]
        keep = (np.arange(len(names))[None, :] > rows) & (person[rows] != person[None, :])
        out.append(block[keep])
    return np.concatenate(out)


def protocol_scores(
    root: Path, selected: set[str], names: list[str], vectors: Vectors
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Genuine and impostor scores of the protocol's pairs among the selected images (an
    image that failed: a non-match)."""
    where = {n: k for k, n in enumerate(names)}
    genuine, impostor = [], []
    for p in read_pairs(root / "pairs.txt"):
        if p.a not in selected or p.b not in selected:
            continue
        ok = p.a in where and p.b in where
        s = float(vectors[where[p.a]] @ vectors[where[p.b]]) if ok else -1.0
        (genuine if p.same else impostor).append(s)
    return np.array(genuine), np.array(impostor)


def tail_knots(impostor: npt.NDArray[np.float32], min_count: int = 30) -> list[tuple[float, float]]:
    """(score, -log10 FMR) of the impostor survival function at FMR 10^-(0.25 k), down to
    the FMR that `min_count` impostors still observe."""
    ordered = np.sort(impostor.astype(np.float64))[::-1]
    n = len(ordered)
    knots = []
    for k in range(0, 100):
        fmr = 10 ** (-0.25 * k)
        count = round(fmr * n)
        if count < min_count:
            break
        knots.append((round(float(ordered[count - 1]), 4), round(0.25 * k, 2)))
    return sorted(set(knots))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", type=Path, default=SHARED / "datasets" / "lfw")
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--max-images", type=int, default=None, help="only the first N images")
    ap.add_argument("--fit", action="store_true", help="print the tail knots to store")
    args = ap.parse_args()

    selected, names, vectors = templates(args.root, args.cache, args.workers, args.max_images)
    everyone = all_impostor_scores(names, vectors)
    genuine, impostor = protocol_scores(args.root, selected, names, vectors)
    if args.fit:
        print(f"impostor tail knots ({len(everyone):,} all-pairs impostors):")
        print(tail_knots(everyone))
    threshold = default_threshold("dlib_resnet_v1")
    scale = scale_for("dlib_resnet_v1", threshold.score)
    print(
        f"\nLFW view 2, default engine: {len(names)} images, {len(genuine)} genuine and "
        f"{len(impostor)} impostor protocol pairs, {len(everyone):,} all-pairs impostors; "
        f"similarity 0.5 = threshold {threshold.name} ({threshold.score})\n"
    )
    print("| similarity | cosine | FMR promised | FMR all pairs | FMR protocol | FNMR protocol |")
    print("|---:|---:|---:|---:|---:|---:|")
    for s in LEVELS:
        cut = threshold_score_at(scale, s)
        fmr_all = float(np.mean(everyone >= cut))
        fmr_protocol = float(np.mean(impostor >= cut))
        fnmr = float(np.mean(genuine < cut))
        print(
            f"| {s} | {cut:.4f} | {scale.fmr_at(s):.1e} | {fmr_all:.1e} | "
            f"{fmr_protocol:.1e} | {100 * fnmr:.2f}% |"
        )


if __name__ == "__main__":
    main()
