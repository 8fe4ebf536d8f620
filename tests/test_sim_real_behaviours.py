"""Behaviours of the real brokers the simulator models, each against the recording or the EMQX
source it follows (issue 17, items 3 and 4). The recordings: `tests/fixtures/recorded/<version>/`
(`observations.json` holds the figures seen while recording, by `python -m tests.record_emqx`).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from emqx_simulator import ManualClock, SimCluster, SimSettings, build_sim_app
from emqx_simulator.durable import SEQNO_KEYS
from tests.recordings import RECORDED

AUTH = {"Authorization": "Basic ZXhwb3J0ZXI6c2VjcmV0"}  # exporter:secret


def observed(version: str) -> dict[str, Any]:
    return json.loads((RECORDED / version / "observations.json").read_text())  # type: ignore[no-any-return]


def recorded(version: str, name: str) -> dict[str, Any]:
    return json.loads((RECORDED / version / f"{name}.json").read_text())  # type: ignore[no-any-return]


async def client_for(cluster: SimCluster) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = TestClient(TestServer(build_sim_app(cluster),
                                                          host="127.0.0.1"))
    await client.start_server()
    return client


async def get(client: TestClient[Any, Any], path: str) -> tuple[int, Any]:
    async with client.get(path, headers=AUTH) as answer:
        return answer.status, await answer.json(content_type=None)


@pytest.fixture
async def make(request: pytest.FixtureRequest) -> Any:
    opened: list[TestClient[Any, Any]] = []

    async def build(settings: SimSettings, clock: ManualClock | None = None) -> tuple[
            SimCluster, TestClient[Any, Any]]:
        cluster = SimCluster(settings, clock or ManualClock())
        client = await client_for(cluster)
        opened.append(client)
        return cluster, client

    yield build
    for client in opened:
        await client.close()


def listed(body: Any, clientid: str) -> dict[str, Any]:
    return next(r for r in body["data"] if r["clientid"] == clientid)


# -- item 3: stale listings -----------------------------------------------------------------------


@pytest.mark.parametrize("version", ["4.4.19", "5.3.2"])
def test_recorded_listing_lags_the_lookup(version: str) -> None:
    """The figures the model follows (observations.json): queued messages and sent counts
    showed in the listing ~15 s after a lookup showed them; after a lookup the listing agrees."""
    seen = observed(version)
    assert seen["lag_listing_mqueue_len_at_once"] == 0
    assert seen["lag_lookup_mqueue_len"] == seen["lag_queued"]
    assert 5 < seen["lag_listing_mqueue_len_shown_after_s"] < 45
    assert 5 < seen["online_listing_send_msg_shown_after_s"] < 45
    assert seen["lag_listing_mqueue_len_after_lookup"] == seen["lag_queued"]


async def test_listing_shows_a_queue_only_after_its_refresh(make: Any) -> None:
    """`listing_refresh_s` (observations.json of 4.4.19 and 5.3.2: ~15 s): a patched queue shows
    at once in `GET /clients/{id}`, in the listing only from the client's next refresh."""
    clock = ManualClock()
    cluster, client = await make(SimSettings(api="v5", version="5.3.2", nodes=1, clients=40,
                                             offline_sessions=0.5, churn=0.0,
                                             listing_refresh_s=15), clock)
    offline = next(r["clientid"] for r in cluster.rows() if not r["connected"])
    _, before = await get(client, "/api/v5/clients?limit=100")
    was = listed(before, offline)["mqueue_len"]
    cluster.patch(offline, mqueue_len=was + 30)
    _, page = await get(client, "/api/v5/clients?limit=100")
    lag = 0
    while listed(page, offline)["mqueue_len"] == was:
        assert lag < 15, "the listing did not catch up within one refresh period"
        clock.advance(1)
        lag += 1
        _, page = await get(client, "/api/v5/clients?limit=100")
    assert listed(page, offline)["mqueue_len"] == was + 30
    # A lookup is fresh, and refreshes the listed row at once.
    cluster.patch(offline, mqueue_len=was + 31)
    _, page = await get(client, "/api/v5/clients?limit=100")
    if listed(page, offline)["mqueue_len"] != was + 31:  # unless its refresh fell just now
        status, one = await get(client, f"/api/v5/clients/{offline}")
        assert (status, one["mqueue_len"]) == (200, was + 31)
        _, page = await get(client, "/api/v5/clients?limit=100")
        assert listed(page, offline)["mqueue_len"] == was + 31


