"""URLs as they may be shown or logged: without the credentials they carry.

A database URL (`postgresql://user:secret@host/db`) or a Milvus URI
(`https://user:token@host:19530`) names a password in its user-info part, sometimes in its query
(`?password=...`); every place that prints or logs one goes through `redact_url`.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit

MASK: Final = "***"
_DB_SCHEMES: Final = ("postgres", "sqlite")  # user-info without a colon: a user name
_SECRET_PARAM: Final = re.compile(r"pass|secret|token|key|credential|auth", re.IGNORECASE)


def redact_url(url: str | None) -> str | None:
    """`url` with any password, token or secret query value replaced by `***`; a plain path
    (SQLite, Milvus Lite) is returned as it is, and one that does not parse is masked whole."""
    if url is None or "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        netloc = _netloc(parts.netloc, bare_is_user=parts.scheme.startswith(_DB_SCHEMES))
        query = urlencode(
            [
                (k, MASK if _SECRET_PARAM.search(k) else v)
                for k, v in parse_qsl(parts.query, keep_blank_values=True)
            ],
            safe="*",
        )
    except ValueError:
        return f"{url.split('://', 1)[0]}://{MASK}"
    # Rebuilt by hand: urlunsplit drops the `//` of an empty host (`sqlite:////abs/path`).
    out = f"{parts.scheme}://{netloc}{parts.path}"
    return (
        out
        + (f"?{query}" if parts.query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


def _netloc(netloc: str, *, bare_is_user: bool) -> str:
    """`user:password@host` → `user:***@host`. A user-info with no colon is a user name in a
    database URL, but a bare token in a Milvus URI (`https://<token>@host`): masked there."""
    if "@" not in netloc:
        return netloc
    userinfo, host = netloc.rsplit("@", 1)
    if ":" in userinfo:
        return f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
    return f"{userinfo if bare_is_user else MASK}@{host}"
