"""A cluster-wide cursor walk (clients_v2 without node=) that one node's RPC failure breaks
costs that node's data only: the other nodes are walked page by page instead (issue 18, 4)."""

from __future__ import annotations

from structlog.testing import capture_logs

from emqx_simulator import SimSettings
from exporter.poller import CURSOR_RETRY_POLLS
from tests.harness import Rig, per_client, rig, value

NODE1, NODE2, NODE3 = "emqx@10.0.0.1", "emqx@10.0.0.2", "emqx@10.0.0.3"
SIM = SimSettings(version="5.8.9", nodes=3, clients=300)


def fail_node(r: Rig, node: str) -> None:
    """EMQX lists the node as running, but its RPC fails: 500 NODE_DOWN on any listing that
    involves it, the cluster-wide cursor walk included."""
    for endpoint in ("GET /api/v5/clients_v2", "GET /api/v5/clients"):
        r.cluster.faults.add("node_error", node=node, endpoint=endpoint)


def truth(rows: object, node: str | None = None) -> set[str]:
    return {r["clientid"] for r in rows if node is None or r["node"] == node}  # type: ignore[attr-defined]


async def test_one_failing_node_costs_only_its_own_clients() -> None:
    async with rig(SIM) as r:
        assert (await r.exporter.pollers[0].poll_once()).dialect == "v5-cursor"
        fail_node(r, NODE2)
        r.clock.advance(30)
        with capture_logs() as logs:
            await r.poll()
        samples = await r.scrape()
        rows = list(r.cluster.rows())
        assert set(per_client(samples, "emqx_client_online")) == truth(rows) - truth(rows, NODE2)
        assert value(samples, "emqx_client_exporter_up") == 1
        assert value(samples, "emqx_client_exporter_node_up", node=NODE2) == 0
        assert value(samples, "emqx_client_exporter_node_up", node=NODE1) == 1
        assert value(samples, "emqx_client_exporter_node_up", node=NODE3) == 1
        assert value(samples, "emqx_client_exporter_clients_listed", node=NODE1) == len(
            truth(rows, NODE1))
        failed = [e for e in logs if e["event"] == "node_walk_failed"]
        assert [e["node"] for e in failed] == [NODE2] and failed[0]["reason"] == "node_down"
        page = await (await r.client.get("/")).text()
        assert "partial: 1 of 3 nodes failed" in page
        # Healed: the node comes back, by the cursor walk again.
        r.cluster.faults.clear()
        r.clock.advance(30)
        with capture_logs() as logs:
            await r.poll()
        samples = await r.scrape()
        assert set(per_client(samples, "emqx_client_online")) == truth(rows)
        assert value(samples, "emqx_client_exporter_node_up", node=NODE2) == 1
        assert [e["node"] for e in logs if e["event"] == "node_walk_recovered"] == [NODE2]
        assert r.exporter.pollers[0].last_report is not None
        assert r.exporter.pollers[0].last_report.dialect == "v5-cursor"


async def test_while_the_node_fails_the_cursor_is_not_asked_every_poll() -> None:
    async with rig(SIM) as r:
        fail_node(r, NODE2)
        for _ in range(3):
            await r.poll()
            r.clock.advance(30)
        cursor_walks = r.cluster.requests["GET /api/v5/clients_v2"]
        samples = await r.scrape()
    # The first poll's cursor walk failed at once; the next ones went straight per node.
    assert cursor_walks == 1
    assert value(samples, "emqx_client_exporter_up") == 1
    assert value(samples, "emqx_client_exporter_node_up", node=NODE2) == 0


async def test_a_sharded_replica_keeps_its_own_nodes_when_another_fails() -> None:
    async with rig(SIM, shard="0/2") as r:  # owns emqx@10.0.0.1 and emqx@10.0.0.3
        fail_node(r, NODE2)
        for _ in range(3):
            await r.poll()
            r.clock.advance(30)
        samples = await r.scrape()
        # Its own nodes all answer, but it cannot tell when another shard's node recovers:
        # it tries the cursor again after a few polls, not on every one.
        assert r.cluster.requests["GET /api/v5/clients_v2"] == 1
        polls = 0
        while r.cluster.requests["GET /api/v5/clients_v2"] == 1:
            assert polls < CURSOR_RETRY_POLLS, "the cursor is never tried again"
            await r.poll()
            r.clock.advance(30)
            polls += 1
        assert polls == CURSOR_RETRY_POLLS - 2
        rows = list(r.cluster.rows())
        assert set(per_client(samples, "emqx_client_online")) == (truth(rows, NODE1)
                                                                  | truth(rows, NODE3))
        assert value(samples, "emqx_client_exporter_up") == 1
        assert value(samples, "emqx_client_exporter_node_up", node=NODE2) is None


async def test_a_failure_of_the_owned_node_fails_only_that_node_on_its_shard() -> None:
    async with rig(SIM, shard="1/2") as r:  # owns emqx@10.0.0.2 only
        fail_node(r, NODE2)
        await r.poll()
        samples = await r.scrape()
        assert value(samples, "emqx_client_exporter_up") == 0  # no node of its own walked
        assert value(samples, "emqx_client_exporter_node_up", node=NODE2) == 0
        assert per_client(samples, "emqx_client_online") == {}
