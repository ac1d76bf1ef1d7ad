"""`yingyan station`: check a face station's profile, and run one kiosk attempt locally with the
same library function the service runs (`station.kiosk`).

    yingyan station check PROFILE [--json]
    yingyan station attempt PROFILE --rgb a.png [--rgb a2.png ...] --nir b.png [--nir b2.png ...]
        [--nir-off c.png ...] (--subject X [--gallery G] | --id-photo p.jpg) [--json]

`attempt` exits 0 when the attempt is accepted, 1 for any other outcome (attack, retry,
no_match, no_face), 2 on bad input (files, counts, profile). Its audit entry goes to the data
folder's log with the command's account as actor, as for the other commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from yingyan.cli.gallery import DataDirOpt, DbUrlOpt
from yingyan.cli.options import JsonOpt, handles_errors
from yingyan.errors import ConfigError, ImageError

out = Console()
station_app = typer.Typer(help="Face stations: profiles and kiosk attempts.", no_args_is_help=True)
ProfileArg = Annotated[Path, typer.Argument(help="the station profile (TOML)")]
RgbOpt = Annotated[list[Path] | None, typer.Option(help="camera 1 (colour): a file per frame")]
NirOpt = Annotated[list[Path] | None, typer.Option(help="camera 2 (NIR): one per --rgb")]


def register(app: typer.Typer) -> None:
    app.add_typer(station_app, name="station")


@station_app.command("check")
@handles_errors
def check(profile: ProfileArg, as_json: JsonOpt = False) -> None:
    """Validate a profile: calibration, detector, PAD policy and models; print what was found."""
    from yingyan.engine import Engine
    from yingyan.settings import load_settings
    from yingyan.station.kiosk import open_station
    from yingyan.station.profile import load_profile

    settings = load_settings()
    p = load_profile(profile, settings.model_dir)
    station = open_station(p, Engine(settings.engine_config()))
    if station.texture is not None:
        _ = station.texture._sessions  # the ONNX files load (a bad one is a ModelError now)
    found = p.describe() | {
        "pad_policy": {
            "version": station.policy.version,
            "fitted_on": station.policy.fitted_on,
            "gates": list(station.policy.gates),
            "combined": list(station.policy.cues),
            "window": station.policy.window,
            "min_frames": station.policy.min_frames,
        }
    }
    if as_json:
        out.print_json(data=found)
        return
    out.print(f"[green]ok[/green] station {p.name} ({p.cameras}) from {escape(str(p.path))}")
    for key, value in found.items():
        if key in ("name", "profile", "cameras"):
            continue
        out.print(f"  {key}: {escape(json.dumps(value))}", soft_wrap=True)


@station_app.command("attempt")
@handles_errors
def attempt(
    profile: ProfileArg,
    rgb: RgbOpt = None,
    nir: NirOpt = None,
    rgb2: Annotated[list[Path] | None, typer.Option(help="camera 2 of an rgb+rgb station")] = None,
    nir_off: Annotated[
        list[Path] | None, typer.Option(help="camera 2 with the illuminator off")
    ] = None,
    subject: Annotated[str | None, typer.Option(help="the enrolled subject to verify")] = None,
    gallery: Annotated[str | None, typer.Option(help="its gallery (the profile's)")] = None,
    id_photo: Annotated[Path | None, typer.Option(help="an ID photo to verify against")] = None,
    data_dir: DataDirOpt = None,
    database_url: DbUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One attempt: quality gate, liveness over the frames, 1:1 verification; prints the
    outcome (accepted, attack, retry, no_match, no_face) with reasons and the PAD decision."""
    from yingyan.audit import AuditRecord, append
    from yingyan.cli.audit import cli_actor
    from yingyan.engine import Engine
    from yingyan.gallery.factory import engine_config_for, open_gallery_service
    from yingyan.settings import load_settings
    from yingyan.station.kiosk import (
        AttemptFrames,
        AttemptInputError,
        audit_details,
        check_target,
        decode_pairs,
        open_station,
        run_attempt,
    )
    from yingyan.station.profile import load_profile
    from yingyan.store import get_gallery, get_subject

    given = {"data_dir": data_dir, "database_url": database_url}
    settings = load_settings(**{k: v for k, v in given.items() if v is not None})
    p = load_profile(profile, settings.model_dir)
    check_target(p, subject, id_photo is not None)
    if subject is not None and gallery is not None and gallery != p.gallery:
        raise AttemptInputError(f"station {p.name} verifies against gallery {p.gallery!r}")
    second = nir if p.cameras == "rgb+nir" else rgb2
    frames = AttemptFrames(_read(rgb, "--rgb"), _read(second, ""), _read(nir_off, "--nir-off"))
    galleries = open_gallery_service(settings)
    try:
        config = settings.engine_config()
        if subject is not None:
            assert p.gallery is not None
            config = engine_config_for(settings, galleries.gallery_model(p.gallery))
            with galleries.db.read() as session:  # an unknown subject: exit 2 before any work
                gallery_id = get_gallery(session, name=p.gallery).id
                get_subject(session, gallery_id=gallery_id, external_id=subject)
        engine = Engine(config)
        station = open_station(p, engine)
        pairs = decode_pairs(station, frames, engine)
        photo = engine.load(_read([id_photo], "--id-photo")[0]) if id_photo else None
        result = run_attempt(
            station, pairs, engine, id_photo=photo, subject=subject, galleries=galleries
        )
        record = AuditRecord(
            cli_actor(),
            "station.attempt",
            gallery=p.gallery if subject is not None else None,
            details=audit_details(result),
        )
        galleries.db.run(lambda s: append(s, record))
    finally:
        galleries.close()
        galleries.db.close()
    _print(result, as_json)
    if not result.accepted:
        raise typer.Exit(1)


