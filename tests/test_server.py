"""The scrape endpoint (exporter/server.py) as a unit: routes, negotiation, the served bytes.

The app is served on a free loopback port by aiohttp's test server, with an Exporter that
polls nothing unless a test says so; the snapshot is set by the test, so what /metrics must
answer is known byte for byte. A fake EMQX that holds every request shows the endpoint while
the first poll is still under way, and the shutdown that cancels it.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from exporter import contract as c
from exporter import snapshot as snapshot_module
from exporter.config import load_settings
from exporter.errors import ConfigError
from exporter.reload import ConfigReloader
from exporter.server import build_app, negotiate, wants_gzip
from exporter.service import Exporter
from exporter.snapshot import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    Format,
    Snapshot,
    compose,
)
from tests.exposition import samples_openmetrics, samples_text
from tests.ports import free_port

OM = "application/openmetrics-text; version=1.0.0"
#: Prometheus's default Accept header (scrape_protocols left at their default).
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
NOW = 1_000_000.0

Client = TestClient[web.Request, web.Application]


def make_exporter(emqx_url: str | None = None, **extra: Any) -> Exporter:
    """An exporter of one cluster at `emqx_url` (by default a port nobody listens on)."""
    settings = load_settings({"emqx_url": emqx_url or f"http://127.0.0.1:{free_port()}",
                              "api_key": "k", "api_secret": "s", "retries": 0,
                              **extra}, {}, None)
    return Exporter(settings, clock=lambda: NOW)  # a fixed clock: self-metrics stay the same


def a_snapshot(online: int = 3) -> Snapshot:
    """A snapshot of two families, as a poll would publish it."""
    return compose([{c.CLIENTS_ONLINE: [f'emqx_clients_online{{node="n1"}} {online}\n'.encode()],
                     c.CLIENTS_SESSIONS: [b'emqx_clients_sessions{node="n1"} 4\n']}], NOW)


@asynccontextmanager
async def served(exporter: Exporter, **app: Any) -> AsyncIterator[Client]:
    client: Client = TestClient(TestServer(build_app(exporter, **app), host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await exporter.stop()


async def raw_get(client: Client, headers: dict[str, str], method: str = "GET",
                  path: str = "/metrics") -> tuple[int, dict[str, str], bytes]:
    """Status, headers and the body as sent (not decompressed); Accept-Encoding only if given
    (aiohttp's client would ask for gzip by itself)."""
    response = await client.request(method, path, headers=headers, auto_decompress=False,
                                    skip_auto_headers=("Accept-Encoding",))
    return response.status, dict(response.headers), await response.read()


# --- negotiation, as functions.

@pytest.mark.parametrize(("accept", "expected"), [
    ("", "text"),
    ("*/*", "text"),
    ("text/plain", "text"),
    ("text/plain;version=0.0.4", "text"),
    (PROMETHEUS_ACCEPT, "openmetrics"),
    ("application/openmetrics-text", "openmetrics"),
    ("Application/OpenMetrics-Text; Version=1.0.0", "openmetrics"),
    ("text/plain;q=0.5, application/openmetrics-text;version=1.0.0", "openmetrics"),
    ("application/openmetrics-text;q=0", "text"),  # listed as not acceptable
    ("application/openmetrics-text;q=0.0, text/plain", "text"),
    ("application/openmetrics-text;q=zero", "text"),  # an unreadable weight: not chosen
    # Prometheus with `scrape_protocols: [PrometheusText0.0.4, OpenMetricsText1.0.0]` asks for
    # text first; the distributions differ in shape by format, so the scraper's order counts.
    ("text/plain;version=0.0.4;q=0.6,application/openmetrics-text;version=1.0.0;q=0.5,"
     "*/*;q=0.4", "text"),
    ("text/plain;q=1.0, application/openmetrics-text;q=0.1", "text"),
    # A tie goes to OpenMetrics, as does a weight above text's.
    ("text/plain;q=0.5, application/openmetrics-text;q=0.5", "openmetrics"),
    ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
     "encoding=delimited;q=0.7,application/openmetrics-text;version=1.0.0;q=0.6,"
     "text/plain;version=0.0.4;q=0.3", "openmetrics"),
])
def test_negotiate_follows_the_scrapers_weights(accept: str, expected: Format) -> None:
    assert negotiate(accept) == expected


@pytest.mark.parametrize(("accept_encoding", "expected"), [
    ("", False),
    ("identity", False),
    ("deflate, br", False),
    ("gzip", True),
    ("GZIP", True),
    ("deflate, gzip;q=1.0, *;q=0.5", True),
    ("gzip;q=0.3", True),
    ("gzip;q=0", False),  # RFC 9110 §12.4.2: weight 0 means "not acceptable"
    ("identity, gzip;q=0.000", False),
    ("gzipped", False),
])
def test_wants_gzip_unless_refused(accept_encoding: str, expected: bool) -> None:
    assert wants_gzip(accept_encoding) is expected


# --- routes.

