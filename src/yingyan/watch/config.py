"""A watch session and its cameras as a TOML file (`yingyan watch --config cameras.toml`).

The file describes what should be: `apply_watch_config` makes the database match it through the
functions of `watch/sessions.py`, so every start, change, camera added, changed or removed is
its own audited act, and the camera runtime follows the database. Everything is checked before
anything is applied, and each problem is named with its place in the file; see
docs/cameras.example.toml for the format.

`expires_in` counts from when the session is created: applying the same file again later does
not push the expiry on (an expiry stands for a legal basis, which a restart does not renew).
`expires_at` is matched exactly, so that is how an expiry is changed.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Final

from yingyan.errors import ConfigError, YingyanError
from yingyan.settings import Settings
from yingyan.store import Database
from yingyan.store.repository import NotFoundError
from yingyan.store.tables import utcnow
from yingyan.watch.runtime import SOURCE_FIELDS, camera_parts, check_engine
from yingyan.watch.sessions import (
    DEFAULT_TARGET_FPIR,
    SessionClosedError,
    WatchCamera,
    WatchSession,
    add_camera,
    change_camera,
    change_session,
    create_session,
    get_session,
    list_cameras,
    remove_camera,
)
from yingyan.watch.threshold import MAX_FPIR, MIN_FPIR

SESSION_KEYS: Final = frozenset(
    {
        "name",
        "purpose",
        "case_ref",
        "legal_basis",
        "expires_at",
        "expires_in",
        "watchlists",
        "target_fpir",
        "threshold",
    }
)
# A camera's own keys; the rest (tables and shorthands) become its stored settings.
CAMERA_KEYS: Final = frozenset({"name", "url", "enabled"})
CAMERA_SETTINGS: Final = (
    frozenset({"detect_every", "source", "pipeline", "engine", "crowd"}) | SOURCE_FIELDS
)
MAX_WORKER_ID: Final = 128  # a camera's worker is named "session/camera"
MAX_NAME: Final = 100
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)")
_UNITS: Final = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


@dataclass(frozen=True, slots=True)
class SessionConfig:
    name: str
    purpose: str
    case_ref: str
    legal_basis: str
    watchlists: tuple[str, ...]
    expires_at: datetime | None = None  # exactly one of expires_at, expires_in
    expires_in: timedelta | None = None
    target_fpir: float = DEFAULT_TARGET_FPIR
    threshold: float | None = None  # explicit; None: chosen for target_fpir

    def expiry(self, now: datetime) -> datetime:
        if self.expires_at is not None:
            return self.expires_at
        assert self.expires_in is not None
        return now + self.expires_in


@dataclass(frozen=True, slots=True)
class CameraConfig:
    name: str
    url: str  # may hold credentials: show `redact_url(url)`
    enabled: bool = True
    settings: Mapping[str, Any] = field(default_factory=dict)  # stored in watch_cameras


@dataclass(frozen=True, slots=True)
class WatchConfig:
    path: Path
    session: SessionConfig
    cameras: tuple[CameraConfig, ...]


def parse_duration(text: str) -> timedelta:
    """ "12h", "30m", "1h30m", "2d", "1.5h", "90s" -> a positive timedelta."""
    if not isinstance(text, str):
        raise ConfigError(f"{text!r} is not a duration (e.g. 12h, 30m, 1h30m, 2d)")
    compact = text.replace(" ", "").lower()
    if not compact or _DURATION.sub("", compact):
        raise ConfigError(f"{text!r} is not a duration (e.g. 12h, 30m, 1h30m, 2d)")
    seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(compact))
    if not 0 < seconds < 1e9:
        raise ConfigError(f"duration {text!r} must be positive")
    return timedelta(seconds=seconds)


def load_watch_config(path: Path | str, settings: Settings | None = None) -> WatchConfig:
    """Read and check a cameras file; ConfigError lists every problem with where it is. With
    `settings`, each camera's engine overrides are checked against the service's models too."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no such watch config file: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    problems: list[str] = []
    _unknown(data, {"session", "camera"}, "", problems)
    session = _session(data.get("session"), problems)
    cameras = _cameras(data.get("camera", []), session, settings, problems)
    if problems:
        listed = "\n  ".join(problems)
        raise ConfigError(f"{path}: {len(problems)} problem(s):\n  {listed}")
    assert session is not None
    return WatchConfig(path, session, tuple(cameras))


