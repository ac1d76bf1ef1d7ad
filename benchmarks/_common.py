"""Helpers shared by the benchmark scripts: data location, real face chips, timing."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from yingyan import Engine, EngineConfig, load_image
from yingyan.detection import most_central
from yingyan.types import RGBImage

SHARED = Path(os.environ.get("YINGYAN_SHARED", Path(__file__).resolve().parents[2] / "shared"))
LFW = SHARED / "datasets" / "lfw" / "lfw-deepfunneled"


def lfw_images(n: int) -> list[Path]:
    """The first image of the first `n` people (sorted), a fixed and varied sample."""
    if not LFW.is_dir():
        raise SystemExit(f"LFW not found under {LFW}; set YINGYAN_SHARED")
    people = sorted(p for p in LFW.iterdir() if p.is_dir())[:n]
    return [sorted(p.iterdir())[0] for p in people]


def lfw_chips(n: int) -> list[RGBImage]:
    """150x150 dlib chips of the central face of `n` LFW images."""
    engine = Engine(EngineConfig(centre_fallback=True, keep_chips=True))
    chips = []
    for path in lfw_images(n):
        img = load_image(path)
        det = most_central(engine.detect(img), img.shape[1], img.shape[0])
        face = engine.faces(img, [det] if det else None, embed=False)[0]
        assert face.chip is not None
        chips.append(face.chip)
    return chips


def best_time(fn: Callable[[], object], repeat: int = 3, min_seconds: float = 0.0) -> float:
    """Best wall time of `repeat` runs (after one warm-up run)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if sum(times) > min_seconds and len(times) >= 2:
            break
    return min(times)


def sgemm_gflops(n: int = 2048) -> float:
    """Measured single-precision matrix-multiply rate of this process's BLAS: a practical peak."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    t = best_time(lambda: a @ b, repeat=3)
    return 2 * n**3 / t / 1e9