async def test_routes_served_and_everything_else_404_or_405() -> None:
    exporter = make_exporter()
    async with served(exporter, poll=False) as client:
        assert (await client.get("/-/healthy")).status == 200
        assert await (await client.get("/-/healthy")).text() == "OK\n"
        page = await client.get("/")
        assert page.status == 200 and page.content_type == "text/html"
        status_json = await client.get("/status.json")
        assert status_json.status == 200 and status_json.content_type == "application/json"
        assert isinstance(await status_json.json(), dict)
        assert (await client.get("/metrics")).status == 200
        for path in ("/nope", "/metrics/", "/Metrics", "/-/reload", "/-/", "/status"):
            assert (await client.get(path)).status == 404, path
        for method, path in (("POST", "/metrics"), ("PUT", "/metrics"), ("DELETE", "/"),
                             ("POST", "/-/healthy")):
            assert (await client.request(method, path)).status == 405, (method, path)
        # No reloader given: POST /-/reload is not a route at all.
        assert (await client.post("/-/reload")).status == 404


async def test_the_status_page_switched_off_is_not_found() -> None:
    async with served(make_exporter(status_page=False), poll=False) as client:
        assert (await client.get("/")).status == 404
        assert (await client.get("/status.json")).status == 404
        assert (await client.get("/metrics")).status == 200


async def test_reload_answers_403_when_off_500_with_the_key_on_error_200_when_done() -> None:
    exporter = make_exporter(reload_endpoint=True)
    outcomes: list[Callable[[], Any]] = []

    def load() -> Any:
        return outcomes.pop(0)()

    def bad() -> Any:
        raise ConfigError("aggregate.labels", "unknown label 'colour'")

    reloader = ConfigReloader(exporter, load)
    async with served(exporter, poll=False, reloader=reloader) as client:
        outcomes.append(bad)
        response = await client.post("/-/reload")
        assert response.status == 500
        assert await response.text() == ("configuration not reloaded: aggregate.labels: "
                                         "unknown label 'colour'\n")
        outcomes.append(lambda: exporter.settings)
        response = await client.post("/-/reload")
        assert (response.status, await response.text()) == (200, "configuration reloaded\n")
        assert (await client.get("/-/reload")).status == 405  # POST only
    off = make_exporter()
    async with served(off, poll=False, reloader=ConfigReloader(off, load)) as client:
        response = await client.post("/-/reload")
        assert response.status == 403 and "reload_endpoint" in await response.text()
    assert outcomes == []  # the endpoint switched off never loaded anything


# --- /metrics: the snapshot's bytes, then the exporter's own metrics.

async def test_text_is_the_snapshot_bytes_then_the_self_metrics() -> None:
    exporter = make_exporter()
    exporter.snapshot = a_snapshot()
    async with served(exporter, poll=False) as client:
        status, headers, body = await raw_get(client, {})
    assert status == 200
    assert headers["Content-Type"] == TEXT_CONTENT_TYPE
    assert headers["Vary"] == "Accept, Accept-Encoding"
    assert "Content-Encoding" not in headers
    assert int(headers["Content-Length"]) == len(body)
    assert body == b"".join(exporter.snapshot.pieces("text")) + exporter.metrics.text()
    samples = samples_text(body.decode())
    assert ("emqx_clients_online", (("node", "n1"),), 3.0) in samples
    assert any(name == "emqx_client_exporter_poll_interval_seconds" for name, _, _ in samples)


async def test_openmetrics_is_asked_for_by_prometheus_and_ends_with_one_eof() -> None:
    exporter = make_exporter()
    exporter.snapshot = a_snapshot()
    async with served(exporter, poll=False) as client:
        status, headers, body = await raw_get(client, {"Accept": PROMETHEUS_ACCEPT})
    assert status == 200 and headers["Content-Type"] == OPENMETRICS_CONTENT_TYPE
    assert body == b"".join(exporter.snapshot.pieces("openmetrics")) + (
        exporter.metrics.openmetrics())
    assert body.endswith(b"# EOF\n") and body.count(b"# EOF") == 1
    assert ("emqx_clients_online", (("node", "n1"),), 3.0) in samples_openmetrics(body.decode())


