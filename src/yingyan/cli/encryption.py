"""`yingyan encryption`: the template keyring (init, rotate, retire, status) and the migration
of data stored in clear (migrate).

Keys come from `--key-file`, else $YINGYAN_KEY_FILE, else $YINGYAN_TEMPLATE_KEY (the keyring
JSON or one base64 key), else `<data dir>/template-keys.json`, which gallery commands create
when absent: templates are encrypted by default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from yingyan.cli.audit import cli_actor, record_cli
from yingyan.cli.gallery import DataDirOpt, DbUrlOpt, data_dir, open_store
from yingyan.cli.options import handles_errors
from yingyan.errors import ConfigError
from yingyan.privacy import (
    DEFAULT_KEY_FILE,
    ENV_KEY,
    KeySource,
    TemplateCipher,
    add_key,
    create_keyring,
    key_source,
    load_cipher,
    open_cipher,
)

if TYPE_CHECKING:
    from yingyan.privacy.rotation import RotationReport

encryption_app = typer.Typer(
    help="Template encryption keys: init, rotate, retire, status, migrate.", no_args_is_help=True
)

KeyFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="template keyring file [env YINGYAN_KEY_FILE, or the key in YINGYAN_TEMPLATE_KEY; "
        "default DATA_DIR/template-keys.json]",
    ),
]


def resolve_source(key_file: Path | None, folder: Path) -> KeySource:
    return key_source(key_file, os.environ, folder / DEFAULT_KEY_FILE)


def service_cipher(key_file: Path | None, folder: Path) -> TemplateCipher:
    """The cipher gallery commands use (see `open_cipher`)."""
    return open_cipher(resolve_source(key_file, folder))


def _key_file(source: KeySource, action: str) -> Path:
    if source.key_file is None:
        raise ConfigError(
            f"the keys come from ${ENV_KEY}: {action} them where that value is managed, "
            "or use a key file (--key-file)"
        )
    return source.key_file


@encryption_app.command("init")
@handles_errors
def init(key_file: KeyFileOpt = None, data: DataDirOpt = None) -> None:
    """Create the key file (mode 0600) with one random AES-256 key."""
    path = _key_file(resolve_source(key_file, data_dir(data)), "create")
    keyring = create_keyring(path)
    typer.echo(
        f"created {path} (active key {keyring.active}); back it up apart from the database: "
        "without it the templates cannot be read"
    )


@encryption_app.command("rotate")
@handles_errors
def rotate(
    key_file: KeyFileOpt = None,
    data: DataDirOpt = None,
    url: DbUrlOpt = None,
    new_key: Annotated[
        bool, typer.Option(help="add a new active key first (else re-encrypt only)")
    ] = True,
    batch_size: Annotated[int, typer.Option(help="templates per transaction")] = 1000,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Re-encrypt every template (and index file) under a new active key; plaintext ones too.
    Then `retire` the old keys."""
    from yingyan.batch import progress_bar
    from yingyan.privacy.rotation import (
        count_templates_to_scan,
        reseal_index_files,
        rotate_templates,
    )
    from yingyan.watch.alerts import reseal_crops

    folder = data_dir(data)
    source = resolve_source(key_file, folder)
    if new_key:
        typer.echo(f"new active key {add_key(_key_file(source, 'add keys to'))}")
    cipher = load_cipher(source.key_file, source.env_value)
    assert cipher is not None
    with open_store(folder, url) as db, progress_bar(progress) as bar:
        task = bar.add_task("re-encrypting", total=count_templates_to_scan(db))
        report = rotate_templates(
            db, cipher, batch_size=batch_size, progress=lambda n: bar.advance(task, n)
        )
        files, dropped = reseal_index_files(folder / "index", cipher)
        crops = reseal_crops(db, cipher, actor=cli_actor())  # alerts' best shots
        details = {
            "active_key": report.active_key,
            "rewritten": report.rewritten,
            "crops_rewritten": crops,
            "images_rewritten": report.images,  # a count ("images" alone is refused)
            "scanned": report.scanned,
            "staged_rewritten": report.staged,  # a migration's staged rows (counts)
            "staged_scanned": report.staged_scanned,
            "index_files": files,
        }
        with db.session() as s:  # key management is audited, never with key material
            record_cli(s, "encryption.rotate", details=details)
    typer.echo(
        f"{report.rewritten} of {report.scanned} template(s) and {report.images} kept image(s) "
        f"re-encrypted under {report.active_key}{_staged_note(report)}; {files} index file(s) "
        f"and {crops} alert crop(s) re-encrypted"
        + (f", {len(dropped)} unreadable one(s) removed (rebuilt on use)" if dropped else "")
    )


def _staged_note(report: RotationReport) -> str:
    """The staged templates of a gallery migration between models, when there are any."""
    if not report.staged_scanned:
        return ""
    return (
        f", and {report.staged} of {report.staged_scanned} staged template(s) "
        "(a gallery migration in progress)"
    )


