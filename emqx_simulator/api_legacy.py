"""EMQX 3.x and 4.x routes: ``/api/v3`` connections and sessions, ``/api/v4`` clients.

Both page with ``_page``/``_limit`` (default 10000, no cap) inside a ``{"code":0,...}``
envelope and report application errors as HTTP 200 with a numeric code.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import MultiMapping

from emqx_simulator.cluster import SimCluster, View
from emqx_simulator.context import CLUSTER, cached_json, int_param, row_faults
from emqx_simulator.faults import apply_edits
from emqx_simulator.listing import ClientFilter, page_window
from emqx_simulator.nodes import node_info, nodes_list
from emqx_simulator.responses import (
    json_response,
    legacy_crash,
    legacy_error,
    legacy_not_found,
    legacy_ok,
)
from emqx_simulator.settings import Features

_DEFAULT_LIMIT = 10000  # management.max_row_limit
_FILTER_PARAMS = (
    "clientid", "username", "zone", "ip_address", "conn_state", "clean_start", "proto_name",
    "proto_ver", "_like_clientid", "_like_username", "_gte_created_at", "_lte_created_at",
    "_gte_connected_at", "_lte_connected_at", "_gte_mqueue_len", "_lte_mqueue_len",
    "_gte_mqueue_dropped", "_lte_mqueue_dropped",
)  # fmt: skip


class LegacyError(Exception):
    """A request answered with a ready-made error response."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _filter(query: MultiMapping[str], f: Features) -> ClientFilter | None:
    """v4.1+ filters; None when the request has none (then ``meta.count`` is the total)."""
    if not f.v4_filters or not any(name in query for name in _FILTER_PARAMS):
        return None
    proto: int | None = None
    if "proto_ver" in query:
        text = query["proto_ver"]
        if not (text.isascii() and text.isdigit()):
            # 4.3.3+ answers code 108; before, the conversion crashed the handler.
            raise LegacyError(
                legacy_error(108, f'Can\'t convert <<"{text}">> to integer type')
                if f.v4_bad_value_108
                else legacy_crash()
            )
        proto = int(text)
    clean = query.get("clean_start")
    return ClientFilter(
        clientids=tuple(query.getall("clientid", [])[-1:]),
        usernames=tuple(query.getall("username", [])[-1:]),
        conn_state=query.get("conn_state"),
        ip_address=query.get("ip_address"),
        clean_start=None if clean is None else clean == "true",
        proto_ver=proto,
        like_clientid=query.get("_like_clientid"),
        like_username=query.get("_like_username"),
        like_regex=not f.like_is_substring,
    )


def _node(cluster: SimCluster, request: web.Request) -> int:
    """The node named in the path: 404 when no such node (its atom would not exist)."""
    k = cluster.node_id(request.match_info["node"])
    if k is None:
        raise LegacyError(legacy_not_found())
    if k in cluster.down_nodes():
        raise LegacyError(legacy_error(101, "nodedown"))
    return k


def _list(request: web.Request, nodes: list[int], view: View, counted: int | None) -> web.Response:
    """One page over ``nodes`` in the v3/v4 envelope.

    ``counted`` is ``meta.count`` when known in advance (v3: the node's connection table).
    """
    cluster = request.app[CLUSTER]
    f, query = cluster.features, request.query
    page = int_param(query, "_page", 1)
    limit = int_param(query, "_limit", _DEFAULT_LIMIT)
    if page is None or limit is None:
        return legacy_crash()  # binary_to_integer crashes: minirest's plain 500
    try:
        flt = _filter(query, f)
    except LegacyError as exc:
        return exc.response

    def build() -> dict[str, Any]:
        faults = row_faults(request)
        seqs = cluster.seqs(nodes, view, flt)
        start = max(0, (page - 1) * limit)
        first = max(0, start - faults.duplicate)
        indices = page_window(seqs, first + faults.skip, max(0, limit) + start - first)
        total = sum(seq.size for seq in seqs)
        meta: dict[str, Any] = {"page": page, "limit": limit}
        if flt is not None:
            meta["count"] = -1  # any filter: EMQX 4 does not count
        else:
            meta["count"] = counted if counted is not None else total
        if f.hasnext:
            meta["hasnext"] = faults.hasnext_lies or total > start + limit
        shape = cluster.dialect.session if view == "sessions" and f.api == "v3" else None
        rows: list[Any]
        rows = cluster.materialize(indices) if shape is None else [*cluster.sessions_of(indices)]
        return legacy_ok(rows, meta)

    return cached_json(request, build)


def _local(cluster: SimCluster) -> list[int]:
    """The node serving the request: v3 and v4.0 list only this one."""
    running = cluster.running_nodes(sort=False)
    return running[:1]


# -- v4 -------------------------------------------------------------------------------------


async def v4_clients(request: web.Request) -> web.Response:
    """``GET /api/v4/clients``: cluster-wide from 4.1.0, the serving node only in 4.0.x."""
    cluster = request.app[CLUSTER]
    f = cluster.features
    if not f.cluster_wide_clients:
        return _list(request, _local(cluster), "sessions", None)
    return _list(request, cluster.listing_nodes(), "sessions", None)


