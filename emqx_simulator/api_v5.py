"""EMQX 5.x/6.x routes: ``/api/v5/login``, ``/nodes``, ``/clients``, ``/clients_v2``."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web
from multidict import MultiMapping

from emqx_simulator.cluster import SimCluster
from emqx_simulator.context import AUTH, CLUSTER, cached_json, int_param, row_faults
from emqx_simulator.faults import apply_edits
from emqx_simulator.listing import (
    ClientFilter,
    cursor_page,
    decode_cursor,
    encode_cursor,
    page_window,
    v5_hasnext,
)
from emqx_simulator.nodes import node_info, nodes_list
from emqx_simulator.responses import json_response, v5_error
from emqx_simulator.settings import Features
from emqx_simulator.wire import RowShape, v5_fields_enum

PREFIX = "/api/v5"
#: Routes that need no Authorization header.
PUBLIC_ROUTES = frozenset({f"POST {PREFIX}/login"})

_CONN_STATES = ("connected", "idle", "disconnected")


class BadRequestError(Exception):
    """A request the v5 API rejects with 400 ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def response(self) -> web.Response:
        """The 400 response."""
        return v5_error(400, self.code, self.message)


def _validation_error(name: str, value: str, expected: str) -> BadRequestError:
    # The dashboard's schema check reports hocon errors; this keeps their gist.
    return BadRequestError(
        "BAD_REQUEST",
        f'{{"kind":"validation_error","path":"{name}","reason":"{expected}","value":"{value}"}}',
    )


def _typed(name: str, value: str, expected: str) -> BadRequestError:
    return BadRequestError(
        "INVALID_PARAMETER",
        f"the {name} parameter expected type is {expected}, but the value is {value}",
    )


def parse_filter(query: MultiMapping[str], f: Features) -> ClientFilter:
    """The filters of a v5 list request; raises BadRequestError for malformed values."""
    state = query.get("conn_state")
    if state is not None and state not in _CONN_STATES:
        raise _validation_error("conn_state", state, "unable_to_convert_to_enum_symbol")
    clean: bool | None = None
    if "clean_start" in query:
        text = query["clean_start"]
        if text not in ("true", "false"):
            raise _validation_error("clean_start", text, "not_boolean")
        clean = text == "true"
    proto: int | None = None
    if "proto_ver" in query:
        text = query["proto_ver"]
        if not (text.isascii() and text.isdigit()):
            raise _typed("proto_ver", text, "integer")
        proto = int(text)
    # Exact clientid (repeatable) and repeatable username arrived in 5.6.0; before, minirest
    # kept only the last value of a repeated parameter and clientid was not a filter at all.
    usernames = query.getall("username", [])
    clientids = tuple(query.getall("clientid", [])) if f.fields_param else ()
    # A fuzzy filter on a key the exact filters already name is dropped (emqx_mgmt_api.erl
    # @v5.8.9 L617-620, do_parse_qstring: "remove fuzzy keys if present in accurate query").
    return ClientFilter(
        clientids=clientids,
        usernames=tuple(usernames if f.fields_param else usernames[-1:]),
        conn_state=state,
        ip_address=query.get("ip_address"),
        clean_start=clean,
        proto_ver=proto,
        like_clientid=None if clientids else query.get("like_clientid"),
        like_username=None if usernames else query.get("like_username"),
    )


def _limit(query: MultiMapping[str], f: Features) -> int:
    limit = int_param(query, "limit", 100)
    if limit is None:
        raise _validation_error("limit", query.getall("limit")[-1], "not_integer")
    if not 1 <= limit <= f.max_limit:
        # Recorded: tests/fixtures/recorded/5.8.9/v5_clients_limit_0.json and
        # v5_clients_limit_over.json (the schema's range check, for 0 as for 10001).
        raise BadRequestError("BAD_REQUEST", msgspec.json.encode(
            {"value": limit, "reason": {"expected": f"1..{f.max_limit}"}, "path": "limit",
             "kind": "validation_error"}).decode())
    return limit


def _shape(cluster: SimCluster, query: MultiMapping[str]) -> RowShape | None:
    """The row shape ``fields=`` asks for (5.6.0+; ignored before), None for all fields."""
    if not cluster.features.fields_param or "fields" not in query:
        return None
    spec = query.getall("fields")[-1]
    if spec == "all":
        return None
    # `all` or an array of enum names (a hoconsc union): `all` among names, or a name outside
    # this version's enum, fails both members of the union.
    names = [name for name in spec.split(",") if name]
    enum = v5_fields_enum(cluster.features.version)
    unknown = [name for name in names if name not in enum]
    if unknown or not names:
        raise _validation_error("fields", spec, "unable_to_convert_to_enum_symbol")
    return cluster.dialect.subset(names)


