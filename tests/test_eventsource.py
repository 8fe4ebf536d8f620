"""The events subscription against the simulator's MQTT server: it comes up, counts, shows each
loss as a gap and comes back with back-off; and the simulator publishes events shaped exactly
like the real brokers' (tests/fixtures/events)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest

from emqx_simulator import ManualClock, SimCluster, SimSettings
from emqx_simulator.events import EventPublisher
from emqx_simulator.mqtt import MqttServer, topic_matches
from exporter import status
from exporter.aggregate import Classifier
from exporter.config import load_settings
from exporter.events import ClusterEvents, EventCounter, EventsSettings
from exporter.eventsource import EventSubscription, describe
from exporter.service import Exporter
from tests.test_events import recording


async def _until(condition: Any, what: str, timeout: float = 10.0) -> Any:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (result := condition()):
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s")
        await asyncio.sleep(0.02)
    return result


@pytest.fixture
async def server() -> AsyncIterator[MqttServer]:
    mqtt = MqttServer()
    await mqtt.start("127.0.0.1", 0)
    yield mqtt
    await mqtt.stop()


@pytest.mark.parametrize(("topic_filter", "topic", "hit"), [
    ("$SYS/brokers/+/clients/#", "$SYS/brokers/n1/clients/a/b/connected", True),
    ("$SYS/brokers/+/clients/#", "$SYS/brokers/n1/stats/x", False),
    ("#", "$SYS/brokers/n1/clients/a/connected", False),  # no $ topics for leading wildcards
    ("+/x", "$SYS/x", False),
    ("a/+/c", "a/b/c", True),
    ("a/+/c", "a/b/c/d", False),
    ("a/#", "a", True),
])
def test_topic_filters(topic_filter: str, topic: str, hit: bool) -> None:
    assert topic_matches(topic_filter, topic) is hit


def _settings(port: int, clientid: str = "exporter-test") -> EventsSettings:
    return EventsSettings(host="127.0.0.1", port=port, username=None, password=None, tls=None,
                          clientid=clientid, topic="$SYS/brokers/+/clients/#", keepalive=30)


async def test_subscription_counts_and_survives_losses(server: MqttServer) -> None:
    events = ClusterEvents(None, EventCounter(Classifier(()), frozenset()))
    subscription = EventSubscription(_settings(server.port), events, "test")
    subscription.start()
    try:
        await _until(lambda: events.state.up, "subscription up")
        for topic, payload in recording("5.8.9"):
            server.publish(topic, payload)
        await _until(lambda: events.counter.messages == len(recording("5.8.9")), "all counted")
        assert events.state.gaps == 0 and "up:" in describe(subscription)
        # the broker drops the connection: a gap, then back (back-off starts at 1 s)
        assert server.kick("exporter-test")
        await _until(lambda: not events.state.up, "down after the kick")
        assert "DOWN" in describe(subscription)
        await _until(lambda: events.state.up, "up again")
        assert events.state.gaps == 1 and events.state.missed_seconds() > 0
    finally:
        await subscription.stop()
    assert not events.state.up


async def test_no_broker_is_down_with_its_error_and_costs_nothing(server: MqttServer) -> None:
    port = server.port
    await server.stop()  # nothing listens there now
    events = ClusterEvents(None, EventCounter(Classifier(()), frozenset()))
    subscription = EventSubscription(_settings(port), events, "test")
    subscription.start()
    try:
        await _until(lambda: events.state.last_error, "a failed attempt")
        # the loop stays free: a timer fires on time while the subscription retries
        loop = asyncio.get_running_loop()
        began = loop.time()
        await asyncio.sleep(0.05)
        assert loop.time() - began < 0.5
        assert not events.state.up and events.state.gaps == 0  # never up: nothing was missed
    finally:
        await subscription.stop()


# --- the simulator's events, held against the recordings of the real brokers ----------------

def _shapes(messages: list[tuple[str, bytes]]) -> dict[str, dict[str, str]]:
    """Per event kind, each payload key's JSON type."""
    shapes: dict[str, dict[str, str]] = {}
    for topic, payload in messages:
        body = json.loads(payload)
        shapes.setdefault(topic.rsplit("/", 1)[1], {k: type(v).__name__ for k, v in body.items()})
    return shapes


