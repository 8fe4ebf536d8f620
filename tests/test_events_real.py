"""Client events from real EMQX brokers: real MQTT clients cause each disconnect reason and the
exporter's counts match exactly what the broker published.

What each broker publishes (seen on these builds, and asserted here):
- 5.3.2 and 5.8.9: a takeover publishes a disconnect of the old connection with reason
  `discarded` (clean start), counted as a takeover.
- 4.4.19 publishes no disconnect at all for a taken-over connection: its takeover shows only
  as a second connect, so the counts there have no `discarded` and no takeover.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import load_settings
from exporter.service import Exporter
from tests.mqtt import MqttClient
from tests.realbroker import Broker

pytestmark = pytest.mark.real_emqx("4.4.19", "5.3.2", "5.8.9")

#: Seconds the keepalive of the client that stops pinging lasts (EMQX waits 1.5 x).
KEEPALIVE_S = 2


def _settings(broker: Broker, prefix: str, **events: Any) -> Any:
    return load_settings(
        broker.exporter_config(
            interval=1, events={"host": broker.mqtt_host, "port": broker.mqtt_port,
                                "clientid": f"exporter-events-{prefix}", **events},
            classes=[{"name": "probe", "clientid": f"{prefix}-.*"}],
            per_client={"watch": [f"{prefix}-take"]}),
        {}, None)


def _samples(exporter: Exporter) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every self-metric and event sample the exporter serves, by name and labels."""
    out = {}
    for family in text_string_to_metric_families(exporter.metrics.text().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _probe_counts(exporter: Exporter, node: str) -> dict[str, float]:
    """The event counts of the probe class on `node`, by what they count."""
    counts: dict[str, float] = {}
    for (name, labels), value in _samples(exporter).items():
        d = dict(labels)
        if d.get("class") != "probe" or d.get("node") != node:
            continue
        if name == "emqx_clients_connected_events_total":
            counts["connects"] = value
        elif name == "emqx_clients_disconnected_events_total":
            counts[d["reason"]] = value
        elif name == "emqx_clients_takeover_events_total":
            counts["takeovers"] = value
    return counts


async def _until(condition: Any, what: str, timeout: float = 30.0) -> Any:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = condition()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s")
        await asyncio.sleep(0.05)


async def _counts_become(exporter: Exporter, node: str, expected: dict[str, float],
                         what: str) -> None:
    """Wait until the probe counts equal `expected`; a failure shows the counts seen last.
    Generous: on a loaded machine EMQX's keepalive check and its events take a while."""
    seen: dict[str, float] = {}

    def equal() -> bool:
        nonlocal seen
        seen = _probe_counts(exporter, node)
        return seen == expected

    try:
        await _until(equal, what, timeout=90)
    except AssertionError as error:
        raise AssertionError(f"{error}; counts seen: {seen}") from None


def _up(exporter: Exporter) -> float | None:
    return _samples(exporter).get(("emqx_client_exporter_events_up", ()))


async def test_each_reason_counted_exactly(real_emqx: Broker) -> None:
    broker = real_emqx
    prefix = f"probe{broker.kind.replace('.', '')}"
    exporter = Exporter(_settings(broker, prefix))
    exporter.events.start()
    try:
        await _until(lambda: _up(exporter) == 1.0, "events subscription up")

        def cause_each_reason() -> MqttClient:
            MqttClient(broker, f"{prefix}-normal").connect().disconnect()
            MqttClient(broker, f"{prefix}-kick").connect()
            status, _ = broker.request("DELETE", f"/clients/{prefix}-kick")
            assert status in (200, 204)
            silent = MqttClient(broker, f"{prefix}-silent", keepalive_s=KEEPALIVE_S).connect()
            silent.pause()  # no PINGREQ from now on: EMQX ends it as keepalive_timeout
            first = MqttClient(broker, f"{prefix}-take").connect()
            second = MqttClient(broker, f"{prefix}-take").connect()  # takes `first` over
            second.disconnect()
            first.drop()  # already closed by EMQX; releases the paho client
            MqttClient(broker, f"{prefix}-drop").connect().drop()  # no DISCONNECT
            # Held until EMQX ends it: a paho client that is garbage collected closes its
            # socket, which EMQX would count as tcp_closed instead of keepalive_timeout.
            return silent

        silent = await asyncio.to_thread(cause_each_reason)
        takeover = {} if broker.version.startswith("4.") else {"discarded": 1.0,
                                                               "takeovers": 1.0}
        expected = {"connects": 6.0, "normal": 2.0, "kicked": 1.0, "keepalive_timeout": 1.0,
                    "tcp_closed": 1.0, **takeover}
        await _counts_become(exporter, broker.node, expected,
                             f"{broker.kind}: counts {expected}")
        # An end marker: once its disconnect is counted, nothing earlier is still on its way.
        await asyncio.to_thread(
            lambda: MqttClient(broker, f"{prefix}-zend").connect().disconnect())
        expected.update(connects=7.0, normal=3.0)
        await _counts_become(exporter, broker.node, expected,
                             f"{broker.kind}: counts with the end marker {expected}")
        silent.drop()  # EMQX closed it already
        samples = _samples(exporter)
        watched = (("clientid", f"{prefix}-take"),)
        # the watched client's connects are each counted, though both fell between polls
        assert samples[("emqx_client_connected_events_total", watched)] == 2.0
        last = [dict(labels)["reason"] for (name, labels), _ in samples.items()
                if name == "emqx_client_last_disconnect_timestamp_seconds"]
        assert last == ["normal"]
        assert samples[("emqx_client_exporter_events_decode_errors_total", ())] == 0.0
        assert samples[("emqx_client_exporter_events_gaps_total", ())] == 0.0
    finally:
        await exporter.stop()


async def test_losing_the_subscription_shows_and_never_affects_polling(
        real_emqx: Broker) -> None:
    broker = real_emqx
    prefix = f"lost{broker.kind.replace('.', '')}"
    exporter = Exporter(_settings(broker, prefix))
    exporter.start()
    try:
        await _until(lambda: _up(exporter) == 1.0, "events subscription up")
        await _until(lambda: exporter.ready, "first poll")
        polled = exporter.pollers[0].stats.last_success
        # EMQX kicks the exporter's own MQTT connection: events are missed until it is back.
        status, _ = await asyncio.to_thread(broker.request, "DELETE",
                                            f"/clients/exporter-events-{prefix}")
        assert status in (200, 204)
        await _until(lambda: _up(exporter) == 0.0, "events_up 0 after the kick", timeout=10)
        await _until(lambda: _up(exporter) == 1.0, "events subscription back")
        samples = _samples(exporter)
        assert samples[("emqx_client_exporter_events_gaps_total", ())] == 1.0
        assert samples[("emqx_client_exporter_events_gap_seconds_total", ())] > 0
        # polling went on all along
        await _until(lambda: exporter.pollers[0].stats.last_success != polled, "a later poll")
        assert exporter.pollers[0].stats.up
    finally:
        await exporter.stop()


@pytest.mark.real_emqx("5.8.9")
async def test_an_unreachable_mqtt_listener_costs_polling_nothing(real_emqx: Broker) -> None:
    broker = real_emqx
    # A port nothing listens on: the subscription retries with back-off, polling is untouched.
    exporter = Exporter(_settings(broker, "nowhere", port=1))
    exporter.start()
    try:
        await _until(lambda: exporter.ready, "first poll")
        await _until(lambda: exporter.events.subscriptions[broker.url].events.state.last_error,
                     "a failed connection attempt")
        assert _up(exporter) == 0.0
        assert exporter.pollers[0].stats.up
        assert "emqx_clients_online" in exporter.snapshot.text()
    finally:
        await exporter.stop()
