"""Logging: JSON lines or console text on stderr, filtered by level, secrets masked by key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

import pytest
import structlog

from exporter.logs import configure_logging


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line]


def test_json_lines_carry_event_level_utc_time_and_fields(
        capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    structlog.get_logger("t").info("poll_done", cluster="prod", clients=12)
    captured = capsys.readouterr()
    assert captured.out == ""  # logs go to stderr, never into a piped stdout
    [line] = json_lines(captured.err)
    assert line["event"] == "poll_done" and line["level"] == "info"
    assert line["cluster"] == "prod" and line["clients"] == 12
    stamp = datetime.fromisoformat(str(line["timestamp"]))
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("key", [
    "password", "api_secret", "Authorization", "token", "api_key", "dashboard_password",
    "bearer_token", "SECRET",
])
def test_a_secret_key_is_masked_whatever_logs_it(capsys: pytest.CaptureFixture[str],
                                                  key: str) -> None:
    configure_logging("debug", "json")
    structlog.get_logger("t").warning("login_failed", **{key: "hunter2-s3cr3t", "user": "admin"})
    err = capsys.readouterr().err
    assert "hunter2-s3cr3t" not in err
    [line] = json_lines(err)
    assert line[key] == "***" and line["user"] == "admin"


def test_the_console_format_is_text_and_masks_too(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "console")
    structlog.get_logger("t").info("started", url="http://emqx:18083", api_secret="s3cr3t")
    err = capsys.readouterr().err
    assert "started" in err and "http://emqx:18083" in err and "s3cr3t" not in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[0])


@pytest.mark.parametrize(("level", "shown"), [
    ("debug", ["debug", "info", "warning", "error"]),
    ("info", ["info", "warning", "error"]),
    ("WARNING", ["warning", "error"]),
    ("error", ["error"]),
])
def test_the_level_filters_lower_events(capsys: pytest.CaptureFixture[str], level: str,
                                        shown: list[str]) -> None:
    configure_logging(level, "json")
    log = structlog.get_logger("t")
    log.debug("e")
    log.info("e")
    log.warning("e")
    log.error("e")
    assert [line["level"] for line in json_lines(capsys.readouterr().err)] == shown


def test_an_exception_is_rendered_into_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger("t").exception("crashed")
    [line] = json_lines(capsys.readouterr().err)
    assert "RuntimeError: boom" in str(line["exception"])
