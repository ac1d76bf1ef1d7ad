"""Installing a supported model: downloaded from its publisher's address (`fetch`) or copied from
a local file on an offline machine (`add`). Never called implicitly: only `yingyan models fetch`
and `yingyan models add` (or a caller of these functions) install anything.

A download streams into the staging folder (see `store`), hashed as it arrives, with a timeout
per network operation, an overall time limit and the pinned size as the cap; only http(s) is
followed, redirects included. Any failure (no network, HTTP error, wrong size or sha256) is a
ModelError naming the URL, and nothing is left installed.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Generator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit

from yingyan.errors import ModelError
from yingyan.modelstore.registry import (
    SUPPORTED,
    ModelAsset,
    SupportedModel,
    identify,
    largest_size,
    supported_model,
)
from yingyan.modelstore.store import Progress, model_status, sha256_file, staging

CHUNK = 1 << 16
Start = Callable[[str, str, int], None]  # file, URL, pinned size
DEFAULT_TIMEOUT = 30.0  # seconds per network operation (connect, each read)
DEFAULT_MAX_SECONDS = 900.0  # a whole file, so a trickling server cannot hold the command


@dataclass(frozen=True, slots=True)
class Installed:
    model: SupportedModel
    folder: Path  # <model folder>/<name>
    files: tuple[str, ...]  # what this call installed
    already: bool = False  # everything was already installed and intact: nothing done


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects (GitHub's raw URLs redirect) to http(s) only, never file: or ftp:."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urlsplit(newurl).scheme not in ("http", "https"):
            raise ModelError(f"{req.full_url} redirects to {newurl}: only http(s) is followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_HttpOnlyRedirects())


def asset_urls(model: SupportedModel, url: str | None = None) -> list[tuple[ModelAsset, str]]:
    """Where each file is fetched from: the publisher's address, or `url` — a file's URL for a
    one-file model, or a folder URL ending in "/" holding the files under their names."""
    if url is None:
        return [(a, a.url) for a in model.assets]
    if urlsplit(url).scheme not in ("http", "https"):
        raise ModelError(f"--url must be an http(s) URL, not {url!r}")
    if url.endswith("/"):
        return [(a, url + quote(a.file)) for a in model.assets]
    if len(model.assets) > 1:
        raise ModelError(
            f"{model.name} has {len(model.assets)} files "
            f"({', '.join(a.file for a in model.assets)}): give a folder URL ending in '/'"
        )
    return [(model.assets[0], url)]


def _download(
    asset: ModelAsset, url: str, timeout: float, max_seconds: float
) -> Generator[bytes, None, None]:
    """The response body in chunks; every network problem becomes a ModelError naming `url`."""
    deadline = time.monotonic() + max_seconds
    request = urllib.request.Request(url, headers={"User-Agent": "yingyan-models"})
    try:
        with _opener().open(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) != asset.size:
                raise ModelError(
                    f"{url} offers {int(length):,} bytes; the pinned {asset.file} has "
                    f"{asset.size:,}: refused, nothing installed"
                )
            while chunk := response.read(CHUNK):
                if time.monotonic() > deadline:
                    raise ModelError(f"{url}: not downloaded within {max_seconds:g} s")
                yield chunk
    except urllib.error.HTTPError as exc:
        raise ModelError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ModelError(f"cannot download {url}: {exc.reason}") from None
    except TimeoutError:
        raise ModelError(f"cannot download {url}: no answer within {timeout:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise ModelError(f"cannot download {url}: {exc!r}") from None


def fetch(
    name: str,
    folder: Path | None = None,
    url: str | None = None,
    *,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    on_start: Start | None = None,
    on_progress: Progress | None = None,
) -> Installed:
    """Download and install `name` (every file) from its publisher, or from `url`. An intact
    installation is left as it is unless `force`. `on_start(file, url, size)` and
    `on_progress(done, size)` report progress."""
    model = supported_model(name)
    status = model_status(name, folder)
    if status.state == "installed" and not force:
        return Installed(model, status.folder, (), already=True)
    sources = asset_urls(model, url)
    with staging(model, folder) as stage:
        for asset, where in sources:
            if on_start is not None:
                on_start(asset.file, where, asset.size)
            with closing(_download(asset, where, timeout, max_seconds)) as body:
                stage.write(asset, body, on_progress)
        described = url or "its publisher's address"
        home = stage.commit(f"by `yingyan models fetch` from {described}")
    return Installed(model, home, tuple(a.file for a, _ in sources))


def _chunks(path: Path) -> Generator[bytes, None, None]:
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            yield chunk


def add(path: Path, name: str | None = None, folder: Path | None = None) -> Installed:
    """Install a local copy of a supported model file, recognised by its sha256 (the name it
    has is ignored): for machines without network. `name` insists on one model."""
    path = Path(path)
    if name is not None:
        supported_model(name)  # an unknown name fails before the file is read
    if not path.is_file():
        raise ModelError(f"{'not a file' if path.exists() else 'no such file'}: {path}")
    try:
        size = path.stat().st_size
        if size > largest_size():
            raise ModelError(
                f"{path} ({size:,} bytes) is larger than any supported model file: not a "
                f"supported model ({', '.join(SUPPORTED)})"
            )
        digest = sha256_file(path)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None
    found = identify(digest)
    if found is None:
        raise ModelError(
            f"{path} (sha256 {digest[:16]}…, {size:,} bytes) is not a supported model file "
            f"(a corrupted or different file?); supported: "
            + "; ".join(
                f"{m.name} ({', '.join(a.file for a in m.assets)})" for m in SUPPORTED.values()
            )
        )
    model, asset = found
    if name is not None and model.name != name:
        raise ModelError(f"{path} is {model.name}'s {asset.file}, not a file of {name}")
    with staging(model, folder) as stage:
        # The copy is hashed again as it is written: the bytes installed are the bytes checked.
        with closing(_chunks(path)) as body:
            stage.write(asset, body)
        home = stage.commit(f"by `yingyan models add` from {path.resolve()}")
    return Installed(model, home, (asset.file,))
