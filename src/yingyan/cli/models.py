"""`yingyan models list | fetch | add`: the optional models (YuNet, MobileFaceNet, MiniFASNet),
installed only on request into the model folder, where the engine then finds them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from yingyan.cli.options import JsonOpt, handles_errors, stderr

if TYPE_CHECKING:
    from yingyan.modelstore import Installed

ModelDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--model-dir",
        envvar="YINGYAN_MODEL_DIR",
        help="the model folder (default: models/ in the user data folder) [env YINGYAN_MODEL_DIR]",
    ),
]
# Wide enough for the paths when output is piped to a file.
out = Console(width=shutil.get_terminal_size((120, 24)).columns)


def _report(installed: Installed) -> None:
    m = installed.model
    if installed.already:
        out.print(
            f"{m.name} is already installed in {installed.folder} (sha256 checked); "
            "--force fetches it again",
            markup=False,
        )
        return
    out.print(
        f"installed {m.name} ({m.kind}, licence {m.licence}): "
        f"{', '.join(installed.files)} in {installed.folder}, with LICENSE and NOTICE",
        markup=False,
    )
    if m.name == "yunet":
        out.print("use it with: --detector yunet (or YINGYAN_DETECTOR=yunet)", markup=False)
    elif m.kind == "recognizer":
        out.print(f"use it with: YINGYAN_RECOGNIZER_MODEL={m.name}", markup=False)


@handles_errors
def models_list(model_dir: ModelDirOpt = None, as_json: JsonOpt = False) -> None:
    """The supported optional models: installed or not, where, and whether each file's sha256
    is the pinned one."""
    from yingyan.modelstore import all_status
    from yingyan.modelstore.store import model_folder

    statuses = all_status(model_dir)
    if as_json:
        out.print_json(
            data={"folder": str(model_folder(model_dir)), "models": [s.as_dict() for s in statuses]}
        )
        return
    table = Table(title=f"optional models in {model_folder(model_dir)}")
    for col in ("name", "kind", "licence", "state"):
        table.add_column(col)
    table.add_column("files (sha256 checked)", overflow="fold")
    for s in statuses:
        files = "\n".join(
            f"{s.model.name}/{f.asset.file}" + ("" if f.state == "ok" else f" ({f.state})")
            for f in s.files
        )
        table.add_row(s.model.name, s.model.kind, s.model.licence, s.state, files)
    out.print(table)
    out.print(
        "dlib's ResNet, MMOD and 5-point models ship with the face-recognition-models package "
        "(see `yingyan models info`).",
        markup=False,
    )


@handles_errors
def models_fetch(
    name: Annotated[str, typer.Argument(help="yunet, mobilefacenet or minifasnet")],
    url: Annotated[
        str | None,
        typer.Option(
            help="fetch from here instead of the publisher: the file's URL, or a folder URL "
            "ending in / holding the files under their names (a mirror)"
        ),
    ] = None,
    model_dir: ModelDirOpt = None,
    force: Annotated[bool, typer.Option(help="fetch again even if installed and intact")] = False,
    timeout: Annotated[
        float, typer.Option(min=1, max=600, help="seconds allowed per network operation")
    ] = 30.0,
) -> None:
    """Download a supported model from its publisher's address, check its pinned sha256 and
    install it with its licence notice in the model folder. Nothing is kept on any failure."""
    from yingyan.modelstore import fetch

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    )
    tasks: dict[str, TaskID] = {}

    def start(file: str, where: str, size: int) -> None:
        stderr.print(f"fetching {file} from {where}", markup=False, highlight=False, soft_wrap=True)
        tasks["current"] = progress.add_task(file, total=size)

    def advance(done: int, size: int) -> None:
        progress.update(tasks["current"], completed=done)

    with progress:
        installed = fetch(
            name,
            model_dir,
            url,
            force=force,
            timeout=timeout,
            on_start=start,
            on_progress=advance,
        )
    _report(installed)


@handles_errors
def models_add(
    files: Annotated[
        list[Path], typer.Argument(help="local copies of supported model files (any names)")
    ],
    name: Annotated[
        str | None, typer.Option(help="refuse the file unless it is this model's")
    ] = None,
    model_dir: ModelDirOpt = None,
) -> None:
    """Install supported model files from local copies (for machines without network): each is
    recognised by its pinned sha256, and an unknown or corrupted file is refused."""
    from yingyan.modelstore import add, model_status

    touched = []
    for path in files:
        installed = add(path, name, model_dir)
        _report(installed)
        touched.append(installed.model.name)
    for model_name in sorted(set(touched)):
        status = model_status(model_name, model_dir)
        if status.state == "partial":
            missing = ", ".join(f.asset.file for f in status.files if f.state == "missing")
            stderr.print(f"{model_name} still needs {missing}", markup=False, highlight=False)


def register(models_app: typer.Typer) -> None:
    """Add the commands to the `yingyan models` group."""
    models_app.command("list")(models_list)
    models_app.command("fetch")(models_fetch)
    models_app.command("add")(models_add)
