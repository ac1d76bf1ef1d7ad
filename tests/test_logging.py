"""The service's log lines, through the handler `configure_logging` installs: UTC ISO-8601 time
with milliseconds whatever the machine's time zone, and fixed fields that a record's extras
cannot overwrite."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from yingyan.api.observability import configure_logging

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def far_from_utc() -> Iterator[None]:
    """A local time zone 8 hours from UTC (China Standard Time), so a local timestamp shows."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "CST-8"  # POSIX form: needs no zoneinfo files
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.fixture
def service_logger() -> Iterator[logging.Logger]:
    """The `yingyan` logger, restored after the test (configure_logging replaces its handlers
    and stops propagation, which other tests' log capture relies on)."""
    root = logging.getLogger("yingyan")
    saved = root.handlers[:], root.level, root.propagate
    try:
        yield root
    finally:
        root.handlers[:], root.level, root.propagate = saved


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line]


def test_json_lines_carry_utc_milliseconds_and_fixed_fields_win(
    far_from_utc: None, service_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    assert time.strftime("%z") == "+0800"  # the zone took effect: a local stamp would differ
    configure_logging("info", as_json=True)
    before = datetime.now(UTC)
    logging.getLogger("yingyan.access").info(
        "request",
        extra={
            "time": "1999-01-01T00:00:00",
            "level": "debug",
            "logger": "someone.else",
            "exception": "forged",
            "stack": "forged",
            "extra_time": "taken",
            "route": "/api/v1/detect",
            "status": 200,
        },
    )
    after = datetime.now(UTC)
    (line,) = _lines(capsys)
    entry = json.loads(line)
    assert STAMP.match(entry["time"]), entry["time"]
    stamp = datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
    assert before - timedelta(milliseconds=1) <= stamp <= after  # UTC, not Shanghai's +8 h
    assert entry["level"] == "info"
    assert entry["logger"] == "yingyan.access"
    assert entry["message"] == "request"
    assert "exception" not in entry and "stack" not in entry  # nothing was raised
    # The extras are all kept, the colliding ones under a prefixed name.
    assert entry["extra_time"] == "taken"
    assert entry["extra_extra_time"] == "1999-01-01T00:00:00"
    assert entry["extra_level"] == "debug"
    assert entry["extra_logger"] == "someone.else"
    assert entry["extra_exception"] == "forged"
    assert entry["extra_stack"] == "forged"
    assert entry["route"] == "/api/v1/detect" and entry["status"] == 200


def test_a_message_cannot_be_forged_and_an_exception_is_kept(
    service_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", as_json=True)
    log = logging.getLogger("yingyan.api")
    with pytest.raises(KeyError, match="message"):  # the standard library refuses it outright
        log.info("real", extra={"message": "forged"})

    class Forger(logging.Filter):  # what a filter or adapter could still set on a record
        def filter(self, record: logging.LogRecord) -> bool:
            record.message = "forged"
            record.__dict__["time"] = "forged"
            return True

    forger = Forger()
    log.addFilter(forger)
    try:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("unhandled error", extra={"path": "/x"})
    finally:
        log.removeFilter(forger)
    (line,) = _lines(capsys)
    entry = json.loads(line)
    assert entry["message"] == "unhandled error" and entry["level"] == "error"
    assert STAMP.match(entry["time"])
    assert entry["extra_time"] == "forged"
    assert "RuntimeError: boom" in entry["exception"] and entry["path"] == "/x"


def test_text_lines_are_in_utc_too(
    far_from_utc: None, service_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", as_json=False)
    logging.getLogger("yingyan.cli").warning("plain")
    (line,) = _lines(capsys)
    stamp, rest = line.split(" ", 1)
    assert STAMP.match(stamp), line
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - when) < timedelta(seconds=5)
    assert rest == "WARNING yingyan.cli plain"
