"""A bound on the time a client takes to send a request's headers (Go's ReadHeaderTimeout).

aiohttp waits for a request's headers as long as the client keeps the connection open, so
clients that finish TLS and then trickle a byte now and then would hold a file descriptor each
forever. Each connection's protocol is wrapped: a deadline starts when the connection opens
and when the first byte of a request arrives, and ends with the blank line closing its
headers; a connection still inside its headers at the deadline is closed. Between requests
aiohttp's keep-alive timeout applies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)

#: Seconds a client has to send a request's headers, from its first byte (or the connection).
HEADER_TIMEOUT_SECONDS = 10.0
_END_OF_HEAD = b"\r\n\r\n"


class HeaderDeadline(asyncio.Protocol):
    """aiohttp's protocol of one connection, closed when its headers do not arrive in time."""

    def __init__(self, inner: Any, timeout: float) -> None:
        self.inner = inner
        self.timeout = timeout
        self._transport: asyncio.BaseTransport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._tail = b""  # the last bytes seen, for a blank line split across reads

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().call_later(self.timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        log.info("slow_request_headers_closed", timeout=self.timeout)
        if self._transport is not None:
            self._transport.abort()  # type: ignore[attr-defined]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._arm()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if data:
            self._arm()
            seen = self._tail + data
            end = seen.rfind(_END_OF_HEAD)
            if end >= 0:
                # Headers complete. What follows starts another request (or a body: a body
                # that never ends is treated as a slow request, which it is here).
                self._disarm()
                seen = seen[end + len(_END_OF_HEAD):]
                if seen:
                    self._arm()
            self._tail = seen[-(len(_END_OF_HEAD) - 1):]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self.inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class GuardedSite(web.TCPSite):
    """aiohttp's TCPSite whose connections get a header deadline."""

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int, *,
                 ssl_context: Any = None,
                 header_timeout: float = HEADER_TIMEOUT_SECONDS) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self.header_timeout = header_timeout

    async def start(self) -> None:
        await web.BaseSite.start(self)  # TCPSite.start would create the unguarded server
        server = self._runner.server
        assert server is not None
        factory: Callable[[], Any] = server

        def guarded() -> HeaderDeadline:
            return HeaderDeadline(factory(), self.header_timeout)

        self._server = await asyncio.get_running_loop().create_server(
            guarded, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
            # The handshake gets the same bound (asyncio's default is a minute).
            ssl_handshake_timeout=self.header_timeout if self._ssl_context else None)
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
