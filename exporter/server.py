"""The scrape endpoint: serves the latest snapshot; a scrape never triggers a poll.

Routes: /metrics (text 0.0.4 or OpenMetrics by Accept, gzip by Accept-Encoding), /-/healthy,
/-/ready (503 until a first poll succeeded), / with /status.json (the status page, see
`status`; both 404 when `status_page` is off), and POST /-/reload (when `reload_endpoint` is on).
A WebGate, when given, guards them all (TLS, basic auth, headers).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from exporter import status
from exporter.reload import ConfigReloader
from exporter.service import Exporter
from exporter.snapshot import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    Format,
    gzip_bytes,
)
from exporter.webgate import WebGate

EXPORTER_KEY = web.AppKey("exporter", Exporter)
RELOADER_KEY = web.AppKey("reloader", ConfigReloader)


def _weights(header: str) -> dict[str, float]:
    """Each listed media type or coding (lower case) and its highest weight `q` (RFC 9110
    §12.4.2); an unreadable weight counts as 0, not acceptable."""
    weights: dict[str, float] = {}
    for item in header.split(","):
        name, *params = item.split(";")
        quality = 1.0
        for param in params:
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        name = name.strip().lower()
        weights[name] = max(quality, weights.get(name, 0.0))
    return weights


def negotiate(accept: str) -> Format:
    """OpenMetrics when the scraper lists it (Prometheus does by default) at least as high as
    text/plain, else text 0.0.4: the distributions differ in shape by format, so a scraper
    that prefers text (its `scrape_protocols`) gets text."""
    weights = _weights(accept)
    openmetrics = weights.get("application/openmetrics-text", 0.0)
    return "openmetrics" if openmetrics > 0 and openmetrics >= weights.get(
        "text/plain", 0.0) else "text"


def wants_gzip(accept_encoding: str) -> bool:
    """gzip when listed with a weight above 0 (`gzip;q=0` refuses it)."""
    return _weights(accept_encoding).get("gzip", 0.0) > 0


async def metrics(request: web.Request) -> web.StreamResponse:
    exporter = request.app[EXPORTER_KEY]
    fmt = negotiate(request.headers.get("Accept", ""))
    gzipped = wants_gzip(request.headers.get("Accept-Encoding", ""))
    snapshot = exporter.snapshot
    own = exporter.metrics.openmetrics() if fmt == "openmetrics" else exporter.metrics.text()
    pieces: tuple[bytes, ...]
    if gzipped:
        exporter.wanted_gzip.add(fmt)
        if snapshot.has_gzipped(fmt):
            data = snapshot.gzipped(fmt)
        else:
            # First gzip scrape of this format since the last poll: compress off the loop.
            data = await asyncio.to_thread(snapshot.gzipped, fmt)
        # Two gzip members back to back are one valid gzip stream (RFC 1952 §2.2), so the big
        # snapshot is compressed once per poll and only the small self-metrics per scrape.
        pieces = (data, gzip_bytes((own,)))
    else:
        pieces = (*snapshot.pieces(fmt), own)
    response = web.StreamResponse(headers={
        "Content-Type": OPENMETRICS_CONTENT_TYPE if fmt == "openmetrics" else TEXT_CONTENT_TYPE,
        "Vary": "Accept, Accept-Encoding",
    })
    if gzipped:
        response.headers["Content-Encoding"] = "gzip"
    response.content_length = sum(len(piece) for piece in pieces)
    await response.prepare(request)
    if request.method != "HEAD":  # HEAD: the headers GET would send, no body (RFC 9110 §9.3.2)
        for piece in pieces:
            await response.write(piece)
    await response.write_eof()
    return response


async def healthy(_: web.Request) -> web.Response:
    return web.Response(text="OK\n")


async def ready(request: web.Request) -> web.Response:
    if request.app[EXPORTER_KEY].ready:
        return web.Response(text="ready\n")
    return web.Response(status=503, text="waiting for the first successful poll\n")


async def status_page(request: web.Request) -> web.Response:
    text = status.render_html(status.build_status(request.app[EXPORTER_KEY]))
    return web.Response(text=text, content_type="text/html")


async def status_json(request: web.Request) -> web.Response:
    text = status.to_json(status.build_status(request.app[EXPORTER_KEY]))
    return web.Response(text=text, content_type="application/json")


async def reload_config(request: web.Request) -> web.Response:
    if not request.app[EXPORTER_KEY].settings.reload_endpoint:
        return web.Response(status=403, text="the reload endpoint is off (reload_endpoint)\n")
    error = await request.app[RELOADER_KEY].reload()
    if error is not None:
        return web.Response(status=500, text=f"configuration not reloaded: {error}\n")
    return web.Response(text="configuration reloaded\n")


def build_app(exporter: Exporter, *, poll: bool = True, gate: WebGate | None = None,
              reloader: ConfigReloader | None = None) -> web.Application:
    """The aiohttp application; with `poll`, pollers start and stop with it."""
    app = web.Application()
    app[EXPORTER_KEY] = exporter
    if gate is not None:
        gate.install(app)
        if gate.path:
            exporter.metrics.reloads["web_config"] = gate.status
    if reloader is not None:
        app[RELOADER_KEY] = reloader
        app.router.add_post("/-/reload", reload_config)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    if exporter.settings.status_page:
        app.router.add_get("/", status_page)
        app.router.add_get("/status.json", status_json)

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        exporter.start()
        yield
        await exporter.stop()

    if poll:
        app.cleanup_ctx.append(lifecycle)
    return app
