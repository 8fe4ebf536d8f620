"""Replicas with `--shard i/N` split one cluster: every node and every client exactly once."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bench.shard_listing import listing_cost, replicas
from emqx_simulator import SimSettings
from exporter.dialects import NodeInfo
from exporter.records import ClientRecord
from exporter.server import build_app
from exporter.service import Exporter
from exporter.sharding import assign
from tests.exposition import Sample, samples_text
from tests.harness import per_client


def _nodes(*names: str, stopped: tuple[str, ...] = ()) -> list[NodeInfo]:
    return [NodeInfo(name, name not in stopped) for name in names]


@pytest.mark.parametrize("nodes", [1, 2, 3, 4, 5, 7, 10])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 6])
def test_assignment_is_balanced_and_covers_each_node_once(nodes: int, count: int) -> None:
    names = [f"emqx@10.0.0.{k}" for k in range(nodes)]
    plans = [assign(_nodes(*reversed(names)), (i, count)) for i in range(count)]
    owned = Counter(node for plan in plans for node in plan.owned)
    assert owned == Counter(names)
    sizes = {len(plan.owned) for plan in plans}
    assert sizes <= {nodes // count, -(-nodes // count)}


def test_rows_of_no_known_node_belong_to_the_first_running_node() -> None:
    nodes = _nodes("emqx@a", "emqx@b", "emqx@c", stopped=("emqx@a",))
    plans = [assign(nodes, (i, 2)) for i in range(2)]
    assert [p.anchor for p in plans] == ["emqx@b", "emqx@b"]
    assert [p.owner_of_row(None) for p in plans] == ["emqx@b", "emqx@b"]
    assert plans[0].owner_of_row("emqx@gone") == "emqx@b"
    assert plans[0].owner_of_row("emqx@c") == "emqx@c"


def test_each_row_is_kept_by_exactly_one_walk() -> None:
    """Per-node walks (durable sessions appended to every answer) and cluster-wide walks."""
    nodes = _nodes("emqx@a", "emqx@b", "emqx@c")
    rows = [ClientRecord("on-a", node="emqx@a"), ClientRecord("on-b", node="emqx@b"),
            ClientRecord("no-node"), ClientRecord("gone", node="emqx@gone")]
    for count in (1, 2, 3):
        plans = [assign(nodes, (i, count)) for i in range(count)]
        per_node = Counter(r.clientid for p in plans for n in p.owned for r in p.keep(n, rows))
        cluster_wide = Counter(r.clientid for p in plans for r in p.keep(None, rows))
        assert per_node == cluster_wide == Counter(r.clientid for r in rows), count
    whole = assign(nodes)
    assert [r.clientid for r in whole.keep("emqx@b", rows)] == ["on-b"]
    assert [r.clientid for r in whole.keep("emqx@a", rows)] == ["on-a", "no-node", "gone"]


async def _poll(exporter: Exporter) -> list[Sample]:
    """One poll, then what /metrics serves."""
    await exporter.poll_all_once()
    async with TestClient(TestServer(build_app(exporter, poll=False), host="127.0.0.1")) as http:
        response = await http.get("/metrics")
        assert response.status == 200
        return samples_text(await response.text())


def _by_node(samples: list[Sample], name: str) -> dict[str, float]:
    return {dict(labels)["node"]: v for n, labels, v in samples if n == name}


def _one(samples: list[Sample], name: str) -> float:
    (found,) = [v for n, _, v in samples if n == name]
    return found


LISTINGS = [
    pytest.param(SimSettings(version="5.8.9", durable_sessions=3), {"listing": "cursor"},
                 id="v5-cursor-cluster-wide"),
    pytest.param(SimSettings(version="5.8.9", durable_sessions=3), {"listing": "page"},
                 id="v5-page-per-node"),
    pytest.param(SimSettings(version="6.1.2", durable_sessions=3), {"listing": "cursor"},
                 id="v5-cursor-per-node"),
    pytest.param(SimSettings(api="v4"), {}, id="v4-per-node"),
    pytest.param(SimSettings(api="v3"), {}, id="v3-per-node"),
    pytest.param(SimSettings(version="5.8.9", durable_sessions=3),
                 {"listing": "cursor", "filters": {"conn_state": "connected"}},
                 id="v5-cursor-filtered"),
    pytest.param(SimSettings(version="5.8.9", durable_sessions=3),
                 {"listing": "page", "filters": {"conn_state": "connected"}},
                 id="v5-page-filtered"),
]


@pytest.mark.parametrize("count", [3, 4])
@pytest.mark.parametrize(("sim", "config"), LISTINGS)
async def test_replicas_cover_the_cluster_once(sim: SimSettings, config: dict[str, Any],
                                               count: int) -> None:
    sim = SimSettings(**{**sim.__dict__, "nodes": 3, "clients": 600, "frozen": True})
    async with replicas(sim, count, **config) as (cluster, exporters):
        connected_only = "filters" in config
        # Offline durable sessions count once, for the node they were last connected to.
        expected = {row.get("clientid") or row["client_id"]: row["node"]
                    for row in [*cluster.rows(), *cluster.durable.rows()]
                    if row.get("connected", True) or not connected_only}
        seen: Counter[str] = Counter()
        sessions: Counter[str] = Counter()
        node_up: Counter[str] = Counter()
        owned = []
        for exporter in exporters:
            samples = await _poll(exporter)
            assert _one(samples, "emqx_client_exporter_up") == 1.0
            assert _one(samples, "emqx_client_exporter_duplicate_clients_total") == 0.0
            owned.append(_one(samples, "emqx_client_exporter_shard_nodes"))
            online = per_client(samples, "emqx_client_online")
            seen.update(online.keys())
            sessions.update(_by_node(samples, "emqx_clients_sessions"))
            node_up.update(_by_node(samples, "emqx_client_exporter_node_up"))
        assert sorted(owned) == sorted([1.0] * 3 + [0.0] * (count - 3))
        assert set(node_up) == set(cluster.node_names) and set(node_up.values()) == {1}
        assert seen == Counter(expected.keys()), "each client exported by exactly one replica"
        assert sessions == Counter(expected.values())


WATCH_MODES = [
    pytest.param("5.4.1", {"watch_only": True}, {}, id="watch-only-one-by-one"),
    pytest.param("5.8.9", {"watch_only": True}, {}, id="watch-only-batched"),
    pytest.param("5.8.9", {}, {"listing": "cursor"}, id="walk-cursor-cluster-wide"),
    pytest.param("5.8.9", {}, {"listing": "page"}, id="walk-page-per-node"),
    pytest.param("4.4.19", {}, {"api": "v4"}, id="walk-v4"),
]


@pytest.mark.parametrize("count", [3, 4])
@pytest.mark.parametrize(("version", "mode", "config"), WATCH_MODES)
async def test_replicas_report_each_watched_client_once(version: str, mode: dict[str, Any],
                                                        config: dict[str, Any],
                                                        count: int) -> None:
    """Only the owner of a watched client's node exports it; a replica that cannot vouch for
    a client leaves it out (not 0), and a client found nowhere is 0 on one replica only: the
    owner of the first running node (issue 18, 6)."""
    api = "v4" if version.startswith("4") else "v5"
    sim = SimSettings(api=api, version=version, nodes=3, clients=300,  # type: ignore[arg-type]
                      frozen=True, offline_sessions=0, churn=0)
    watch = [f"client-{i:07d}" for i in range(0, 300, 7)]
    ghosts = ["not-connected-anywhere-1", "not-connected-anywhere-2"]
    per_client_config = {"watch": watch + ghosts, "max_series": 100_000, **mode}
    async with replicas(sim, count, per_client=per_client_config, **config) as (
            cluster, exporters):
        online: Counter[str] = Counter()
        exported: Counter[str] = Counter()
        sessions: Counter[str] = Counter()
        answering = []
        for index, exporter in enumerate(exporters):
            samples = await _poll(exporter)
            assert _one(samples, "emqx_client_exporter_up") == 1.0
            values = per_client(samples, "emqx_client_online")
            exported.update(values.keys())
            online.update(c for c, v in values.items() if v)
            if any(g in values for g in ghosts):
                assert all(values[g] == 0 for g in ghosts)
                answering.append(index)
            sessions.update(_by_node(samples, "emqx_clients_sessions"))
        assert online == Counter(watch)
        assert exported == Counter(watch + ghosts), "each watched client exactly once"
        assert answering == [0]  # shard 0 owns the first node, emqx@10.0.0.1
        if mode:
            assert sessions == Counter({name: cluster.node_counts(k)[0]
                                        for k, name in enumerate(cluster.node_names)})


async def test_the_owner_of_the_first_running_node_answers_for_unplaced_clients() -> None:
    sim = SimSettings(version="5.8.9", nodes=3, clients=60, frozen=True)
    async with replicas(sim, 3, per_client={"watch": ["ghost"]}) as (cluster, exporters):
        cluster.set_node_down("emqx@10.0.0.1")  # the first running node is now emqx@10.0.0.2
        answers = [per_client(await _poll(e), "emqx_client_online") for e in exporters]
    assert answers == [{}, {"ghost": 0}, {}]


async def test_an_idle_replica_is_up_and_exports_nothing_of_the_cluster() -> None:
    sim = SimSettings(version="5.8.9", nodes=1, clients=50, frozen=True)
    async with replicas(sim, 2, listing="cursor") as (cluster, exporters):
        requests_before = sum(cluster.requests.values())
        idle = exporters[1]
        idle._first_done.update(idle.pollers)  # what the poll loop records after a first poll
        samples = await _poll(idle)
        async with TestClient(TestServer(build_app(idle, poll=False), host="127.0.0.1")) as http:
            assert (await http.get("/-/ready")).status == 200
        assert _one(samples, "emqx_client_exporter_up") == 1.0
        assert _one(samples, "emqx_client_exporter_shard_nodes") == 0.0
        assert not per_client(samples, "emqx_client_online")
        assert not _by_node(samples, "emqx_client_exporter_node_up")
        # /nodes only (detection probes included): an idle replica lists no clients.
        listed = [k for k in cluster.requests if "clients" in k]
        assert sum(cluster.requests.values()) - requests_before >= 1 and not listed


async def test_listing_costs_behind_the_sharding_choice() -> None:
    """README "Sharding": three replicas on three nodes, 3000 clients a node, pages of 500.

    Keeping own rows from a cluster-wide cursor walk costs each replica a full walk (3x the
    requests and rows returned), but its continuation reads each row once; per-node page
    listing reads every earlier page again and `select_count`s the node on every page, so
    the rows it scans grow with the square of a node's pages.
    """
    cursor = await listing_cost("cursor", 9000, 500, 3)
    page = await listing_cost("page", 9000, 500, 3)
    assert cursor.rows_returned == 3 * page.rows_returned == 3 * 9000
    assert cursor.requests > 2 * page.requests
    assert cursor.rows_scanned == cursor.rows_returned  # a cursor reads only what it returns
    # 6 pages a node: 3.5 node reads plus 6 counts per node, against 3 cluster walks.
    assert page.rows_scanned > 3 * cursor.rows_scanned

