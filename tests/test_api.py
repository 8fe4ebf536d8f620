"""The request funnel against tiny fake servers: deadlines, retries, auth, bearer renewal."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter.api import ApiClient, BasicAuth, BearerLogin, Request, RetryPolicy
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