@pytest.mark.parametrize(("api", "version"), [("v5", "5.8.9"), ("v5", "5.3.2"), ("v4", "4.4.19")])
async def test_simulated_events_look_like_the_real_ones(server: MqttServer, api: Any,
                                                        version: str) -> None:
    cluster = SimCluster(SimSettings(api=api, version=version, clients=20, churn=0.0))
    publisher = EventPublisher(cluster, server)
    received: list[tuple[str, bytes]] = []
    async with aiomqtt.Client("127.0.0.1", server.port, identifier="watcher") as client:
        await client.subscribe("$SYS/brokers/+/clients/#")
        online = [r["clientid"] for r in cluster.rows() if r.get("connected", True)]
        kicked, left, taken = online[:3]
        cluster.kick(kicked)
        cluster.disconnect(left)
        cluster.reconnect(taken)  # connected already: a takeover
        expected = 3 if api == "v4" else 4  # 4.4 publishes no disconnect for a takeover
        async with asyncio.timeout(5):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                received.append((message.topic.value, message.payload))
                if len(received) == expected:
                    break
    await publisher.stop()
    assert _shapes(received) == _shapes(recording(version))
    reasons = [json.loads(p).get("reason") for _t, p in received]
    takeover = [] if api == "v4" else [reasons[2]]
    assert reasons == ["kicked", "normal", *takeover, None]
    for topic, payload in received:
        node, clientid = topic.split("/")[2], json.loads(payload)["clientid"]
        assert node in cluster.node_names
        assert topic == f"$SYS/brokers/{node}/clients/{clientid}/{topic.rsplit('/', 1)[1]}"


async def test_churning_clients_reconnect_with_reasons(server: MqttServer) -> None:
    clock = ManualClock()
    cluster = SimCluster(SimSettings(api="v5", clients=400, churn=0.5), clock=clock)
    publisher = EventPublisher(cluster, server)
    publisher.start()
    try:
        counter = EventCounter(Classifier(()), frozenset())
        def count(topic: str, payload: bytes) -> int:
            counter.handle(topic, payload)
            return 1
        server.publish = count  # type: ignore[method-assign]  # count what would go out
        clock.advance(600)  # every churning client reconnected at least once
        published = publisher.tick()
        assert published > 0
        assert sum(counter.connects.values()) == published
        reasons = {r for (_n, _c, r) in counter.disconnects}
        assert reasons <= {"keepalive_timeout", "tcp_closed", "normal", "discarded",
                           "takenover"} and "keepalive_timeout" in reasons
        assert counter.decode_errors == 0
    finally:
        await publisher.stop()


async def test_status_page_shows_the_subscription(server: MqttServer) -> None:
    base = {"emqx_url": "http://127.0.0.1:9", "api_key": "k", "api_secret": "s"}
    off = Exporter(load_settings(base, {}, None))
    assert status.build_status(off).clusters[0].events.startswith("off")
    await off.stop()
    exporter = Exporter(load_settings(
        {**base, "events": {"host": "127.0.0.1", "port": server.port}}, {}, None))
    exporter.events.start()
    try:
        state = exporter.events.subscriptions["http://127.0.0.1:9"].events.state
        await _until(lambda: state.up, "subscription up")
        page = status.render_html(status.build_status(exporter))
        assert "<dt>events</dt><dd class='ok'>up: $SYS/brokers/+/clients/# on 127.0.0.1:" in page
        server.kick(exporter.settings.clusters[0].events.clientid)  # type: ignore[union-attr]
        await _until(lambda: not state.up, "down")
        shown = status.build_status(exporter).clusters[0].events
        assert shown.startswith("DOWN (events are being missed)") and "1 gaps" in shown
    finally:
        await exporter.stop()
