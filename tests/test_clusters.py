"""Several clusters in one exporter process, and the v3 generation's two listings end to end."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text
from structlog.testing import capture_logs

from emqx_simulator import ManualClock, SimCluster, SimSettings, build_sim_app
from exporter.config import load_settings
from exporter.server import build_app
from exporter.service import Exporter
from tests.exposition import Sample, samples_text
from tests.harness import per_client, rig, value
from tests.ports import free_port

NODE2 = "emqx@10.0.0.2"


@dataclass
class Multi:
    clusters: dict[str, SimCluster]
    exporter: Exporter
    client: TestClient[web.Request, web.Application]

    async def body(self, accept: str = "") -> str:
        response = await self.client.get("/metrics", headers={"Accept": accept} if accept else {})
        assert response.status == 200
        return await response.text()


@asynccontextmanager
async def multi(tmp_path: Path, sims: dict[str, SimSettings],
                entries: dict[str, dict[str, Any]]) -> AsyncIterator[Multi]:
    """One simulator per entry of `sims`, and an exporter configured by a `clusters:` file."""
    clock = ManualClock()
    servers: list[TestServer] = []
    clusters: dict[str, SimCluster] = {}
    config: dict[str, Any] = {"api_key": "exporter", "api_secret": "secret", "retries": 0,
                              "clusters": []}
    for name, entry in entries.items():
        entry = {"name": name, **entry}
        if name in sims:
            clusters[name] = SimCluster(sims[name], clock)
            server = TestServer(build_sim_app(clusters[name]), host="127.0.0.1")
            await server.start_server()
            servers.append(server)
            entry["emqx_url"] = str(server.make_url("/")).rstrip("/")
        config["clusters"].append(entry)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    exporter = Exporter(load_settings({}, {}, str(path)), clock=clock)
    client: TestClient[web.Request, web.Application] = TestClient(
        TestServer(build_app(exporter, poll=False), host="127.0.0.1"))
    await client.start_server()
    try:
        yield Multi(clusters, exporter, client)
    finally:
        await client.close()
        await exporter.stop()
        for server in servers:
            await server.close()


def by_cluster(samples: list[Sample], name: str) -> dict[tuple[str, str], float]:
    """(cluster, clientid) → value of a per-client family."""
    out: dict[tuple[str, str], float] = {}
    for n, labels, v in samples:
        if n == name:
            got = dict(labels)
            key = (got["cluster"], got["clientid"])
            assert key not in out, f"{name}: {key} exported twice"
            out[key] = v
    return out


def rows_of(cluster: SimCluster) -> dict[str, dict[str, Any]]:
    return {str(row.get("clientid", row.get("client_id"))): row for row in cluster.rows()}


SIMS = {"prod": SimSettings(api="v5", version="5.8.9", nodes=3, clients=600),
        "legacy": SimSettings(api="v4", version="4.4.19", nodes=2, clients=400,
                              timezone="Europe/Berlin")}
ENTRIES: dict[str, dict[str, Any]] = {"prod": {}, "legacy": {"api": "v4",
                                                             "timezone": "Europe/Berlin"}}


async def test_two_clusters_label_every_series_and_share_families(tmp_path: Path) -> None:
    async with multi(tmp_path, SIMS, ENTRIES) as m:
        reports = await m.exporter.poll_all_once()
        assert all(r.ok for r in reports), [r.error for r in reports]
        text = await m.body()
        samples = samples_text(text)
        # Every series names its cluster: per-client, aggregate and self-metrics alike.
        unlabeled = {n for n, labels, _ in samples if "cluster" not in dict(labels)}
        assert unlabeled == set()
        assert {dict(labels)["cluster"] for _, labels, _ in samples} == {"prod", "legacy"}
        # The same client ids exist in both clusters; the cluster label keeps them apart.
        online = by_cluster(samples, "emqx_client_online")
        for name, cluster in m.clusters.items():
            truth = rows_of(cluster)
            assert {cid for c, cid in online if c == name} == set(truth)
            assert {cid: v for (c, cid), v in online.items() if c == name} == {
                cid: 1.0 if row["connected"] else 0.0 for cid, row in truth.items()}
            received = by_cluster(samples, "emqx_client_received_bytes_total")
            # (offline sessions carry no socket counters: fixtures/recorded/*/..._offline.json)
            assert {cid: v for (c, cid), v in received.items() if c == name} == {
                cid: row["recv_oct"] for cid, row in truth.items() if "recv_oct" in row}
            assert value(samples, "emqx_client_exporter_up", cluster=name) == 1
            assert value(samples, "emqx_client_exporter_build_info", cluster=name,
                         emqx_version=cluster.settings.effective_version) == 1
            for node in cluster.node_names:
                on_node = [row for row in truth.values() if row["node"] == node]
                assert value(samples, "emqx_clients_sessions", cluster=name,
                             node=node) == len(on_node)
        # Each cluster's zone: legacy's wall-clock times are read in Berlin time.
        legacy_connected = {cid: v for (c, cid), v in by_cluster(
            samples, "emqx_client_connected_timestamp_seconds").items() if c == "legacy"}
        berlin = ZoneInfo("Europe/Berlin")
        assert legacy_connected == {
            cid: datetime.fromisoformat(row["connected_at"]).replace(tzinfo=berlin).timestamp()
            for cid, row in rows_of(m.clusters["legacy"]).items()}
        # Valid exposition: each family once (with its HELP and TYPE), although both render it.
        types = Counter(line.split()[2] for line in text.splitlines()
                        if line.startswith("# TYPE "))
        assert [name for name, n in types.items() if n > 1] == []
        families = Counter(f.name for f in parse_text(text))
        assert [name for name, n in families.items() if n > 1] == []
        assert "emqx_client_online" in families and "emqx_clients_sessions" in families
        om = await m.body("application/openmetrics-text; version=1.0.0")
        # The OpenMetrics parser is strict: it raises on a family split in two.
        om_families = Counter(f.name for f in parse_om(om))  # type: ignore[no-untyped-call]
        assert [name for name, n in om_families.items() if n > 1] == []


@pytest.mark.parametrize("failure", ["unauthorized", "unreachable"])
async def test_one_failing_cluster_leaves_the_other_intact(tmp_path: Path, failure: str) -> None:
    entries: dict[str, dict[str, Any]] = {"good": {}, "bad": {"api": "v4"}}
    sims = {"good": SIMS["prod"], "bad": SIMS["legacy"]}
    if failure == "unreachable":
        del sims["bad"]
        entries["bad"]["emqx_url"] = f"http://127.0.0.1:{free_port()}"  # nobody listens
    async with multi(tmp_path, sims, entries) as m:
        if failure == "unauthorized":
            await m.exporter.poll_all_once()  # both work first
            assert {c for c, _ in by_cluster(samples_text(await m.body()),
                                             "emqx_client_online")} == {"good", "bad"}
            m.clusters["bad"].faults.add("unauthorized")
        with capture_logs() as logs:
            good, bad = await m.exporter.poll_all_once()
        assert good.ok and not bad.ok
        assert bad.error is not None and bad.error.reason == failure
        samples = samples_text(await m.body())
        online = by_cluster(samples, "emqx_client_online")
        assert {cid for c, cid in online if c == "good"} == set(rows_of(m.clusters["good"]))
        assert {c for c, _ in online} == {"good"}
        assert value(samples, "emqx_client_exporter_up", cluster="good") == 1
        assert value(samples, "emqx_client_exporter_up", cluster="bad") == 0
        assert value(samples, "emqx_client_exporter_api_errors_total", cluster="bad",
                     reason=failure) == 1
        assert value(samples, "emqx_client_exporter_api_errors_total", cluster="good") is None
        assert [e["cluster"] for e in logs if e["event"] == "poll_failed"] == ["bad"]


# -- v3: connections, with queue figures from the session listing ---------------------------


async def test_v3_queue_figures_come_from_the_session_listing() -> None:
    sim = SimSettings(api="v3", version="3.2.8", nodes=3, clients=900)
    async with rig(sim, page_size=100) as r:
        await r.poll()
        samples = await r.scrape()
        connections = rows_of(r.cluster)
        sessions = {row["client_id"]: row for row in r.cluster.sessions()}
        assert set(connections) < set(sessions)  # offline persistent sessions have no connection
        assert any(row["mqueue_len"] for row in sessions.values())
        for family, wire in (("emqx_client_mqueue_messages", "mqueue_len"),
                             ("emqx_client_mqueue_dropped_messages_total", "mqueue_dropped"),
                             ("emqx_client_inflight_messages", "inflight_len"),
                             ("emqx_client_inflight_capacity_messages", "max_inflight"),
                             ("emqx_client_subscriptions", "subscriptions_count")):
            assert per_client(samples, family) == {
                cid: sessions[cid][wire] for cid in connections}, family
        assert set(per_client(samples, "emqx_client_online")) == set(connections)
        for node in r.cluster.node_names:
            assert value(samples, "emqx_clients_mqueue_messages", node=node) == sum(
                sessions[cid]["mqueue_len"] for cid, row in connections.items()
                if row["node"] == node)
        # Both listings were paged (100 rows a page), node by node.
        assert r.cluster.requests["GET /api/v3/nodes/{node}/sessions"] > 3
        assert r.cluster.requests["GET /api/v3/nodes/{node}/connections"] > 3


async def test_v3_failing_session_listing_costs_only_the_queue_figures() -> None:
    sim = SimSettings(api="v3", version="3.2.8", nodes=3, clients=600)
    async with rig(sim, page_size=100) as r:
        r.cluster.faults.add("http_error", status=500, node=NODE2,
                             endpoint="GET /api/v3/nodes/{node}/sessions")
        with capture_logs() as logs:
            (report,) = await r.exporter.poll_all_once()
        assert report.ok and all(o.error is None for o in report.outcomes)
        samples = await r.scrape()
        connections = rows_of(r.cluster)
        sessions = {row["client_id"]: row for row in r.cluster.sessions()}
        # Every connection is exported, the failed node's too.
        assert set(per_client(samples, "emqx_client_online")) == set(connections)
        assert set(per_client(samples, "emqx_client_received_bytes_total")) == set(connections)
        assert value(samples, "emqx_client_exporter_node_up", node=NODE2) == 1
        # Queue figures only where the session listing answered.
        assert per_client(samples, "emqx_client_mqueue_messages") == {
            cid: sessions[cid]["mqueue_len"] for cid, row in connections.items()
            if row["node"] != NODE2}
        assert value(samples, "emqx_client_exporter_api_errors_total",
                     reason="server_error") == 1
        assert value(samples, "emqx_client_exporter_api_requests_total", endpoint="sessions",
                     code="500") == 1
        (failure,) = [e for e in logs if e["event"] == "node_walk_failed"]
        assert failure["node"] == f"{NODE2}/sessions" and failure["reason"] == "server_error"


async def test_v3_bad_value_in_a_session_row_costs_only_that_value() -> None:
    sim = SimSettings(api="v3", version="3.2.8", nodes=3, clients=600)
    async with rig(sim, page_size=100) as r:
        connections = rows_of(r.cluster)
        target = sorted(cid for cid, row in connections.items() if row["node"] == NODE2)[5]
        r.cluster.faults.add("bad_field", endpoint="GET /api/v3/nodes/{node}/sessions",
                             clientid=target, field="mqueue_len", value="12x")
        with capture_logs() as logs:
            (report,) = await r.exporter.poll_all_once()
        assert report.ok
        samples = await r.scrape()
        sessions = {row["client_id"]: row for row in r.cluster.sessions()}
        assert per_client(samples, "emqx_client_mqueue_messages") == {
            cid: sessions[cid]["mqueue_len"] for cid in connections if cid != target}
        # The rest of the row still counts: its inflight figure came through.
        assert per_client(samples, "emqx_client_inflight_messages")[target] == (
            sessions[target]["inflight_len"])
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["bad_client_rows"]
        assert value(samples, "emqx_client_exporter_api_errors_total", reason="bad_value") == 1
