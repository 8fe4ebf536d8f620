"""The simulator against EMQX's own source, one behaviour per test, each next to its origin.

Read with `shared/emqx-api/REFERENCE.md` §12. Abbreviations, all in repository `emqx/emqx`:
CL = `apps/emqx_management/src/emqx_mgmt_api_clients.erl`, MA = `.../emqx_mgmt_api.erl`,
SUITE = `apps/emqx_management/test/emqx_mgmt_api_clients_SUITE.erl`, MG = `.../emqx_mgmt.erl`.
A test here fails when the simulator stops doing what EMQX does; the exporter's own tests then
run against that behaviour.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_simulator import MakeClient, get, make_client, sim

__all__ = ["make_client"]  # the fixture, re-exported for pytest


# -- `fields=` is a closed enum, different per version (REFERENCE.md §3.6, §12.1) ---------------

FIELDS_CASES = [
    # CL@v5.6.0 L461-669 `fields(client)`, L692-699 `requested_client_fields`: the enum is the
    # schema's names; `zone` and `listener` are returned but not in it.
    ("5.6.2", "clientid,node,username,connected,mountpoint", 200),
    ("5.6.2", "clientid,zone", 400),
    ("5.6.2", "clientid,listener", 400),
    ("5.6.2", "clientid,durable", 400),       # durable-session names join in 5.7.0
    # CL@v5.7.0 L518-780: `durable`, `is_expired`, `n_streams`, `seqno_*` added.
    ("5.7.0", "clientid,durable,is_expired", 200),
    ("5.7.0", "clientid,client_attrs", 400),  # CL@v5.7.1 L819: `[client_attrs | ...]`
    ("5.7.1", "clientid,client_attrs", 200),
    # SUITE@v5.8.9 L1060-1062: a bad name, and `all` beside names, are errors; the union
    # `all | array(enum)` (CL L832) rejects both with the swagger layer's 400 BAD_REQUEST.
    ("5.8.9", "bad_field_name", 400),
    ("5.8.9", "all,bad_field_name", 400),
    ("5.8.9", "all,username,clientid", 400),
    ("5.8.9", "all", 200),
    # Before 5.6.0 there is no `fields` parameter: it is ignored, whatever it says.
    ("5.5.1", "zone,nonsense", 200),
]


@pytest.mark.parametrize(("version", "fields", "status"), FIELDS_CASES)
async def test_fields_enum_per_version(make_client: MakeClient, version: str, fields: str,
                                       status: int) -> None:
    cluster, _ = sim("v5", version, clients=20)
    client = await make_client(cluster)
    got, body = await get(client, f"/api/v5/clients?limit=5&fields={fields}")
    assert got == status, body
    if status == 400:
        assert body["code"] == "BAD_REQUEST"


# -- offline durable sessions (REFERENCE.md §12.2) ----------------------------------------------

async def test_durable_sessions_follow_every_answer_unfiltered(make_client: MakeClient) -> None:
    """CL@v5.8.9 L1503-1523 (`do_list_clients_node_query`) and L1545-1570
    (`do_persistent_session_query`): once a node query is complete, offline durable sessions
    are appended without the query's filters or `node=`; SUITE@v5.8.9 L426-432 asserts one
    disconnected session listed under both nodes."""
    cluster, _ = sim("v5", "5.8.9", clients=30, nodes=2, durable_sessions=2)
    client = await make_client(cluster)
    asked = cluster.population.clientid(0)
    for query in (f"node={cluster.node_names[0]}", f"node={cluster.node_names[1]}",
                  f"clientid={asked}", "conn_state=connected", "fields=clientid"):
        _, body = await get(client, f"/api/v5/clients?limit=1000&{query}")
        durable = [r for r in body["data"] if r.get("durable")]
        assert [r["clientid"] for r in durable] == ["durable-0000", "durable-0001"], query
        # Their rows come whole whatever `fields=` asks (CL L1883-1909, `fields => all`).
        assert all({"node", "connected", "is_persistent"} <= r.keys() for r in durable)
        assert all(r["connected"] is False for r in durable)
    # Each names the node it was last connected to (`last_connected_to`, CL L1896).
    assert [r["node"] for r in durable] == cluster.node_names[:2]


async def test_durable_sessions_of_5_6_name_no_node(make_client: MakeClient) -> None:
    """CL@v5.6.0 L1407-1425: the 5.6 row is clientid, connected, times, expiry, is_persistent,
    ip_address and port: no `node`."""
    cluster, _ = sim("v5", "5.6.2", clients=10, durable_sessions=1)
    client = await make_client(cluster)
    _, body = await get(client, f"/api/v5/clients?limit=100&node={cluster.node_names[0]}")
    (row,) = [r for r in body["data"] if r["clientid"] == "durable-0000"]
    assert "node" not in row and row["is_persistent"] is True and row["connected"] is False


async def test_cursor_listing_filters_durable_sessions(make_client: MakeClient) -> None:
    """CL@v5.8.9 L1721-1790 (`does_offline_chan_info_match`, "used with clients_v2 API"):
    `/clients_v2` applies the filters to offline durable sessions; they are the walk's last
    stage, and a page that holds both stages lists the durable rows first (recorded:
    tests/fixtures/recorded/5.8.9/v5_clients_v2_fields.json, v5_clients_v2_walk_04.json)."""
    cluster, _ = sim("v5", "5.8.9", clients=30, durable_sessions=2)
    client = await make_client(cluster)
    _, every = await get(client, "/api/v5/clients_v2?limit=1000")
    assert [r["clientid"] for r in every["data"][:2]] == ["durable-0000", "durable-0001"]
    assert not [r for r in every["data"][2:] if r.get("durable")]
    _, online = await get(client, "/api/v5/clients_v2?limit=1000&conn_state=connected")
    assert not [r for r in online["data"] if r.get("durable")]


# -- path segments (REFERENCE.md §12.3) --------------------------------------------------------

ODD_PREFIX = "factory/line 1?#%/dev"


async def test_v5_path_id_is_decoded_once_and_raw_slash_is_another_route(
        make_client: MakeClient) -> None:
    """cowboy_router splits the path on `/` and then percent-decodes each segment once; v5's
    handler takes the binding as it is (CL@v5.5.0 `bindings := #{clientid := ...}`)."""
    cluster, _ = sim("v5", "5.5.1", clients=5, client_prefix=ODD_PREFIX)
    client = await make_client(cluster)
    clientid = cluster.population.clientid(3)
    status, _ = await get(client, f"/api/v5/clients/{clientid.replace(' ', '%20')}".replace(
        "?", "%3F").replace("#", "%23").replace("%/", "%25/"))
    assert status == 404  # raw `/`: /clients/factory/... is no route
    encoded = "factory%2Fline%201%3F%23%25%2Fdev-0000003"
    status, body = await get(client, f"/api/v5/clients/{encoded}")
    assert status == 200 and body["clientid"] == clientid


async def test_v4_decodes_the_path_id_once(make_client: MakeClient) -> None:
    """Recorded on the real 4.4.19 (tests/fixtures/recorded/4.4.19/v4_lookup_slashed_once.json,
    v4_lookup_slashed_twice.json, v4_lookup_missing.json): an id encoded once is found, encoded
    twice it is not (200 with empty data, as for a missing client). REFERENCE.md §12.3 said
    v4 decodes twice; the real broker showed otherwise (issue 17)."""
    cluster, _ = sim("v4", "4.4.19", clients=5, client_prefix=ODD_PREFIX)
    client = await make_client(cluster)
    clientid = cluster.population.clientid(3)
    once = "factory%2Fline%201%3F%23%25%2Fdev-0000003"
    status, body = await get(client, f"/api/v4/clients/{once}")
    assert status == 200 and [r["clientid"] for r in body["data"]] == [clientid]
    twice = once.replace("%", "%25")
    _, body = await get(client, f"/api/v4/clients/{twice}")
    assert body == {"code": 0, "data": []}
    _, body = await get(client, f"/api/v4/clients/{once.replace('0003', '0009')}")
    assert body == {"code": 0, "data": []}  # no such client


# -- filters ------------------------------------------------------------------------------------

async def test_like_filter_is_dropped_beside_the_exact_one(make_client: MakeClient) -> None:
    """MA@v5.8.9 L617-620 (`do_parse_qstring`): "remove fuzzy keys if present in accurate
    query"; SUITE@v5.8.9 L980-991: `like_username=does-not-matter` beside usernames."""
    cluster, _ = sim("v5", "5.8.9", clients=200)
    client = await make_client(cluster)
    username = next(r["username"] for r in cluster.rows() if r["username"])
    _, exact = await get(client, f"/api/v5/clients?limit=1000&username={username}")
    _, both = await get(client, f"/api/v5/clients?limit=1000&username={username}"
                                "&like_username=does-not-matter")
    assert exact["data"] and both["data"] == exact["data"]


