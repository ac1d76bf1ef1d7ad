"""`yingyan serve`: the REST service with its embedded defaults (SQLite + FAISS in the data
folder), or whatever the YINGYAN_* settings say."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from yingyan.cli.options import handles_errors
from yingyan.privacy.redaction import redact_url

console = Console(stderr=True, soft_wrap=True)  # commands stay copy-pastable


def _announce(settings: Any, key_file: Path | None) -> None:
    url = f"http://{settings.host}:{settings.port}"
    console.print(f"[bold green]Yingyan is listening on {url}[/] (API docs: {url}/docs)")
    console.print(", ".join(f"{k}: {v}" for k, v in where(settings).items()), markup=False)
    if key_file is not None:
        console.print(
            f"[bold]First admin key[/] written to {key_file} (readable only by you). Use it as\n"
            f'  curl -H "x-api-key: $(cat {key_file})" {url}/api/v1/galleries\n'
            "and create your own keys with `yingyan keys create --role admin --name ...`: the "
            "file is removed at the next start once another admin key exists or this one is "
            "revoked (or delete it once you have stored the key)."
        )
    else:
        console.print("API keys exist already: `yingyan keys list`, `yingyan keys create`.")


def where(settings: Any) -> dict[str, str]:
    """Where the service keeps its data, as shown at start: never a password or token."""
    shown = {
        "data folder": str(settings.data_dir),
        "database": redact_url(settings.database_url) or "SQLite in the data folder",
        "index": str(settings.index),
    }
    if settings.index == "milvus":
        shown["milvus"] = redact_url(settings.milvus_uri) or "Milvus Lite in the data folder"
    return shown


def register(app: typer.Typer) -> None:
    @app.command()
    @handles_errors
    def serve(
        host: Annotated[
            str | None, typer.Option(help="address [env YINGYAN_HOST; 127.0.0.1]")
        ] = None,
        port: Annotated[int | None, typer.Option(help="port [env YINGYAN_PORT; 8000]")] = None,
        data_dir: Annotated[
            Path | None, typer.Option("--data-dir", help="data folder [env YINGYAN_DATA_DIR]")
        ] = None,
        workers: Annotated[
            int | None, typer.Option(help="inference processes [env YINGYAN_WORKERS; cores]")
        ] = None,
    ) -> None:
        """Run the REST API (OpenAPI docs at /docs). Settings: YINGYAN_* variables or a TOML
        file named by YINGYAN_SETTINGS_FILE."""
        import uvicorn

        from yingyan.api.app import create_app
        from yingyan.settings import load_settings

        given = {"host": host, "port": port, "data_dir": data_dir, "workers": workers}
        settings = load_settings(**{k: v for k, v in given.items() if v is not None})
        app = create_app(settings, announce=_announce)
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            limit_concurrency=concurrency_limit(settings.max_connections),
        )


def concurrency_limit(max_connections: int | None) -> int | None:
    """uvicorn's `limit_concurrency` serving `max_connections` at once: uvicorn answers 503
    once the open connections (the new one included) or running requests reach its limit."""
    return None if max_connections is None else max_connections + 1