async def test_listing_counters_step_once_per_refresh(make: Any) -> None:
    """A connected client's counters in the listing change once per refresh period, while the
    lookup's grow continuously (observations.json: online_listing_send_msg_shown_after_s)."""
    clock = ManualClock()
    cluster, client = await make(SimSettings(api="v5", version="5.8.9", nodes=1, clients=40,
                                             offline_sessions=0.0, churn=0.0,
                                             listing_refresh_s=15), clock)
    busy = max(cluster.rows(), key=lambda r: r["recv_oct"])["clientid"]
    clock.advance(100)
    listed_values, looked_up = [], []
    for _ in range(30):
        _, page = await get(client, "/api/v5/clients?limit=100")
        listed_values.append(listed(page, busy)["recv_oct"])
        looked_up.append(cluster.dict_rows([cluster.population.index_of(busy) or 0])[0][
            "recv_oct"])
        clock.advance(1)
    steps = sum(1 for a, b in itertools.pairwise(listed_values) if a != b)
    assert 1 <= steps <= 2  # 30 s: one or two refreshes
    assert len(set(looked_up)) > 10


async def test_listing_is_fresh_by_default(make: Any) -> None:
    """Off by default: every test written before the recordings reads fresh listings."""
    cluster, client = await make(SimSettings(api="v5", version="5.3.2", nodes=1, clients=20))
    one = next(r["clientid"] for r in cluster.rows())
    cluster.patch(one, mqueue_len=77)
    _, page = await get(client, "/api/v5/clients?limit=100")
    assert listed(page, one)["mqueue_len"] == 77


def test_listing_refresh_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="listing_refresh_s"):
        SimSettings(listing_refresh_s=-1)


# -- item 3: a full queue ---------------------------------------------------------------------


def full_queue_rows(cluster: SimCluster, clock: ManualClock) -> list[dict[str, Any]]:
    clock.advance(6 * 3600)  # slow consumers' queues fill up
    return [r for r in cluster.rows() if r.get("send_msg.dropped.queue_full")]


def test_v5_full_queue_counts_in_send_msg_dropped_only() -> None:
    """Recorded (5.3.2/observations.json, full_lookup): 1011 messages to a queue of 1000:
    `send_msg.dropped` and `.queue_full` 11, `mqueue_dropped` 0."""
    seen = observed("5.3.2")["full_lookup"]
    assert seen["mqueue_dropped"] == 0
    assert seen["send_msg.dropped.queue_full"] == seen["send_msg.dropped"] > 0
    clock = ManualClock()
    cluster = SimCluster(SimSettings(api="v5", version="5.3.2", clients=3000), clock)
    full = full_queue_rows(cluster, clock)
    assert full
    assert all(r["mqueue_dropped"] == 0 for r in full)
    assert all(r["send_msg.dropped"] >= r["send_msg.dropped.queue_full"] for r in full)


def test_v5_8_5_full_queue_counts_in_mqueue_dropped_too() -> None:
    """From 5.8.5 (EMQX fix 14608: `emqx_session_mem:enqueue_msg` keeps the queue that
    counted the drop) `mqueue_dropped` counts a full queue's drops: 10 of 10 on the real
    5.8.9 (`test_real_broker_clients.py::test_every_per_client_figure_matches_emqx`).
    5.8.4 is still as 5.3.2."""
    for version, counted in (("5.8.4", False), ("5.8.5", True), ("5.8.9", True)):
        clock = ManualClock()
        cluster = SimCluster(SimSettings(api="v5", version=version, clients=3000), clock)
        full = full_queue_rows(cluster, clock)
        assert full, version
        if counted:
            # the session's count (a resumed session keeps its queue), the connection's drops
            assert all(r["mqueue_dropped"] >= r["send_msg.dropped.queue_full"] > 0
                       for r in full), version
        else:
            assert all(r["mqueue_dropped"] == 0 for r in full), version


def test_v4_full_queue_counts_in_both() -> None:
    """Recorded (4.4.19/observations.json, full_lookup): there `mqueue_dropped` counts too."""
    seen = observed("4.4.19")["full_lookup"]
    assert seen["mqueue_dropped"] == seen["send_msg.dropped.queue_full"] > 0
    clock = ManualClock()
    cluster = SimCluster(SimSettings(api="v4", version="4.4.19", clients=3000), clock)
    full = full_queue_rows(cluster, clock)
    assert full and all(r["mqueue_dropped"] > 0 for r in full)


# -- item 3: durable sessions ---------------------------------------------------------------


