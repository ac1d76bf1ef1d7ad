"""`yingyan video search`: where does one sought person appear in a case's recorded videos.

The results are case material the investigator asked for: the best-shot crops of the matching
tracks and a JSON report go to --out, a folder created 0700 with files 0600 (readable by the
account that ran the search only). They are not sealed with the template keyring: that key
protects data at rest inside the platform, bound to its rows, and an exported crop must open
outside it; keeping and deleting them is the case's business. Nothing of the non-matching
tracks is written anywhere; the search itself is audited ("video.search").
"""

from __future__ import annotations

import json
import math
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from yingyan.cli.audit import cli_actor
from yingyan.cli.gallery import DataDirOpt, DbUrlOpt, KeyFileOpt, open_service, open_store
from yingyan.cli.options import (
    DetectorOpt,
    JsonOpt,
    YunetOpt,
    engine_config,
    handles_errors,
)
from yingyan.errors import ConfigError
from yingyan.privacy.files import private_dir, write_private
from yingyan.video.pipeline import PipelineSettings

video_app = typer.Typer(help="Recorded video: retrospective search.", no_args_is_help=True)
out = Console()
REPORT = "report.json"
RETRO_STRIDE = PipelineSettings().detect_every

if TYPE_CHECKING:
    from yingyan.watch.retrospective import FileProgress, RetroResult


class _Bar:
    """One progress bar per file (frames done / total), on stderr, gone when finished."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[int, TaskID] = {}

    def __call__(self, p: FileProgress) -> None:
        task = self.tasks.get(p.file_index)
        if task is None:
            label = f"{p.file_index + 1}/{p.files} {p.name}"
            task = self.progress.add_task(label, total=p.frames_total or None)
            self.tasks[p.file_index] = task
        self.progress.update(task, completed=p.frames_done)


def _out_dir(path: Path) -> Path:
    """--out: a new or empty folder, so one search's case material is not mixed with another's."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"--out {path} must be a new or empty folder")
    return path


def _subject(value: str) -> tuple[str, str]:
    gallery, _, external_id = value.partition("/")
    if not gallery or not external_id:
        raise ConfigError(f"--subject must read GALLERY/SUBJECT, not {value!r}")
    return gallery, external_id


def _write(result: RetroResult, folder: Path) -> dict[str, Any]:
    """Crops of the matching tracks and the report, each 0600 in a private folder."""
    private_dir(folder, tighten=False)
    report = result.as_dict()
    for row, match in zip(report["tracks"], result.matches, strict=True):
        name = f"{match.file.path.stem}_{match.file.sha256[:8]}_track{match.track_id:04d}.jpg"
        write_private(folder / name, match.crop_jpeg)
        row["crop_file"] = name
    write_private(folder / REPORT, (json.dumps(report, indent=2) + "\n").encode("utf-8"))
    return report


def _show(result: RetroResult, folder: Path) -> None:
    table = Table(title=f"case {result.case.reference}: {len(result.spans)} span(s)")
    for col in ("file", "from (s)", "to (s)", "score", "tracks"):
        table.add_column(col, justify="left" if col == "file" else "right")
    for span in result.spans:
        table.add_row(
            span.file.name,
            f"{span.first_pts:.2f}",
            f"{span.last_pts:.2f}",
            f"{span.score:.4f}",
            " ".join(map(str, span.tracks)),
        )
    if result.spans:
        out.print(table)
    else:
        out.print("not found in any file at this threshold", markup=False, soft_wrap=True)
    t = result.threshold
    fmr = f"; FMR {t.fmr:.1e} per track" if math.isfinite(t.fmr) else ""
    seconds = sum(f.seconds for f in result.files)
    media = sum(f.file.duration_s or 0.0 for f in result.files)
    speed = f", {media / seconds:.1f}x real time" if seconds > 0 and media > 0 else ""
    out.print(
        f"{result.tracks_searched} track(s) searched in {len(result.files)} file(s), "
        f"{len(result.matches)} matched; threshold {t.score:.4f} ({t.source}{fmr}); "
        f"{seconds:.1f} s{speed}; audit seq {result.audit_seq}",
        markup=False,
        soft_wrap=True,
    )
    out.print(
        f"{len(result.matches)} crop(s) and {REPORT} in {folder} (mode 0600: case material, "
        "readable by this account only; delete them when the case allows)",
        markup=False,
        soft_wrap=True,
    )