@pytest.mark.parametrize("fmt", ["text", "openmetrics"])
async def test_gzip_is_the_cached_snapshot_member_then_a_small_one(fmt: Format) -> None:
    exporter = make_exporter()
    exporter.snapshot = a_snapshot()
    accept = {"Accept": OM} if fmt == "openmetrics" else {}
    async with served(exporter, poll=False) as client:
        status, headers, body = await raw_get(client, {**accept, "Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"] == (OPENMETRICS_CONTENT_TYPE if fmt == "openmetrics"
                                       else TEXT_CONTENT_TYPE)
    assert int(headers["Content-Length"]) == len(body)
    # The snapshot's member is the cached one, byte for byte; the self-metrics follow it.
    cached = exporter.snapshot.gzipped(fmt)
    assert body.startswith(cached)
    own = exporter.metrics.openmetrics() if fmt == "openmetrics" else exporter.metrics.text()
    assert zlib.decompress(body[len(cached):], 31) == own
    assert gzip.decompress(body) == b"".join(exporter.snapshot.pieces(fmt)) + own
    assert fmt in exporter.wanted_gzip  # compressed right after the next poll from now on


async def test_a_scrape_neither_polls_nor_rebuilds_the_snapshot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = make_exporter()
    exporter.snapshot = a_snapshot()
    compressions: list[int] = []
    real_gzip = snapshot_module.gzip_bytes

    def counting(pieces: Any) -> bytes:
        compressions.append(1)
        return real_gzip(pieces)

    async def no_poll() -> None:
        raise AssertionError("a scrape polled")

    monkeypatch.setattr(snapshot_module, "gzip_bytes", counting)
    monkeypatch.setattr(exporter.pollers[0], "poll_once", no_poll)
    monkeypatch.setattr(exporter, "publish", no_poll)
    async with served(exporter, poll=False) as client:
        bodies = set()
        for _ in range(5):
            for headers in ({}, {"Accept": OM}, {"Accept-Encoding": "gzip"},
                            {"Accept": OM, "Accept-Encoding": "gzip"}):
                status, _, body = await raw_get(client, headers)
                assert status == 200
                bodies.add(body)
        # Twenty scrapes: four bodies, and the snapshot compressed once per format.
        assert len(bodies) == 4
        assert len(compressions) == 2
        # A new snapshot (a poll published) is what the next scrape serves.
        exporter.snapshot = a_snapshot(online=7)
        _, _, body = await raw_get(client, {})
        assert b'emqx_clients_online{node="n1"} 7\n' in body
        assert b'emqx_clients_online{node="n1"} 3\n' not in body


@pytest.mark.parametrize("headers", [{}, {"Accept": OM}, {"Accept-Encoding": "gzip"},
                                     {"Accept": OM, "Accept-Encoding": "gzip"}],
                         ids=["text", "openmetrics", "text-gzip", "openmetrics-gzip"])
async def test_head_sends_the_headers_of_get_and_no_body(headers: dict[str, str]) -> None:
    exporter = make_exporter()
    exporter.snapshot = a_snapshot()
    async with served(exporter, poll=False) as client:
        get_status, get_headers, get_body = await raw_get(client, headers)
        head_status, head_headers, head_body = await raw_get(client, headers, "HEAD")
    assert get_status == head_status == 200
    assert head_body == b"" and get_body
    for name in ("Content-Type", "Content-Length", "Content-Encoding", "Vary"):
        assert head_headers.get(name) == get_headers.get(name), name


# --- before the first poll, and the lifecycle of the pollers.

@asynccontextmanager
async def stalled_emqx() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """An 'EMQX' that holds every request until the context ends; the event: one arrived."""
    arrived, release = asyncio.Event(), asyncio.Event()

    async def hold(_: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(status=503)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hold)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/")).rstrip("/"), arrived
    finally:
        release.set()
        await server.close()


async def test_while_the_first_poll_runs_metrics_answer_and_ready_says_wait() -> None:
    async with stalled_emqx() as (url, arrived):
        exporter = make_exporter(url)
        async with served(exporter) as client:  # poll=True: the app starts the pollers
            await asyncio.wait_for(arrived.wait(), 10)  # the first poll is under way
            ready = await client.get("/-/ready")
            assert ready.status == 503
            assert await ready.text() == "waiting for the first successful poll\n"
            assert (await client.get("/-/healthy")).status == 200
            status, _, body = await raw_get(client, {})
            assert status == 200
            samples = samples_text(body.decode())
            # Only the exporter's own metrics, and no `up` of a poll that has not finished.
            assert samples and all(name.startswith("emqx_client_exporter_")
                                   for name, _, _ in samples)
            assert not any(name == "emqx_client_exporter_up" for name, _, _ in samples)
            status, _, body = await raw_get(client, {"Accept": OM})
            assert status == 200 and body.endswith(b"# EOF\n")


async def test_ready_once_the_exporter_says_so() -> None:
    exporter = make_exporter()
    async with served(exporter, poll=False) as client:
        assert (await client.get("/-/ready")).status == 503
        exporter.ready = True  # what publish() sets after a first successful poll
        response = await client.get("/-/ready")
        assert (response.status, await response.text()) == (200, "ready\n")


async def test_shutdown_cancels_a_poll_in_flight_and_stops_every_poller() -> None:
    async with stalled_emqx() as (url, arrived):
        exporter = make_exporter(url)
        client: Client = TestClient(TestServer(build_app(exporter), host="127.0.0.1"))
        await client.start_server()
        try:
            await asyncio.wait_for(arrived.wait(), 10)
            tasks = list(exporter._tasks.values())
            assert len(tasks) == 1 and not tasks[0].done()
        finally:
            # The stalled request must not hold the shutdown: it is cancelled, not awaited.
            await asyncio.wait_for(client.close(), 10)
        assert exporter._tasks == {}
        assert all(task.cancelled() for task in tasks)


async def test_without_poll_the_app_starts_no_poller() -> None:
    async with stalled_emqx() as (url, arrived):
        exporter = make_exporter(url)
        async with served(exporter, poll=False) as client:
            assert (await client.get("/metrics")).status == 200
            assert exporter._tasks == {}
        assert not arrived.is_set()
