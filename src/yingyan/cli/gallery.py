"""Gallery commands: create/list/delete galleries, bulk enrollment, identification, dedup."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.table import Table
from sqlalchemy.orm import Session

from yingyan.cli.options import (
    DEFAULT_DETECTOR,
    DetectorOpt,
    FlipOpt,
    JsonOpt,
    UpsampleOpt,
    YunetOpt,
    engine_config,
    handles_errors,
    load_calibration,
)
from yingyan.errors import ConfigError, NoFaceError
from yingyan.gallery.service import GalleryService
from yingyan.store import Database
from yingyan.store.repository import KEEP, Keep

gallery_app = typer.Typer(help="Galleries: create, list, delete.", no_args_is_help=True)

DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="data folder [env YINGYAN_DATA_DIR; default user data dir]"),
]
DbUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url", help="SQLAlchemy URL [env YINGYAN_DATABASE_URL; default SQLite]"
    ),
]
IndexOpt = Annotated[
    str,
    typer.Option(
        "--index", help="flat, flat16, ivf, hnsw, milvus [milvus: env YINGYAN_MILVUS_URI]"
    ),
]
GalleryOpt = Annotated[str, typer.Option("--gallery", "-g", help="gallery name")]
KeyFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="template keyring [env YINGYAN_KEY_FILE or YINGYAN_TEMPLATE_KEY; "
        "default DATA_DIR/template-keys.json, created if absent]",
    ),
]


def data_dir(value: Path | None) -> Path:
    if value is not None:
        return value
    if os.environ.get("YINGYAN_DATA_DIR"):
        return Path(os.environ["YINGYAN_DATA_DIR"])
    from yingyan.settings import default_data_dir

    return default_data_dir()


@contextmanager
def open_store(data: Path | None, url: str | None) -> Iterator[Database]:
    """The platform's database: options first, then YINGYAN_DATABASE_URL, else SQLite in the
    data folder."""
    from yingyan.store import open_database

    with open_database(url or os.environ.get("YINGYAN_DATABASE_URL"), data_dir(data)) as db:
        yield db


@contextmanager
def open_service(
    data: Path | None, url: str | None, index: str = "flat", key_file: Path | None = None
) -> Iterator[GalleryService]:
    """The gallery service of the data folder, encrypting templates and index files with the
    configured keyring (see `yingyan.cli.encryption.service_cipher`)."""
    from yingyan.cli.encryption import service_cipher
    from yingyan.gallery.index import IndexSpec

    folder = data_dir(data)
    cipher = service_cipher(key_file, folder)
    milvus = None
    if index == "milvus":  # a Milvus server, or Milvus Lite on a file in the data folder
        milvus = os.environ.get("YINGYAN_MILVUS_URI") or str(folder / "milvus.db")
    with open_store(data, url) as db:
        spec = IndexSpec(kind=index)  # type: ignore[arg-type]
        service = GalleryService(db, folder / "index", spec, milvus, cipher)
        try:
            yield service
        finally:
            service.close()


def audit(
    service: GalleryService,
    operation: str,
    *,
    gallery: str | None = None,
    purpose: str | None = None,
    case_reference: str | None = None,
    **details: Any,
) -> None:
    """The audit entry of a search made by a command, in its own transaction, committed
    before the command answers (see `record_cli`)."""
    service.db.run(
        hook(operation, gallery=gallery, purpose=purpose, case_reference=case_reference, **details)
    )


def hook(
    operation: str,
    *,
    gallery: str | None = None,
    purpose: str | None = None,
    case_reference: str | None = None,
    result_details: Callable[[Any], dict[str, Any]] | None = None,
    **details: Any,
) -> Callable[..., None]:
    """The audit entry of an act made by a command, appended in the act's own transaction
    (a gallery service `audit` hook); `result_details` adds what the act returned."""
    from yingyan.cli.audit import record_cli

    def append(session: Session, result: Any = None) -> None:
        found = dict(details) | (result_details(result) if result_details else {})
        record_cli(
            session,
            operation,
            gallery=gallery,
            purpose=purpose,
            case_reference=case_reference,
            details=found,
        )

    return append


@gallery_app.command("create")
@handles_errors
def create(
    name: Annotated[str, typer.Argument(help="gallery name")],
    purpose: Annotated[str, typer.Option(help="why this gallery exists (required)")],
    legal_basis: Annotated[str, typer.Option(help="authorization or legal basis (required)")],
    kind: Annotated[str, typer.Option(help="enrollment or watchlist")] = "enrollment",
    threshold: Annotated[
        float | None,
        typer.Option(help="decision threshold on the raw cosine score, in [-1, 1]"),
    ] = None,
    min_quality: Annotated[float, typer.Option(help="minimum quality to enrol, 0..1")] = 0.0,
    keep_images: Annotated[bool, typer.Option(help="store enrollment images")] = False,
    data: DataDirOpt = None,
    url: DbUrlOpt = None,
    key_file: KeyFileOpt = None,
) -> None:
    """Create a gallery for the default model."""
    from yingyan.embedding import OnnxDlibResNet
    from yingyan.store import create_gallery

    model = OnnxDlibResNet().model_id
    with open_service(data, url, key_file=key_file) as service, service.db.session() as s:
        settings: dict[str, Any] = {  # the same values go to the row and its entry
            "purpose": purpose,
            "legal_basis": legal_basis,
            "threshold": threshold,
            "min_quality": min_quality,
        }
        create_gallery(
            s, name=name, kind=cast(Any, kind), model=model, keep_images=keep_images, **settings
        )
        hook("gallery.create", gallery=name, kind=kind, image_retention=keep_images, **settings)(s)
    typer.echo(f"created gallery {name!r} ({kind}, model {model})")


@gallery_app.command("list")
@handles_errors
def list_(
    data: DataDirOpt = None,
    url: DbUrlOpt = None,
    as_json: JsonOpt = False,
    key_file: KeyFileOpt = None,
) -> None:
    """Galleries with their purpose, legal basis, model and size."""
    from yingyan.store import count_subjects, count_templates, list_galleries

    rows = []
    with open_service(data, url, key_file=key_file) as service, service.db.session() as s:
        for g in list_galleries(s):
            rows.append(
                {
                    "name": g.name,
                    "kind": g.kind,
                    "purpose": g.purpose,
                    "legal_basis": g.legal_basis,
                    "model": g.model,
                    "threshold": g.threshold,
                    "subjects": count_subjects(s, gallery_id=g.id),
                    "templates": count_templates(s, gallery_id=g.id),
                }
            )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table()
    for col in ("name", "kind", "subjects", "templates", "model", "purpose"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            *(str(r[c]) for c in ("name", "kind", "subjects", "templates", "model", "purpose"))
        )
    from yingyan.cli.main import out

    out.print(table)


@gallery_app.command("delete")
@handles_errors
def delete(
    name: Annotated[str, typer.Argument(help="gallery name")],
    yes: Annotated[bool, typer.Option("--yes", help="confirm deletion")] = False,
    data: DataDirOpt = None,
    url: DbUrlOpt = None,
    key_file: KeyFileOpt = None,
) -> None:
    """Delete a gallery with all its subjects, templates and index."""
    if not yes:
        raise ConfigError("deleting a gallery erases all its subjects and templates: add --yes")
    with open_service(data, url, key_file=key_file) as service:
        service.delete(
            name,
            audit=hook(
                "gallery.delete",
                gallery=name,
                result_details=lambda n: {"templates_erased": n},
            ),
        )
    typer.echo(f"deleted gallery {name!r}")


@gallery_app.command("calibrate")
@handles_errors
def calibrate(
    name: Annotated[str, typer.Argument(help="gallery name")],
    profile: Annotated[
        Path | None, typer.Option(help="fair-score profile from `yingyan calibrate fit`")
    ] = None,
    none: Annotated[bool, typer.Option("--none", help="back to raw scores")] = False,
    threshold: Annotated[
        float | None,
        typer.Option(help="the gallery's threshold on the new scale (normalised, or cosine)"),
    ] = None,
    drop_threshold: Annotated[
        bool,
        typer.Option(
            "--drop-threshold",
            help="drop the gallery's own threshold: the profile's (or the model's) applies",
        ),
    ] = False,
    data: DataDirOpt = None,
    url: DbUrlOpt = None,
    key_file: KeyFileOpt = None,
) -> None:
    """Make a gallery's verify and identify normalise scores with a calibration profile. A
    threshold is on the scale of the scores it is compared with: a gallery that has its own is
    refused unless --threshold gives one on the new scale or --drop-threshold drops it."""
    if (profile is None) == (not none):
        raise ConfigError("give --profile PATH or --none")
    if threshold is not None and drop_threshold:
        raise ConfigError("give --threshold or --drop-threshold, not both")
    loaded = load_calibration(profile)
    change: float | Keep | None = None if drop_threshold else KEEP
    change = threshold if threshold is not None else change
    with open_service(data, url, key_file=key_file) as service:
        record = hook(
            "gallery.calibrate",
            gallery=name,
            profile=loaded and loaded.version,
            threshold="kept" if isinstance(change, Keep) else change,
        )
        service.set_calibration(name, loaded, threshold=change, audit=record)
    typer.echo(
        f"gallery {name!r}: "
        + (f"calibrated with {loaded.name} v{loaded.version}" if loaded else "raw scores")
    )


@gallery_app.command("migrate")
@handles_errors
def migrate(
    name: Annotated[str, typer.Argument(help="gallery name")],
    to_fusion: Annotated[
        Path | None, typer.Option("--to-fusion", help="target: a fusion file")
    ] = None,
    to_model: Annotated[
        Path | None, typer.Option("--to-model", help="target: an ONNX recognizer file")
    ] = None,
    to_manifest: Annotated[
        str | None, typer.Option("--manifest", help="the --to-model file's manifest")
    ] = None,
    drop_unmigrated: Annotated[
        bool,
        typer.Option(
            "--drop-unmigrated",
            help="switch even if some templates cannot be migrated (their subjects are listed "
            "for re-enrolment)",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="only show the status and what cannot migrate")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="confirm the switch")] = False,
    abandon: Annotated[
        bool, typer.Option("--abandon", help="give up: delete the staged templates")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=1024, help="images per batch")] = 16,
    detector: DetectorOpt = DEFAULT_DETECTOR,
    upsample: UpsampleOpt = None,
    yunet_model: YunetOpt = None,
    data: DataDirOpt = None,
    url: DbUrlOpt = None,
    index: IndexOpt = "flat",
    key_file: KeyFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move a gallery to another recognizer without downtime: stage the new model's templates
    from the kept images (resumable), then switch atomically and erase the old model's
    templates and index. Searches keep using the old model until the switch."""
    import dataclasses

    from yingyan.batch import progress_bar
    from yingyan.engine import Engine
    from yingyan.gallery import migration
    from yingyan.store import get_gallery

    if abandon:
        given = [
            flag
            for flag, value in (
                ("--to-fusion", to_fusion),
                ("--to-model", to_model),
                ("--manifest", to_manifest),
                ("--dry-run", dry_run),
                ("--drop-unmigrated", drop_unmigrated),
            )
            if value
        ]
        if given:
            raise ConfigError(
                "--abandon deletes every staged template of the gallery, whatever its target "
                f"model: give it without {', '.join(given)}"
            )
        with open_service(data, url, index, key_file) as service:
            gone = migration.abandon(
                service,
                name,
                audit=hook("gallery.migrate.abandon", gallery=name, result_details=_staged),
            )
        typer.echo(f"gallery {name!r}: {gone} staged templates deleted")
        return
    if (to_fusion is None) == (to_model is None):
        raise ConfigError("give exactly one of --to-fusion FILE or --to-model FILE")
    if to_manifest is not None and to_model is None:
        raise ConfigError("--manifest goes with --to-model")
    if not (dry_run or yes):
        raise ConfigError("the switch erases the old model's templates: add --yes (or --dry-run)")
    base = engine_config(detector, upsample, yunet_model)
    config = dataclasses.replace(  # refuses a missing file
        base, recognizer_model=to_model, recognizer_manifest=to_manifest, fusion=to_fusion
    )
    with open_service(data, url, index, key_file) as service:
        with service.db.read() as s:  # an unknown gallery is refused before models load
            get_gallery(s, name=name)
        engine = Engine(config)
        target = str(engine.model_id)
        if dry_run:
            _show_status(migration.status(service, name, target), as_json)
            return
        with progress_bar(not as_json) as bar:
            task = bar.add_task("staging", total=None)
            st = migration.stage(
                service,
                name,
                engine,
                batch_size=batch_size,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        audit(  # the kept images were decrypted and embedded by the new model
            service,
            "gallery.migrate.stage",
            gallery=name,
            source_model=st.source_model,
            target_model=target,
            staged=st.staged,
            unmigrated=[u.subject_id for u in st.unmigrated],
        )
        if st.unmigrated and not drop_unmigrated:
            _show_status(st, as_json)
        record = hook(
            "gallery.migrate",
            gallery=name,
            source_model=st.source_model,
            target_model=target,
            result_details=lambda r: {
                "templates_removed": r.removed,
                "templates_added": r.added,
                "subjects_dropped": [u.subject_id for u in r.dropped_subjects],
            },
        )
        report = migration.switch(
            service, name, target, drop_unmigrated=drop_unmigrated, audit=record
        )
    if as_json:
        body = {
            "gallery": name,
            "source_model": report.source_model,
            "target_model": report.target_model,
            "removed": report.removed,
            "added": report.added,
            "re_enrol": [u.as_dict() for u in report.dropped_subjects],
        }
        typer.echo(json.dumps(body, indent=2))
        return
    typer.echo(
        f"gallery {name!r}: {report.source_model} -> {report.target_model}; "
        f"{report.removed} templates erased, {report.added} added"
    )
    for u in report.dropped_subjects:
        typer.echo(f"  re-enrol {u.external_id} ({u.display_name or '-'}, subject {u.subject_id})")


def _staged(gone: int) -> dict[str, Any]:
    return {"staged_deleted": gone}


def _show_status(st: Any, as_json: bool) -> None:
    """A migration's status: counts and the subjects whose templates cannot migrate."""
    if as_json:
        typer.echo(json.dumps(st.as_dict(), indent=2))
        return
    typer.echo(
        f"gallery {st.gallery!r}: {st.source_model} -> {st.target_model}; {st.templates} "
        f"templates, {st.staged} staged, {st.pending} kept images to process"
    )
    if st.unmigrated:
        typer.echo(f"{len(st.unmigrated)} subjects cannot be fully migrated (re-enrol them):")
        for u in st.unmigrated:
            typer.echo(
                f"  {u.external_id} ({u.display_name or '-'}, subject {u.subject_id}): "
                f"{u.no_image} without kept image, {u.no_face} without a face for the new model"
            )


def register(app: typer.Typer) -> None:
    app.add_typer(gallery_app, name="gallery")

    @app.command()
    @handles_errors
    def enroll(
        gallery: GalleryOpt,
        manifest: Annotated[Path, typer.Option(help="CSV: external_id,image[,name,metadata]")],
        threads: Annotated[int, typer.Option(help="worker processes")] = 1,
        face: Annotated[
            str, typer.Option(help="single (refuse several), largest, central")
        ] = "single",
        report: Annotated[Path | None, typer.Option(help="per-image report CSV")] = None,
        detector: DetectorOpt = DEFAULT_DETECTOR,
        upsample: UpsampleOpt = None,
        yunet_model: YunetOpt = None,
        data: DataDirOpt = None,
        url: DbUrlOpt = None,
        index: IndexOpt = "flat",
        key_file: KeyFileOpt = None,
    ) -> None:
        """Bulk enrollment from a manifest: parallel, resumable, with a per-image report."""
        from yingyan.enrollment import enroll_manifest, file_sha256

        if face not in ("single", "largest", "central"):
            raise ConfigError("--face must be single, largest or central")
        config = engine_config(detector, upsample, yunet_model)
        with open_service(data, url, index, key_file) as service:
            batch = hook(
                "face.enroll",
                gallery=gallery,
                manifest_sha256=file_sha256(manifest),
                result_details=lambda out: {
                    "template_ids": [t for t, new in out if new],
                    "already": sum(1 for _, new in out if not new),
                },
            )
            result = enroll_manifest(
                service,
                gallery,
                manifest,
                config,
                workers=threads,
                policy=cast(Any, face),
                audit=batch,
            )
            audit(
                service,
                "face.enroll.bulk",
                gallery=gallery,
                manifest_sha256=file_sha256(manifest),
                enrolled=result.count("enrolled"),
                already=result.count("already"),
                refused=result.count("refused"),
            )
        if report is not None:
            result.write_csv(report)
        typer.echo(
            f"enrolled {result.count('enrolled')}, already enrolled {result.count('already')}, "
            f"refused {result.count('refused')} {result.reasons() or ''}".rstrip()
        )

    @app.command()
    @handles_errors
    def identify(
        gallery: GalleryOpt,
        images: Annotated[list[Path], typer.Argument(help="probe images")],
        k: Annotated[int, typer.Option("--k", help="candidates per probe")] = 5,
        mode: Annotated[str, typer.Option(help="investigation or threshold")] = "investigation",
        threshold: Annotated[float | None, typer.Option(help="threshold mode: score")] = None,
        detector: DetectorOpt = DEFAULT_DETECTOR,
        upsample: UpsampleOpt = None,
        yunet_model: YunetOpt = None,
        flip: FlipOpt = True,
        data: DataDirOpt = None,
        url: DbUrlOpt = None,
        index: IndexOpt = "flat",
        key_file: KeyFileOpt = None,
        purpose: Annotated[
            str | None, typer.Option(help="why this search is made (watchlists: required)")
        ] = None,
        case_reference: Annotated[
            str | None, typer.Option(help="case or file reference (watchlists: required)")
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Candidates for the largest face of each image: leads for human review. Every
        search is audited; a watchlist search must give its purpose and case reference."""
        from yingyan.cli.main import _main_face
        from yingyan.engine import Engine

        if mode not in ("investigation", "threshold"):
            raise ConfigError("--mode must be investigation or threshold")
        engine = Engine(engine_config(detector, upsample, yunet_model, flip))
        probes = []
        for img in images:
            face, _ = _main_face(engine, img)
            if face.template is None:
                raise NoFaceError(f"{img}: no face")
            probes.append(face.template)
        with open_service(data, url, index, key_file) as service:
            with service.db.session() as s:
                kind = service.gallery(s, gallery).kind
            if kind == "watchlist" and not (purpose and case_reference):
                raise ConfigError("a watchlist search needs --purpose and --case-reference")
            results = service.identify(gallery, probes, k=k, mode=mode, threshold=threshold)  # type: ignore[arg-type]
            audit(
                service,
                "identify",
                gallery=gallery,
                purpose=purpose,
                case_reference=case_reference,
                mode=mode,
                k=k,
                candidates=[
                    [[c.external_id, c.template_id, round(c.score, 4)] for c in cs]
                    for cs in results
                ],
            )
        payload = [
            {
                "image": str(img),
                "candidates": [
                    {
                        "rank": c.rank,
                        "external_id": c.external_id,
                        "name": c.display_name,
                        "score": round(c.score, 4),
                    }
                    for c in cs
                ],
            }
            for img, cs in zip(images, results, strict=True)
        ]
        if as_json:
            typer.echo(json.dumps({"mode": mode, "results": payload}, indent=2))
            return
        for img, cs in zip(images, results, strict=True):
            typer.echo(f"{img}:")
            for c in cs:
                typer.echo(f"  {c.rank}. {c.external_id}  score {c.score:.4f}")
            if not cs:
                typer.echo("  no candidate")

    @app.command()
    @handles_errors
    def dedup(
        gallery: GalleryOpt,
        threshold: Annotated[
            float,
            typer.Option(help="strict score threshold (0.955: FMR 1e-5 on LFW, dlib model)"),
        ] = 0.955,
        k: Annotated[int, typer.Option("--k", help="neighbours searched per template")] = 10,
        data: DataDirOpt = None,
        url: DbUrlOpt = None,
        index: IndexOpt = "flat",
        key_file: KeyFileOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Pairs of different subjects whose templates match above a strict threshold
        (possible duplicate registrations), found through the index."""
        with open_service(data, url, index, key_file) as service:
            pairs = service.duplicates(gallery, threshold, k=k)
            audit(service, "dedup", gallery=gallery, threshold=threshold, pairs=len(pairs))
        rows = [
            {"a": p.external_id_a, "b": p.external_id_b, "score": round(p.score, 4)} for p in pairs
        ]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        for r in rows:
            typer.echo(f"{r['a']}  {r['b']}  score {r['score']}")
        typer.echo(f"{len(rows)} possible duplicate pair(s) at score >= {threshold}")
