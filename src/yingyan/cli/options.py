"""Engine options shared by every command, and error handling that turns YingyanError into a
one-line message and a non-zero exit instead of a traceback."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from yingyan.config import EngineConfig
from yingyan.errors import ConfigError, YingyanError

if TYPE_CHECKING:
    from yingyan.calibration import FairScoreProfile

P = ParamSpec("P")
R = TypeVar("R")

stderr = Console(stderr=True)
MAX_WORKERS = 1024
# The engine's default detector, for commands that spell their default out.
DEFAULT_DETECTOR: str = EngineConfig().detector

DetectorOpt = Annotated[
    str,
    typer.Option(
        "--detector",
        "-d",
        help="hog (fast), cnn (dlib MMOD), hog+cnn (CNN where HOG finds none), yunet (ONNX)",
    ),
]
UpsampleOpt = Annotated[
    int | None,
    typer.Option(
        "--upsample",
        min=0,
        max=3,
        help="upsampling passes for small faces (0-3; default: hog/cnn 1, yunet 0)",
    ),
]
YunetOpt = Annotated[
    Path | None,
    typer.Option("--yunet-model", help="YuNet ONNX file [env YINGYAN_YUNET_MODEL]"),
]
FlipOpt = Annotated[bool, typer.Option("--flip/--no-flip", help="average chip and mirror")]
BackendOpt = Annotated[
    str, typer.Option("--backend", help="onnx (fast, default) or dlib (reference)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
# Bounded: a huge integer is a clear usage error (exit 2), not an OverflowError deep inside.
WorkersOpt = Annotated[
    int | None, typer.Option(min=1, max=MAX_WORKERS, help="worker processes (default all)")
]
# labelled evaluation data (fairness, calibration)
DatasetOpt = Annotated[
    str, typer.Option(help="utkface, lfw-gender, lfw-unpaired, lfw-unpaired-gender or csv")
]
DatasetRootOpt = Annotated[Path, typer.Option(help="the dataset folder, or the labels CSV")]
HalfOpt = Annotated[int | None, typer.Option(min=0, max=1, help="only one fixed half (0 or 1)")]
CalibrationOpt = Annotated[
    Path | None, typer.Option(help="fair-score profile to normalise scores with")
]


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time given to `option`; without a zone it is UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} must be an ISO 8601 time, not {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def load_calibration(path: Path | None) -> FairScoreProfile | None:
    """The --calibration profile, if one was given (imported only then)."""
    if path is None:
        return None
    from yingyan.calibration import load_profile

    return load_profile(path)


def engine_config(
    detector: str,
    upsample: int | None,
    yunet_model: Path | None,
    flip: bool = True,
    jitter: int = 0,
    backend: str = "onnx",
    threads: int | None = None,
) -> EngineConfig:
    if yunet_model is None and os.environ.get("YINGYAN_YUNET_MODEL"):
        yunet_model = Path(os.environ["YINGYAN_YUNET_MODEL"])
    env = os.environ.get
    recognizer = (
        Path(env("YINGYAN_RECOGNIZER_MODEL", "")) if env("YINGYAN_RECOGNIZER_MODEL") else None
    )
    fusion = Path(env("YINGYAN_FUSION", "")) if env("YINGYAN_FUSION") else None
    model_dir = Path(env("YINGYAN_MODEL_DIR", "")) if env("YINGYAN_MODEL_DIR") else None
    return EngineConfig(
        model_dir=model_dir,
        recognizer_model=recognizer,
        recognizer_manifest=env("YINGYAN_RECOGNIZER_MANIFEST") or None,
        fusion=fusion,
        detector=detector,  # type: ignore[arg-type]  # validated by EngineConfig
        upsample=upsample,
        yunet_model=yunet_model,
        flip=flip,
        jitter=jitter,
        backend=backend,  # type: ignore[arg-type]  # validated by EngineConfig
        threads=threads,
    )


def handles_errors(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except YingyanError as exc:
            stderr.print(
                f"[red]error[/red] ({exc.code}): {escape(exc.message)}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            stderr.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper
