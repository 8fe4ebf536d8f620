"""Each dialect against the captured responses of its EMQX version (tests/fixtures/<version>)."""

from __future__ import annotations

import json

import msgspec
import pytest

from exporter.api import Request, Response
from exporter.dialects import make_dialect
from exporter.dialects.v3 import V3Dialect
from exporter.dialects.v4 import V4Dialect
from exporter.dialects.v5 import (
    V5CursorDialect,
    V5PageDialect,
    cursor_has_node_filter,
    cursor_is_reliable,
)
from exporter.errors import ApiError, DecodeError
from tests.conftest import fixture_bytes


def answer(body: bytes, status: int = 200, endpoint: str = "clients",
           content_type: str = "application/json") -> Response:
    return Response(status, content_type, body, endpoint)


def test_v4_4_page_maps_every_field() -> None:
    dialect = V4Dialect("4.4.19")
    request = dialect.list_request("emqx@127.0.0.1")
    assert request.path == ("api", "v4", "nodes", "emqx@127.0.0.1", "clients")
    assert dict(request.params) == {"_page": "1", "_limit": "10000"}
    page = dialect.parse_list(answer(fixture_bytes("v4", "v4.4-clients.json")), request)
    assert page.next is None  # hasnext false
    (r,) = page.records
    row = json.loads(fixture_bytes("v4", "v4.4-clients.json"))["data"][0]
    assert (r.clientid, r.username, r.node, r.zone) == ("server", "server", row["node"], "external")
    assert (r.received_bytes, r.sent_bytes) == (row["recv_oct"], row["send_oct"])
    assert (r.inflight, r.inflight_max) == (row["inflight"], row["max_inflight"])
    assert (r.mqueue_len, r.mqueue_max, r.mqueue_dropped) == (0, 1000, 0)
    assert (r.awaiting_rel, r.awaiting_rel_max) == (0, 100)
    assert (r.subscriptions, r.subscriptions_max) == (1, 0)
    assert r.received_qos0 == 0 and r.sent_dropped_queue_full == 0
    assert r.connected is True and r.connected_at == "2022-05-05 23:32:35"
    assert r.listener is None  # v4 has no listener field


def test_v4_0_has_no_qos_split_and_no_hasnext() -> None:
    dialect = V4Dialect("4.0.0", page_size=10)
    request = dialect.list_request("emqx@127.0.0.1")
    page = dialect.parse_list(answer(fixture_bytes("v4", "v4.0-clients.json")), request)
    (r,) = page.records
    assert r.clientid == "example" and r.received_qos0 is None and r.sent_dropped is None
    assert page.next is None  # a short page without hasnext is the last


def test_v4_offline_session_and_filtered_count() -> None:
    dialect = V4Dialect("4.4.19")
    request = dialect.list_request("emqx@127.0.0.1")
    page = dialect.parse_list(answer(fixture_bytes("v4", "v4.4-clients-filtered.json")), request)
    (r,) = page.records
    assert r.connected is False and r.disconnected_at == "2022-05-05 23:40:02"
    assert r.mqueue_len == 12 and page.total == -1


@pytest.mark.parametrize(("name", "code"), [("v4-error-not-found.json", 112),
                                            ("v4-error-bad-param.json", 108)])
def test_v4_errors_inside_http_200(name: str, code: int) -> None:
    dialect = V4Dialect("4.4.19")
    with pytest.raises(ApiError) as caught:
        dialect.parse_list(answer(fixture_bytes("v4", name)), dialect.list_request("n"))
    assert caught.value.code == code and caught.value.status == 200
    assert caught.value.reason == "api_error_code"


def test_v4_nodes() -> None:
    nodes = V4Dialect().parse_nodes(answer(fixture_bytes("v4", "v4-nodes.json"), endpoint="nodes"))
    assert [(n.name, n.running, n.version, n.online) for n in nodes] == [
        ("emqx@127.0.0.1", True, "4.4.19", 1)]


