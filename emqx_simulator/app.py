"""The simulator's aiohttp application (one request funnel for counting, faults and auth) and
``serving_simulator``, which serves it while a block runs (the CLI's ``demo``), and
``run_simulator``, which serves it until cancelled (the CLI's ``simulate``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from http import HTTPStatus

import structlog
from aiohttp import web

from emqx_simulator import api_legacy, api_v5, control
from emqx_simulator.auth import Authenticator
from emqx_simulator.cluster import SimCluster
from emqx_simulator.context import AUTH, CLUSTER, PAGES, ROW_FAULTS, Handler, PageCache
from emqx_simulator.events import EventPublisher
from emqx_simulator.faults import ROW_KINDS, FaultRule, RowFaults
from emqx_simulator.mqtt import MqttServer
from emqx_simulator.responses import (
    INTERNAL_ERROR_TEXT,
    PROXY_ERROR_PAGE,
    bare,
    legacy_error,
    legacy_unauthorized,
    plain,
    v5_error,
)
from emqx_simulator.settings import SimSettings

_ROLE_DENIED = "This API Key don't have permission to access this resource"

#: Faults that change the body of an otherwise normal response.
_BODY_KINDS = frozenset({"malformed_json", "cut_json", "truncated"})
#: Faults that answer with a stream or with no answer at all.
_STREAM_KINDS = frozenset({"connection_reset", "huge_body"})
#: One repeated piece of the huge body: valid JSON rows, so only the size is wrong.
_FILLER = b'{"clientid":"filler","recv_oct":1},' * 1024


def route_name(request: web.Request) -> str | None:
    """``"GET /api/v5/clients/{clientid}"``: method and templated path, None when unrouted."""
    resource = request.match_info.route.resource
    if resource is None:
        return None
    path = resource.canonical
    return f"{request.method} {path.rstrip('/') if len(path) > 1 else path}"


def _request_node(request: web.Request) -> str | None:
    """The node a request is about (path or ``node=``), None for cluster-wide requests."""
    return request.match_info.get("node") or request.query.get("node")


def _fault_response(cluster: SimCluster, rule: FaultRule, node: str | None) -> web.Response:
    """The whole response a request-level fault answers with."""
    v5 = cluster.features.api == "v5"
    kind = rule.kind
    if kind == "http_error":
        status = rule.status or 500
        if v5:
            return v5_error(status, str(rule.code or "INTERNAL_ERROR"),
                            rule.message or HTTPStatus(status).phrase)  # fmt: skip
        return plain(status, rule.message or INTERNAL_ERROR_TEXT)
    if kind == "node_error":
        name = rule.node or node or cluster.node_names[0]
        if v5:
            return v5_error(500, "NODE_DOWN", f"bad rpc call '{name}', Reason nodedown")
        # A per-node query reports the failed rpc as code 101; a v4 cluster query crashes.
        return legacy_error(101, "nodedown") if node else plain(500, INTERNAL_ERROR_TEXT)
    if kind == "unauthorized":
        if v5:
            return v5_error(401, str(rule.code or "BAD_API_KEY_OR_SECRET"),
                            rule.message or "Check api_key/api_secret")  # fmt: skip
        return legacy_unauthorized()
    if kind == "forbidden":
        if v5:
            return v5_error(403, str(rule.code or "UNAUTHORIZED_ROLE"),
                            rule.message or _ROLE_DENIED)  # fmt: skip
        return plain(403, rule.message or "Forbidden")
    if kind == "rate_limited":
        return web.Response(status=429, text="Too Many Requests",
                            headers={"Retry-After": str(int(rule.delay or 1))})
    if kind == "html_error":
        status = rule.status or 502
        page = PROXY_ERROR_PAGE.format(status=status, reason=HTTPStatus(status).phrase)
        return web.Response(body=page.encode(), status=status, content_type="text/html")
    # api_error
    if v5:
        return v5_error(rule.status or 500, str(rule.code or "INTERNAL_ERROR"),
                        rule.message or "simulated failure")  # fmt: skip
    code = rule.code if isinstance(rule.code, int) else 102
    return legacy_error(code, rule.message or "unknown")


async def _streamed(request: web.Request, rule: FaultRule) -> web.StreamResponse:
    """No answer (the connection is dropped), or a ``rule.size`` body streamed piece by piece."""
    stream = web.StreamResponse(status=200)
    if rule.kind == "connection_reset":
        if request.transport is not None:
            request.transport.abort()
        return stream
    stream.content_type = "application/json"
    stream.enable_chunked_encoding()
    await stream.prepare(request)
    sent = 0
    try:
        await stream.write(b'{"data":[')
        while sent < rule.size:
            await stream.write(_FILLER)
            sent += len(_FILLER)
        await stream.write(b'{"clientid":"last"}],"meta":{"count":1}}')
        await stream.write_eof()
    except (ConnectionError, RuntimeError):
        pass  # the client gave up reading, as it should
    return stream


async def _damaged(
    request: web.Request, response: web.StreamResponse, rule: FaultRule
) -> web.StreamResponse:
    """The response with its body broken as ``rule`` says."""
    body = response.body if isinstance(response, web.Response) else None
    raw = bytes(body) if isinstance(body, bytes | bytearray) else b"{}"
    content_type = response.content_type or "application/json"
    if rule.kind == "malformed_json":
        broken = raw.replace(b'":', b'";', 1) if b'":' in raw else raw + b"}"
        return web.Response(body=broken, status=response.status, content_type=content_type)
    if rule.kind == "cut_json":
        return web.Response(body=raw[: max(1, len(raw) // 2)], status=response.status,
                            content_type=content_type)  # fmt: skip
    # truncated: promise the whole body, send half of it, then drop the connection.
    stream = web.StreamResponse(status=response.status)
    stream.content_type = content_type
    stream.content_length = len(raw)
    await stream.prepare(request)
    await stream.write(raw[: len(raw) // 2])
    if request.transport is not None:
        request.transport.close()
    return stream


def _unrouted(cluster: SimCluster, request: web.Request) -> web.Response:
    if cluster.features.api != "v5":
        # No route at all: cowboy's bare 404 (recorded: 4.4.19/api_v5_on_v4.json); a route
        # with an unknown node answers minirest's "Not found." (node_unknown.json).
        return bare(404)
    exc = getattr(request.match_info, "http_exception", None)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return web.Response(status=405, headers={"Allow": ",".join(sorted(exc.allowed_methods))})
    return v5_error(404, "NOT_FOUND", "Request Path Not Found")


@web.middleware
async def funnel(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request: count it, fire faults, check auth, run the handler, damage the body."""
    cluster = request.app[CLUSTER]
    name = route_name(request)
    if name is None:
        return _unrouted(cluster, request)
    if name.partition(" ")[2].startswith(control.PREFIX):
        return await handler(request)  # the simulator's own controls: no auth, no faults
    cluster.requests[name] += 1
    node = _request_node(request)
    row_faults = RowFaults()
    damage: FaultRule | None = None
    for rule in cluster.faults.fire(name, node):
        if rule.kind == "latency":
            await asyncio.sleep(rule.delay)
        elif rule.kind == "node_down" and rule.node is not None:
            cluster.set_node_down(rule.node)
        elif rule.kind in ROW_KINDS:
            row_faults.add(rule)
        elif rule.kind in _BODY_KINDS:
            damage = rule
        elif rule.kind in _STREAM_KINDS:
            return await _streamed(request, rule)
        else:
            return _fault_response(cluster, rule, node)
    if name not in api_v5.PUBLIC_ROUTES:
        denied = request.app[AUTH].check(request.headers.get("Authorization"))
        if denied is not None:
            return denied
    request[ROW_FAULTS] = row_faults
    response = await handler(request)
    if damage is not None:
        return await _damaged(request, response, damage)
    return response


