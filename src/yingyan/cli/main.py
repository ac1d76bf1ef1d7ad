"""`yingyan`: detect, verify, evaluate."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from yingyan.cli.options import (
    DEFAULT_DETECTOR,
    BackendOpt,
    CalibrationOpt,
    DatasetOpt,
    DatasetRootOpt,
    DetectorOpt,
    FlipOpt,
    HalfOpt,
    JsonOpt,
    UpsampleOpt,
    WorkersOpt,
    YunetOpt,
    engine_config,
    handles_errors,
    load_calibration,
    stderr,
)
from yingyan.comparison import compare, decide, get_threshold
from yingyan.comparison.thresholds import Threshold, custom_threshold
from yingyan.config import EngineConfig
from yingyan.detection.base import largest
from yingyan.engine import Engine
from yingyan.errors import ImageError, NoFaceError, YingyanError
from yingyan.types import Face

app = typer.Typer(
    name="yingyan",
    help="Yingyan (鹰眼): open, accountable face recognition.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
eval_app = typer.Typer(help="Accuracy benchmarks.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
models_app = typer.Typer(help="Model files and their ONNX conversions.", no_args_is_help=True)
app.add_typer(models_app, name="models")
# Wide enough for the evaluation tables when output is piped to a file.
out = Console(width=shutil.get_terminal_size((120, 24)).columns)

ImageArg = Annotated[Path, typer.Argument(help="image file (JPEG, PNG, BMP, WebP)")]


def _face_dict(f: Face) -> dict[str, object]:
    lm = f.landmarks.points
    return {
        "box": f.detection.box.as_list(),
        "detector_score": round(f.detection.score, 4),
        "detector": f.detection.detector,
        "landmarks": {
            "left_eye": [round(float(v), 1) for v in lm[0]],
            "right_eye": [round(float(v), 1) for v in lm[1]],
            "nose": [round(float(v), 1) for v in lm[2]],
        },
        "quality": f.quality.as_dict(),
    }


@app.command()
@handles_errors
def detect(
    image: ImageArg,
    detector: DetectorOpt = DEFAULT_DETECTOR,
    upsample: UpsampleOpt = None,
    yunet_model: YunetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find faces: boxes, landmarks and quality measures."""
    engine = Engine(engine_config(detector, upsample, yunet_model))
    faces = engine.faces(engine.load(image), embed=False)
    if as_json:
        out.print_json(data={"image": str(image), "faces": [_face_dict(f) for f in faces]})
        return
    table = Table(title=f"{len(faces)} face(s) in {image}")
    for col in ("#", "box (x1 y1 x2 y2)", "score", "eye dist", "sharp", "yaw", "roll", "quality"):
        table.add_column(col, justify="right")
    for k, f in enumerate(faces):
        q = f.quality
        table.add_row(
            str(k),
            " ".join(f"{v:.0f}" for v in f.detection.box.as_list()),
            f"{f.detection.score:.2f}",
            f"{q.inter_eye_px:.0f}",
            f"{q.sharpness:.0f}",
            f"{q.yaw_deg:.0f}°",
            f"{q.roll_deg:.0f}°",
            f"{q.score:.2f}",
        )
    out.print(table)


def _main_face(engine: Engine, path: Path) -> tuple[Face, int]:
    """The largest face of an image (the subject of a selfie or ID photo), and the face count."""
    image = engine.load(path)
    detections = engine.detect(image)
    main = largest(detections)
    if main is None:
        raise NoFaceError(f"{path}: no face found")
    return engine.faces(image, [main])[0], len(detections)


