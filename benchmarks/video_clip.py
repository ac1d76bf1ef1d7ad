"""The shared clip through the camera pipeline, against detect-and-embed-every-frame, in one run.

    python benchmarks/video_clip.py [--detector hog|cnn|yunet] [--stride N] [--repeat R]

Both sides decode the clip with the same source (PyAV, frame by frame) and use the same models
(`watch.camera.video_engine_config`, one onnxruntime thread). The baseline detects every frame
and embeds every face it finds; the pipeline detects every N-th frame, tracks in between and
embeds only a track's new best samples. Without options both are the camera worker's embedded
defaults (`video_engine_config(Settings())`: HOG without upsampling unless the service has YuNet
by path; `PipelineSettings()`: stride 2, adaptive); `--detector` overrides the detector, and
`--stride N` fixes the stride (adaptive off). Prints seconds, frames per second and × real time
(the clip is 9.18 s), how many detections, embeddings and searches each side ran, and whether
the pipeline meets the issue's bar of 3× real time.
"""

from __future__ import annotations

import argparse
import os
import time

from yingyan.engine import Engine
from yingyan.settings import Settings
from yingyan.video.pipeline import CameraPipeline, PipelineSettings
from yingyan.video.source import SourceSpec, open_source
from yingyan.watch.camera import video_engine_config

from _common import SHARED

CLIP = SHARED / "datasets" / "video" / "short_hamilton_clip.mp4"
YUNET = SHARED / "models" / "yunet" / "face_detection_yunet_2023mar.onnx"


BAR = 3.0  # the bar: the clip at >= 3x real time with the embedded defaults


def engine_for(detector: str | None) -> Engine:
    """The camera worker's engine; `detector` None: its default detector."""
    overrides: dict[str, object] = {}
    if detector is not None:
        overrides = {"detector": detector, "upsample": 0}
    if detector == "yunet":
        overrides["yunet_model"] = YUNET
    return Engine(video_engine_config(Settings(workers=0), overrides))


def pipeline_settings(stride: int | None) -> PipelineSettings:
    """The embedded defaults, or a fixed stride."""
    return (
        PipelineSettings()
        if stride is None
        else PipelineSettings(detect_every=stride, adaptive=False)
    )


def baseline(engine: Engine) -> tuple[float, float, int, int]:
    """Every frame detected, every face embedded: (seconds, stream seconds, dets, embeds)."""
    start = time.perf_counter()
    dets = embeds = 0
    last = 0.0
    with open_source(SourceSpec(url=str(CLIP))) as reader:
        for frame in reader.frames():
            faces = engine.faces(frame.image)
            dets += len(faces)
            embeds += sum(f.template is not None for f in faces)
            last = frame.pts
    return time.perf_counter() - start, last, dets, embeds


def pipeline(engine: Engine, settings: PipelineSettings) -> tuple[float, float, CameraPipeline]:
    searches: list[object] = []
    pipe = CameraPipeline(
        engine,
        settings,
        lambda q: searches.append(q),
        camera="bench",
    )
    start = time.perf_counter()
    last = 0.0
    with open_source(SourceSpec(url=str(CLIP))) as reader:
        for frame in reader.frames():
            pipe.process(frame)
            last = frame.pts
    pipe.finish()
    return time.perf_counter() - start, last, pipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", choices=("hog", "cnn", "yunet"), default=None)
    parser.add_argument("--stride", type=int, default=None, help="fixed stride (adaptive off)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    engine = engine_for(args.detector)
    engine.faces(engine.load(SHARED / "datasets" / "video" / "obama.jpg"))  # load the models
    load = os.getloadavg()[0]
    cpu = time.process_time()
    base = min((baseline(engine) for _ in range(args.repeat)), key=lambda r: r[0])
    base_cpu = (time.process_time() - cpu) / args.repeat
    settings = pipeline_settings(args.stride)
    cpu = time.process_time()
    runs = [pipeline(engine, settings) for _ in range(args.repeat)]
    pipe_cpu = (time.process_time() - cpu) / args.repeat
    best = min(runs, key=lambda r: r[0])
    duration = best[1] + 1 / 29.97
    pipe = best[2]
    detector = engine.describe()["detector"]
    defaults = args.detector is None and args.stride is None
    print(
        f"clip {CLIP.name}: {pipe.frames} frames, {duration:.2f} s; detector {detector} "
        f"(upsample {engine.config.upsample}); "
        + ("embedded defaults" if defaults else "not the embedded defaults")
    )
    print(f"load average before the run: {load:.2f} on {os.cpu_count()} cores")
    print(
        f"baseline (detect + embed every frame): {base[0]:.2f} s, "
        f"{pipe.frames / base[0]:.0f} fps, {duration / base[0]:.1f}x real time; "
        f"{base[2]} detections, {base[3]} embeddings"
    )
    stride = f"stride {settings.detect_every}" + (
        f"-{settings.max_detect_every} adaptive, ended at {pipe.detect_every}"
        if settings.adaptive
        else " fixed"
    )
    print(
        f"pipeline ({stride}, tracking): {best[0]:.2f} s, "
        f"{pipe.frames / best[0]:.0f} fps, {duration / best[0]:.1f}x real time; "
        f"{pipe.detections} detections, {pipe.embeddings} embeddings, {pipe.searches} searches, "
        f"{pipe.tracks_seen} tracks"
    )
    print(f"speed-up over the baseline: {base[0] / best[0]:.1f}x")
    speed = duration / best[0]
    verdict = "meets" if speed >= BAR else "misses"
    print(f"{verdict} the {BAR:g}x real-time bar ({speed:.1f}x, load {os.getloadavg()[0]:.2f})")
    # CPU seconds (every thread of this process) depend less on the load than wall time, but
    # contention for caches and cores still inflates them: a hint on a loaded machine, no more.
    print(
        f"CPU per pass (mean of {args.repeat}): baseline {base_cpu:.2f} s, pipeline "
        f"{pipe_cpu:.2f} s = {duration / pipe_cpu:.1f}x real time per core-second"
    )


if __name__ == "__main__":
    main()
