"""Every way of logging in, end to end against the simulator: API keys, application ids,
dashboard users (v5 bearer login, v3/v4 Basic), and the errors each kind reports."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from emqx_simulator import SimSettings
from exporter.api import ApiClient, BearerLogin, Request, RetryPolicy
from tests.harness import Rig, per_client, rig, value

LOGIN = "POST /api/v5/login"
USER = {"api_key": None, "api_secret": None, "username": "admin", "password": "public"}


def truth_ids(r: Rig) -> set[str]:
    return {str(row.get("clientid", row.get("client_id"))) for row in r.cluster.rows()}


async def exported_ids(r: Rig) -> set[str]:
    return set(per_client(await r.scrape(), "emqx_client_online"))


async def test_bearer_token_reused_and_renewed_once_after_expiry() -> None:
    sim = SimSettings(version="5.8.9", clients=200, token_ttl=60)
    async with rig(sim, **USER) as r:
        auth = r.exporter.pollers[0].client.auth
        assert isinstance(auth, BearerLogin) and auth.kind == "dashboard login"
        for _ in range(3):
            (report,) = await r.exporter.poll_all_once()
            assert report.ok, report.error
            r.clock.advance(10)
        assert r.cluster.requests[LOGIN] == 1  # one token for all three polls
        r.clock.advance(60)  # the simulator's token expired; the exporter did not know
        (report,) = await r.exporter.poll_all_once()
        assert report.ok, report.error
        assert r.cluster.requests[LOGIN] == 2  # logged in again, once
        samples = await r.scrape()
        assert value(samples, "emqx_client_exporter_api_requests_total",
                     endpoint="nodes", code="401") == 1
        assert value(samples, "emqx_client_exporter_api_requests_total",
                     endpoint="login", code="200") == 2
        assert value(samples, "emqx_client_exporter_up") == 1
        assert await exported_ids(r) == truth_ids(r)


async def test_bearer_token_renewed_before_it_expires() -> None:
    async with rig(SimSettings(clients=50, token_ttl=60), **USER) as r:
        auth = r.exporter.pollers[0].client.auth
        assert isinstance(auth, BearerLogin)
        auth.clock, auth.ttl = r.clock, 60  # the exporter's view of the lifetime, on the test clock
        await r.poll()
        r.clock.advance(47)
        await r.poll()
        assert r.cluster.requests[LOGIN] == 1
        r.clock.advance(2)  # past 80 % of the lifetime: renew before EMQX refuses the token
        await r.poll()
        assert r.cluster.requests[LOGIN] == 2
        samples = await r.scrape()
        assert value(samples, "emqx_client_exporter_api_requests_total", code="401") is None


async def test_concurrent_requests_with_an_expired_token_log_in_once() -> None:
    # Page listing walks two nodes at once. Both requests are held by the simulator while the
    # token expires, so both come back 401: one login must serve both, and no node may fail.
    sim = SimSettings(version="5.6.2", nodes=3, clients=300, token_ttl=60)
    async with rig(sim, **USER) as r:
        await r.poll()
        assert r.cluster.requests[LOGIN] == 1
        hold = r.cluster.faults.add("latency", endpoint="GET /api/v5/clients", delay=0.3, times=2)
        poll = asyncio.create_task(r.exporter.poll_all_once())
        async with asyncio.timeout(5):
            while hold.fired < 2:  # noqa: ASYNC110 - the simulator counts, it does not signal
                await asyncio.sleep(0.005)
        r.clock.advance(61)
        (report,) = await poll
        assert report.ok and all(o.error is None for o in report.outcomes), report.outcomes
        assert r.cluster.requests[LOGIN] == 2
        samples = await r.scrape()
        assert value(samples, "emqx_client_exporter_api_requests_total",
                     endpoint="clients", code="401") == 2
        assert await exported_ids(r) == truth_ids(r)


async def test_wrong_dashboard_password_names_the_kind_not_the_password() -> None:
    async with rig(SimSettings(clients=20), **{**USER, "password": "hunter2-wrong"}) as r:
        with capture_logs() as logs:
            (report,) = await r.exporter.poll_all_once()
        assert report.error is not None and report.error.reason == "unauthorized"
        text = str(report.error)
        assert "dashboard login" in text and "BAD_USERNAME_OR_PWD" in text
        assert "hunter2" not in text and "hunter2" not in str(logs)
        assert r.cluster.requests[LOGIN] == 1  # a refused login is not repeated within a poll
        samples = await r.scrape()
        assert value(samples, "emqx_client_exporter_up") == 0
        assert value(samples, "emqx_client_exporter_api_errors_total", reason="unauthorized") == 1


@pytest.mark.parametrize("api", ["v4", "auto"])
async def test_v4_dashboard_user_uses_basic(api: str) -> None:
    async with rig(SimSettings(api="v4", clients=150), api=api, **USER) as r:
        (report,) = await r.exporter.poll_all_once()
        assert report.ok, report.error
        assert r.exporter.pollers[0].client.auth.kind == "dashboard user"  # type: ignore[union-attr]
        assert await exported_ids(r) == truth_ids(r)
        # Once Basic is known to work, no further login attempts.
        (report,) = await r.exporter.poll_all_once()
        samples = await r.scrape()
        assert value(samples, "emqx_client_exporter_api_requests_total", endpoint="login") == (
            None if api == "v4" else 1)  # auto: one probe of /api/v5/login (404), then Basic


@pytest.mark.parametrize("api", ["v4", "auto"])
async def test_v4_wrong_dashboard_password(api: str) -> None:
    async with rig(SimSettings(api="v4", clients=10), api=api,
                   **{**USER, "password": "hunter2-wrong"}) as r:
        (report,) = await r.exporter.poll_all_once()
        assert report.error is not None and report.error.reason == "unauthorized"
        assert "dashboard user" in str(report.error) and "hunter2" not in str(report.error)


@pytest.mark.parametrize(("secret", "ok"), [("secret", True), ("hunter2-wrong", False)])
async def test_v3_application_id_and_secret(secret: str, ok: bool) -> None:
    async with rig(SimSettings(api="v3", clients=150), api="v3", api_secret=secret) as r:
        (report,) = await r.exporter.poll_all_once()
        assert report.ok is ok
        if ok:
            assert await exported_ids(r) == truth_ids(r)
        else:
            assert report.error is not None and report.error.reason == "unauthorized"
            assert "application id and secret" in str(report.error)
            assert "hunter2" not in str(report.error)


@pytest.mark.parametrize(("credentials", "kind"), [
    ({}, "API key"),
    (USER, "dashboard login"),
])
async def test_forbidden_says_the_credential_lacks_permission(credentials: dict[str, Any],
                                                              kind: str) -> None:
    async with rig(SimSettings(clients=20), **credentials) as r:
        r.cluster.faults.add("forbidden", endpoint="GET /api/v5/nodes")
        with capture_logs() as logs:
            (report,) = await r.exporter.poll_all_once()
        assert report.error is not None and report.error.reason == "forbidden"
        text = str(report.error)
        assert "lacks permission" in text and kind in text and "403" in text
        assert "UNAUTHORIZED_ROLE" in text
        (failure,) = [e for e in logs if e["event"] == "poll_failed"]
        assert failure["reason"] == "forbidden" and "public" not in str(failure)
        # A 403 is about rights, not an expired token: no second login.
        assert r.cluster.requests[LOGIN] == (1 if credentials else 0)


async def test_dashboard_user_follows_an_upgrade_from_basic_to_bearer() -> None:
    # EMQX 4 has no /api/v5/login, so the dashboard user goes by Basic; after an upgrade to
    # EMQX 5 Basic is refused (401) and the same user logs in for a token instead.
    state = {"v5": False, "logins": 0}

    async def login(request: web.Request) -> web.Response:
        if not state["v5"]:
            return web.Response(status=404, text="Not found.")
        state["logins"] += 1
        return web.json_response({"token": "tok"})

    async def nodes(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        ok = header == "Bearer tok" if state["v5"] else header.startswith("Basic ")
        if not ok:
            return web.json_response({"code": "BAD_API_KEY_OR_SECRET", "message": "no"},
                                     status=401)
        return web.json_response([{"node": "n", "node_status": "running"}])

    app = web.Application()
    app.router.add_post("/api/v5/login", login)
    app.router.add_get("/api/v5/nodes", nodes)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    auth = BearerLogin("admin", "public")
    request = Request("GET", ("api", "v5", "nodes"), endpoint="nodes")
    try:
        async with ApiClient(str(server.make_url("/")), auth, retry=RetryPolicy(0)) as client:
            assert (await client.send(request)).status == 200
            assert auth.kind == "dashboard user" and state["logins"] == 0
            state["v5"] = True
            assert (await client.send(request)).status == 200
            assert auth.kind == "dashboard login" and state["logins"] == 1
            assert (await client.send(request)).status == 200
            assert state["logins"] == 1
    finally:
        await server.close()