@encryption_app.command("migrate")
@handles_errors
def migrate(
    key_file: KeyFileOpt = None,
    data: DataDirOpt = None,
    url: DbUrlOpt = None,
    batch_size: Annotated[int, typer.Option(help="templates per transaction")] = 1000,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Seal under the active key what is stored in clear (templates, kept images, index files
    from before encryption): refused on read until then. Sealed data is left as it is."""
    from yingyan.batch import progress_bar
    from yingyan.privacy.rotation import (
        count_templates_to_scan,
        reseal_index_files,
        rotate_templates,
    )
    from yingyan.watch.alerts import reseal_crops

    folder = data_dir(data)
    cipher = service_cipher(key_file, folder)  # creates the default key file, like gallery ones
    with open_store(folder, url) as db, progress_bar(progress) as bar:
        task = bar.add_task("sealing", total=count_templates_to_scan(db))
        report = rotate_templates(
            db,
            cipher,
            batch_size=batch_size,
            progress=lambda n: bar.advance(task, n),
            only_plaintext=True,
        )
        files, dropped = reseal_index_files(folder / "index", cipher, only_plaintext=True)
        crops = reseal_crops(db, cipher, actor=cli_actor(), only_plaintext=True)
        details = {
            "active_key": report.active_key,
            "templates_sealed": report.rewritten,  # counts, never the data
            "crops_sealed": crops,
            "images_sealed": report.images,
            "scanned": report.scanned,
            "staged_sealed": report.staged,
            "staged_scanned": report.staged_scanned,
            "index_files": files,
        }
        with db.session() as s:  # audited like the other key operations
            record_cli(s, "encryption.migrate", details=details)
    typer.echo(
        f"{report.rewritten} plaintext template(s), {report.images} kept image(s) and {files} "
        f"index file(s) sealed under {report.active_key} ({report.scanned} template(s) scanned"
        f", {crops} alert crop(s) sealed)"
        + (
            f", {report.staged} of {report.staged_scanned} staged template(s) sealed"
            if report.staged_scanned
            else ""
        )
        + (f", {len(dropped)} unreadable index file(s) removed (rebuilt on use)" if dropped else "")
    )


@encryption_app.command("retire")
@handles_errors
def retire(
    key_id: Annotated[str, typer.Argument(help="the key to remove from the keyring")],
    key_file: KeyFileOpt = None,
    data: DataDirOpt = None,
    url: DbUrlOpt = None,
) -> None:
    """Remove an old key; refused while any stored template is still encrypted under it."""
    from yingyan.privacy.rotation import retire_key

    folder = data_dir(data)
    path = _key_file(resolve_source(key_file, folder), "retire")
    with open_store(folder, url) as db:
        retire_key(db, path, key_id)
        with db.session() as s:
            record_cli(s, "encryption.retire", details={"key_id": key_id})
    typer.echo(f"retired key {key_id!r} from {path}")


@encryption_app.command("status")
@handles_errors
def status(key_file: KeyFileOpt = None, data: DataDirOpt = None, url: DbUrlOpt = None) -> None:
    """Which keys encrypt how many stored templates, and how many are still plaintext (kept
    images and a migration's staged templates too)."""
    from yingyan.cli.main import out
    from yingyan.privacy.rotation import key_usage

    folder = data_dir(data)
    source = resolve_source(key_file, folder)
    cipher = None
    if not (source.is_default and source.key_file is not None and not source.key_file.exists()):
        cipher = load_cipher(source.key_file, source.env_value)
    with open_store(folder, url) as db:
        usage = key_usage(db)
    known = set(cipher.key_ids) if cipher is not None else set()
    table = Table(title=f"templates by key ({source.describe() if cipher else 'no keyring'})")
    for col in ("key", "templates", "state"):
        table.add_column(col)
    for key_id in sorted(known | set(usage.by_key) | set(usage.staged_by_key)):
        count = usage.by_key.get(key_id, 0)
        # Kept images and staged templates hold a key in use too (see `retire_key`).
        state = "old" if usage.uses(key_id) else "old, unused: can be retired"
        if cipher is not None and key_id == cipher.active_key_id:
            state = "active"
        if key_id not in known:
            state = "MISSING from the keyring: these templates cannot be read"
        table.add_row(key_id, str(count), state)
    table.add_row(
        "(plaintext)",
        str(usage.plaintext),
        "refused on read: `yingyan encryption migrate`" if usage.plaintext else "",
    )
    out.print(table)
    if usage.images_by_key or usage.plaintext_images:
        kept = ", ".join(f"{k}: {n}" for k, n in usage.images_by_key.items()) or "none sealed"
        typer.echo(f"kept images by key: {kept}; in plaintext: {usage.plaintext_images}")
    if usage.staged_by_key or usage.plaintext_staged:
        staged = ", ".join(f"{k}: {n}" for k, n in usage.staged_by_key.items()) or "none sealed"
        typer.echo(
            f"staged templates (a gallery migration between models) by key: {staged}; "
            f"in plaintext: {usage.plaintext_staged}"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(encryption_app, name="encryption")
