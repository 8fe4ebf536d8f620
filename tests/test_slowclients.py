"""The endpoint's connections: slow headers are cut off, HEAD keeps keep-alive intact.

Slow clients finish TLS and then trickle a header byte now and then, faster than any idle
timeout would notice: each is closed once its headers took longer than the header timeout,
while scrapes go on. HEAD /metrics answers GET's headers without the body, so the next request
on the same connection is read as a request, not as the rest of a body.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from exporter.config import load_settings
from exporter.server import build_app
from exporter.service import Exporter
from exporter.slowclients import GuardedSite
from exporter.webgate import WebGate
from tests.test_webgate import WebCerts, tls_config, web_certs, write

__all__ = ["web_certs"]  # the fixture, shared with test_webgate

TIMEOUT = 0.5
SLOW_CLIENTS = 20


@asynccontextmanager
async def guarded(web_config: Path | None) -> AsyncIterator[int]:
    """The app on a GuardedSite (as `run` serves it) with a short header timeout; the port."""
    settings = load_settings({"emqx_url": "http://127.0.0.1:9", "api_key": "k",
                              "api_secret": "s", "web_config": str(web_config)
                              if web_config else None}, {}, None)
    gate = WebGate(settings.web_config, settings.open_paths)
    exporter = Exporter(settings)
    runner = web.AppRunner(build_app(exporter, poll=False, gate=gate))
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0, ssl_context=gate.ssl_context,
                       header_timeout=TIMEOUT)
    await site.start()
    try:
        yield site.port
    finally:
        await runner.cleanup()
        await exporter.stop()


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    """Status line and headers of the next answer."""
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)


async def is_closed(reader: asyncio.StreamReader) -> bool:
    """Has the server closed the connection (nothing comes but EOF)?"""
    try:
        return await asyncio.wait_for(reader.read(1), TIMEOUT / 20) == b""
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError):
        return True


async def test_slow_header_connections_are_closed_and_scrapes_go_on(
        web_certs: WebCerts, tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", {"tls_server_config": tls_config(web_certs.good)})
    context = ssl.create_default_context(cafile=web_certs.good.pem("ca"))
    async with guarded(path) as port:
        opened = time.monotonic()
        slow = [await asyncio.open_connection("127.0.0.1", port, ssl=context)
                for _ in range(SLOW_CLIENTS)]
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        closed_at: dict[int, float] = {}
        deadline = opened + TIMEOUT + 10
        sent = 0
        while len(closed_at) < SLOW_CLIENTS and time.monotonic() < deadline:
            for i, (reader, writer) in enumerate(slow):
                if i in closed_at:
                    continue
                if await is_closed(reader):
                    closed_at[i] = time.monotonic()
                elif sent < len(request) - 1:  # never the last byte: the headers never end
                    writer.write(request[sent:sent + 1])
            sent += 1
            # A scrape on its own connection is served meanwhile.
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
            writer.write(request)
            head = await read_answer(reader)
            assert head.startswith(b"HTTP/1.1 200"), head
            writer.close()
        assert len(closed_at) == SLOW_CLIENTS, "slow-header connections left open"
        assert min(closed_at.values()) - opened >= TIMEOUT * 0.9  # not closed at once
        for _, writer in slow:
            writer.close()


async def test_an_idle_keep_alive_connection_is_not_a_slow_request() -> None:
    async with guarded(None) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 200")
        await reader.readexactly(3)  # "OK\n"
        await asyncio.sleep(TIMEOUT * 3)  # idle between requests: longer than the timeout
        writer.write(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 200")
        writer.close()


async def test_head_metrics_has_no_body_and_keep_alive_goes_on() -> None:
    async with guarded(None) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await read_answer(reader)
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        assert length > 0
        body = await reader.readexactly(length)
        writer.write(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 200")
        # The next bytes on the connection answer the next request: HEAD sent no body.
        writer.write(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert await reader.readexactly(3) == b"OK\n"
        assert body  # the GET before had one
        writer.close()