@app.command()
@handles_errors
def verify(
    image1: ImageArg,
    image2: ImageArg,
    threshold: Annotated[
        str | None,
        typer.Option("--threshold", "-t", help="named threshold of the model (default: strict)"),
    ] = None,
    threshold_score: Annotated[
        float | None, typer.Option("--threshold-score", help="explicit score threshold")
    ] = None,
    detector: DetectorOpt = DEFAULT_DETECTOR,
    upsample: UpsampleOpt = None,
    yunet_model: YunetOpt = None,
    flip: FlipOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """1:1 verification of the largest face in each image: score, decision and threshold.

    A match is a candidate for human review, not an automatic decision."""
    engine = Engine(engine_config(detector, upsample, yunet_model, flip))
    f1, n1 = _main_face(engine, image1)
    f2, n2 = _main_face(engine, image2)
    assert f1.template is not None and f2.template is not None
    model = f1.template.model.name
    thr = (
        custom_threshold(model, threshold_score)
        if threshold_score is not None
        else get_threshold(str(f1.template.model), threshold)
    )
    decision = decide(compare(f1.template, f2.template), thr)
    result = {
        **decision.as_dict(),
        "model": str(f1.template.model),
        "recipe": f1.template.recipe,
        "faces_in_images": [n1, n2],
        "quality": [round(f1.quality.score, 3), round(f2.quality.score, 3)],
    }
    if as_json:
        out.print_json(data=result)
        return
    verdict = "[green]MATCH[/green]" if decision.match else "[red]NO MATCH[/red]"
    out.print(
        f"{verdict}  score {decision.score:.4f}  (threshold {thr.name} = {thr.score:.4f}, "
        f"model {f1.template.model})"
    )
    if n1 > 1 or n2 > 1:
        out.print(f"note: {n1} and {n2} faces found; the largest of each was compared")


@app.command()
@handles_errors
def embed(
    paths: Annotated[list[Path], typer.Argument(help="image files or folders (recursive)")],
    out_file: Annotated[Path, typer.Option("--out", help="output .npz file")],
    threads: Annotated[int, typer.Option(help="worker processes, one thread each")] = 1,
    detector: DetectorOpt = DEFAULT_DETECTOR,
    upsample: UpsampleOpt = None,
    yunet_model: YunetOpt = None,
    flip: FlipOpt = True,
    backend: BackendOpt = "onnx",
) -> None:
    """Templates of every face in many images, one row per face (path, box, quality, template).

    Files without a face, or unreadable, are reported and skipped; if no file gives a face,
    nothing is written and the exit code is 2."""
    from yingyan.extraction import extract

    if out_file.suffix != ".npz":
        raise ImageError(f"--out must name an .npz file, not {out_file}")
    config = engine_config(detector, upsample, yunet_model, flip, 0, backend, 1)
    result = extract(paths, config, workers=threads)
    for reason in list(result.failures.values())[:10]:
        stderr.print(f"skipped: {reason}", soft_wrap=True, markup=False)
    for path in result.no_face[:10]:
        stderr.print(f"no face: {path}", soft_wrap=True, markup=False)
    if not result.paths:
        raise NoFaceError(f"no face found in any of {result.images} image file(s); nothing written")
    result.save(out_file)
    engine = ", ".join(f"{k} {v}" for k, v in result.describe.items())
    out.print(
        f"{result.images} image(s), {len(result.paths)} face(s), {len(result.no_face)} without "
        f"a face, {len(result.failures)} failed → {out_file}  ({engine})",
        markup=False,
    )


@eval_app.command("lfw")
@handles_errors
def eval_lfw(
    root: Annotated[Path, typer.Option(help="LFW folder: pairs files + lfw-deepfunneled/")],
    pairs: Annotated[
        Path | None, typer.Option(help="pairs file (default ROOT/pairs.txt; name or path)")
    ] = None,
    detector: DetectorOpt = DEFAULT_DETECTOR,
    upsample: UpsampleOpt = None,
    yunet_model: YunetOpt = None,
    flip: FlipOpt = True,
    jitter: Annotated[int, typer.Option(help="extra jittered views per chip (0-8)")] = 0,
    backend: BackendOpt = "onnx",
    workers: WorkersOpt = None,
    calibration: CalibrationOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json-out", help="write JSON")] = None,
    det_plot: Annotated[Path | None, typer.Option("--det-plot", help="write DET PNG")] = None,
) -> None:
    """The LFW verification protocol: 10-fold accuracy, EER, TAR@FAR, DET curve. With
    --calibration, the configured recipe is scored a second time through the profile."""
    from yingyan.evaluation.lfw import run_lfw
    from yingyan.evaluation.plots import det_plot as draw

    pairs_path = root / "pairs.txt" if pairs is None else pairs
    if pairs is not None and not pairs.is_file() and (root / pairs).is_file():
        pairs_path = root / pairs
    config = engine_config(detector, upsample, yunet_model, flip, jitter, backend)
    profile = load_calibration(calibration)
    scoring = (profile.label, profile.pair_scores) if profile else None
    report = run_lfw(root, pairs_path, config, workers=workers, calibration=scoring)
    table = Table(title=f"LFW {pairs_path.name}: {report.n_pairs} pairs, {report.n_images} images")
    for col in ("variant", "accuracy", "EER", "TAR@FAR=1e-3", "TAR@FAR=1e-4", "threshold"):
        table.add_column(col, justify="right")

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    for v in report.variants:
        acc = (
            f"{100 * v.mean:.2f} ± {100 * v.std:.2f}%"
            if len(v.fold_accuracies) > 1
            else pct(v.mean)
        )
        table.add_row(
            v.name,
            acc,
            pct(v.eer),
            pct(v.tar_at_far["0.001"]),
            pct(v.tar_at_far["0.0001"]),
            f"{sum(v.fold_thresholds) / len(v.fold_thresholds):.4f}",
        )
    out.print(table)
    out.print("n/a: fewer impostor pairs than 1/FAR, so that rate cannot be observed.")
    primary = report.variants[0]
    for thr in _shipped_thresholds(config):
        fm, fnm = (
            int((primary.impostor >= thr.score).sum()),
            int((primary.genuine < thr.score).sum()),
        )
        out.print(
            f"{primary.name} at the shipped threshold {thr.name} ({thr.score}): accuracy over all "
            f"pairs {100 * primary.accuracy_at(thr.score):.2f}%, false matches {fm} of "
            f"{primary.impostor.size}, FNMR {100 * fnm / max(primary.genuine.size, 1):.2f}%",
            markup=False,
        )
    out.print(
        f"detector {config.detector} (upsample {config.pyramid_upsample}); centre-box fallback "
        f"used for {report.fallback_images} image(s); failed images: {len(report.failed_images)}"
    )
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report.as_dict(), indent=2))
        out.print(f"JSON written to {json_out}")
    if det_plot is not None:
        curves = {v.name: (v.genuine, v.impostor) for v in report.variants}
        draw(curves, det_plot, f"LFW {pairs_path.name} ({config.detector})")
        out.print(f"DET plot written to {det_plot}")


