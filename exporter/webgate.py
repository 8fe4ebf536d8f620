"""The gate in front of every route: the web config in force, re-read when its files change.

A change of the web config file or of a certificate, key or CA file it names is noticed at the
next request or connection, and within WATCH_SECONDS anyway (a few `stat` calls each), and
applied to what follows: the listening socket, open connections and the served snapshot stay.
Each configuration has its own SSLContext, and the listening socket's context hands every new
connection to the newest one (ListeningContext.wrap_bio): the policy, identity and client CA
of a connection are those in force when it arrived, and a TLS session (its ticket keys and
session cache belong to that context) can never be resumed under a later configuration.
A file that does not load is rejected, the previous configuration stays, and
`emqx_client_exporter_web_config_last_reload_successful` is 0 until a good one arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, cast

import structlog
from aiohttp import web

from exporter.errors import ConfigError
from exporter.schema import DEFAULT_OPEN_PATHS
from exporter.selfmetrics import ReloadStatus
from exporter.webauth import Credentials, TokenBucket, Verdict
from exporter.webconfig import WebConfig, load_web_config, server_context

log = structlog.get_logger(__name__)

#: Seconds between looks at the files when no request or handshake looks first.
WATCH_SECONDS = 1.0
REALM = 'Basic realm="emqx-client-exporter", charset="UTF-8"'

#: Go's answer to a plain HTTP request on a TLS port.
PLAIN_HTTP_ANSWER = (b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: 48\r\nConnection: close\r\n\r\n"
                     b"Client sent an HTTP request to an HTTPS server.\n")

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


class ListeningContext(ssl.SSLContext):
    """The listening socket's context: it makes no TLS connection itself, it hands each new
    one to the context of the configuration in force (asyncio makes every server-side
    connection with wrap_bio)."""

    current: Callable[[], ssl.SSLContext]

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,
                 server_side: bool = False, server_hostname: str | bytes | None = None,
                 session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        connection = self.current().wrap_bio(incoming, outgoing, server_side=server_side,
                                             server_hostname=server_hostname, session=session)
        return cast(ssl.SSLObject, _AlertSending(connection, outgoing))


class _AlertSending:
    """An SSLObject whose failed handshake first lets asyncio send OpenSSL's alert.

    asyncio drops the connection on a handshake error without sending what OpenSSL wrote
    (the alert), so a refused client would see a bare EOF. The first failure is reported as
    "want read": asyncio sends the pending bytes, then the client closes, or its next bytes
    get the failure itself. A plain HTTP request gets Go's plain 400 answer instead."""

    def __init__(self, connection: ssl.SSLObject, outgoing: ssl.MemoryBIO) -> None:
        self._connection = connection
        self._outgoing = outgoing
        self._failure: ssl.SSLError | None = None

    def do_handshake(self) -> None:
        if self._failure is not None:
            raise self._failure
        try:
            self._connection.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            self._failure = exc
            if exc.reason == "HTTP_REQUEST":
                self._outgoing.write(PLAIN_HTTP_ANSWER)
            if not self._outgoing.pending:
                raise
            raise ssl.SSLWantReadError("the alert goes out first") from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


class WebGate:
    """TLS context, basic auth, rate limit and headers of the scrape endpoint, kept current."""

    def __init__(self, path: str | None, open_paths: Iterable[str] = DEFAULT_OPEN_PATHS,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.open_paths = frozenset(open_paths)
        self.clock = clock
        self.config = load_web_config(path) if path else WebConfig()
        #: The listening socket's context; each connection gets `_current`, the newest one.
        self.ssl_context: ListeningContext | None = None
        self._current: ssl.SSLContext | None = None
        if self.config.tls is not None:
            self._current = server_context(self.config.tls)
            self.ssl_context = ListeningContext(ssl.PROTOCOL_TLS_SERVER)
            self.ssl_context.current = self._connection_context
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
        if context is not None:
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

    def _connection_context(self) -> ssl.SSLContext:
        """The context of the configuration in force, for a connection that just arrived."""
        try:
            self.check()
        except Exception:  # a bug here must not take the endpoint down; the old context serves
            log.exception("web_config_check_failed")
        assert self._current is not None
        return self._current

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.check()
        if not self.limiter.allow():
            return web.Response(status=429, text="Too Many Requests\n")
        if self.credentials.enabled and request.path not in self.open_paths:
            verdict = await self.credentials.check(request.headers.get("Authorization"))
            if verdict is Verdict.BUSY:
                return web.Response(status=429, text="Too Many Requests: too many "
                                    "credentials being checked, try again\n")
            if verdict is not Verdict.OK:
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
