"""Commands run by hand are audited like API calls: gallery changes, bulk enrolment, searches
(a watchlist search needs a purpose and a case reference), deduplication; the chain verifies."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest
from typer.testing import CliRunner

from yingyan.cli.main import app

pytestmark = pytest.mark.shared
runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_gallery_commands_are_audited(tmp_path: Path, stills: Path) -> None:
    where = ("--data-dir", str(tmp_path))
    _run(
        "gallery",
        "create",
        "wanted",
        "--kind",
        "watchlist",
        "--purpose",
        "robbery inquiry",
        "--legal-basis",
        "court order 7",
        *where,
    )
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        f"external_id,image\nw1,{stills / 'biden.jpg'}\nw2,{stills / 'obama.jpg'}\n"
    )
    _run("enroll", "--gallery", "wanted", "--manifest", str(manifest), *where)

    probe = str(stills / "obama2.jpg")
    refused = runner.invoke(app, ["identify", "--gallery", "wanted", probe, *where])
    assert refused.exit_code == 2 and "--purpose and --case-reference" in refused.output
    found = json.loads(
        _run(
            "identify",
            "--gallery",
            "wanted",
            probe,
            "--purpose",
            "inquiry",
            "--case-reference",
            "CASE-9",
            "--json",
            *where,
        )
    )
    assert found["results"][0]["candidates"][0]["external_id"] == "w2"
    _run("dedup", "--gallery", "wanted", *where)
    _run("gallery", "delete", "wanted", "--yes", *where)

    entries = json.loads(_run("audit", "list", "--json", *where))
    ops = [e["operation"] for e in entries]
    # Each batch of a bulk enrolment is audited with the act (one batch here), then a summary.
    assert ops == [
        "gallery.create",
        "face.enroll",
        "face.enroll.bulk",
        "identify",
        "dedup",
        "gallery.delete",
    ]
    assert all(e["actor"].startswith("cli:") for e in entries)
    search = entries[3]
    assert (search["purpose"], search["case_reference"]) == ("inquiry", "CASE-9")
    assert search["details"]["candidates"][0][0][0] == "w2"
    assert len(entries[1]["details"]["template_ids"]) == 2
    assert entries[2]["details"]["enrolled"] == 2
    assert "ok" in _run("audit", "verify", *where)


def test_cli_actor_is_the_os_account_not_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$USER (and the other variables getpass reads first) are the caller's to set: the actor
    is the account the process runs as."""
    account = pwd.getpwuid(os.geteuid()).pw_name
    for variable in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(variable, "mallory")
    assert account != "mallory"
    where = ("--data-dir", str(tmp_path))
    _run("gallery", "create", "g", "--purpose", "p", "--legal-basis", "b", *where)
    (entry,) = json.loads(_run("audit", "list", "--json", *where))
    assert entry["operation"] == "gallery.create" and entry["actor"] == f"cli:{account}"