def _shipped_thresholds(config: EngineConfig) -> list[Threshold]:
    """The configured model's shipped thresholds (none known: none printed)."""
    from yingyan.comparison.thresholds import known_thresholds

    try:
        return known_thresholds(str(Engine(config).model_id))
    except YingyanError:
        return []


@eval_app.command("fairness")
@handles_errors
def eval_fairness(
    dataset: DatasetOpt,
    root: DatasetRootOpt,
    out_dir: Annotated[Path, typer.Option(help="where report.html/json and the plot go")],
    detector: DetectorOpt = DEFAULT_DETECTOR,
    yunet_model: YunetOpt = None,
    targets: Annotated[str, typer.Option(help="target FMRs, comma-separated")] = "1e-3,1e-4",
    half: HalfOpt = None,
    calibration: CalibrationOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Error rates per demographic group of a labelled image set: failure to acquire, quality,
    same-group FMR at global thresholds, FNMR where identities exist, worst/best ratios."""
    from yingyan.evaluation.fairness import acquire_dataset, build_report, cosine
    from yingyan.evaluation.fairness_report import write_report

    try:
        fmrs = [float(t) for t in targets.split(",")]
    except ValueError:
        raise typer.BadParameter(f"not a list of numbers: {targets!r}") from None
    if not all(0 < t < 1 for t in fmrs):
        raise typer.BadParameter("target FMRs must be between 0 and 1")
    profile = load_calibration(calibration)  # before the long acquisition: fail early
    config = engine_config(detector, None, yunet_model)
    images, acquired = acquire_dataset(dataset, root, half, config, workers=workers)
    name = dataset if half is None else f"{dataset} (half {half})"
    score, normalisation = (profile.scores, profile.label) if profile else (cosine, "none")
    report, curves = build_report(
        name, images, acquired, targets=fmrs, score=score, normalisation=normalisation
    )
    report.engine.update(Engine(config).describe())
    page = write_report(report, curves, out_dir)
    table = Table("group", "images", "FTA", *[f"FMR@{t}" for t in report.thresholds])
    for g in report.groups:
        table.add_row(
            g.group, str(g.images), f"{100 * g.fta:.1f}%", *[f"{v:.2e}" for v in g.fmr.values()]
        )
    out.print(table)
    for d in report.differentials:
        out.print(
            f"FMR {d.target:g}: worst/best {d.ratio:.1f}x (95% CI {d.low:.1f}-{d.high:.1f}), "
            f"worst {d.worst}, best {d.best}",
            markup=False,
        )
    out.print(f"failure to acquire worst/best: {report.fta_ratio:.2f}x; report: {page}")


@models_app.command("convert")
@handles_errors
def models_convert(
    cache_dir: Annotated[
        Path | None, typer.Option(help="where to write (default: the user cache folder)")
    ] = None,
) -> None:
    """Convert dlib's ResNet and MMOD models to ONNX now (otherwise done on first use)."""
    from yingyan.models import dlib_model, file_sha256
    from yingyan.runtime.mmod_onnx import cached_mmod_onnx
    from yingyan.runtime.onnx_convert import cached_resnet_onnx

    for name, convert in (("dlib_resnet_v1", cached_resnet_onnx), ("dlib_mmod", cached_mmod_onnx)):
        source = dlib_model(name).path
        target = convert(source, cache_dir=cache_dir)
        out.print(
            f"{name}: {source.name} (sha256 {file_sha256(source)[:12]}) → {target}", markup=False
        )


@models_app.command("info")
@handles_errors
def models_info(
    detector: DetectorOpt = DEFAULT_DETECTOR,
    yunet_model: YunetOpt = None,
    backend: BackendOpt = "onnx",
) -> None:
    """Which detector, alignment, model, backend and execution provider the engine uses."""
    engine = Engine(engine_config(detector, None, yunet_model, True, 0, backend))
    for key, value in engine.describe().items():
        out.print(f"{key:>10}: {value}", markup=False)


@eval_app.command("lfw-identification")
@handles_errors
def eval_lfw_identification(
    root: Annotated[Path, typer.Option(help="LFW folder holding lfw-deepfunneled/")],
    data_dir: Annotated[Path, typer.Option(help="where the benchmark gallery is created")],
    detector: DetectorOpt = DEFAULT_DETECTOR,
    yunet_model: YunetOpt = None,
    flip: FlipOpt = True,
    index: Annotated[str, typer.Option(help="flat, flat16, ivf, hnsw")] = "flat",
    workers: WorkersOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json-out", help="write JSON")] = None,
) -> None:
    """Closed-set identification: enrol the first image of all 5,749 LFW people, identify
    the 7,484 other images, report rank-1/5/10 rates."""
    from yingyan.evaluation.lfw_identification import run_identification
    from yingyan.gallery.index import IndexSpec
    from yingyan.gallery.service import GalleryService
    from yingyan.store import open_database

    config = engine_config(detector, None, yunet_model, flip)
    with open_database(None, data_dir) as db:
        service = GalleryService(db, data_dir / "index", IndexSpec(kind=index))  # type: ignore[arg-type]
        report = run_identification(root, config, service, workers=workers)
        service.close()
    out.print(
        f"LFW identification: {report.enrolled} enrolled, {report.probes} probes; "
        f"rank-1 {100 * report.rank1:.2f}%, rank-5 {100 * report.rank5:.2f}%, "
        f"rank-10 {100 * report.rank10:.2f}% (centre fallbacks: {report.centre_fallbacks})",
        markup=False,
    )
    out.print(
        f"thresholds at FMR over gallery x probe impostors: {report.impostor_thresholds}",
        markup=False,
    )
    for name, rates in report.members.items():
        out.print(
            f"  {name}, same extraction, exact search: rank-1 {100 * rates['rank1']:.2f}%, "
            f"rank-5 {100 * rates['rank5']:.2f}%, rank-10 {100 * rates['rank10']:.2f}%",
            markup=False,
        )
    if json_out is not None:
        json_out.write_text(json.dumps(report.as_dict(), indent=2))


def _shared_root() -> Path:
    env = os.environ.get("YINGYAN_SHARED")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3].parent / "shared"


