"""Conformance defects of issue 17 (REFERENCE.md §12.3, §13): durable sessions, expired ones, a
stopped node's sessions, v4 `/nodes` error rows, `zone` on 5.1+, and the cap log line.

Each failed before its fix; the behaviours that exist on the real brokers are also tested there
(`tests/test_real_broker_*.py`).
"""

from __future__ import annotations

import json
from typing import Any

from structlog.testing import capture_logs

from emqx_simulator import SimSettings
from exporter.api import Response
from exporter.dialects.v4 import V4Dialect
from exporter.dialects.v5 import V5CursorDialect, V5PageDialect
from exporter.records import v5_fields_param
from tests.harness import per_client, rig, value

ONLINE = "emqx_client_online"
QUEUE = "emqx_client_mqueue_messages"


def _answer(body: object, endpoint: str = "clients") -> Response:
    return Response(200, "application/json", json.dumps(body).encode(), endpoint)


def _row(clientid: str, **values: Any) -> dict[str, Any]:
    return {"clientid": clientid, "node": "emqx@a", "connected": False, "mqueue_len": 0,
            "mqueue_max": 1000, "durable": False, "is_expired": False, **values}


# -- 5.7+: expired durable sessions are neither sessions nor clients ---------------------------

def test_expired_durable_sessions_are_left_out_of_pages_and_lookups() -> None:
    rows = [_row("live", durable=True), _row("expired", durable=True, is_expired=True),
            _row("memory")]
    dialect = V5PageDialect("5.8.9", page_size=3)
    request = dialect.list_request("emqx@a")
    page = dialect.parse_list(_answer({"data": rows, "meta": {"page": 1, "limit": 3,
                                                              "hasnext": True}}), request)
    assert [r.clientid for r in page.records] == ["live", "memory"]
    assert page.next is not None  # the page was full: an expired row still counts for paging
    cursor = V5CursorDialect("5.8.9")
    request = cursor.list_request(None)
    page = cursor.parse_list(_answer({"data": [rows[1]], "meta": {"cursor": "c2"}}), request)
    assert not page.records and page.next is not None  # expired rows only: not the end
    lookup = dialect.parse_lookup(_answer(rows[1], "client"))
    assert lookup is None


def test_expired_rows_arrived_so_they_are_not_unlisted() -> None:
    """`meta.count` counts the expired rows EMQX sent: left out on purpose, they arrived, and
    must not read as rows the listing lost (`emqx_client_exporter_clients_unlisted`)."""
    rows = [_row("live", durable=True), _row("expired", durable=True, is_expired=True)]
    dialect = V5PageDialect("5.8.9", page_size=10)
    page = dialect.parse_list(_answer({"data": rows, "meta": {"page": 1, "limit": 10,
                                                              "count": 2, "hasnext": False}}),
                              dialect.list_request("emqx@a"))
    assert [r.clientid for r in page.records] == ["live"]
    assert len(page.records) + page.bad_rows + page.left_out == page.total == 2


def test_durable_flags_are_asked_for_from_5_7() -> None:
    attrs = frozenset({"clientid", "durable", "is_expired"})
    assert v5_fields_param((5, 8, 9), attrs) == ["clientid", "durable", "is_expired"]
    assert v5_fields_param((5, 6, 0), attrs) == ["clientid"]


# -- durable sessions have no queue figure ------------------------------------------------------

def test_a_durable_session_has_no_queue_figure() -> None:
    rows = [_row("durable", durable=True, mqueue_len=0, mqueue_max=1000),
            _row("memory", mqueue_len=3)]
    dialect = V5PageDialect("5.8.9")
    page = dialect.parse_list(_answer({"data": rows, "meta": {"hasnext": False}}),
                              dialect.list_request(None))
    durable, memory = page.records
    assert (durable.mqueue_len, durable.mqueue_max) == (None, None)
    assert (memory.mqueue_len, memory.mqueue_max) == (3, 1000)


async def test_durable_sessions_export_no_queue_and_add_nothing_to_queue_sums() -> None:
    sim = SimSettings(version="5.8.9", clients=20, offline_sessions=0, churn=0, durable_sessions=4,
                      frozen=True)
    async with rig(sim, listing="page") as r:
        await r.poll()
        samples = await r.scrape()
        online = per_client(samples, ONLINE)
        durable = {c for c in online if c.startswith("durable-")}
        assert len(durable) == 4
        queues = per_client(samples, QUEUE)
        assert not durable & set(queues)  # no false 0
        assert set(queues) == set(online) - durable
        fill = sum(v for n, labels, v in samples
                   if n == "emqx_clients_mqueue_fill_ratio_gcount")
        assert fill == len(online) - len(durable)


