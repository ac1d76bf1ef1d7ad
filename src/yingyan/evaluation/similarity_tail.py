"""A recognizer's impostor tail on LFW view 2: what the CompreFace similarity is read through.

The images of `pairs.txt` (7,701; or the first N in the order the folds use them) are embedded
with the engine (flip), and every pair of images of different people is an impostor (29.6
million pairs for all of them, enough to observe FMRs near 1e-6). The tail is the score at
FMR 10^-(0.25 k), down to the FMR 30 impostors still observe (`comparison.similarity.fit_tail`).
The protocol's own genuine and impostor pairs are scored too, for the check the benchmark
prints (`benchmarks/similarity_scale.py`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from yingyan.comparison.similarity import Tail, fit_tail
from yingyan.config import EngineConfig
from yingyan.evaluation.lfw import extract_images, image_dir, read_pairs

CHUNK = 400
Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class View2Templates:
    selected: set[str]  # the images asked for
    names: list[str]  # those embedded, in order
    vectors: Vectors  # their flip templates


def view2_templates(
    root: Path,
    config: EngineConfig,
    *,
    cache: Path | None = None,
    workers: int | None = None,
    max_images: int | None = None,
    show_progress: bool = True,
) -> View2Templates:
    """The view-2 images (the first `max_images` in the order the folds use them) embedded
    400 at a time; with `cache`, each 400 kept there (resumable; LFW-derived biometric data:
    a private user folder, never the repository) and reused."""
    order = list(dict.fromkeys(n for p in read_pairs(root / "pairs.txt") for n in (p.a, p.b)))
    order = order[:max_images] if max_images else order
    wanted = set(order)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    names: list[str] = []
    vectors: list[Vectors] = []
    for start in range(0, len(order), CHUNK):
        chunk = None if cache is None else cache / f"chunk{start:05d}.npz"
        if chunk is not None and chunk.is_file():
            with np.load(chunk) as z:
                keep = [k for k, n in enumerate(z["names"]) if str(n) in wanted]
                names += [str(z["names"][k]) for k in keep]
                vectors.append(z["vectors"][keep].astype(np.float32))
            continue
        todo = order[start : start + CHUNK]
        got = extract_images(
            image_dir(root), todo, config, workers=workers, show_progress=show_progress
        )
        kept = [n for n in todo if got[n].views is not None]
        stack = np.stack([got[n].template_vector(flip=True, jitter=0) for n in kept])
        if chunk is not None:
            np.savez(chunk, names=np.array(kept), vectors=stack)
            os.chmod(chunk, 0o600)
        names += kept
        vectors.append(stack.astype(np.float32))
    return View2Templates(wanted, names, np.concatenate(vectors))


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
    root: Path, t: View2Templates
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Genuine and impostor scores of the protocol's pairs among the selected images (an
    image that failed: a non-match)."""
    where = {n: k for k, n in enumerate(t.names)}
    genuine: list[float] = []
    impostor: list[float] = []
    for p in read_pairs(root / "pairs.txt"):
        if p.a not in t.selected or p.b not in t.selected:
            continue
        ok = p.a in where and p.b in where
        s = float(t.vectors[where[p.a]] @ t.vectors[where[p.b]]) if ok else -1.0
        (genuine if p.same else impostor).append(s)
    return np.array(genuine), np.array(impostor)


def view2_tail(
    t: View2Templates,
    impostor: npt.NDArray[np.float32],
    model: str,
    detector: str,
    command: str,
) -> Tail:
    """The tail of `model` (a model id's name) fitted on the all-pairs impostor scores, with
    the data and the command it was measured with."""
    tail = fit_tail(impostor, model, "")
    return Tail(
        model,
        tail.scores,
        tail.decades,
        f"LFW view 2, {detector} detection, flip: -log10 FMR every 0.25 decade down to "
        f"1e-{tail.decades[-1]:g}: `{command}`",
        dataset=f"LFW view 2 (pairs.txt, {len(t.names):,} of {len(t.selected):,} images "
        f"embedded): {len(impostor):,} pairs of images of different people",
        measured=datetime.now(UTC).date().isoformat(),
    )
