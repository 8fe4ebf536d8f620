"""The request funnel against tiny fake servers: deadlines, retries, auth, bearer renewal."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter.api import (
    ApiClient,
    BasicAuth,
    BearerLogin,
    Request,
    RetryPolicy,
    parse_retry_after,
)
from exporter.errors import ApiConnectionError, ApiError, ApiTimeoutError, AuthError

FAST = RetryPolicy(retries=2, backoff=0.001)
NODES = Request("GET", ("api", "v5", "nodes"), endpoint="nodes")

ServerFactory = Callable[..., Awaitable[TestServer]]


async def serve(aiohttp_server: ServerFactory, handler: Callable[[web.Request], Awaitable[
        web.StreamResponse]], path: str = "/api/v5/nodes") -> TestServer:
    app = web.Application()
    app.router.add_route("*", path, handler)
    server: TestServer = await aiohttp_server(app)
    return server


def url(server: TestServer) -> str:
    return str(server.make_url("/"))


async def test_deadline_covers_the_body(aiohttp_server: ServerFactory) -> None:
    release = asyncio.Event()

    async def stall_after_headers(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 100
        await response.prepare(request)
        await response.write(b'{"data": [')
        await release.wait()  # never sends the rest while the client waits
        return response

    server = await serve(aiohttp_server, stall_after_headers)
    outcomes: list[str] = []
    client = ApiClient(url(server), None, timeout=0.3, retry=RetryPolicy(retries=0),
                       observer=lambda endpoint, outcome, seconds: outcomes.append(outcome))
    try:
        with pytest.raises(ApiTimeoutError):
            await client.send(NODES)
    finally:
        release.set()
        await client.close()
    assert outcomes == ["timeout"]


async def test_retries_gateway_errors_then_succeeds(aiohttp_server: ServerFactory) -> None:
    calls = 0

    async def flaky(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            return web.Response(status=503, text="busy")
        return web.json_response([])

    server = await serve(aiohttp_server, flaky)
    outcomes: list[str] = []
    async with ApiClient(url(server), None, retry=FAST,
                         observer=lambda e, o, s: outcomes.append(o)) as client:
        response = await client.send(NODES)
    assert response.status == 200 and outcomes == ["503", "503", "200"]


async def test_no_retry_on_client_errors_or_node_down(aiohttp_server: ServerFactory) -> None:
    calls = 0

    async def node_down(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response({"code": "NODE_DOWN", "message": "bad rpc call"}, status=500)

    server = await serve(aiohttp_server, node_down)
    async with ApiClient(url(server), None, retry=FAST) as client:
        with pytest.raises(ApiError) as caught:
            await client.send(NODES)
    assert calls == 1 and caught.value.reason == "node_down" and caught.value.code == "NODE_DOWN"


async def test_401_names_the_credential_kind_not_the_secret(aiohttp_server: ServerFactory) -> None:
    async def reject(request: web.Request) -> web.Response:
        return web.json_response({"code": "BAD_API_KEY_OR_SECRET", "message": "Check"},
                                 status=401)

    server = await serve(aiohttp_server, reject)
    async with ApiClient(url(server), BasicAuth("key", "hunter2"), retry=FAST) as client:
        with pytest.raises(AuthError) as caught:
            await client.send(NODES)
    text = str(caught.value)
    assert "API key" in text and "BAD_API_KEY_OR_SECRET" in text and "hunter2" not in text
    assert caught.value.reason == "unauthorized"


async def test_bearer_login_reused_and_renewed_once_on_401(aiohttp_server: ServerFactory) -> None:
    logins = 0
    expired = {"tok-1"}

    async def handler(request: web.Request) -> web.Response:
        nonlocal logins
        if request.path == "/api/v5/login":
            body = await request.json()
            assert body == {"username": "admin", "password": "pw"}
            logins += 1
            return web.json_response({"token": f"tok-{logins}"})
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token in expired or not token:
            return web.json_response({"code": "TOKEN_TIME_OUT", "message": "expired"}, status=401)
        return web.json_response([{"node": "n", "node_status": "running"}])

    app = web.Application()
    app.router.add_route("*", "/api/v5/{tail:.*}", handler)
    server = await aiohttp_server(app)
    auth = BearerLogin("admin", "pw")
    async with ApiClient(url(server), auth, retry=FAST) as client:
        first = await client.send(NODES)  # logs in (tok-1, expired), renews (tok-2)
        second = await client.send(NODES)  # reuses tok-2
    assert first.status == second.status == 200 and logins == 2
    assert "pw" not in repr(auth)


async def test_bearer_login_failure_is_an_auth_error(aiohttp_server: ServerFactory) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"code": "BAD_USERNAME_OR_PWD", "message": "no"}, status=401)

    app = web.Application()
    app.router.add_route("*", "/api/v5/{tail:.*}", handler)
    server = await aiohttp_server(app)
    async with ApiClient(url(server), BearerLogin("admin", "wrong"), retry=FAST) as client:
        with pytest.raises(AuthError) as caught:
            await client.send(NODES)
    assert "login" in str(caught.value)


async def test_truncated_body(aiohttp_server: ServerFactory) -> None:
    async def truncate(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b'[{"node": "n"')
        request.transport.close()  # type: ignore[union-attr]
        return response

    server = await serve(aiohttp_server, truncate)
    async with ApiClient(url(server), None, retry=FAST) as client:
        with pytest.raises(ApiConnectionError) as caught:
            await client.send(NODES)
    assert caught.value.reason == "truncated"


async def test_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connection refused
        async with ApiClient(f"http://127.0.0.1:{port}", None, retry=FAST) as client:
            with pytest.raises(ApiConnectionError) as caught:
                await client.send(NODES)
    assert caught.value.reason == "unreachable"


async def test_429_is_rate_limited_and_not_retried(aiohttp_server: ServerFactory) -> None:
    calls = 0

    async def too_many(_: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=429, text="Too Many Requests", headers={"Retry-After": "7"})

    server = await serve(aiohttp_server, too_many)
    async with ApiClient(url(server), None, retry=FAST) as client:
        with pytest.raises(ApiError) as caught:
            await client.send(NODES)
    # It used to be `client_error`, retried after a fraction of a second.
    assert caught.value.reason == "rate_limited" and caught.value.retry_after == 7
    assert calls == 1


@pytest.mark.parametrize("declared", [True, False])
async def test_body_over_the_limit_is_refused_not_buffered(aiohttp_server: ServerFactory,
                                                           declared: bool) -> None:
    async def large(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if declared:
            response.content_length = 4 * 1024 * 1024
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(64):
                await response.write(b" " * 65536)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as it should
        return response

    server = await serve(aiohttp_server, large)
    async with ApiClient(url(server), None, retry=FAST, max_body=1024 * 1024) as client:
        with pytest.raises(ApiError) as caught:
            await client.send(NODES)
    assert caught.value.reason == "body_too_large"
    assert "max_body_bytes" in str(caught.value)


async def test_plain_http_connection_error_has_no_tls_noise() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with ApiClient(f"http://127.0.0.1:{port}", None,
                         retry=RetryPolicy(retries=0)) as client:
        with pytest.raises(ApiConnectionError) as caught:
            await client.send(NODES)
    text = str(caught.value)
    assert "ssl" not in text.lower()
    assert f"cannot connect to 127.0.0.1:{port}: " in text and "refused" in text.lower()


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("120", 0.0) == 120
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60
    assert parse_retry_after("soon", 0.0) is None and parse_retry_after(None, 0.0) is None
