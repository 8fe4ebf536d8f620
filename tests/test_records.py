"""Client records: each generation's wire names decoded into one set of names; only the fields in
use are read; a wrong-typed value costs that value, not the row; a default means "not reported"."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from exporter.records import (
    FIELDS,
    NUMBER_MAX,
    V5_7_FIELDS,
    V5_FIELDS_ENUM,
    ClientRecord,
    lenient_record,
    record_type,
    take_bad_example,
    v5_fields_param,
    valid_value,
    wire_names,
)

V3, V4, V5 = record_type("v3"), record_type("v4"), record_type("v5")


def decode(cls: type[ClientRecord], row: dict[str, Any]) -> ClientRecord:
    """The fast path: a whole page in one strict msgspec pass."""
    [record] = msgspec.json.decode(msgspec.json.encode([row]), type=list[cls])  # type: ignore[valid-type]
    return record


def test_each_generation_reads_its_own_wire_names_into_the_same_fields() -> None:
    v3 = decode(V3, {"client_id": "a", "recv_oct": 10, "ipaddress": "10.0.0.1"})
    v4 = decode(V4, {"clientid": "a", "recv_oct": 10, "ip_address": "10.0.0.1",
                     "inflight": 2, "max_inflight": 32, "max_mqueue": 1000,
                     "subscriptions_cnt": 3, "recv_msg.qos1": 4})
    v5 = decode(V5, {"clientid": "a", "recv_oct": 10, "ip_address": "10.0.0.1",
                     "inflight_cnt": 2, "inflight_max": 32, "mqueue_max": 1000,
                     "subscriptions_cnt": 3, "recv_msg.qos1": 4, "listener": "tcp:default"})
    assert (v3.clientid, v3.received_bytes, v3.ip_address) == ("a", 10, "10.0.0.1")
    for record in (v4, v5):
        assert (record.clientid, record.received_bytes, record.ip_address, record.inflight,
                record.inflight_max, record.mqueue_max, record.subscriptions,
                record.received_qos1) == ("a", 10, "10.0.0.1", 2, 32, 1000, 3, 4)
    assert v5.listener == "tcp:default" and v4.listener is None


def test_a_key_with_the_normalized_name_is_not_mistaken_for_the_wire_name() -> None:
    # v5 sends `inflight_cnt`; a stray `inflight` key is not that figure, nor is v3's `clientid`.
    assert decode(V5, {"clientid": "a", "inflight": 7, "received_bytes": 9}).inflight is None
    assert decode(V5, {"clientid": "a", "received_bytes": 9}).received_bytes is None
    assert decode(V4, {"clientid": "a", "inflight_cnt": 7}).inflight is None
    with pytest.raises(msgspec.ValidationError):
        decode(V3, {"clientid": "a"})  # v3 names it client_id


def test_absent_figures_are_none_not_zero() -> None:
    record = decode(V5, {"clientid": "a"})
    for f in FIELDS:
        if f.attr != "clientid":
            assert getattr(record, f.attr) is None, f.attr
    assert decode(V5, {"clientid": "a", "recv_oct": 0}).received_bytes == 0


def test_connected_default_fills_only_an_absent_flag() -> None:
    cls = record_type("v3", connected_default=True)
    assert decode(cls, {"client_id": "a"}).connected is True
    v5 = record_type("v5", connected_default=True)
    assert decode(v5, {"clientid": "a", "connected": False}).connected is False
    assert decode(V5, {"clientid": "a"}).connected is None


def test_the_same_arguments_give_the_same_class() -> None:
    only = frozenset({"received_bytes"})
    assert record_type("v5") is V5
    assert record_type("v5", only=only) is record_type("v5", only=frozenset(["received_bytes"]))
    assert record_type("v5", only=only) is not V5
    assert record_type("v4") is not V5
    assert issubclass(V5, ClientRecord)


def test_with_only_the_other_fields_are_left_unread_even_when_wrong_typed() -> None:
    cls = record_type("v5", only=frozenset({"received_bytes", "node"}))
    record = decode(cls, {"clientid": "a", "node": "emqx@a", "recv_oct": 5, "send_oct": 6,
                          "inflight_cnt": "not a number", "heap_size": -1})
    assert (record.clientid, record.node, record.received_bytes) == ("a", "emqx@a", 5)
    assert record.sent_bytes is None and record.inflight is None and record.heap_size is None


@pytest.mark.parametrize(("wire", "bad"), [
    ("recv_oct", -1), ("recv_oct", NUMBER_MAX + 1), ("recv_oct", 1.5), ("recv_oct", True),
    ("recv_oct", "12"), ("connected", 1), ("node", 5), ("heap_size", NUMBER_MAX // 8 + 1),
    ("mqueue_max", "infinity"), ("subscriptions_max", -3),
])
def test_a_wrong_typed_value_fails_the_fast_path_and_costs_only_itself(wire: str,
                                                                      bad: Any) -> None:
    row = {"clientid": "a", "node": "emqx@a", "recv_oct": 100, "send_oct": 200,
           "connected": True, "heap_size": 10, "mqueue_max": 5, "subscriptions_max": 7}
    row[wire] = bad
    with pytest.raises(msgspec.ValidationError):
        decode(V5, row)
    result = lenient_record(V5, "v5", row)
    assert result.bad_values == [wire]
    record = result.record
    assert record is not None and record.clientid == "a"
    good = {f.attr: row[f.v5] for f in FIELDS if f.v5 in row and f.v5 != wire}
    assert {attr: getattr(record, attr) for attr in good} == good
    bad_attr = next(f.attr for f in FIELDS if f.v5 == wire)
    assert getattr(record, bad_attr) is None


def test_limits_may_be_infinity_where_emqx_says_so() -> None:
    record = decode(V5, {"clientid": "a", "awaiting_rel_max": "infinity",
                         "subscriptions_max": "infinity", "recv_oct": NUMBER_MAX})
    assert record.awaiting_rel_max == "infinity" and record.subscriptions_max == "infinity"
    assert record.received_bytes == NUMBER_MAX


@pytest.mark.parametrize(("row", "bad"), [
    (["not", "a", "map"], ["<row>"]),
    ("text", ["<row>"]),
    ({"node": "emqx@a"}, ["clientid"]),
    ({"clientid": 17, "recv_oct": 1}, ["clientid"]),
    ({"clientid": None}, ["clientid"]),
])
def test_a_row_without_a_usable_client_id_is_dropped(row: Any, bad: list[str]) -> None:
    result = lenient_record(V5, "v5", row)
    assert result.record is None and result.bad_values == bad


def test_the_slow_path_also_reads_only_the_fields_in_use() -> None:
    # The slow path runs for the rows of a page with a bad value; it must give the same record
    # as the fast path, and not count a bad value in a field the fast path never reads.
    cls = record_type("v5", only=frozenset({"received_bytes"}))
    row = {"clientid": "a", "recv_oct": -5, "send_oct": 6, "inflight_cnt": "x"}
    result = lenient_record(cls, "v5", row)
    assert result.record is not None
    assert result.record.received_bytes is None and result.record.sent_bytes is None
    assert result.bad_values == ["recv_oct"]


def test_the_first_client_that_lost_a_value_is_the_example_once() -> None:
    async def walk() -> tuple[str | None, str | None]:
        take_bad_example()  # forget what earlier rows of this thread's context noted
        lenient_record(V5, "v5", {"clientid": "good", "recv_oct": 1})
        lenient_record(V5, "v5", {"clientid": "first", "recv_oct": -1})
        lenient_record(V5, "v5", {"clientid": "second", "send_oct": -1})
        return take_bad_example(), take_bad_example()

    assert asyncio.run(walk()) == ("first", None)

    async def clean() -> str | None:
        take_bad_example()
        lenient_record(V5, "v5", {"clientid": "good", "recv_oct": 1})
        return take_bad_example()

    assert asyncio.run(clean()) is None


def test_valid_value_follows_the_field_kinds() -> None:
    assert all(valid_value(kind, None) for kind in ("str", "int", "words", "bool", "limit"))
    assert valid_value("int", 0) and valid_value("int", NUMBER_MAX)
    assert not valid_value("int", -1) and not valid_value("int", True)
    assert not valid_value("int", 1.0) and not valid_value("int", NUMBER_MAX + 1)
    assert valid_value("words", NUMBER_MAX // 8) and not valid_value("words", NUMBER_MAX // 8 + 1)
    assert valid_value("limit", "infinity") and valid_value("limit", 10)
    assert not valid_value("limit", -1) and not valid_value("bool", 0)
    assert valid_value("str", "") and not valid_value("str", 1)


def test_wire_names_and_the_v5_fields_parameter() -> None:
    attrs = frozenset({"clientid", "received_bytes", "inflight", "zone"})
    assert wire_names("v5", attrs) == ["clientid", "zone", "recv_oct", "inflight_cnt"]
    assert wire_names("v4", attrs) == ["clientid", "zone", "recv_oct", "inflight"]
    assert wire_names("v3", attrs) == ["client_id", "zone", "recv_oct"]  # v3 has no inflight
    assert v5_fields_param((5, 5, 9), attrs) is None              # no `fields=` before 5.6.0
    assert v5_fields_param((5, 6, 0), attrs) == ["clientid", "recv_oct", "inflight_cnt"]
    # `listener` is not in the enum: asking for it means asking for every field.
    assert v5_fields_param((5, 8, 9), attrs | {"listener"}) is None
    every = frozenset(f.attr for f in FIELDS if f.v5) - {"listener", "zone"}
    assert set(v5_fields_param((5, 8, 9), every) or ()) <= V5_FIELDS_ENUM | V5_7_FIELDS
