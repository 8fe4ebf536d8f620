"""A real two-node 5.8.9 cluster: per-node walks, a killed member shown `stopped` (node_up 0,
its clients gone, the poll still up) and its recovery."""

from __future__ import annotations

import pytest

from tests.harness import per_client, value
from tests.mqtt import devices
from tests.real_exporter import exporting
from tests.realbroker import Broker, BrokerPool

pytestmark = pytest.mark.real_emqx

ONLINE = "emqx_client_online"


def _node_up(samples: list[tuple[str, tuple[tuple[str, str], ...], float]]) -> dict[str, float]:
    return {dict(labels)["node"]: v for n, labels, v in samples
            if n == "emqx_client_exporter_node_up"}


def _by_node(samples: list[tuple[str, tuple[tuple[str, str], ...], float]],
             name: str) -> dict[str, float]:
    return {dict(labels)["node"]: v for n, labels, v in samples if n == name}


@pytest.mark.parametrize("listing", ["page"])  # per-node walks (cursor on 5.8.9 is one walk)
async def test_per_node_figures_node_failure_and_recovery(
        real_cluster: list[Broker], broker_pool: BrokerPool, listing: str) -> None:
    first, second = real_cluster
    ids = {first.node: [f"i17-c1-{listing}-{k}" for k in range(3)],
           second.node: [f"i17-c2-{listing}-{k}" for k in range(2)]}
    with devices(first, ids[first.node], keepalive_s=600), \
            devices(second, ids[second.node], keepalive_s=600):
        nodes = {n["node"]: n for n in first.get("/nodes")}
        first.wait_for(lambda: all(
            n["live_connections"] >= len(ids[name])
            for name, n in {m["node"]: m for m in first.get("/nodes")}.items()),
            "both nodes count their connections")
        async with exporting(first, listing=listing, page_size=2) as rig:
            samples = await rig.until(lambda s: [] if all(
                per_client(s, ONLINE).get(c) == 1 for cs in ids.values() for c in cs)
                else ["not every client online yet"], "every client exported")
            assert _node_up(samples) == {first.node: 1, second.node: 1}
            nodes = {n["node"]: n for n in first.get("/nodes")}
            online = _by_node(samples, "emqx_clients_online")
            assert online == {name: n["live_connections"] for name, n in nodes.items()}
            info = {dict(labels)["clientid"]: dict(labels)["node"] for n, labels, _ in samples
                    if n == "emqx_client_info" and "node" in dict(labels)}
            for node, clients in ids.items():
                assert all(info.get(c, node) == node for c in clients)

            second.kill()
            first.wait_for(lambda: {n["node"]: n["node_status"] for n in first.get("/nodes")}
                           .get(second.node) == "stopped", "the killed member shown stopped")
            samples = await rig.until(lambda s: [] if _node_up(s).get(second.node) == 0
                                      else ["node_up still 1"], "the stopped node down")
            assert value(samples, "emqx_client_exporter_up") == 1
            assert _node_up(samples)[first.node] == 1
            online_ids = per_client(samples, ONLINE)
            assert all(online_ids.get(c) == 1 for c in ids[first.node])
            assert not any(c in online_ids for c in ids[second.node])

            broker_pool.restart(second)
            samples = await rig.until(lambda s: [] if _node_up(s).get(second.node) == 1
                                      else ["node_up still 0"], "the restarted node up",
                                      deadline_s=120)
            assert value(samples, "emqx_client_exporter_up") == 1
