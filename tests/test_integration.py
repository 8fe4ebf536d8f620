"""The exporter against the simulator: every client once, values equal to the simulator's truth."""

from __future__ import annotations

from datetime import datetime

import pytest

from emqx_simulator import SimSettings
from tests.harness import per_client, rig, value

VERSIONS = [("v5", "5.8.9"), ("v5", "5.4.1"), ("v5", "5.6.2"), ("v5", "6.2.1"),
            ("v4", "4.4.19"), ("v4", "4.0.3"), ("v3", "3.2.8")]


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace(" ", "T") + ("" if "+" in text or "Z" in text
                                                              else "+00:00")).timestamp()


@pytest.mark.parametrize(("api", "version"), VERSIONS, ids=[f"{a}-{v}" for a, v in VERSIONS])
async def test_every_client_once_with_equal_values(api: str, version: str) -> None:
    sim = SimSettings(api=api, version=version, nodes=3, clients=2500)  # type: ignore[arg-type]
    async with rig(sim, page_size=400) as r:
        await r.poll()
        samples = await r.scrape()
        truth = {row.get("clientid", row.get("client_id")): row for row in r.cluster.rows()}
        assert truth, "the simulator lists clients"
        received = per_client(samples, "emqx_client_received_bytes_total")
        # An offline session's row has no socket counters (recorded on 4.4.19 and 5.3.2:
        # tests/fixtures/recorded/*/v*_lookup_offline.json): no byte counts for it.
        assert received == {cid: row["recv_oct"] for cid, row in truth.items()
                            if "recv_oct" in row}
        assert len(received) >= sum(1 for row in truth.values() if row.get("connected", True))
        sent = per_client(samples, "emqx_client_sent_bytes_total")
        assert sent == {cid: row["send_oct"] for cid, row in truth.items() if "send_oct" in row}
        online = per_client(samples, "emqx_client_online")
        assert online == {cid: 1.0 if row.get("connected", True) else 0.0
                          for cid, row in truth.items()}
        connected_at = per_client(samples, "emqx_client_connected_timestamp_seconds")
        assert connected_at == pytest.approx(
            {cid: epoch(row["connected_at"]) for cid, row in truth.items()})
        if api != "v3":
            queue = per_client(samples, "emqx_client_mqueue_messages")
            assert queue == {cid: row["mqueue_len"] for cid, row in truth.items()}
        for node in r.cluster.node_names:
            on_node = [row for row in truth.values() if row["node"] == node]
            assert value(samples, "emqx_clients_sessions", node=node) == len(on_node)
            assert value(samples, "emqx_clients_online", node=node) == sum(
                1 for row in on_node if row.get("connected", True))
            assert value(samples, "emqx_client_exporter_node_up", node=node) == 1
            assert value(samples, "emqx_client_exporter_clients_listed", node=node) == len(on_node)
        assert value(samples, "emqx_client_exporter_up") == 1
        assert value(samples, "emqx_client_exporter_build_info", version="0.1.0",
                     emqx_version=version) == 1


async def test_counters_advance_and_reset_on_reconnect() -> None:
    async with rig(SimSettings(clients=300, churn=0.0, offline_sessions=0.0)) as r:
        await r.poll()
        before = per_client(await r.scrape(), "emqx_client_received_bytes_total")
        r.clock.advance(120)
        target = "client-0000007"
        r.cluster.reconnect(target)
        r.clock.advance(1)
        await r.poll()
        samples = await r.scrape()
        after = per_client(samples, "emqx_client_received_bytes_total")
        truth = {row["clientid"]: row for row in r.cluster.rows()}
        assert after == {cid: row["recv_oct"] for cid, row in truth.items()}
        grown = [cid for cid in before if cid != target and after[cid] > before[cid]]
        assert len(grown) > len(before) // 2  # traffic moved on
        assert after[target] < before[target] or before[target] == 0
        connected = per_client(samples, "emqx_client_connected_timestamp_seconds")
        assert connected[target] == pytest.approx(r.clock() - 1, abs=1)


async def test_kicked_client_disappears() -> None:
    async with rig(SimSettings(clients=200)) as r:
        await r.poll()
        assert "client-0000003" in per_client(await r.scrape(), "emqx_client_online")
        response = await r.client.session.delete(f"{r.sim_url}/api/v5/clients/client-0000003",
                                                 auth=None, headers={
            "Authorization": "Basic ZXhwb3J0ZXI6c2VjcmV0"})
        assert response.status == 204
        await r.poll()
        samples = await r.scrape()
        assert "client-0000003" not in per_client(samples, "emqx_client_online")
        assert "client-0000003" not in per_client(samples, "emqx_client_info")


async def test_offline_session_reported_offline() -> None:
    async with rig(SimSettings(clients=500, offline_sessions=0.1)) as r:
        await r.poll()
        samples = await r.scrape()
        offline = {row["clientid"] for row in r.cluster.rows() if not row["connected"]}
        assert offline
        online = per_client(samples, "emqx_client_online")
        assert {cid for cid, v in online.items() if v == 0} == offline
        assert per_client(samples, "emqx_client_disconnected_timestamp_seconds").keys() == offline


async def test_ready_and_health_endpoints() -> None:
    async with rig(SimSettings(clients=10)) as r:
        assert (await r.client.get("/-/healthy")).status == 200
        assert (await r.client.get("/-/ready")).status == 503
        r.exporter._first_done.update(r.exporter.pollers)  # what the poll loop records
        await r.poll()
        assert (await r.client.get("/-/ready")).status == 200
        page = await r.client.get("/")
        assert page.status == 200 and "emqx-client-exporter" in await page.text()


async def test_content_negotiation_and_gzip() -> None:
    async with rig(SimSettings(clients=50)) as r:
        await r.poll()
        headers, body = await r.raw({"Accept-Encoding": "gzip"})
        assert headers["Content-Encoding"] == "gzip"
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = body.decode()
        assert "emqx_client_online{" in text and "emqx_client_exporter_up" in text
        headers, body = await r.raw({"Accept": "application/openmetrics-text;version=1.0.0,"
                                               "text/plain;version=0.0.4;q=0.5",
                                     "Accept-Encoding": "gzip"})
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n") and body.count(b"# EOF") == 1
        om = await r.scrape(openmetrics=True)
        plain = await r.scrape()
        assert per_client(om, "emqx_client_received_bytes_total") == per_client(
            plain, "emqx_client_received_bytes_total")


async def test_scrape_never_polls() -> None:
    async with rig(SimSettings(clients=50)) as r:
        await r.poll()
        served = sum(r.cluster.requests.values())
        for _ in range(3):
            await r.scrape()
        assert sum(r.cluster.requests.values()) == served
        r.clock.advance(42)
        samples = await r.scrape()
        assert value(samples, "emqx_client_exporter_snapshot_age_seconds") == pytest.approx(42)