def build_sim_app(cluster: SimCluster) -> web.Application:
    """An aiohttp application serving every route of ``cluster.settings.api``."""
    app = web.Application(middlewares=[funnel])
    app[CLUSTER] = cluster
    app[AUTH] = Authenticator(cluster.settings, cluster.features, cluster.now_ms)
    app[PAGES] = PageCache(cluster.settings.page_cache_mb * 1024 * 1024)
    if cluster.features.api == "v5":
        api_v5.add_routes(app, cluster.features)
    else:
        api_legacy.add_routes(app, cluster.features)
    control.add_routes(app)
    return app


log = structlog.get_logger(__name__)


def _auth_kinds(settings: SimSettings) -> str:
    if settings.api == "v5":
        return "basic api_key:api_secret, or bearer token from POST /api/v5/login"
    return "basic app id:secret (api_key:api_secret) or dashboard username:password"


@contextlib.asynccontextmanager
async def serving_simulator(
    settings: SimSettings, host: str, port: int, ssl_context: ssl.SSLContext | None = None,
    events: MqttServer | None = None,
) -> AsyncIterator[str]:
    """Serve a simulated cluster on host:port (0: a free port) and yield its base URL once it
    accepts connections; stop serving on exit. With `events` (a started MQTT server), the
    cluster's client events are published there as EMQX publishes them."""
    cluster = SimCluster(settings)
    runner = web.AppRunner(build_sim_app(cluster), access_log=None)
    await runner.setup()
    publisher = EventPublisher(cluster, events) if events is not None else None
    if publisher is not None:
        publisher.start()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound = runner.addresses[0][1]
        scheme = "https" if ssl_context is not None else "http"
        url = f"{scheme}://{host if ':' not in host else f'[{host}]'}:{bound}"
        base = "/api/v3" if settings.api == "v3" else f"/api/{settings.api}"
        # The simulator's credentials are demo values of its own; showing them helps the demo.
        log.info(
            "simulator_listening",
            url=url + base,
            emqx_version=settings.effective_version,
            nodes=settings.nodes,
            clients=settings.clients,
            auth=_auth_kinds(settings),
            api_key=settings.api_key,
            api_secret=settings.api_secret,
        )
        yield url
    finally:
        if publisher is not None:
            await publisher.stop()
        await runner.cleanup()


async def run_simulator(
    settings: SimSettings, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> None:
    """Serve a simulated cluster on host:port until the task is cancelled."""
    async with serving_simulator(settings, host, port, ssl_context):
        await asyncio.Event().wait()
