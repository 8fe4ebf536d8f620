"""Client events: decoding EMQX's messages (as recorded from the real brokers), counting them by
node, class and reason, per watched client, and their exposition."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter import contract
from exporter.aggregate import Classifier, ClassRule
from exporter.events import ClusterEvents, EventCounter, EventsCollector, parse

RECORDINGS = Path(__file__).parent / "fixtures" / "events"
VERSIONS = ("4.4.19", "5.3.2", "5.8.9")


def recording(version: str) -> list[tuple[str, bytes]]:
    """(topic, payload) of every event a real broker published in tests/fixtures/events."""
    return [(topic, json.dumps(body).encode())
            for topic, body in json.loads((RECORDINGS / f"{version}.json").read_text())]


def _counter(rules: tuple[ClassRule, ...] = (), watch: frozenset[str] = frozenset(),
             **options: object) -> EventCounter:
    return EventCounter(Classifier(rules), watch, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", VERSIONS)
def test_recorded_messages_decode(version: str) -> None:
    events = [parse(topic, payload) for topic, payload in recording(version)]
    assert all(e is not None for e in events)
    slash = [e for e in events if e is not None and e.clientid == "ev/slash"]
    # a client id with '/' comes whole from the payload; a username is kept, "undefined" is none
    assert [(e.kind, e.username) for e in slash] == [("connected", "u1"), ("disconnected", "u1")]
    normal = next(e for e in events if e is not None and e.clientid == "ev-normal"
                  and e.kind == "disconnected")
    assert normal.username is None and normal.reason == "normal"
    assert normal.node == re.sub(r"\$SYS/brokers/([^/]+)/.*", r"\1", recording(version)[0][0])
    assert normal.at is not None and normal.at > 1.7e9


@pytest.mark.parametrize("version", VERSIONS)
def test_recorded_session_counts_by_reason(version: str) -> None:
    """The recorded session: normal, kicked, two clean takeovers (v5 and v3.1.1), a persistent
    takeover, a dropped socket, a keepalive timeout, a client id with a slash."""
    counter = _counter()
    for topic, payload in recording(version):
        counter.handle(topic, payload)
    by_reason: dict[str, int] = {}
    for (_node, _cls, reason), n in counter.disconnects.items():
        by_reason[reason] = by_reason.get(reason, 0) + n
    assert sum(counter.connects.values()) == 11
    if version.startswith("4."):  # 4.4.19 publishes no disconnect for a taken-over connection
        assert by_reason == {"normal": 5, "kicked": 1, "tcp_closed": 1, "keepalive_timeout": 1}
        assert not counter.takeovers
    else:
        assert by_reason == {"normal": 5, "kicked": 1, "tcp_closed": 1, "keepalive_timeout": 1,
                             "discarded": 2, "takenover": 1}
        assert sum(counter.takeovers.values()) == 3
    assert counter.messages == len(recording(version)) and counter.decode_errors == 0


def _event(kind: str, clientid: str, reason: str | None = None, node: str = "emqx@n1",
           username: str | None = None, at_ms: int = 1_700_000_000_000) -> tuple[str, bytes]:
    body: dict[str, object] = {"clientid": clientid, "username": username or "undefined",
                               "ts": at_ms}
    if reason is not None:
        body.update(reason=reason, disconnected_at=at_ms)
    return f"$SYS/brokers/{node}/clients/{clientid}/{kind}", json.dumps(body).encode()


def test_reasons_outside_the_list_are_other_and_classes_apply() -> None:
    rules = (ClassRule("clientid", re.compile("meter-.*"), "meter"),
             ClassRule("username", re.compile("gw"), "gateway"))
    counter = _counter(rules)
    for topic, payload in (_event("disconnected", "meter-1", "keepalive_timeout"),
                           _event("disconnected", "x", "some_new_reason", username="gw"),
                           _event("disconnected", "y", "normal"),
                           _event("connected", "meter-2")):
        counter.handle(topic, payload)
    assert counter.disconnects == {("emqx@n1", "meter", "keepalive_timeout"): 1,
                                   ("emqx@n1", "gateway", "other"): 1,
                                   ("emqx@n1", "other", "normal"): 1}
    assert counter.connects == {("emqx@n1", "meter"): 1}
    assert "other" not in contract.DISCONNECT_REASONS


def test_what_is_not_an_event_is_a_decode_error_and_other_events_are_ignored() -> None:
    counter = _counter()
    counter.handle("$SYS/brokers/n/clients/a/disconnected", b"{not json")
    counter.handle("$SYS/brokers/n/clients/a/disconnected", b'{"clientid":"a"}')  # no reason
    counter.handle("$SYS/brokers/n/uptime", b"12")
    counter.handle("$SYS/brokers/n/clients/a/subscribed", b'{"topic":"t"}')
    assert (counter.messages, counter.decode_errors) == (4, 3)
    assert not counter.connects and not counter.disconnects


def test_watched_clients_count_each_connect_and_keep_the_last_reason() -> None:
    counter = _counter(watch=frozenset({"dev-1"}))
    for at, reason in ((1_000, "keepalive_timeout"), (2_000, "tcp_closed")):
        counter.handle(*_event("connected", "dev-1", at_ms=at))
        counter.handle(*_event("disconnected", "dev-1", reason, at_ms=at + 500))
    counter.handle(*_event("connected", "dev-2"))
    assert counter.client_connects == {"dev-1": 2}
    assert counter.client_last == {"dev-1": ("tcp_closed", 2.5)}


def test_a_shard_counts_only_its_own_nodes() -> None:
    counter = _counter(owns=lambda node: node == "emqx@a")
    counter.handle(*_event("connected", "x", node="emqx@a"))
    counter.handle(*_event("connected", "y", node="emqx@b"))
    assert counter.connects == {("emqx@a", "other"): 1}


def test_exposition_says_lower_bound_and_labels_class_only_with_classes() -> None:
    collector = EventsCollector()
    counter = _counter(watch=frozenset({"dev-1"}))
    counter.handle(*_event("disconnected", "dev-1", "kicked"))
    collector.clusters = [ClusterEvents(None, counter)]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    disconnects = families["emqx_clients_disconnected_events"]
    assert "lower bound" in disconnects.documentation and "QoS 0" in disconnects.documentation
    assert [(s.labels, s.value) for s in disconnects.samples if s.name.endswith("_total")] == [
        ({"node": "emqx@n1", "reason": "kicked"}, 1.0)]
    last = families["emqx_client_last_disconnect_timestamp_seconds"].samples
    assert [(s.labels, s.value) for s in last] == [({"clientid": "dev-1", "reason": "kicked"},
                                                    1.7e9)]
    assert families["emqx_client_exporter_events_up"].samples[0].value == 0.0
    # with classes configured, the class label is there
    rules = (ClassRule("clientid", re.compile("dev-.*"), "dev"),)
    counter2 = _counter(rules)
    counter2.handle(*_event("connected", "dev-1"))
    collector.clusters = [ClusterEvents("a", counter2)]
    families = {f.name: f for f in text_string_to_metric_families(
        generate_latest(registry).decode())}
    assert [(s.labels, s.value) for s in families["emqx_clients_connected_events"].samples
            if s.name.endswith("_total")] == [
        ({"cluster": "a", "node": "emqx@n1", "class": "dev"}, 1.0)]
