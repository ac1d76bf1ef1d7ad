"""API keys and roles on SQLite and PostgreSQL: only a hash of the token is stored, the token is
shown once, revoked/expired/malformed/unknown tokens do not authenticate, rotation, scope bound
to the gallery's identity (not its name, also through migration 0004), key names whose audit
label always fits, and the `yingyan keys` commands (each change audited, never with the token)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Engine
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
from yingyan.access.keys import MAX_NAME, reaches
from yingyan.audit import AuditRecord, append, entries, verify
from yingyan.cli.main import app
from yingyan.store import (
    ConflictError,
    Database,
    InvalidValueError,
    NotFoundError,
    create_gallery,
    delete_gallery,
)
from yingyan.store.database import alembic_config, create_store_engine, database_url, upgrade
from yingyan.store.tables import ROLES

from .conftest import Target

runner = CliRunner()
LATER = datetime.now(UTC) + timedelta(days=30)


def galleries(session: Session, *names: str) -> list[int]:
    """Create galleries named `names`; their ids."""
    fields = {"kind": "enrollment", "purpose": "test", "legal_basis": "test", "model": "m@1"}
    rows = [create_gallery(session, name=name, **fields) for name in names]  # type: ignore[arg-type]
    session.flush()
    return [row.id for row in rows]


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
    assert PERMISSIONS["operator"] == {
        "galleries:read",
        "detect",
        "verify",
        "identify",
        "watch:read",
    }
    assert PERMISSIONS["reviewer"] == {
        "galleries:read",
        "subjects:read",
        "watch:read",
        "alerts:review",
    }
    assert PERMISSIONS["auditor"] == {"audit:read", "galleries:read", "watch:read"}
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
        (staff,) = galleries(s, "staff")
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
    assert (key.name, key.role, key.gallery_names) == ("desk 3", "operator", ("staff",))
    assert key.gallery_ids == (staff,)
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
        galleries(s, "a", "b")
        old = create_key(s, name="ci", role="enroller", galleries=["a", "b"], expires_at=LATER)
    with db.session() as s:
        new = rotate_key(s, prefix=old.key.prefix)
    assert new.token != old.token and new.key.prefix != old.key.prefix
    assert new.key.rotated_from == old.key.id
    assert (new.key.name, new.key.role, new.key.scope) == ("ci", "enroller", old.key.scope)
    assert new.key.gallery_names == ("a", "b")
    assert new.key.expires_at == old.key.expires_at
    with db.session() as s:
        assert authenticate(s, old.token) is None
        assert authenticate(s, new.token) == new.key
        assert get_key(s, prefix=old.key.prefix).status() == "revoked"
        with pytest.raises(ConflictError):
            rotate_key(s, prefix=old.key.prefix)  # a revoked key stays dead


def test_scope_list_revoke_and_count(db: Database) -> None:
    with db.session() as s:
        a, b, c = galleries(s, "a", "b", "c")
        everywhere = create_key(s, name="all", role="admin").key
        scoped = create_key(s, name="two", role="operator", galleries=[" a ", "b", "a"]).key
        assert count_active_keys(s) == 2
        assert count_active_keys(s, now=LATER) == 2
        assert reaches(s, everywhere, "nothing by this name") and not reaches(s, scoped, "c")
        assert reaches(s, scoped, "a") and not reaches(s, scoped, "nothing by this name")
        with pytest.raises(NotFoundError, match="no gallery named 'd'"):
            create_key(s, name="three", role="operator", galleries=["a", "d"])
    assert everywhere.scope is None and everywhere.can_access(12345)
    assert (scoped.gallery_names, scoped.gallery_ids) == (("a", "b"), (a, b))
    assert scoped.can_access(a) and scoped.can_access(b) and not scoped.can_access(c)
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


# -- scope: the gallery's identity, not its name ------------------------------------------------


def test_a_gallery_created_again_under_its_name_is_outside_the_old_keys(db: Database) -> None:
    with db.session() as s:
        (old_id,) = galleries(s, "staff")
        old = create_key(s, name="gate", role="operator", galleries=["staff"])
        assert reaches(s, old.key, "staff")
    with db.session() as s:
        delete_gallery(s, name="staff")
        (new_id,) = galleries(s, "staff")
        fresh = create_key(s, name="gate 2", role="operator", galleries=["staff"]).key
    assert new_id != old_id  # ids are never reused: they are the identity the scope holds
    with db.session() as s:
        key = authenticate(s, old.token)
        assert key is not None and key.gallery_ids == (old_id,)
        assert key.gallery_names == () and key.as_dict()["galleries"] == [None]
        assert not key.can_access(new_id) and not reaches(s, key, "staff")
        assert rotate_key(s, prefix=key.prefix).key.gallery_ids == (old_id,)  # stays dead
        assert reaches(s, fresh, "staff") and fresh.gallery_ids == (new_id,)


# -- key names: the audit label always fits ----------------------------------------------------


def test_every_accepted_key_name_gives_a_label_the_audit_log_accepts(db: Database) -> None:
    accepted = [
        "x" * MAX_NAME,
        "名" * MAX_NAME,
        "\U0001f600" * MAX_NAME,  # one code point each, four bytes in UTF-8
        "é" * (MAX_NAME - 2) + "e\u0301",  # a combining accent is a letter's mark, not control
        "  desk 3  ",
        "gate-3 / north entrance (Ödön's)",
    ]
    with db.session() as s:
        for name in accepted:
            key = create_key(s, name=name, role="operator").key
            assert key.name == name.strip()
            append(s, AuditRecord(key.label, "key.use"))  # raises if the label does not fit
        # A key stored before names were bounded still gets a label that fits.
        legacy = create_key(s, name="y", role="admin").key
        s.execute(
            text("UPDATE api_keys SET name = :n WHERE id = :i"), {"n": "y" * 200, "i": legacy.id}
        )
        long_label = get_key(s, prefix=legacy.prefix).label
        append(s, AuditRecord(long_label, "key.use"))
        assert len(long_label) == 200 and long_label.startswith(f"key:{legacy.prefix}(yyy")
    with db.session() as s:
        assert verify(s).ok and len(entries(s)) == len(accepted) + 1


@pytest.mark.parametrize(
    "name",
    [
        "x" * (MAX_NAME + 1),  # 183: its label would be 201 characters
        "x" * 200,  # the column's width, refused all the same
        "lone \ud800 surrogate",
        "new\nline",
        "tab\there",
        "nul\x00",
        "bidi \u202e override",
        "zero\u200bwidth",
        "line\u2028separator",
        "private \ue000 use",
    ],
)
def test_key_names_that_do_not_fit_or_cannot_be_shown_are_refused(db: Database, name: str) -> None:
    with db.session() as s, pytest.raises(InvalidValueError) as error:
        create_key(s, name=name, role="admin")
    assert error.value.code == "invalid_value"
    with db.session() as s:
        assert list_keys(s, include_revoked=True) == []


def test_cli_refuses_a_key_name_whose_label_would_not_fit(target: Target) -> None:
    for length in (MAX_NAME + 1, 190, 200):
        r = runner.invoke(
            app, ["keys", "create", "--role", "admin", "--name", "n" * length, *target.cli_args]
        )
        assert r.exit_code == 2 and f"at most {MAX_NAME} characters" in r.stderr, r.output
    r = runner.invoke(
        app, ["keys", "create", "--role", "admin", "--name", "n" * MAX_NAME, *target.cli_args]
    )
    assert r.exit_code == 0, r.output
    with target.open() as db, db.session() as s:
        assert [len(k.name) for k in list_keys(s)] == [MAX_NAME]
        assert [e.operation for e in entries(s)] == ["key.create"] and verify(s).ok


# -- migration 0004: name scopes become id scopes ----------------------------------------------


def _insert_key_at_0003(engine: Engine, prefix: str, scope: list[str] | None) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO api_keys (prefix, secret_sha256, name, role, galleries) "
                "VALUES (:p, :h, :p, 'operator', :g)"
            ),
            {"p": prefix, "h": prefix * 2, "g": None if scope is None else json.dumps(scope)},
        )


def test_migration_0004_turns_name_scopes_into_id_scopes(target: Target) -> None:
    url = database_url(target.url, target.data_dir)
    engine = create_store_engine(url)
    try:
        upgrade(engine, "0003")
        with engine.begin() as connection:
            for name in ("north", "south"):
                connection.execute(
                    text(
                        "INSERT INTO galleries (name, kind, purpose, legal_basis, model) "
                        "VALUES (:n, 'enrollment', 't', 't', 'm@1')"
                    ),
                    {"n": name},
                )
            ids = {n: i for n, i in connection.execute(text("SELECT name, id FROM galleries"))}
        _insert_key_at_0003(engine, "both", ["south", "north"])
        _insert_key_at_0003(engine, "gone", ["deleted-long-ago"])
        _insert_key_at_0003(engine, "part", ["north", "deleted-long-ago"])
        _insert_key_at_0003(engine, "all", None)
        upgrade(engine)
    finally:
        engine.dispose()
    with target.open() as db, db.session() as s:
        scopes = {k.prefix: k.gallery_ids for k in list_keys(s)}
        assert scopes == {
            "both": (ids["south"], ids["north"]),
            "gone": (),  # a name no gallery has: the scope reaches nothing (not everything)
            "part": (ids["north"],),
            "all": None,
        }
        gone = get_key(s, prefix="gone")
        assert not reaches(s, gone, "north") and not reaches(s, gone, "deleted-long-ago")
    engine = create_store_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "0003")
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT prefix, galleries FROM api_keys")).all()
    finally:
        engine.dispose()
    back = {p: None if g is None else (json.loads(g) if isinstance(g, str) else g) for p, g in rows}
    assert back == {"both": ["south", "north"], "gone": [], "part": ["north"], "all": None}


# -- CLI ---------------------------------------------------------------------------------------


def test_cli_keys_lifecycle_is_audited_without_tokens(target: Target) -> None:
    db_args = target.cli_args
    with target.open() as db, db.session() as s:
        (staff,) = galleries(s, "staff")  # not through the CLI: no audit entry
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
    assert (listed["prefix"], listed["role"], listed["galleries"], listed["gallery_ids"]) == (
        prefix,
        "operator",
        ["staff"],
        [staff],
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
    assert log[0].details["gallery_ids"] == [staff]
    assert log[1].details == {**log[1].details, "prefix": new_prefix, "rotated_from": prefix}
    assert token not in audit_rows and rotated["token"] not in audit_rows


def test_cli_keys_errors_exit_2(target: Target) -> None:
    db_args = target.cli_args
    r = runner.invoke(app, ["keys", "create", "--role", "root", "--name", "x", *db_args])
    assert r.exit_code == 2 and "invalid_role" in r.stderr
    r = runner.invoke(app, ["keys", "revoke", "nope", *db_args])
    assert r.exit_code == 2 and "not_found" in r.stderr
    r = runner.invoke(
        app, ["keys", "create", "--role", "admin", "--name", "x", "-g", "nowhere", *db_args]
    )
    assert r.exit_code == 2 and "no gallery named 'nowhere'" in r.stderr
    r = runner.invoke(
        app,
        ["keys", "create", "--role", "admin", "--name", "x", "--expires-at", "soon", *db_args],
    )
    assert r.exit_code == 2 and "ISO 8601" in r.stderr
    with target.open() as db, db.session() as s:
        assert list_keys(s, include_revoked=True) == [] and entries(s) == []