@video_app.command("search")
@handles_errors
def search(
    files: Annotated[list[Path], typer.Argument(help="recorded video files")],
    case: Annotated[str, typer.Option("--case", help="case reference (required)")],
    purpose: Annotated[str, typer.Option(help="why this search is made (required)")],
    legal_basis: Annotated[str, typer.Option(help="authorization or legal basis (required)")],
    out_dir: Annotated[Path, typer.Option("--out", help="new or empty folder for the results")],
    probe: Annotated[
        list[Path] | None, typer.Option("--probe", help="photo of the sought person (repeat)")
    ] = None,
    subject: Annotated[
        str | None, typer.Option("--subject", help="GALLERY/SUBJECT of a watchlist instead")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="explicit threshold on the cosine score")
    ] = None,
    fpir: Annotated[
        float | None, typer.Option("--fpir", help="target FPIR per track (default 1e-3)")
    ] = None,
    detector: DetectorOpt = "hog",
    upsample: Annotated[
        int, typer.Option(min=0, max=3, help="upsampling passes for small faces (0-3)")
    ] = 0,
    yunet_model: YunetOpt = None,
    detect_every: Annotated[
        int, typer.Option(min=1, max=8, help="detect on every N-th frame, track between")
    ] = RETRO_STRIDE,
    merge_gap: Annotated[
        float, typer.Option(min=0.0, help="join matching tracks this close (seconds)")
    ] = 2.0,
    threads: Annotated[
        int, typer.Option(min=1, max=64, help="onnxruntime threads (1, as a camera worker)")
    ] = 1,
    data: DataDirOpt = None,
    url: DbUrlOpt = None,
    key_file: KeyFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Where one person appears in recorded videos: time spans and crops of the matching tracks
    only, for a case; audited. The probe is one or more photos of the person (the largest face
    of each) or a watchlist subject. Video default: HOG without upsampling (faces from ~80 px;
    `--detector cnn` finds smaller ones, slower), every frame decoded, detection on every
    --detect-every-th."""
    from yingyan.engine import Engine
    from yingyan.watch.retrospective import (
        Case,
        inspect_videos,
        probe_from_photos,
        probe_from_subject,
        search_videos,
    )

    if (not probe) == (subject is None):
        raise ConfigError("give --probe PHOTO (one or more) or --subject GALLERY/SUBJECT")
    folder = _out_dir(out_dir)
    the_case = Case(case, purpose, legal_basis)
    videos = inspect_videos(files)  # a wrong file fails before the models load
    config = engine_config(detector, upsample, yunet_model, threads=threads)
    engine = Engine(config)
    with ExitStack() as stack:
        if subject is not None:
            service = stack.enter_context(open_service(data, url, key_file=key_file))
            db = service.db
            sought = probe_from_subject(service, *_subject(subject))
        else:
            db = stack.enter_context(open_store(data, url))
            sought = probe_from_photos(engine, probe or [])
        progress = stack.enter_context(
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} frames"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
        )
        result = search_videos(
            engine,
            db,
            sought,
            videos,
            the_case,
            actor=cli_actor(),
            threshold=threshold,
            target_fpir=fpir,
            pipeline=PipelineSettings(adaptive=False, detect_every=detect_every),
            merge_gap_s=merge_gap,
            progress=_Bar(progress),
        )
    report = _write(result, folder)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _show(result, folder)


def register(app: typer.Typer) -> None:
    app.add_typer(video_app, name="video")
