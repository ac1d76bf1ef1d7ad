"""A real `yingyan serve` process for the tests that need one (the CompreFace SDK, several
processes on one gallery, start-up output): started on a free loopback port, waited for until
`/ready`, stopped at the end; its output goes to a log file the test can read."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from yingyan.api.app import INITIAL_KEY_FILE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, url: str, data: Path, process: subprocess.Popen[str], log: Path) -> None:
        self.url, self.data, self.process, self.log = url, data, process, log

    @property
    def admin(self) -> str:
        return (self.data / INITIAL_KEY_FILE).read_text().strip()

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.admin}

    def output(self) -> str:
        return self.log.read_text()


@contextmanager
def running_server(
    data: Path,
    *,
    workers: int = 1,
    database_url: str | None = None,
    env: Mapping[str, str | None] | None = None,
) -> Iterator[Server]:
    """`yingyan serve --data-dir data` (on `database_url` if given) until the block ends;
    `env` entries override the environment (None removes a variable)."""
    port = free_port()
    environ = os.environ | {"YINGYAN_WORKERS": str(workers), "YINGYAN_LOG_JSON": "false"}
    if database_url:
        environ["YINGYAN_DATABASE_URL"] = database_url
    for name, value in (env or {}).items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    log = data.parent / f"serve-{port}.log"
    cmd = [sys.executable, "-m", "yingyan.cli.main", "serve", "--port", str(port)]
    with log.open("w") as out:
        process = subprocess.Popen(
            [*cmd, "--data-dir", str(data)], env=environ, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):  # the workers load their models before /ready says so
            if process.poll() is not None:
                pytest.fail(f"yingyan serve exited: {log.read_text()}")
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("yingyan serve did not become ready in 120 s")
        yield Server(url, data, process, log)  # type: ignore[arg-type]
    finally:
        process.terminate()
        process.wait(timeout=30)
