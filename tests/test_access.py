"""API keys and roles on SQLite and PostgreSQL: only a hash of the token is stored, the token is
shown once, revoked/expired/malformed/unknown tokens do not authenticate, rotation, scope, and
the `yingyan keys` commands (each change audited, never with the token)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from yingyan.access import (
    PERMISSIONS,
    ROLE_NAMES,
    InvalidRoleError,
    allows,
    authenticate,
    count_active_keys,
    create_key,
    get_key,
    keys,
    list_keys,
    revoke_key,
    rotate_key,
)
from yingyan.audit import entries, verify
from yingyan.cli.main import app
from yingyan.store import ConflictError, Database, InvalidValueError, NotFoundError
from yingyan.store.tables import ROLES

from .conftest import Target

runner = CliRunner()
LATER = datetime.now(UTC) + timedelta(days=30)


def raw_rows(session: Session, table: str) -> list[str]:
    """Every row of `table` as one string of all its values, read past the ORM."""
    result = session.execute(text(f"SELECT * FROM {table}"))
    return [" ".join(str(v) for v in row) for row in result]


# -- roles -------------------------------------------------------------------------------------


def test_roles_match_the_table_constraint_and_grant_what_the_brief_says() -> None:
    assert ROLE_NAMES == ROLES
    assert PERMISSIONS["enroller"] == {
        "galleries:read",
        "subjects:read",
        "subjects:write",
        "faces:enroll",
        "detect",
    }
    assert PERMISSIONS["operator"] == {"galleries:read", "detect", "verify", "identify"}
    assert PERMISSIONS["reviewer"] == {"galleries:read", "subjects:read"}
    assert PERMISSIONS["auditor"] == {"audit:read", "galleries:read"}
    assert allows("admin", "audit:read") and allows("admin", "galleries:write")
    assert allows("operator", "identify")
    assert not allows("operator", "faces:enroll")
    assert not allows("enroller", "identify")
    assert not allows("reviewer", "identify")
    assert not allows("auditor", "subjects:read")
    assert not allows("root", "detect")  # unknown role: nothing


# -- keys --------------------------------------------------------------------------------------


def test_only_the_hash_of_the_token_is_stored_and_it_authenticates(db: Database) -> None:
    with db.session() as s:
        issued = create_key(s, name="desk 3", role="operator", galleries=["staff"])
    token = issued.token
    tag, prefix, secret = token.split("_", 2)
    assert (tag, prefix) == ("yy", issued.key.prefix)
    assert len(prefix) == 12 and len(secret) >= 43  # 32 random bytes, urlsafe base64
    with db.session() as s:
        (row,) = raw_rows(s, "api_keys")
        assert token not in row and secret not in row
        assert hashlib.sha256(token.encode()).hexdigest() in row
        key = authenticate(s, token)
    assert key is not None and key.id == issued.key.id
    assert (key.name, key.role, key.galleries) == ("desk 3", "operator", ("staff",))
    assert key.label == f"key:{prefix}(desk 3)"
    assert key.created_at.tzinfo is not None


def test_tokens_that_must_not_authenticate(db: Database) -> None:
    with db.session() as s:
        live = create_key(s, name="live", role="admin").token
        revoked = create_key(s, name="revoked", role="admin")
        expiring = create_key(s, name="expiring", role="admin", expires_at=LATER)
        revoke_key(s, prefix=revoked.key.prefix)
    prefix, secret = live.split("_", 2)[1:]
    other_secret = ("A" if secret[0] != "A" else "B") + secret[1:]
    unknown_prefix = ("0" if prefix[0] != "0" else "1") + prefix[1:]
    with db.session() as s:
        assert authenticate(s, live) is not None
        assert authenticate(s, revoked.token) is None
        assert authenticate(s, expiring.token) is not None
        assert authenticate(s, expiring.token, now=LATER) is None  # expiry is exclusive
        assert authenticate(s, expiring.token, now=LATER - timedelta(seconds=1)) is not None
        for bad in (
            f"yy_{prefix}_{other_secret}",  # right prefix, wrong secret
            f"yy_{unknown_prefix}_{secret}",  # unknown key
            "",
            "yy__",
            live[:-1],
            live + "x",
            f"Bearer {live}",
            live.replace("yy_", "xx_"),
            hashlib.sha256(live.encode()).hexdigest(),  # the stored digest is not a token
        ):
            assert authenticate(s, bad) is None, bad


def test_rotate_issues_a_new_secret_and_revokes_the_old_one(db: Database) -> None:
    with db.session() as s:
        old = create_key(s, name="ci", role="enroller", galleries=["a", "b"], expires_at=LATER)
    with db.session() as s:
        new = rotate_key(s, prefix=old.key.prefix)
    assert new.token != old.token and new.key.prefix != old.key.prefix
    assert new.key.rotated_from == old.key.id
    assert (new.key.name, new.key.role, new.key.galleries) == ("ci", "enroller", ("a", "b"))
    assert new.key.expires_at == old.key.expires_at
    with db.session() as s:
        assert authenticate(s, old.token) is None
        assert authenticate(s, new.token) == new.key
        assert get_key(s, prefix=old.key.prefix).status() == "revoked"
        with pytest.raises(ConflictError):
            rotate_key(s, prefix=old.key.prefix)  # a revoked key stays dead


def test_scope_list_revoke_and_count(db: Database) -> None:
    with db.session() as s:
        everywhere = create_key(s, name="all", role="admin").key
        scoped = create_key(s, name="two", role="operator", galleries=[" a ", "b", "a"]).key
        assert count_active_keys(s) == 2
        assert count_active_keys(s, now=LATER) == 2
    assert everywhere.galleries is None and everywhere.can_access("anything")
    assert scoped.galleries == ("a", "b")
    assert scoped.can_access("a") and scoped.can_access("b") and not scoped.can_access("c")
    with db.session() as s:
        first = revoke_key(s, prefix=scoped.prefix)
        again = revoke_key(s, prefix=scoped.prefix)
        assert first.revoked_at is not None and again.revoked_at == first.revoked_at
        assert [k.prefix for k in list_keys(s)] == [everywhere.prefix]
        assert [k.prefix for k in list_keys(s, include_revoked=True)] == [
            everywhere.prefix,
            scoped.prefix,
        ]
        assert count_active_keys(s) == 1
        with pytest.raises(NotFoundError):
            revoke_key(s, prefix="0123456789ab")


def test_a_prefix_collision_is_retried(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    prefixes = iter(["aaaaaaaaaaaa", "aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    monkeypatch.setattr(keys.secrets, "token_hex", lambda _n: next(prefixes))
    with db.session() as s:
        first = create_key(s, name="one", role="admin")
        second = create_key(s, name="two", role="admin")  # "aaaa…" is taken: retried
    assert (first.key.prefix, second.key.prefix) == ("aaaaaaaaaaaa", "bbbbbbbbbbbb")
    with db.session() as s:
        assert authenticate(s, second.token) == second.key
        assert [k.name for k in list_keys(s)] == ["one", "two"]


def test_invalid_keys_are_refused_with_stable_codes(db: Database) -> None:
    with db.session() as s:
        with pytest.raises(InvalidRoleError) as role:
            create_key(s, name="x", role="superuser")
        assert role.value.code == "invalid_role" and "auditor" in role.value.message
        cases: list[dict[str, object]] = [
            {"name": "  "},
            {"galleries": []},
            {"galleries": ["ok", " "]},
            {"expires_at": datetime(2030, 1, 1)},  # naive
            {"expires_at": datetime(2000, 1, 1, tzinfo=UTC)},  # past
        ]
        for case in cases:
            options: dict[str, object] = {"name": "x", "role": "admin", **case}
            with pytest.raises(InvalidValueError) as error:
                create_key(s, **options)  # type: ignore[arg-type]
            assert error.value.code == "invalid_value", case
        assert list_keys(s, include_revoked=True) == []


def test_expired_key_is_listed_as_expired(db: Database) -> None:
    with db.session() as s:
        key = create_key(s, name="temp", role="auditor", expires_at=LATER).key
    assert key.status() == "active"
    assert key.status(LATER) == "expired"
    assert key.as_dict()["expires_at"] == LATER.isoformat()


# -- CLI ---------------------------------------------------------------------------------------


def test_cli_keys_lifecycle_is_audited_without_tokens(target: Target) -> None:
    db_args = target.cli_args
    r = runner.invoke(
        app,
        ["keys", "create", "--role", "operator", "--name", "desk", "-g", "staff", *db_args],
    )
    assert r.exit_code == 0, r.output
    token = next(line for line in r.stdout.splitlines() if line.startswith("yy_"))
    assert "shown once" in r.stderr
    prefix = token.split("_")[1]

    r = runner.invoke(app, ["keys", "list", "--json", *db_args])
    assert r.exit_code == 0, r.output
    (listed,) = json.loads(r.stdout)
    assert (listed["prefix"], listed["role"], listed["galleries"]) == (
        prefix,
        "operator",
        ["staff"],
    )
    assert token not in r.stdout and token.split("_", 2)[2] not in r.stdout

    r = runner.invoke(app, ["keys", "rotate", prefix, "--json", *db_args])
    assert r.exit_code == 0, r.output
    rotated = json.loads(r.stdout)
    assert rotated["key"]["rotated_from"] == listed["id"] and rotated["token"] != token
    new_prefix = rotated["key"]["prefix"]

    r = runner.invoke(app, ["keys", "revoke", new_prefix, *db_args])
    assert r.exit_code == 0 and "revoked" in r.stdout
    r = runner.invoke(app, ["keys", "list", "--json", *db_args])
    assert json.loads(r.stdout) == []
    r = runner.invoke(app, ["keys", "list", "--all", "--json", *db_args])
    assert [k["status"] for k in json.loads(r.stdout)] == ["revoked", "revoked"]

    with target.open() as db, db.session() as s:
        log = entries(s)
        assert verify(s).ok
        audit_rows = " ".join(raw_rows(s, "audit_log"))
    assert [e.operation for e in log] == ["key.create", "key.rotate", "key.revoke"]
    assert all(e.actor.startswith("cli:") for e in log)
    assert log[0].details["prefix"] == prefix and log[0].details["galleries"] == ["staff"]
    assert log[1].details == {**log[1].details, "prefix": new_prefix, "rotated_from": prefix}
    assert token not in audit_rows and rotated["token"] not in audit_rows


def test_cli_keys_errors_exit_2(target: Target) -> None:
    db_args = target.cli_args
    r = runner.invoke(app, ["keys", "create", "--role", "root", "--name", "x", *db_args])
    assert r.exit_code == 2 and "invalid_role" in r.stderr
    r = runner.invoke(app, ["keys", "revoke", "nope", *db_args])
    assert r.exit_code == 2 and "not_found" in r.stderr
    r = runner.invoke(
        app,
        ["keys", "create", "--role", "admin", "--name", "x", "--expires-at", "soon", *db_args],
    )
    assert r.exit_code == 2 and "ISO 8601" in r.stderr
    with target.open() as db, db.session() as s:
        assert list_keys(s, include_revoked=True) == [] and entries(s) == []