def test_v5_page_maps_every_field_and_infinity() -> None:
    dialect = V5PageDialect("5.8.9")
    request = dialect.list_request("emqx@127.0.0.1")
    params = dict(request.params)
    assert params["node"] == "emqx@127.0.0.1" and params["limit"] == "10000"
    page = dialect.parse_list(answer(fixture_bytes("v5", "v5-clients.json")), request)
    (r,) = page.records
    assert (r.clientid, r.listener, r.username) == ("01", "tcp:default", None)
    assert (r.inflight, r.inflight_max, r.awaiting_rel_max) == (0, 32, 100)
    assert r.subscriptions_max == "infinity"
    assert r.received_dropped_await_pubrel_timeout == 0
    assert r.connected_at == "2024-01-01T12:34:56.789+08:00"
    assert page.next is None


def test_v5_page_limit_depends_on_version() -> None:
    assert dict(V5PageDialect("5.4.1").list_request("n").params)["limit"] == "1000"
    big = V5PageDialect("5.5.0", page_size=50_000)
    assert dict(big.list_request("n").params)["limit"] == "10000"


def test_v5_fields_only_from_5_6_and_only_nameable() -> None:
    wanted = frozenset({"clientid", "node", "connected", "received_bytes"})
    assert "fields" not in dict(V5PageDialect("5.5.1", attrs=wanted).list_request("n").params)
    assert dict(V5PageDialect("5.6.0", attrs=wanted).list_request("n").params)["fields"] == (
        "clientid,node,connected,recv_oct")
    with_listener = wanted | {"listener"}
    listener_request = V5PageDialect("5.8.9", attrs=with_listener).list_request("n")
    assert "fields" not in dict(listener_request.params)


def test_only_the_fields_in_use_are_decoded() -> None:
    dialect = V5PageDialect("5.8.9", attrs=frozenset({"clientid", "received_bytes"}))
    page = dialect.parse_list(answer(fixture_bytes("v5", "v5-clients.json")),
                              dialect.list_request("n"))
    (r,) = page.records
    assert r.received_bytes == 49 and r.sent_bytes is None and r.username is None


def test_v5_fields_page_leaves_other_values_absent() -> None:
    dialect = V5PageDialect("5.8.9")
    page = dialect.parse_list(answer(fixture_bytes("v5", "v5-clients-fields.json")),
                              dialect.list_request("n"))
    (r,) = page.records
    assert r.received_bytes == 49 and r.username is None and r.received_packets is None


def test_v5_next_page_and_empty_page() -> None:
    dialect = V5PageDialect("5.8.9", page_size=1)
    request = dialect.list_request("n")
    body = json.loads(fixture_bytes("v5", "v5-clients.json"))
    body["meta"]["hasnext"] = True
    page = dialect.parse_list(answer(json.dumps(body).encode()), request)
    assert page.next is not None and dict(page.next.params)["page"] == "2"
    # hasnext can be a false positive at a node boundary: an empty page ends the walk anyway
    empty = {"data": [], "meta": {"page": 2, "limit": 1, "hasnext": True}}
    assert dialect.parse_list(answer(json.dumps(empty).encode()), page.next).next is None


def test_v5_without_hasnext_stops_at_count() -> None:
    dialect = V5PageDialect("5.0.10", page_size=1)
    body = json.loads(fixture_bytes("v5", "v5-clients.json"))
    del body["meta"]["hasnext"]
    body["meta"]["count"] = 2
    first = dialect.parse_list(answer(json.dumps(body).encode()), dialect.list_request("n"))
    assert first.next is not None
    body["meta"]["page"] = 2
    assert dialect.parse_list(answer(json.dumps(body).encode()), first.next).next is None


def test_v5_offline_session() -> None:
    dialect = V5PageDialect("5.8.9")
    page = dialect.parse_list(answer(fixture_bytes("v5", "v5-clients-offline-session.json")),
                              dialect.list_request("n"))
    (r,) = page.records
    assert r.connected is False and r.mqueue_len == 57 and r.expiry_interval == 7200
    assert r.disconnected_at == "2024-01-01T13:00:01.002+08:00"