def apply_watch_config(
    db: Database, cfg: WatchConfig, actor: str, *, now: datetime | None = None
) -> WatchSession:
    """Make the database match `cfg`: start the session or change it, add the cameras it lacks,
    change those that differ, remove those no longer listed; each an audited act of `actor`."""
    when = now or utcnow()
    wanted = cfg.session
    try:
        current: WatchSession | None = get_session(db, wanted.name)
    except NotFoundError:
        current = None
    if current is None:
        session = create_session(
            db,
            name=wanted.name,
            purpose=wanted.purpose,
            case_ref=wanted.case_ref,
            legal_basis=wanted.legal_basis,
            expires_at=wanted.expiry(when),
            galleries=wanted.watchlists,
            actor=actor,
            target_fpir=wanted.target_fpir,
            threshold=wanted.threshold,
            now=when,
        )
    else:
        if not current.is_open(when):
            why = "stopped" if current.status != "active" else "expired"
            raise SessionClosedError(
                f"watch session {wanted.name!r} is {why}; a closed session does not start again: "
                "name a new session in the config"
            )
        changes = _session_changes(current, wanted)
        session = current
        if changes:
            session = change_session(db, wanted.name, actor=actor, now=when, **changes)
    _apply_cameras(db, cfg, actor, when)
    return session


def _apply_cameras(db: Database, cfg: WatchConfig, actor: str, now: datetime) -> None:
    name = cfg.session.name
    existing: dict[str, WatchCamera] = {c.name: c for c in list_cameras(db, name)}
    listed = {c.name for c in cfg.cameras}
    for gone in sorted(set(existing) - listed):
        remove_camera(db, name, gone, actor=actor)
    for camera in cfg.cameras:
        have = existing.get(camera.name)
        if have is None:
            add_camera(
                db,
                name,
                name=camera.name,
                url=camera.url,
                actor=actor,
                settings=camera.settings,
                enabled=camera.enabled,
                now=now,
            )
            continue
        changes: dict[str, Any] = {}
        if have.url != camera.url:
            changes["url"] = camera.url
        if dict(have.settings) != dict(camera.settings):
            changes["settings"] = camera.settings
        if have.enabled != camera.enabled:
            changes["enabled"] = camera.enabled
        if changes:
            change_camera(db, name, camera.name, actor=actor, now=now, **changes)


def _session_changes(current: WatchSession, wanted: SessionConfig) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for key in ("purpose", "case_ref", "legal_basis"):
        if getattr(current, key) != getattr(wanted, key):
            changes[key] = getattr(wanted, key)
    if wanted.expires_at is not None and wanted.expires_at != current.expires_at:
        changes["expires_at"] = wanted.expires_at
    if sorted(current.galleries) != sorted(set(wanted.watchlists)):
        changes["galleries"] = list(wanted.watchlists)
    if not math.isclose(current.target_fpir, wanted.target_fpir, rel_tol=1e-12):
        changes["target_fpir"] = wanted.target_fpir
    if current.threshold != wanted.threshold:
        changes["threshold"] = wanted.threshold  # None: back to the FPIR threshold
    return changes


# -- checking ------------------------------------------------------------------------------------


def _session(value: object, problems: list[str]) -> SessionConfig | None:
    if value is None:
        problems.append("[session] is missing")
        return None
    if not isinstance(value, dict):
        problems.append("session must be a table ([session])")
        return None
    before = len(problems)
    _unknown(value, SESSION_KEYS, "session.", problems)
    text = {
        key: _text(value, key, "session.", problems)
        for key in ("name", "purpose", "case_ref", "legal_basis")
    }
    name = text["name"]
    if name is not None and len(name) > MAX_NAME:
        problems.append(f"session.name: at most {MAX_NAME} characters")
    watchlists = _names(value.get("watchlists"), "session.watchlists", problems)
    expires_at, expires_in = _expiry(value, problems)
    fpir = _number(value, "target_fpir", DEFAULT_TARGET_FPIR, (MIN_FPIR, MAX_FPIR), problems)
    threshold = _number(value, "threshold", None, (-1.0, 1.0), problems)
    if len(problems) > before:
        return None
    assert all(v is not None for v in text.values())
    return SessionConfig(
        name=str(text["name"]),
        purpose=str(text["purpose"]),
        case_ref=str(text["case_ref"]),
        legal_basis=str(text["legal_basis"]),
        watchlists=tuple(watchlists),
        expires_at=expires_at,
        expires_in=expires_in,
        target_fpir=DEFAULT_TARGET_FPIR if fpir is None else fpir,
        threshold=threshold,
    )