def _node_down(node: str, known: bool) -> web.Response:
    who, why = (f"'{node}'", "nodedown") if known else (f'<<"{node}">>', '<<"invalid node">>')
    return v5_error(500, "NODE_DOWN", f"bad rpc call {who}, Reason {why}")


def _scope(cluster: SimCluster, node: str | None) -> list[int] | web.Response:
    """Node indices a query covers, or the NODE_DOWN error of ``node=``."""
    if node is None:
        return cluster.listing_nodes()
    k = cluster.node_id(node)
    if k is None or k in cluster.down_nodes():
        return _node_down(node, k is not None)
    return [k]


async def clients(request: web.Request) -> web.Response:
    """``GET /clients``: page paging over the running nodes (or one ``node=``)."""
    cluster = request.app[CLUSTER]
    f, query = cluster.features, request.query
    try:
        limit = _limit(query, f)
        page = int_param(query, "page", 1)
        if page is None:
            raise _validation_error("page", query.getall("page")[-1], "not_integer")
        if page < 1 or limit < 1:
            raise BadRequestError("INVALID_PARAMETER", "page_limit_invalid")
        shape = _shape(cluster, query)
        flt = parse_filter(query, f)
    except BadRequestError as exc:
        return exc.response()
    nodes = _scope(cluster, query.get("node"))
    if isinstance(nodes, web.Response):
        return nodes

    def build() -> dict[str, Any]:
        faults = row_faults(request)
        seqs = cluster.seqs(nodes, "sessions", flt)
        start = (page - 1) * limit
        first = max(0, start - faults.duplicate) + faults.skip
        indices = page_window(seqs, first, limit + (start - max(0, start - faults.duplicate)))
        sizes = [seq.size for seq in seqs]
        # EMQX reads each node from its first row and drops rows before the page (MA@v5.8.9
        # L456-600), and node= or an exact filter turns the cheap count into a select_count
        # scan of every node asked, on every page (MA L527-541, CL L935-944).
        cluster.rows_scanned += min(start + limit, sum(sizes))
        if "node" in query or flt.active:
            cluster.rows_scanned += sum(sizes)
        data = cluster.materialize(indices, shape)
        # Offline durable sessions follow the nodes' rows: unfiltered, whatever node= says,
        # whole whatever fields= says, and counted in the total (simulator.durable).
        durable = cluster.durable.rows()
        counted = sum(sizes)
        if durable:
            skip = max(0, start - sum(sizes))
            data += durable[skip : skip + max(0, limit - len(data))]
            sizes.append(len(durable))
            # The cluster query adds the disconnected durable sessions to the total, a node
            # query does not (add_persistent_session_count, MAC@v5.8.9 L1453, L1485-1497;
            # recorded: 5.8.9/v5_clients.json count 7 with node=, v5_clients_page2.json 9).
            if "node" not in query:
                counted += len(durable)
        cluster.rows_returned += len(data)
        meta: dict[str, Any] = {}
        if not flt.fuzzy:  # fuzzy filters cannot be counted cheaply: EMQX leaves count out
            meta["count"] = counted
        meta.update(limit=limit, page=page)
        if f.hasnext:
            meta["hasnext"] = faults.hasnext_lies or v5_hasnext(sizes, start, limit)
        return {"data": data, "meta": meta}

    return cached_json(request, build)