def recorded_durable_row() -> dict[str, Any]:
    rows = recorded("5.8.9", "v5_clients")["body"]["data"]
    return next(r for r in rows if r.get("durable"))


async def test_durable_rows_have_the_recorded_keys_and_no_queue(make: Any) -> None:
    """Recorded (5.8.9/v5_clients.json, v5_clients_fields.json): an offline durable session's
    row has `n_streams` and `seqno_q*`, no `mqueue_max`, `mqueue_len` 0 whatever waits
    (observations.json: 0 with 5 and 1011 messages published to it), whole whatever `fields=`
    asks for."""
    real = recorded_durable_row()
    assert observed("5.8.9")["full_lookup"]["mqueue_len"] == 0
    assert {"n_streams", *SEQNO_KEYS} <= set(real) and "mqueue_max" not in real
    with_fields = recorded("5.8.9", "v5_clients_fields")["body"]["data"]
    assert set(next(r for r in with_fields if r.get("durable"))) == set(real)
    _cluster, client = await make(SimSettings(api="v5", version="5.8.9", nodes=1, clients=10,
                                             durable_sessions=3))
    _, page = await get(client, "/api/v5/clients?limit=100&fields=clientid,mqueue_len")
    durable = [r for r in page["data"] if r.get("durable")]
    assert len(durable) == 3
    assert all(set(r) == set(real) and r["mqueue_len"] == 0 for r in durable)


async def test_page_count_holds_durable_sessions_only_cluster_wide(make: Any) -> None:
    """Recorded (5.8.9): with `node=` (v5_clients.json) `count` is the live clients only;
    without (v5_clients_page2.json) the cluster query adds the disconnected durable sessions."""
    every_row = recorded("5.8.9", "v5_clients")["body"]
    live = len([r for r in every_row["data"] if not r.get("durable")])
    assert live < len(every_row["data"]) and every_row["meta"]["count"] == live
    assert recorded("5.8.9", "v5_clients_page2")["body"]["meta"]["count"] == len(
        every_row["data"])
    cluster, client = await make(SimSettings(api="v5", version="5.8.9", nodes=1, clients=10,
                                             offline_sessions=0.0, churn=0.0,
                                             durable_sessions=3))
    node = cluster.node_names[0]
    _, scoped = await get(client, f"/api/v5/clients?limit=100&node={node}")
    _, every = await get(client, "/api/v5/clients?limit=100")
    assert scoped["meta"]["count"] == 10 and every["meta"]["count"] == 13
    assert len(scoped["data"]) == len(every["data"]) == 13  # rows appended either way


async def test_nodes_connections_leave_durable_sessions_out(make: Any) -> None:
    """Recorded (5.8.9/nodes.json): `connections` counts the channel table: 7 live clients,
    not the offline durable sessions the listing also holds (v5_clients.json)."""
    nodes = recorded("5.8.9", "nodes")["body"]
    rows = recorded("5.8.9", "v5_clients")["body"]["data"]
    assert nodes[0]["connections"] == len([r for r in rows if not r.get("durable")])
    assert len(rows) > nodes[0]["connections"]
    _cluster, client = await make(SimSettings(api="v5", version="5.8.9", nodes=2, clients=30,
                                             offline_sessions=0.0, churn=0.0,
                                             durable_sessions=4))
    _, answer = await get(client, "/api/v5/nodes")
    assert sum(n["connections"] for n in answer) == 30


async def test_cursor_walk_reaches_durable_sessions_with_another_cursor(make: Any) -> None:
    """Recorded (5.8.9/v5_clients_v2_walk_*.json): live clients first, then the durable
    stage, whose cursor has another shape (there: 32 characters against 175)."""
    walk = sorted((recorded("5.8.9", p.stem) for p in (RECORDED / "5.8.9").glob(
        "v5_clients_v2_walk_*.json")), key=lambda r: r["name"])
    cursors = [r["body"]["meta"].get("cursor") for r in walk]
    live = {len(c) for c, r in zip(cursors, walk, strict=True)
            if c and not any(row.get("durable") for row in r["body"]["data"])}
    durable = {len(c) for c, r in zip(cursors, walk, strict=True)
               if c and any(row.get("durable") for row in r["body"]["data"])}
    assert live and durable and not live & durable
    _cluster, client = await make(SimSettings(api="v5", version="5.8.9", nodes=1, clients=6,
                                             offline_sessions=0.0, churn=0.0,
                                             durable_sessions=5))
    cursor, pages = "", []
    while True:
        _, page = await get(client, f"/api/v5/clients_v2?limit=2{cursor}")
        pages.append(page)
        if "cursor" not in page["meta"]:
            break
        cursor = f"&cursor={page['meta']['cursor']}"
    stage = [any(r.get("durable") for r in p["data"]) for p in pages]
    assert stage == sorted(stage)  # live pages, then durable ones
    shapes = {p["meta"]["cursor"] for p, d in zip(pages, stage, strict=True)
              if "cursor" in p["meta"] and d}
    assert shapes and not shapes & {p["meta"].get("cursor") for p, d in
                                    zip(pages, stage, strict=True) if not d}


