"""The poller sequences one poll: discover, walk or look up, record; it never raises."""

from __future__ import annotations

from emqx_simulator import SimSettings
from tests.harness import rig


async def test_the_report_names_the_dialect_discovery_chose() -> None:
    async with rig(SimSettings(version="5.8.9", nodes=3, clients=200)) as r:
        poller = r.exporter.pollers[0]
        first = await poller.poll_once()
        second = await poller.poll_once()
    assert first.ok and second.ok
    assert first.detected is not None and second.detected is None  # detected once
    assert (first.dialect, first.generation) == ("v5-cursor", "v5")
    assert poller.dialect is not None and poller.dialect.name == "v5-cursor"
    assert poller.version == "5.8.9" and poller.stats.api == "v5-cursor"
    assert len(first.outcomes) == 3 and first.clients == second.clients > 0


async def test_nodes_seen_before_go_down_not_away_when_nodes_cannot_be_listed() -> None:
    async with rig(SimSettings(nodes=3, clients=200)) as r:
        poller = r.exporter.pollers[0]
        assert (await poller.poll_once()).ok and poller.rendered
        r.cluster.faults.add("http_error", status=500, endpoint="GET /api/v5/nodes")
        report = await poller.poll_once()
    assert not report.ok and report.error is not None and report.error.reason == "server_error"
    assert len(poller.stats.node_up) == 3 and not any(poller.stats.node_up.values())
    assert poller.rendered == {}  # nothing of a failed poll is served
    assert poller.stats.api_errors["server_error"] == 1


async def test_an_api_key_is_named_as_the_detected_generation_does() -> None:
    async with rig(SimSettings(api="v4", nodes=2, clients=50)) as r:
        poller = r.exporter.pollers[0]
        assert poller.client.auth is not None and poller.client.auth.kind == "API key"
        assert (await poller.poll_once()).ok
        assert poller.client.auth.kind == "application id and secret"


async def test_watch_only_looks_the_clients_up_instead_of_walking() -> None:
    watch = [f"client-{i:07d}" for i in range(0, 200, 20)]
    async with rig(SimSettings(version="5.8.9", nodes=3, clients=200),
                   per_client={"watch": watch, "watch_only": True}) as r:
        poller = r.exporter.pollers[0]
        report = await poller.poll_once()
        requests = dict(r.cluster.requests)
    assert report.ok and {o.node for o in report.outcomes} == {n.name for n in report.nodes}
    assert len(report.outcomes) == 3 and all(o.error is None for o in report.outcomes)
    assert "GET /api/v5/clients_v2" not in requests  # no walk
    assert requests["GET /api/v5/clients"] == 1  # one batch of clientid= filters