def _read(paths: list[Path] | None, option: str) -> tuple[bytes, ...]:
    out_ = []
    for path in paths or []:
        try:
            out_.append(path.read_bytes())
        except OSError as e:
            raise ImageError(f"{path}: cannot read ({e.strerror})") from None
    if option == "--rgb" and not out_:
        raise ConfigError("give camera 1's frames with --rgb (one per frame)")
    return tuple(out_)


def _print(result: Any, as_json: bool) -> None:
    if as_json:
        out.print_json(data=_plain(result))
        return
    colour = {"accepted": "green", "attack": "red", "no_match": "red"}.get(result.outcome, "yellow")
    out.print(f"[{colour}]{result.outcome.upper()}[/{colour}]  station {result.station}")
    for reason in result.reasons:
        out.print(f"  - {escape(reason)}", soft_wrap=True)
    pad = result.pad
    score = "n/a" if pad.score is None else f"{pad.score:.3f}"
    out.print(
        f"PAD {pad.verdict} (score {score}, {pad.frames} frame(s), by "
        f"{', '.join(pad.decided_by) or '-'};"
        f" policy {pad.policy}): {escape(pad.reason)}",
        soft_wrap=True,
    )
    for f in result.frames:
        cues = ", ".join(
            f"{c.cue} {c.decision}" + ("" if c.score is None else f" {c.score:.2f}") for c in f.cues
        )
        out.print(f"  frame {f.index}: {f.verdict}: {cues}", soft_wrap=True)
    v = result.verification
    if v is not None:
        out.print(
            f"1:1 {v.target}: score {v.score:.4f} vs {v.threshold_name} {v.threshold:.4f} → "
            f"{'match' if v.match else 'no match'} ({v.model})",
            soft_wrap=True,
        )
    timings = ", ".join(f"{k} {v:.0f}" for k, v in result.timings_ms.items())
    out.print(f"ms: {timings}", soft_wrap=True)


def _plain(value: Any) -> Any:
    from dataclasses import fields, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
