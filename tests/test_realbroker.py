"""The real-broker fixtures themselves: each kind starts, lists an MQTT client, answers for it."""

from __future__ import annotations

import pytest

from tests.mqtt import devices
from tests.realbroker import Broker


def _listed(broker: Broker) -> set[str]:
    path = "/clients?limit=100" if broker.api == "v5" else "/clients?_limit=100"
    body = broker.get(path)
    return {row["clientid"] for row in body["data"]}


@pytest.mark.real_emqx
def test_a_connected_client_is_listed_and_found(real_emqx: Broker) -> None:
    with devices(real_emqx, ["fixture/check 1"]) as (client,):
        real_emqx.wait_for(lambda: "fixture/check 1" in _listed(real_emqx), "listing")
        row = real_emqx.client("fixture/check 1")
        assert row is not None and row["connected"] is True
        client.disconnect()
    real_emqx.wait_for(lambda: "fixture/check 1" not in _listed(real_emqx), "clean exit")
    assert real_emqx.client("fixture/check 1") is None


@pytest.mark.real_emqx
def test_the_cluster_has_two_running_members(real_cluster: list[Broker]) -> None:
    nodes = real_cluster[0].get("/nodes")
    assert sorted(n["node"] for n in nodes) == sorted(m.node for m in real_cluster)
    assert {n["node_status"] for n in nodes} == {"running"}
