"""The last-seen state file: a round trip, and a start that survives a missing or damaged file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from exporter.persist import LastSeen, load_last_seen, save_last_seen

SAVED: LastSeen = {"prod": {"sensor-1": 1767225600.5, "sensor-2": 1767225000.0},
                   "https://emqx.example:18083": {"gateway": 1.0}}


def test_saved_times_load_back_equal(tmp_path: Path) -> None:
    path = str(tmp_path / "last_seen.json")
    save_last_seen(path, SAVED)
    assert load_last_seen(path) == SAVED
    save_last_seen(path, {"prod": {}})  # a second save replaces the first
    assert load_last_seen(path) == {"prod": {}}


def test_a_missing_file_is_an_empty_state_without_a_warning(tmp_path: Path) -> None:
    with capture_logs() as logs:
        assert load_last_seen(str(tmp_path / "never-written.json")) == {}
    assert logs == []


@pytest.mark.parametrize("content", [
    b"", b"{", b'{"prod": {"a": 1', b"\xff\xfe\x00garbage", b"[1, 2]", b'"text"', b"null",
])
def test_a_damaged_file_is_logged_and_ignored(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "last_seen.json"
    path.write_bytes(content)
    with capture_logs() as logs:
        assert load_last_seen(str(path)) == {}
    assert [entry["event"] for entry in logs] == ["state_file_unreadable"]
    assert logs[0]["path"] == str(path) and logs[0]["log_level"] == "warning"


def test_a_directory_in_place_of_the_file_is_logged_and_ignored(tmp_path: Path) -> None:
    with capture_logs() as logs:
        assert load_last_seen(str(tmp_path)) == {}
    assert [entry["event"] for entry in logs] == ["state_file_unreadable"]


def test_wrong_typed_entries_are_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / "last_seen.json"
    path.write_text(json.dumps({
        "prod": {"ok": 1767225600, "float": 1.5, "text": "1767225600", "none": None,
                 "list": [1], "flag": True},
        "broken": ["not", "a", "map"],
        "other": {"x": 2.0},
    }), encoding="utf-8")
    loaded = load_last_seen(str(path))
    assert loaded == {"prod": {"ok": 1767225600.0, "float": 1.5}, "other": {"x": 2.0}}
    assert all(type(ts) is float for clients in loaded.values() for ts in clients.values())


def test_a_time_that_is_not_finite_is_dropped(tmp_path: Path) -> None:
    # Python's json reads NaN and Infinity; neither is a time a client was seen.
    path = tmp_path / "last_seen.json"
    path.write_text('{"prod": {"a": NaN, "b": Infinity, "c": -Infinity, "d": 5}}',
                    encoding="utf-8")
    assert load_last_seen(str(path)) == {"prod": {"d": 5.0}}


def test_a_failed_save_keeps_the_previous_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "last_seen.json"
    save_last_seen(str(path), SAVED)
    unserialisable = {"prod": {"a": object()}}
    with pytest.raises(TypeError):
        save_last_seen(str(path), unserialisable)  # type: ignore[arg-type]
    assert load_last_seen(str(path)) == SAVED
    assert os.listdir(tmp_path) == ["last_seen.json"]


def test_saving_into_a_missing_directory_raises_os_error(tmp_path: Path) -> None:
    # The service logs this and keeps polling; it must be an OSError to be caught there.
    with pytest.raises(OSError, match="No such file or directory"):
        save_last_seen(str(tmp_path / "no-such-dir" / "last_seen.json"), SAVED)


def test_a_relative_path_is_written_in_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    save_last_seen("state.json", SAVED)
    assert load_last_seen(str(tmp_path / "state.json")) == SAVED
    assert os.listdir(tmp_path) == ["state.json"]