@app.command()
@handles_errors
def demo() -> None:
    """Verify three known photos from ../shared (or $YINGYAN_SHARED) end to end."""
    stills = _shared_root() / "datasets" / "video"
    names = ["obama.jpg", "obama2.jpg", "biden.jpg"]
    if not all((stills / n).is_file() for n in names):
        raise ImageError(f"demo images not found under {stills}; set YINGYAN_SHARED")
    engine = Engine()
    faces = {n: _main_face(engine, stills / n)[0] for n in names}
    thr = get_threshold(str(engine.model_id))
    out.print(f"Yingyan engine: model {engine.model_id}, threshold {thr.name} = {thr.score}")
    for a, b in (("obama.jpg", "obama2.jpg"), ("obama.jpg", "biden.jpg")):
        ta, tb = faces[a].template, faces[b].template
        assert ta is not None and tb is not None
        d = decide(compare(ta, tb), thr)
        out.print(f"  {a} vs {b}: score {d.score:.4f} → {'match' if d.match else 'no match'}")
    out.print(
        "Next: `yingyan detect IMG`, `yingyan verify IMG1 IMG2`, `yingyan eval lfw --root DIR`"
    )


from yingyan.cli import audit, calibrate, gallery, keys  # noqa: E402  (after the helpers above)

gallery.register(app)
calibrate.register(app)
keys.register(app)
audit.register(app)

from yingyan.cli import encryption  # noqa: E402

encryption.register(app)

from yingyan.cli import maintenance, retention, serve  # noqa: E402

maintenance.register(app)
retention.register(app)
serve.register(app)

from yingyan.cli import video  # noqa: E402

video.register(app)

from yingyan.cli import alerts, watch  # noqa: E402

alerts.register(app)
watch.register(app)

from yingyan.cli import models as model_commands  # noqa: E402
from yingyan.cli import pad  # noqa: E402

model_commands.register(models_app)
pad.register(eval_app)

from yingyan.cli import station  # noqa: E402

station.register(app)

if __name__ == "__main__":
    app()
