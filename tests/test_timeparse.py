"""EMQX timestamps to Unix seconds: RFC 3339 as given, zone-less local time in the broker's zone,
anything else None (never a guess)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from exporter import timeparse
from exporter.timeparse import TimeParser

BERLIN = ZoneInfo("Europe/Berlin")
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOON_UTC = datetime(2026, 1, 15, 12, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("text", [
    "2026-01-15T12:00:00Z",
    "2026-01-15T12:00:00+00:00",
    "2026-01-15T20:00:00+08:00",        # v5: the server's local offset
    "2026-01-15T20:00:00.000+08:00",    # v5: with milliseconds
    "2026-01-15T07:00:00-05:00",
])
def test_rfc3339_is_read_with_its_own_offset_whatever_the_broker_zone(text: str) -> None:
    for zone in (ZoneInfo("UTC"), BERLIN, SHANGHAI):
        assert TimeParser(zone)(text) == NOON_UTC


def test_milliseconds_are_kept() -> None:
    assert TimeParser(BERLIN)("2026-01-15T12:00:00.789Z") == pytest.approx(NOON_UTC + 0.789)


def test_zone_less_time_is_the_broker_wall_clock() -> None:
    # v3/v4 print "YYYY-MM-DD HH:MM:SS" in the server's local time.
    assert TimeParser(SHANGHAI)("2026-01-15 20:00:00") == NOON_UTC
    assert TimeParser(BERLIN)("2026-01-15 13:00:00") == NOON_UTC          # CET, +01:00
    assert TimeParser(BERLIN)("2026-07-15 14:00:00") == NOON_UTC + 181 * 86400  # CEST, +02:00
    assert TimeParser(ZoneInfo("UTC"))("2026-01-15 12:00:00") == NOON_UTC


def test_a_repeated_wall_clock_hour_reads_as_its_first_occurrence() -> None:
    # 2026-10-25 02:30 happens twice in Berlin: first at +02:00 (00:30 UTC), then at +01:00.
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC).timestamp()
    assert TimeParser(BERLIN)("2026-10-25 02:30:00") == first


@pytest.mark.parametrize("text", [
    None, "", "  ", "undefined", "null", "nan", "2026", "2026-13-01 00:00:00",
    "2026-02-30 10:00:00", "2026-01-15 24:00:00", "2026-01-15T12:00:00+25:00",
    "15/01/2026 12:00", "1768478400", "1768478400000",   # epoch s and ms are not EMQX's format
])
def test_garbage_and_missing_values_are_none(text: str | None) -> None:
    assert TimeParser(BERLIN)(text) is None


def test_an_epoch_number_is_never_guessed_as_seconds_or_milliseconds() -> None:
    parse = TimeParser(ZoneInfo("UTC"))
    seconds = str(int(NOON_UTC))
    assert parse(seconds) is None and parse(seconds + "000") is None


def test_repeated_strings_give_the_same_answer_also_when_the_memo_is_full(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeparse, "_MEMO_LIMIT", 3)
    parse = TimeParser(ZoneInfo("UTC"))
    texts = [f"2026-01-15T12:00:0{i}Z" for i in range(8)] + ["garbage"]
    for _ in range(3):
        assert [parse(t) for t in texts] == [NOON_UTC + i for i in range(8)] + [None]
        assert [parse(t) for t in texts for _ in range(2)] == [
            v for i in range(8) for v in (NOON_UTC + i,) * 2] + [None, None]


def test_parsers_of_different_zones_do_not_share_answers() -> None:
    text = "2026-01-15 12:00:00"
    assert TimeParser(ZoneInfo("UTC"))(text) == NOON_UTC
    assert TimeParser(SHANGHAI)(text) == NOON_UTC - 8 * 3600
    assert TimeParser(ZoneInfo("UTC"))(text) == NOON_UTC


def test_texts_are_the_repr_of_the_seconds_also_when_the_memo_is_full(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Exposition text of each time: what `%r` of the parsed seconds gives, None where there
    # is no time, the same answers whether they come from the memo, fresh, or after it emptied.
    monkeypatch.setattr(timeparse, "_MEMO_LIMIT", 10)
    parser = TimeParser(ZoneInfo("UTC"))
    texts = ["2024-05-01T10:00:00.125+00:00", None, "garbage", "2024-05-01T10:00:00+00:00",
             "2024-05-01T10:00:00.125+00:00", "2024-05-01T10:00:01.1+02:00"]
    want = [None if parser(t) is None else b"%r" % parser(t) for t in texts]
    assert want[0] == b"1714557600.125" and want[3] == b"1714557600.0"
    for _ in range(3):  # 5 distinct: fresh, then from the memo
        assert parser.texts(texts) == want
        assert parser.texts(texts[2:]) == want[2:]
        assert len(parser._text_memo) == 5
    # new texts to a memo at its limit (5 + 7 = 12 of 10): emptied first, every answer right
    for minute in (1, 2):
        more = [f"2024-05-01T10:0{minute}:0{i}+00:00" for i in range(2, 9)]
        assert parser.texts(more + texts) == [b"%r" % parser(t) for t in more] + want
    assert len(parser._text_memo) == 7  # emptied before the second batch's new texts