async def clients_v2(request: web.Request) -> web.Response:
    """``GET /clients_v2`` (5.7.0+): cursor paging, stateless and replayable cursors."""
    cluster = request.app[CLUSTER]
    f, query = cluster.features, request.query
    try:
        limit = _limit(query, f)
        if limit < 1:
            raise _validation_error("limit", str(limit), f"range(1, {f.max_limit})")
        flt = parse_filter(query, f)
    except BadRequestError as exc:
        return exc.response()
    # Where node= exists (6.1.2) it is a per-row guard while EMQX scans every running node,
    # so an unknown node lists nothing: 200 and no rows (SUITE L2053-2058), not NODE_DOWN.
    scanned = cluster.listing_nodes()
    wanted = query.get("node") if f.v2_node_filter else None
    guard = None if wanted is None else cluster.node_id(wanted)
    nodes = scanned if wanted is None else [k for k in scanned if k == guard]
    # With node=, durable sessions last connected to that node ("changes/6.1.2.en.md" L207).
    durable = [r for r in cluster.durable.rows(flt) if wanted is None or r.get("node") == wanted]
    start = (0, 0)
    if "cursor" in query:
        decoded = decode_cursor(query["cursor"])
        # The durable-session stage follows the last node: its index is one past the nodes.
        if decoded is None or decoded[0] > len(nodes) or (decoded[0] == len(nodes)
                                                           and not durable):
            return v5_error(400, "BAD_REQUEST", "bad cursor")
        start = decoded

    def build() -> dict[str, Any]:
        faults = row_faults(request)
        seqs = cluster.seqs(nodes, "sessions", flt)
        node_pos, ord_from = start
        ord_from = max(0, ord_from - faults.duplicate) + faults.skip
        page = cursor_page(seqs, node_pos, ord_from, limit, f.v2_long_pages)
        # A continuation resumes where the last page ended: only this page's rows are read
        # (with node=, a per-row guard over every node: those rows are read too).
        cluster.rows_scanned += len(page.indices)
        if wanted is not None and "cursor" not in query:
            others = [k for k in scanned if k != guard]
            cluster.rows_scanned += sum(seq.size for seq in cluster.seqs(others, "sessions", flt))
        data = cluster.materialize(page.indices)
        cursor = page.next_cursor
        if cursor is None and durable:
            skip = ord_from if node_pos == len(seqs) else 0
            room = limit - len(data)
            # A page's rows are its stages' rows in reverse: the durable stage's come before
            # the live clients of the same page (format_results folds over a list built by
            # prepending, MAC@v5.8.9 L990-1041; recorded: 5.8.9/v5_clients_v2_fields.json).
            data = [*durable[skip : skip + max(0, room)], *data]
            if skip + room < len(durable):
                cursor = (len(seqs), skip + max(0, room))
        if cursor is None and faults.phantom and data and seqs:
            # Resume past the end of the last node: the next page is empty and final.
            cursor = (len(seqs) - 1, len(seqs[-1].members))
        cluster.rows_returned += len(data)
        meta: dict[str, Any] = {"count": len(data)}
        if cursor is not None:
            meta["cursor"] = encode_cursor(*cursor)
        if f.v2_hasnext:
            meta["hasnext"] = cursor is not None
        return {"data": data, "meta": meta}

    return cached_json(request, build)


def _not_found() -> web.Response:
    return v5_error(404, "CLIENTID_NOT_FOUND", "Client ID not found")


async def client(request: web.Request) -> web.Response:
    """``GET /clients/{clientid}``: the bare client object."""
    cluster = request.app[CLUSTER]
    row = cluster.row(request.match_info["clientid"])
    if row is None:
        return _not_found()
    rows = [row]
    apply_edits(rows, row_faults(request).edits)
    return json_response(rows[0])


async def kick(request: web.Request) -> web.Response:
    """``DELETE /clients/{clientid}``: 204, or 404 for an unknown client."""
    cluster = request.app[CLUSTER]
    if not cluster.kick(request.match_info["clientid"]):
        return _not_found()
    return web.Response(status=204)


async def kick_bulk(request: web.Request) -> web.Response:
    """``POST /clients/kickout/bulk`` (5.1.0+) with a JSON array of client ids: 204."""
    try:
        ids = msgspec.json.decode(await request.read(), type=list[str])
    except msgspec.DecodeError as exc:
        return v5_error(400, "BAD_REQUEST", str(exc))
    cluster = request.app[CLUSTER]
    for clientid in ids:
        cluster.kick(clientid)
    return web.Response(status=204)


async def nodes(request: web.Request) -> web.Response:
    """``GET /nodes``: a bare array; stopped nodes have three keys."""
    return json_response(nodes_list(request.app[CLUSTER]))


async def node(request: web.Request) -> web.Response:
    """``GET /nodes/{node}``."""
    cluster = request.app[CLUSTER]
    k = cluster.node_id(request.match_info["node"])
    if k is None:
        return v5_error(404, "NOT_FOUND", "node not found")
    return json_response(node_info(cluster, k, single=True))


async def login(request: web.Request) -> web.Response:
    """``POST /login``: a bearer token for the dashboard user."""
    return request.app[AUTH].login(await request.read())


def add_routes(app: web.Application, f: Features) -> None:
    """Register the routes the simulated v5 version has."""
    r = app.router
    r.add_post(f"{PREFIX}/login", login)
    r.add_get(f"{PREFIX}/nodes", nodes)
    r.add_get(f"{PREFIX}/nodes/{{node}}", node)
    r.add_get(f"{PREFIX}/clients", clients)
    if f.clients_v2:
        r.add_get(f"{PREFIX}/clients_v2", clients_v2)
    if f.bulk_kick:
        r.add_post(f"{PREFIX}/clients/kickout/bulk", kick_bulk)
    r.add_get(f"{PREFIX}/clients/{{clientid}}", client)
    r.add_delete(f"{PREFIX}/clients/{{clientid}}", kick)
