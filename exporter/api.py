"""The request funnel to EMQX: session, auth, TLS, timeouts, retries, and one exception tree.

Every HTTP request the exporter makes goes through `ApiClient.send`, which is the only place
that retries, and whose deadline covers reading the whole body, not only the headers.
"""

from __future__ import annotations

import asyncio
import base64
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import msgspec
import structlog
from yarl import URL

from exporter.errors import ApiConnectionError, ApiError, ApiTimeoutError, AuthError

log = structlog.get_logger(__name__)

#: Statuses worth a second try: overload and gateway trouble, not our own mistakes.
_RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Request:
    """An API call, independent of the base URL. `endpoint` is a low-cardinality metric label."""

    method: str
    path: tuple[str, ...]
    params: tuple[tuple[str, str], ...] = ()
    endpoint: str = "other"
    json_body: object | None = None


@dataclass(frozen=True, slots=True)
class Response:
    """A complete HTTP answer."""

    status: int
    content_type: str
    body: bytes
    endpoint: str


class _ErrorBody(msgspec.Struct):
    code: str | int | None = None
    message: str | None = None


def error_details(body: bytes) -> tuple[str | int | None, str]:
    """The `code` and `message` of an EMQX error body, or a short excerpt of a non-JSON one."""
    try:
        parsed = msgspec.json.decode(body, type=_ErrorBody)
    except (msgspec.DecodeError, msgspec.ValidationError):
        excerpt = body[:120].decode("utf-8", "replace").strip().replace("\n", " ")
        return None, excerpt
    return parsed.code, parsed.message or ""


class Auth(Protocol):
    """Supplies the Authorization header; may log in first and renew."""

    kind: str

    async def header(self, client: ApiClient) -> str | None: ...

    def invalidate(self) -> bool:
        """Forget a cached credential after a 401; True when a fresh one may help."""
        ...


@dataclass(slots=True)
class BasicAuth:
    """Basic auth: v5 API key and secret, v3/v4 application id and secret, or a dashboard user."""

    user: str
    secret: str = field(repr=False)
    kind: str = "API key"

    async def header(self, client: ApiClient) -> str | None:
        token = base64.b64encode(f"{self.user}:{self.secret}".encode()).decode("ascii")
        return f"Basic {token}"

    def invalidate(self) -> bool:
        return False


class _LoginAnswer(msgspec.Struct):
    token: str


@dataclass(slots=True)
class BearerLogin:
    """v5 dashboard user: `POST /api/v5/login` once, reuse the token, renew before it expires."""

    username: str
    password: str = field(repr=False)
    ttl: float = 3600.0  # EMQX's default token lifetime; renewed at 80 % of it
    kind: str = "dashboard login"
    clock: Callable[[], float] = time.monotonic
    _token: str | None = field(default=None, repr=False)
    _expires: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def header(self, client: ApiClient) -> str | None:
        async with self._lock:
            if self._token is None or self.clock() >= self._expires:
                self._token = await self._login(client)
                self._expires = self.clock() + self.ttl * 0.8
            return f"Bearer {self._token}"

    def invalidate(self) -> bool:
        had_token = self._token is not None
        self._token = None
        return had_token

    async def _login(self, client: ApiClient) -> str:
        request = Request("POST", ("api", "v5", "login"), endpoint="login",
                          json_body={"username": self.username, "password": self.password})
        response = await client.send(request, authorize=False)
        try:
            return msgspec.json.decode(response.body, type=_LoginAnswer).token
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ApiError("login", response.status, None, "no token in the login answer",
                           reason="bad_json") from exc


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS to EMQX."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False


def build_ssl_context(tls: TlsSettings) -> ssl.SSLContext:
    """An SSL context for the settings; insecure mode is explicit and warned about once."""
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        log.warning("tls_verification_disabled",
                    hint="insecure_skip_verify is set: EMQX's certificate is not checked")
    return context


#: Called once per attempt: endpoint, outcome (HTTP status or "error"/"timeout"), seconds.
RequestObserver = Callable[[str, str, float], None]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failed request is repeated."""

    retries: int = 2
    backoff: float = 0.25
    backoff_max: float = 5.0


class ApiClient:
    """One aiohttp session to one EMQX cluster."""

    def __init__(
        self,
        base_url: str,
        auth: Auth | None,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        tls: TlsSettings | None = None,
        connections: int = 8,
        observer: RequestObserver | None = None,
    ) -> None:
        self.base_url = URL(base_url)
        self.auth = auth
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.observer = observer
        self._ssl: ssl.SSLContext | bool = True
        self._server_name = tls.server_name if tls else None
        if tls is not None and self.base_url.scheme == "https":
            self._ssl = build_ssl_context(tls)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, ssl=self._ssl),
                # The deadline is enforced per attempt by asyncio.timeout below, body included.
                timeout=aiohttp.ClientTimeout(total=None),
                headers={"Accept": "application/json"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, request: Request, *, authorize: bool = True) -> Response:
        """Send with retries; return a 2xx answer or raise an `ExporterError`."""
        relogged = False
        attempt = 0
        while True:
            try:
                response = await self._attempt(request, authorize)
            except (ApiConnectionError, ApiTimeoutError):
                if attempt >= self.retry.retries:
                    raise
            else:
                if 200 <= response.status < 300:
                    return response
                code, message = error_details(response.body)
                if response.status in (401, 403):
                    if (response.status == 401 and authorize and not relogged
                            and self.auth is not None and self.auth.invalidate()):
                        relogged = True  # an expired bearer token: log in again, once
                        continue
                    kind = self.auth.kind if (self.auth and authorize) else "login credentials"
                    raise AuthError(request.endpoint, response.status, code, message, kind)
                # A proxy in front of EMQX answers with its own HTML page: say so.
                error = ApiError(request.endpoint, response.status, code, message,
                                 reason="html_page" if "html" in response.content_type else None)
                retryable = response.status in _RETRY_STATUSES or (
                    response.status >= 500 and code != "NODE_DOWN")
                if not retryable or attempt >= self.retry.retries:
                    raise error
            delay = min(self.retry.backoff * 2**attempt, self.retry.backoff_max)
            await asyncio.sleep(delay * (0.5 + random.random()))  # jitter spreads retries out
            attempt += 1

    async def _attempt(self, request: Request, authorize: bool) -> Response:
        session = self._get_session()
        headers: dict[str, str] = {}
        if authorize and self.auth is not None:
            header = await self.auth.header(self)
            if header:
                headers["Authorization"] = header
        url = self.base_url.joinpath(*request.path)
        started = time.perf_counter()
        outcome = "error"
        try:
            async with asyncio.timeout(self.timeout):
                async with session.request(
                    request.method, url, params=list(request.params), headers=headers,
                    json=request.json_body, server_hostname=self._server_name,
                ) as answer:
                    body = await answer.read()
                    outcome = str(answer.status)
                    return Response(answer.status, answer.content_type, body, request.endpoint)
        except TimeoutError as exc:
            outcome = "timeout"
            raise ApiTimeoutError(request.endpoint, self.timeout) from exc
        except aiohttp.ClientPayloadError as exc:
            raise ApiConnectionError(request.endpoint, f"truncated body: {exc}",
                                     reason="truncated") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ApiConnectionError(request.endpoint, _describe(exc)) from exc
        finally:
            if self.observer is not None:
                self.observer(request.endpoint, outcome, time.perf_counter() - started)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]
