"""The gate in front of every route: the web config in force, re-read when its files change.

A change of the web config file or of a certificate, key or CA file it names is noticed at the
next request or TLS handshake, and within WATCH_SECONDS anyway (a few `stat` calls each), and
applied to what follows: the listening socket, open connections and the served snapshot stay.
Certificates reach new handshakes through the SNI callback, which hands each one the newest
SSLContext. OpenSSL fixes a connection's client certificate policy, versions and ciphers before
that callback, so a change of those applies from the handshake after the one that noticed it.
A file that does not load is rejected, the previous configuration stays, and
`emqx_client_exporter_web_config_last_reload_successful` is 0 until a good one arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import structlog
from aiohttp import web

from exporter.errors import ConfigError
from exporter.schema import DEFAULT_OPEN_PATHS
from exporter.selfmetrics import ReloadStatus
from exporter.webauth import Credentials, TokenBucket
from exporter.webconfig import (
    WebConfig,
    apply_policy,
    load_web_config,
    server_context,
)

log = structlog.get_logger(__name__)

#: Seconds between looks at the files when no request or handshake looks first.
WATCH_SECONDS = 1.0
REALM = 'Basic realm="emqx-client-exporter", charset="UTF-8"'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Signature = tuple[tuple[str, int, int, int] | tuple[str], ...]


def _signature(paths: Iterable[str]) -> Signature:
    """What changes when a file is rewritten or swapped (a Kubernetes secret's symlink flip)."""
    out: list[tuple[str, int, int, int] | tuple[str]] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append((path,))
        else:
            out.append((path, st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def _san(kind: str, value: str) -> str:
    """A SAN as Go prints it: Python writes IPv6 addresses long and upper case."""
    if kind == "IP Address":
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(value.strip()))
    return value


class WebGate:
    """TLS context, basic auth, rate limit and headers of the scrape endpoint, kept current."""

    def __init__(self, path: str | None, open_paths: Iterable[str] = DEFAULT_OPEN_PATHS,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.open_paths = frozenset(open_paths)
        self.clock = clock
        self.config = load_web_config(path) if path else WebConfig()
        #: The listening socket's context; each handshake is handed `_current` by SNI callback.
        self.ssl_context: ssl.SSLContext | None = None
        self._current: ssl.SSLContext | None = None
        if self.config.tls is not None:
            self._current = server_context(self.config.tls)
            self.ssl_context = server_context(self.config.tls)
            self.ssl_context.sni_callback = self._on_client_hello
        self.credentials = Credentials(self.config.users)
        self.limiter = TokenBucket(self.config.rate_limit.interval, self.config.rate_limit.burst)
        self.status = ReloadStatus(True, clock())
        self._signature = _signature(self.config.files)

    def check(self) -> None:
        """Reload when a file changed since the last look; never raises."""
        if not self.path:
            return
        signature = _signature(self.config.files)
        if signature == self._signature:
            return
        self._signature = signature  # a rejected file is tried again only once it changes
        self.reload()

    def reload(self) -> bool:
        """Read the web config and its files again; keep the old ones if anything is wrong."""
        if not self.path:
            return True
        try:
            config = load_web_config(self.path)
            if (config.tls is None) != (self.config.tls is None):
                raise ConfigError("web_config.tls_server_config",
                                  "switching TLS on or off needs a restart")
            context = server_context(config.tls) if config.tls is not None else None
        except ConfigError as exc:
            self.status.record(False, self.clock())
            log.error("web_config_reload_failed", path=self.path, error=str(exc))
            return False
        if context is not None and self.ssl_context is not None and config.tls is not None:
            # What the handshake negotiates comes from the listening context, the identity
            # and the client CA from the one handed over in the SNI callback.
            apply_policy(self.ssl_context, config.tls)
            self._current = context
        if config.users != self.config.users:
            self.credentials = Credentials(config.users)
        if config.rate_limit != self.config.rate_limit:
            self.limiter = TokenBucket(config.rate_limit.interval, config.rate_limit.burst)
        self.config = config
        self._signature = _signature(config.files)
        self.status.record(True, self.clock())
        log.info("web_config_reloaded", path=self.path, tls=config.tls is not None,
                 users=len(config.users))
        return True

    def _on_client_hello(self, connection: Any, _server_name: str | None,
                         context: ssl.SSLContext) -> None:
        try:
            self.check()
            if self._current is not None and context is not self._current:
                connection.context = self._current
        except Exception:  # a bug here must not take the endpoint down; the old context serves
            log.exception("web_config_handshake_hook_failed")

    def _sans_allowed(self, request: web.Request) -> bool:
        tls = self.config.tls
        if tls is None or not tls.client_allowed_sans:
            return True
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        names = {_san(kind, value) for kind, value in (peer or {}).get("subjectAltName", ())}
        return bool(names & tls.client_allowed_sans)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.check()
        if not self.limiter.allow():
            return web.Response(status=429, text="Too Many Requests\n")
        if not self._sans_allowed(request):
            return web.Response(status=403, text="client certificate not allowed\n")
        if self.credentials.enabled and request.path not in self.open_paths and not (
                await self.credentials.check(request.headers.get("Authorization"))):
            return web.Response(status=401, text="Unauthorized\n",
                                headers={"WWW-Authenticate": REALM})
        return await handler(request)

    async def add_headers(self, _: web.Request, response: web.StreamResponse) -> None:
        """`http_server_config.headers` on every response, the refused ones included."""
        for name, value in self.config.headers:
            response.headers[name] = value

    async def _watch(self, _: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(WATCH_SECONDS)
                try:
                    self.check()
                except Exception:  # a bug must not end the watch; the old config serves
                    log.exception("web_config_watch_failed")

        task = asyncio.create_task(loop(), name="web-config-watch")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def install(self, app: web.Application) -> None:
        app.middlewares.append(self.middleware)
        app.on_response_prepare.append(self.add_headers)
        if self.path:
            app.cleanup_ctx.append(self._watch)