def test_v5_cursor_pages() -> None:
    dialect = V5CursorDialect("5.8.9", page_size=2)
    assert not dialect.per_node  # node= on clients_v2 only from 6.1.2 / 6.2.1
    request = dialect.list_request("emqx@127.0.0.1")
    assert request.path[-1] == "clients_v2" and "node" not in dict(request.params)
    first = dialect.parse_list(answer(fixture_bytes("v5", "v5-clients-v2-page.json")), request)
    assert [r.clientid for r in first.records] == ["ca5", "ca1"]
    assert first.next is not None
    assert dict(first.next.params)["cursor"] == "g2wAAAADYQFhAm0AAAACYzJq"
    last = dialect.parse_list(answer(fixture_bytes("v5", "v5-clients-v2-last.json")), first.next)
    assert [r.clientid for r in last.records] == ["c9"] and last.next is None


def test_v5_cursor_stops_on_phantom_and_repeated_cursor() -> None:
    dialect = V5CursorDialect("6.3.0", page_size=2)
    assert dialect.per_node
    request = dialect.list_request("n")
    assert dict(request.params)["node"] == "n"
    empty_with_cursor = b'{"data":[],"meta":{"count":0,"cursor":"abc"}}'
    assert dialect.parse_list(answer(empty_with_cursor), request).next is None
    body = json.loads(fixture_bytes("v5", "v5-clients-v2-page.json"))
    again = dict(request.params) | {"cursor": body["meta"]["cursor"]}
    replay = Request("GET", request.path, tuple(again.items()), "clients_v2")
    page = dialect.parse_list(answer(json.dumps(body).encode()), replay)
    assert page.next is None and page.notes == ["repeated_cursor"]


def test_v5_cursor_accepts_pages_longer_than_limit() -> None:
    dialect = V5CursorDialect("5.8.9", page_size=1)
    page = dialect.parse_list(answer(fixture_bytes("v5", "v5-clients-v2-page.json")),
                              dialect.list_request(None))
    assert len(page.records) == 2 and page.next is not None


@pytest.mark.parametrize(("version", "reliable", "node_filter"), [
    ("5.7.2", False, False), ("5.8.8", False, False), ("5.8.9", True, False),
    ("e5.9.1", False, False), ("5.10.1", False, False), ("5.10.2", True, False),
    ("6.0.0", False, False), ("6.0.1", True, False), ("6.1.1", True, False),
    ("6.1.2", True, True), ("6.2.0", True, False), ("6.2.1", True, True), ("6.3.0", True, True),
])
def test_cursor_version_rules(version: str, reliable: bool, node_filter: bool) -> None:
    from exporter.dialects import parse_version

    parsed = parse_version(version)
    assert cursor_is_reliable(parsed) is reliable
    assert cursor_has_node_filter(parsed) is node_filter


def test_make_dialect_chooses_listing() -> None:
    assert make_dialect("v5", "5.8.9").name == "v5-cursor"
    assert make_dialect("v5", "5.8.8").name == "v5"
    assert make_dialect("v5", "5.8.9", listing="page").name == "v5"
    assert make_dialect("v5", "5.7.0", listing="cursor").name == "v5-cursor"
    assert make_dialect("v4", "4.4.19").name == "v4"
    assert make_dialect("v3", "3.2.8").name == "v3"


def test_v5_nodes_with_a_stopped_node() -> None:
    nodes = V5PageDialect().parse_nodes(answer(fixture_bytes("v5", "v5-nodes.json"),
                                               endpoint="nodes"))
    assert [(n.name, n.running, n.version) for n in nodes] == [
        ("emqx@10.0.0.1", True, "5.8.9"), ("emqx@10.0.0.2", False, None)]


def test_v5_lookup() -> None:
    record = V5PageDialect().parse_lookup(answer(fixture_bytes("v5", "v5-client-one.json")))
    assert record is not None and record.clientid == "01" and record.received_bytes == 49


def test_v3_connections_and_sessions() -> None:
    dialect = V3Dialect("3.2.8")
    request = dialect.list_request("emqx@127.0.0.1")
    page = dialect.parse_list(answer(fixture_bytes("v3", "v3-connections.json")), request)
    (r,) = page.records
    assert (r.clientid, r.ip_address, r.connected) == ("mosquitto_mqtt", "127.0.0.1", True)
    assert r.mqueue_len is None and page.next is None
    sessions = {"code": 0, "meta": {"page": 1, "limit": 10000, "count": 1}, "data": [
        {"client_id": "mosquitto_mqtt", "mqueue_len": 3, "max_mqueue": 1000,
         "mqueue_dropped": 1, "inflight_len": 2, "max_inflight": 32, "awaiting_rel_len": 0,
         "max_awaiting_rel": 100, "subscriptions_count": 1, "max_subscriptions": 0,
         "expiry_interval": 7200, "created_at": "2019-04-29 11:05:01"}]}
    rows, nxt, _, _ = dialect.parse_sessions(answer(json.dumps(sessions).encode()),
                                       dialect.sessions_request("emqx@127.0.0.1"))
    merged = msgspec.structs.replace(r)
    rows[0].apply(merged)
    assert (merged.mqueue_len, merged.mqueue_max, merged.inflight, merged.inflight_max) == (
        3, 1000, 2, 32)
    assert nxt is None