# -- a stopped node's durable sessions stay ----------------------------------------------------

async def test_durable_sessions_of_a_stopped_node_are_kept() -> None:
    """5.1+ keeps listing the durable sessions that name a stopped node (REFERENCE.md §13.2):
    they belong to the cluster, not to that node's (impossible) walk."""
    sim = SimSettings(version="5.8.9", nodes=2, clients=20, offline_sessions=0, churn=0,
                      durable_sessions=6, frozen=True)
    async with rig(sim, listing="page") as r:
        await r.poll()
        before = per_client(await r.scrape(), ONLINE)
        durable = {c for c in before if c.startswith("durable-")}
        assert len(durable) == 6
        stopped = r.cluster.node_names[1]
        r.cluster.set_node_down(stopped)
        r.clock.advance(30)
        await r.poll()
        samples = await r.scrape()
        assert value(samples, "emqx_client_exporter_node_up", node=stopped) == 0
        assert value(samples, "emqx_client_exporter_up") == 1
        after = per_client(samples, ONLINE)
        assert durable <= set(after)
        sessions = sum(v for n, _, v in samples if n == "emqx_clients_sessions")
        assert sessions == len(after)
        assert value(samples, "emqx_client_exporter_duplicate_clients_total") == 0


# -- v4 /nodes: a node whose RPC failed has an unknown state ------------------------------------

def test_v4_nodes_error_row_is_not_running() -> None:
    body = {"code": 0, "data": [
        {"node": "emqx@a", "node_status": "Running", "version": "4.4.19", "connections": 3},
        {"node": "emqx@b", "error": "badrpc"}]}
    a, b = V4Dialect("4.4.19").parse_nodes(_answer(body, "nodes"))
    assert a.running and a.error is None
    assert not b.running and b.error == "badrpc" and b.sessions is None and b.online is None


# -- 5.1+ rows carry no zone: no zone="" ---------------------------------------------------------

async def test_no_empty_zone_label_on_5_1_and_later() -> None:
    sim = SimSettings(version="5.8.9", clients=5, offline_sessions=0, churn=0)
    async with rig(sim, per_client={"info_labels": ["username", "zone"]}) as r:
        await r.poll()
        info = [dict(labels) for n, labels, _ in await r.scrape() if n == "emqx_client_info"]
        assert len(info) == 5
        assert all("zone" not in labels for labels in info)
        assert all(labels.get("username") for labels in info)


# -- the cap log line names the cluster ------------------------------------------------------------

async def test_cap_binding_log_names_the_cluster() -> None:
    sim = SimSettings(version="5.8.9", clients=50, offline_sessions=0, churn=0)
    async with rig(sim, per_client={"max_series": 100}) as r:
        with capture_logs() as logs:
            await r.poll()
        (line,) = [e for e in logs if e["event"] == "per_client_cap_binding"]
        assert line["cluster"] == r.sim_url


# -- watch-only: /nodes `connections` leaves offline durable sessions out ---------------------

async def test_watch_only_sessions_unknown_while_offline_durable_sessions_exist() -> None:
    """/nodes counts the channel table (a real 5.8.9: `connections` 2 with 3 sessions, one an
    offline durable session): with offline durable sessions listed, that is not the sessions
    figure, so a watch-only poll exports none (a walk counts them from the listing)."""
    watch = ["client-0000001", "durable-0001"]
    for durable, sessions_known in ((0, True), (3, False)):
        sim = SimSettings(version="5.8.9", clients=20, offline_sessions=0, churn=0,
                          durable_sessions=durable, frozen=True)
        async with rig(sim, per_client={"watch": watch, "watch_only": True}) as r:
            await r.poll()
            samples = await r.scrape()
            assert value(samples, "emqx_client_exporter_up") == 1
            assert per_client(samples, ONLINE)["client-0000001"] == 1
            has_sessions = any(n == "emqx_clients_sessions" for n, _, _ in samples)
            assert has_sessions is sessions_known, durable
            assert sum(v for n, _, v in samples if n == "emqx_clients_online") == 20