async def test_cursor_node_filter_exists_only_where_released(make_client: MakeClient) -> None:
    """`changes/6.1.2.en.md` L207 (PR #17120): `node=` on `/clients_v2` in 6.1.2 and 6.2.1; it is
    a per-row guard, so an unknown node answers 200 and no rows (SUITE L2053-2058), while 6.2.0
    and 5.x ignore the parameter (REFERENCE.md §1.4, §12.7)."""
    for version, scoped in (("5.8.9", False), ("6.1.2", True), ("6.2.0", False),
                            ("6.2.1", True)):
        cluster, _ = sim("v5", version, clients=60)
        client = await make_client(cluster)
        status, body = await get(client, "/api/v5/clients_v2?limit=1000&node=emqx@nowhere")
        assert status == 200, version
        assert (body["data"] == []) == scoped, version


# -- /nodes per version (REFERENCE.md §1.5, §12.4) ----------------------------------------------

@pytest.mark.parametrize(("api", "version", "live", "connections_are"), [
    ("v3", "3.2.8", False, "online"),     # emqx-management@v3.2.8 emqx_mgmt.erl L134-154
    ("v4", "4.4.18", False, "sessions"),  # MG@v4.4.19 L142-160; changes/v4.4.19-en.md L32-34
    ("v4", "4.4.19", True, "sessions"),
    ("v5", "5.0.26", False, "sessions"),  # MG@v5.8.9 L132-196: live_connections from 5.1.0
    ("v5", "5.1.0", True, "sessions"),
])
async def test_nodes_report_what_the_version_knows(make_client: MakeClient, api: str,
                                                   version: str, live: bool,
                                                   connections_are: str) -> None:
    cluster, _ = sim(api, version, clients=100, offline_sessions=0.2)
    client = await make_client(cluster)
    _, body = await get(client, f"/api/{api}/nodes")
    rows: list[dict[str, Any]] = body if api == "v5" else body["data"]
    for row in rows:
        k = cluster.node_id(row.get("node") or row["name"])
        assert k is not None
        sessions, online = cluster.node_counts(k)
        assert ("live_connections" in row) == live
        assert row["connections"] == (online if connections_are == "online" else sessions)