def test_v3_lookup_returns_array_item() -> None:
    record = V3Dialect().parse_lookup(answer(fixture_bytes("v3", "v3-connection-one.json")))
    assert record is not None and record.clientid == "mosquitto_mqtt"


def test_bad_value_in_one_row_skips_only_that_value() -> None:
    body = json.loads(fixture_bytes("v5", "v5-clients.json"))
    good = dict(body["data"][0])
    bad = dict(good, clientid="02", recv_oct="12x", proto_ver=None)
    no_id = dict(good)
    del no_id["clientid"]
    body["data"] = [good, bad, no_id]
    dialect = V5PageDialect("5.8.9")
    page = dialect.parse_list(answer(json.dumps(body).encode()), dialect.list_request("n"))
    assert [r.clientid for r in page.records] == ["01", "02"]
    assert page.records[1].received_bytes is None and page.records[1].sent_bytes == 31
    assert (page.bad_rows, page.bad_values) == (1, 1)


@pytest.mark.parametrize(("body", "content_type", "reason"), [
    (b"<html><body>502 Bad Gateway</body></html>", "text/html", "html_page"),
    (b'{"data": [{"clientid": "a", "recv_oct": 1', "application/json", "bad_json"),
    (b"not json at all", "text/plain", "bad_json"),
    (b'{"data": {"clientid": "a"}}', "application/json", "bad_shape"),
])
def test_unreadable_bodies(body: bytes, content_type: str, reason: str) -> None:
    dialect = V5PageDialect("5.8.9")
    with pytest.raises(DecodeError) as caught:
        dialect.parse_list(answer(body, content_type=content_type), dialect.list_request("n"))
    assert caught.value.reason == reason


def test_records_are_compact() -> None:
    dialect = V5PageDialect("5.8.9")
    page = dialect.parse_list(answer(fixture_bytes("v5", "v5-clients.json")),
                              dialect.list_request("n"))
    # msgspec structs without GC tracking: no per-record __dict__
    assert not hasattr(page.records[0], "__dict__")
    assert msgspec.structs.asdict(page.records[0])["clientid"] == "01"


@pytest.mark.parametrize(("version", "read"), [
    ("5.3.2", False), ("5.8.4", False), ("5.8.5", True), ("5.8.9", True), ("6.0.0", True),
    (None, False),  # unknown: taken as the oldest
])
def test_mqueue_dropped_is_read_from_5_8_5_only(version: str | None, read: bool) -> None:
    # Before 5.8.5 a full queue's drops never reach mqueue_dropped (EMQX fix 14608; 0 after 10
    # drops on the real 5.3.2, 10 on the real 5.8.9): the figure is not what the exporter's
    # families say, so neither listings nor lookups read it, and `fields=` does not ask for it.
    body = json.loads(fixture_bytes("v5", "v5-clients.json"))
    body["data"][0]["mqueue_dropped"] = 7
    wanted = frozenset({"clientid", "received_bytes", "mqueue_dropped"})
    for attrs in (None, wanted):
        dialect = V5PageDialect(version, attrs=attrs)
        request = dialect.list_request("n")
        (r,) = dialect.parse_list(answer(json.dumps(body).encode()), request).records
        assert r.mqueue_dropped == (7 if read else None) and r.received_bytes == 49
        fields = dict(request.params).get("fields")
        if fields is not None:
            assert ("mqueue_dropped" in fields.split(",")) == read
    one = V5PageDialect(version).parse_lookup(answer(json.dumps(body["data"][0]).encode()))
    assert one is not None and one.mqueue_dropped == (7 if read else None)