# -- item 4: stopped nodes, expired sessions, failed RPC ---------------------------------------


async def test_durable_sessions_of_a_stopped_node_are_still_listed(make: Any) -> None:
    """5.1+: durable sessions live in durable storage, not on a node: with the node they last
    connected to stopped, the running nodes still list them (`do_persistent_session_query`,
    emqx_mgmt_api_clients.erl@v5.8.9 L1545-1570: "accessible from all nodes"); `node=` of
    the stopped node is NODE_DOWN (shared/emqx/README.md, seen on the real cluster)."""
    cluster, client = await make(SimSettings(api="v5", version="5.8.9", nodes=2, clients=20,
                                             durable_sessions=4))
    stopped = cluster.node_names[1]
    theirs = {cluster.durable.clientid(k) for k in range(4)
              if cluster.durable.node_of(k) == stopped}
    assert theirs
    cluster.set_node_down(stopped)
    _, page = await get(client, "/api/v5/clients?limit=1000")
    assert theirs <= {r["clientid"] for r in page["data"]}
    _, first = await get(client, "/api/v5/clients_v2?limit=1000")
    assert theirs <= {r["clientid"] for r in first["data"]}
    status, body = await get(client, f"/api/v5/clients?limit=10&node={stopped}")
    assert (status, body["code"]) == (500, "NODE_DOWN")


async def test_expired_durable_sessions_are_listed_as_expired(make: Any) -> None:
    """5.7+: a durable session past its expiry interval stays in storage until collected and
    is listed with `is_expired: true` (`is_expired/1`, emqx_mgmt_api_clients.erl@v5.8.9
    L1542-1543, L1904)."""
    cluster, client = await make(SimSettings(api="v5", version="5.8.9", nodes=1, clients=5,
                                             durable_sessions=4, expired_durable_sessions=1))
    _, page = await get(client, "/api/v5/clients?limit=100")
    expired = [r for r in page["data"] if r.get("is_expired")]
    assert [r["clientid"] for r in expired] == [cluster.durable.clientid(3)]
    row = expired[0]
    assert row["durable"] and not row["connected"]
    _, walk = await get(client, "/api/v5/clients_v2?limit=100")
    assert [r["clientid"] for r in walk["data"] if r.get("is_expired")] == [row["clientid"]]
    _, one = await get(client, f"/api/v5/clients/{row['clientid']}")
    assert one["is_expired"] is True
    with pytest.raises(ValueError, match=r"5\.7\.0"):
        SimSettings(api="v5", version="5.6.1", durable_sessions=2, expired_durable_sessions=1)


async def test_v4_nodes_row_of_a_node_whose_rpc_fails(make: Any) -> None:
    """emqx_mgmt_api_nodes.erl@v4.4.19 L35-41: `format(Node, {error, Reason}) -> #{node =>
    Node, error => Reason}` for a member whose `rpc:call` failed; a stopped member (not in
    `running_db_nodes`) is left out (emqx_mgmt.erl L134-138)."""
    cluster, client = await make(SimSettings(api="v4", version="4.4.19", nodes=3, clients=30))
    broken, stopped = cluster.node_names[1], cluster.node_names[2]
    cluster.set_node_unreachable(broken)
    cluster.set_node_down(stopped)
    _, body = await get(client, "/api/v4/nodes")
    rows = {r["node"]: r for r in body["data"]}
    assert rows[broken] == {"node": broken, "error": "nodedown"}
    assert stopped not in rows
    assert rows[cluster.node_names[0]]["node_status"] == "Running"
    async with client.post(f"/sim/nodes/{broken}/up") as answer:
        assert answer.status == 204
    _, body = await get(client, "/api/v4/nodes")
    assert {r["node"]: r.get("node_status") for r in body["data"]}[broken] == "Running"


def test_recordings_are_where_the_tests_expect_them() -> None:
    assert Path(RECORDED / "5.8.9" / "observations.json").exists()