def _cameras(
    value: object,
    session: SessionConfig | None,
    settings: Settings | None,
    problems: list[str],
) -> list[CameraConfig]:
    if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
        problems.append("camera must be an array of tables ([[camera]] once per camera)")
        return []
    cameras: list[CameraConfig] = []
    seen: dict[str, int] = {}
    for number, table in enumerate(value, 1):
        where = f"camera #{number}"
        name = _text(table, "name", f"{where}: ", problems)
        if name is not None:
            where = f"camera {name!r}"
            if name in seen:
                problems.append(f"{where}: the name is used by camera #{seen[name]} too")
            seen.setdefault(name, number)
            if len(name) > MAX_NAME or "/" in name:
                problems.append(f"{where}: a name has at most {MAX_NAME} characters and no '/'")
            elif session is not None and len(session.name) + 1 + len(name) > MAX_WORKER_ID:
                problems.append(
                    f"{where}: session and camera name together have at most "
                    f"{MAX_WORKER_ID - 1} characters"
                )
        url = _text(table, "url", f"{where}: ", problems)
        _unknown(table, CAMERA_KEYS | CAMERA_SETTINGS, f"{where}: ", problems)
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            problems.append(f"{where}: enabled must be true or false")
        stored = {k: v for k, v in table.items() if k in CAMERA_SETTINGS}
        try:
            _check_json(stored, where)
            if url is not None:
                parts = camera_parts(url, stored)
                if settings is not None:
                    check_engine(settings, parts.engine)
        except YingyanError as error:
            problems.append(f"{where}: {error.message}")
        if name is not None and url is not None and isinstance(enabled, bool):
            cameras.append(CameraConfig(name, url, enabled, stored))
    return cameras


def _expiry(
    table: Mapping[str, Any], problems: list[str]
) -> tuple[datetime | None, timedelta | None]:
    at, within = table.get("expires_at"), table.get("expires_in")
    if (at is None) == (within is None):
        problems.append("session: give exactly one of expires_at (ISO 8601) or expires_in ('12h')")
        return None, None
    if within is not None:
        try:
            return None, parse_duration(within)
        except ConfigError as error:
            problems.append(f"session.expires_in: {error.message}")
            return None, None
    try:
        when = _when(at)
    except ConfigError as error:
        problems.append(f"session.expires_at: {error.message}")
        return None, None
    if when <= utcnow():
        problems.append(f"session.expires_at: {when.isoformat()} has passed")
    return when, None


def _when(value: object) -> datetime:
    """A TOML date-time or an ISO 8601 string; without a zone it is UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"{value!r} is not an ISO 8601 time") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if not isinstance(value, datetime):
        raise ConfigError(f"{value!r} is not a time")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _text(table: Mapping[str, Any], key: str, where: str, problems: list[str]) -> str | None:
    value = table.get(key)
    if value is None:
        problems.append(f"{where}{key} is missing")
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}{key} must be a non-empty string")
        return None
    if not value.isprintable():
        problems.append(f"{where}{key} must be printable text")
        return None
    return value.strip()


def _names(value: object, where: str, problems: list[str]) -> list[str]:
    if value is None:
        problems.append(f"{where} is missing (the watchlist galleries to search)")
        return []
    if not isinstance(value, list) or not value:
        problems.append(f"{where} must be a non-empty list of gallery names")
        return []
    if not all(isinstance(v, str) and v.strip() for v in value):
        problems.append(f"{where} must hold gallery names (strings)")
        return []
    return [v.strip() for v in value]


def _number(
    table: Mapping[str, Any],
    key: str,
    default: float | None,
    bounds: tuple[float, float],
    problems: list[str],
) -> float | None:
    value = table.get(key, default)
    if value is None:
        return None
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        problems.append(f"session.{key} must be a number in [{low:g}, {high:g}], not {value!r}")
        return None
    return float(value)


def _unknown(
    table: Mapping[str, Any], known: frozenset[str] | set[str], where: str, problems: list[str]
) -> None:
    for key in sorted(set(table) - known):
        problems.append(f"{where}{key}: unknown key (known: {', '.join(sorted(known))})")


def _check_json(value: object, where: str) -> None:
    """Stored settings are JSON: TOML times are not allowed in them."""
    if isinstance(value, dict):
        for item in value.values():
            _check_json(item, where)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, where)
    elif isinstance(value, date | time):
        raise ConfigError(f"camera settings hold numbers, text and tables, not times ({value})")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError("camera settings hold finite numbers only")