# -- values -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("version", "scale"), [("5.0.13", 1000), ("5.0.14", 1)])
async def test_expiry_interval_unit(make_client: MakeClient, version: str, scale: int) -> None:
    """CL@v5.0.14 L874, L945-946: the `div 1000` to seconds arrived in 5.0.14."""
    cluster, _ = sim("v5", version, clients=50)
    client = await make_client(cluster)
    _, body = await get(client, "/api/v5/clients?limit=100")
    expiries = {r["clientid"]: r["expiry_interval"] for r in body["data"]}
    profiles = {cluster.population.clientid(i): cluster.profile(i).expiry for i in range(50)}
    assert expiries and all(v == profiles[c] * scale for c, v in expiries.items())


@pytest.mark.parametrize("api", ["v3", "v4"])
async def test_no_username_is_written_undefined(make_client: MakeClient, api: str) -> None:
    """v3/v4 format the `undefined` atom of a client without a username as "undefined"
    (REFERENCE.md §12.10)."""
    cluster, _ = sim(api, None, clients=300)
    client = await make_client(cluster)
    path = "/api/v4/clients?_limit=1000" if api == "v4" else (
        f"/api/v3/nodes/{cluster.node_names[0]}/connections/?_limit=1000")
    _, body = await get(client, path)
    missing = [i for i in range(300) if cluster.population.username(i) is None]
    key = "clientid" if api == "v4" else "client_id"
    listed = {r[key]: r["username"] for r in body["data"]}
    names = {listed[c] for c in map(cluster.population.clientid, missing) if c in listed}
    assert names == {"undefined"}


@pytest.mark.parametrize(("version", "divisor"), [("3.1.2", 1000), ("3.2.0", 1)])
async def test_v3_session_expiry_unit(make_client: MakeClient, version: str,
                                      divisor: int) -> None:
    """REFERENCE.md §12.5: EMQX 3.0-3.1 report the expiry seconds divided by 1000 (fixed in
    3.2.0)."""
    cluster, _ = sim("v3", version, clients=50)
    client = await make_client(cluster)
    _, body = await get(client, f"/api/v3/nodes/{cluster.node_names[0]}/sessions/?_limit=100")
    expected = {cluster.population.clientid(i): cluster.profile(i).expiry // divisor
                for i in range(50)}
    got = {r["client_id"]: r["expiry_interval"] for r in body["data"]}
    assert got and all(v == expected[c] for c, v in got.items())