async def node_clients(request: web.Request) -> web.Response:
    """``GET /api/v4/nodes/{node}/clients`` and v3 ``/nodes/{node}/connections``."""
    cluster = request.app[CLUSTER]
    try:
        k = _node(cluster, request)
    except LegacyError as exc:
        return exc.response
    if cluster.features.api == "v3":
        return _list(request, [k], "connections", cluster.node_counts(k)[1])
    return _list(request, [k], "sessions", None)


def _lookup(request: web.Request, node: int | None) -> web.Response:
    cluster = request.app[CLUSTER]
    # The id as the HTTP server decoded it, once: encoded twice it is not found (recorded:
    # tests/fixtures/recorded/4.4.19/v4_lookup_slashed_once.json, ..._twice.json).
    clientid = request.match_info["clientid"]
    row = cluster.row(clientid)
    index = cluster.population.index_of(clientid)
    if row is None or (node is not None and index is not None and
                       cluster.population.node_of(index) != node):  # fmt: skip
        return json_response(legacy_ok([]))
    rows: list[Any] = [row]
    apply_edits(rows, row_faults(request).edits)
    return json_response(legacy_ok(rows))


async def client(request: web.Request) -> web.Response:
    """``GET /clients/{clientid}`` (v3: ``/connections/{clientid}``): data is an array."""
    return _lookup(request, None)


async def node_client(request: web.Request) -> web.Response:
    """``GET /nodes/{node}/clients/{clientid}``: the client if it is on that node."""
    try:
        k = _node(request.app[CLUSTER], request)
    except LegacyError as exc:
        return exc.response
    return _lookup(request, k)


async def kick(request: web.Request) -> web.Response:
    """``DELETE /clients/{clientid}``: ``{"code":0}``, or 112 not_found (v3, v4 < 4.3.9)."""
    cluster = request.app[CLUSTER]
    clientid = request.match_info["clientid"]  # decoded once, as lookups (see _lookup)
    if cluster.kick(clientid) or cluster.features.kick_unknown_ok:
        return json_response({"code": 0})
    return legacy_error(112, "not_found")


async def nodes(request: web.Request) -> web.Response:
    """``GET /nodes``: stopped nodes are silently left out."""
    return json_response(legacy_ok(nodes_list(request.app[CLUSTER])))


async def node(request: web.Request) -> web.Response:
    """``GET /nodes/{node}``."""
    cluster = request.app[CLUSTER]
    k = cluster.node_id(request.match_info["node"])
    if k is None:
        return legacy_not_found()
    if k in cluster.down_nodes():
        return json_response(legacy_ok({"name": cluster.node_names[k], "node_status": "Stopped"}))
    return json_response(legacy_ok(node_info(cluster, k, single=True)))


# -- v3 -------------------------------------------------------------------------------------


async def v3_connections(request: web.Request) -> web.Response:
    """``GET /api/v3/connections/``: despite its description, the serving node only."""
    cluster = request.app[CLUSTER]
    local = _local(cluster)
    counted = cluster.node_counts(local[0])[1] if local else 0
    return _list(request, local, "connections", counted)


async def v3_sessions(request: web.Request) -> web.Response:
    """``GET /api/v3/sessions/``: the serving node only, offline sessions included."""
    return _list(request, _local(request.app[CLUSTER]), "sessions", None)


async def v3_node_sessions(request: web.Request) -> web.Response:
    """``GET /api/v3/nodes/{node}/sessions/``."""
    try:
        k = _node(request.app[CLUSTER], request)
    except LegacyError as exc:
        return exc.response
    return _list(request, [k], "sessions", None)


def _both(router: web.UrlDispatcher, method: str, path: str, handler: Any) -> None:
    """Register ``path`` with and without a trailing slash (minirest accepts both)."""
    router.add_route(method, path, handler)
    router.add_route(method, path + "/", handler)


def add_routes(app: web.Application, f: Features) -> None:
    """Register the routes of the simulated v3 or v4 version."""
    r = app.router
    p = f"/api/{f.api}"
    listing = "connections" if f.api == "v3" else "clients"  # v3 names its clients connections
    _both(r, "GET", f"{p}/nodes", nodes)
    _both(r, "GET", f"{p}/nodes/{{node}}", node)
    _both(r, "GET", f"{p}/{listing}", v3_connections if f.api == "v3" else v4_clients)
    _both(r, "GET", f"{p}/nodes/{{node}}/{listing}", node_clients)
    _both(r, "GET", f"{p}/{listing}/{{clientid}}", client)
    _both(r, "GET", f"{p}/nodes/{{node}}/{listing}/{{clientid}}", node_client)
    _both(r, "DELETE", f"{p}/{listing}/{{clientid}}", kick)
    if f.api == "v3":
        _both(r, "GET", f"{p}/sessions", v3_sessions)
        _both(r, "GET", f"{p}/nodes/{{node}}/sessions", v3_node_sessions)
