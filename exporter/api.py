"""The request funnel to EMQX: session, auth, TLS, timeouts, retries, and one exception tree.

Every HTTP request the exporter makes goes through `ApiClient.send`, which is the only place
that retries, and whose deadline covers reading the whole body, not only the headers.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import os
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote

import aiohttp
import msgspec
import structlog
from yarl import URL

from exporter.errors import (
    ApiConnectionError,
    ApiError,
    ApiTimeoutError,
    AuthError,
    ConfigError,
    reason,
)

log = structlog.get_logger(__name__)

#: Statuses worth a second try: gateway trouble, not our own mistakes. A 429 is not among
#: them: it is an explicit request to slow down, obeyed by not asking before `Retry-After`.
_RETRY_STATUSES = frozenset({502, 503, 504})
#: Bodies are read in chunks of at most this many bytes, so the size limit holds while reading.
_CHUNK = 1 << 20
#: Largest answer accepted by default (`max_body_bytes`): a 10,000-row v5 page with every
#: field is about 12 MB (the simulator's rows: 1.2 kB each).
DEFAULT_MAX_BODY = 64 * 1024 * 1024


def path_segment(text: str) -> str:
    """One percent-encoded path segment: `/`, `?`, `#`, `%` and spaces inside it stay inside
    (EMQX's HTTP server splits the path on raw `/` before decoding, REFERENCE.md §12.3)."""
    return quote(text, safe="@:")


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
    #: Seconds from a `Retry-After` header (delta-seconds or an HTTP date), when sent.
    retry_after: float | None = None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds from `now` (epoch); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


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

    def invalidate(self, used: str | None) -> bool:
        """A request sent with the header `used` got a 401: forget that credential if it is
        still the current one; True when asking again (with a fresh credential) may help."""
        ...


@dataclass(slots=True)
class BasicAuth:
    """Basic auth: v5 API key and secret, v3/v4 application id and secret, or a dashboard user."""

    user: str
    secret: str = field(repr=False)
    kind: str = "API key"

    async def header(self, client: ApiClient) -> str | None:
        return _basic_header(self.user, self.secret)

    def invalidate(self, used: str | None) -> bool:
        return False


class _LoginAnswer(msgspec.Struct):
    token: str


@dataclass(slots=True)
class BearerLogin:
    """v5 dashboard user: `POST /api/v5/login` once, reuse the token, renew before it expires.

    A broker without that route (404/405: EMQX 3 or 4 on its dashboard port) takes the dashboard
    user with Basic auth instead; this sends Basic from then on, until Basic is refused (an
    upgrade to EMQX 5), when it logs in again.
    """

    username: str
    password: str = field(repr=False)
    ttl: float = 3600.0  # EMQX's default token lifetime; renewed at 80 % of it
    kind: str = "dashboard login"
    clock: Callable[[], float] = time.monotonic
    _token: str | None = field(default=None, repr=False)
    _expires: float = 0.0
    _basic: str | None = field(default=None, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def header(self, client: ApiClient) -> str | None:
        async with self._lock:
            if self._basic is not None:
                return self._basic
            if self._token is None or self.clock() >= self._expires:
                token = await self._login(client)
                if token is None:
                    self._basic = _basic_header(self.username, self.password)
                    self.kind = "dashboard user"
                    return self._basic
                self._token = token
                self._expires = self.clock() + self.ttl * 0.8
            return f"Bearer {self._token}"

    def invalidate(self, used: str | None) -> bool:
        if used is None:
            return False
        if used.startswith("Basic "):
            # Refused Basic: maybe the broker was upgraded to EMQX 5 since; try to log in again.
            if self._basic != used:
                return False
            self._basic = None
            self.kind = "dashboard login"
            return True
        # Only the token that failed is dropped: when concurrent requests all get a 401 for an
        # expired token, the first one logs in again and the others reuse its fresh token.
        if self._token is not None and used == f"Bearer {self._token}":
            self._token = None
        return True

    async def _login(self, client: ApiClient) -> str | None:
        """A fresh token; None when the broker has no v5 login route."""
        request = Request("POST", ("api", "v5", "login"), endpoint="login",
                          json_body={"username": self.username, "password": self.password})
        try:
            response = await client.send(request, authorize=False)
        except AuthError as exc:
            # The login request itself carries no Authorization header: name what failed.
            raise AuthError(exc.endpoint, exc.status, exc.code, exc.message, self.kind) from None
        except ApiError as exc:
            if exc.status in (404, 405):
                log.info("dashboard_login_unavailable", status=exc.status,
                         hint="no /api/v5/login: using the dashboard user with Basic auth")
                return None
            raise
        try:
            return msgspec.json.decode(response.body, type=_LoginAnswer).token
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ApiError("login", response.status, None, "no token in the login answer",
                           reason=reason("bad_json")) from exc


def _basic_header(user: str, secret: str) -> str:
    token = base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
    return f"Basic {token}"


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS to EMQX."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False


def build_ssl_context(tls: TlsSettings) -> ssl.SSLContext:
    """An SSL context for the settings; insecure mode is explicit and warned about once.

    A file that cannot be read or holds no usable PEM is a ConfigError naming its key.
    """
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("tls.ca_file", f"cannot load {tls.ca_file}: {_ssl_cause(exc)}") from exc
    if tls.key_file and not tls.cert_file:
        raise ConfigError("tls.cert_file", "is required with tls.key_file")
    if tls.cert_file:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            files = " and ".join(f for f in (tls.cert_file, tls.key_file) if f)
            hint = "" if tls.key_file else " (set tls.key_file unless the key is in that file)"
            raise ConfigError("tls.cert_file",
                              f"cannot load {files}: {_ssl_cause(exc)}{hint}") from exc
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        log.warning("tls_verification_disabled",
                    hint="insecure_skip_verify is set: EMQX's certificate is not checked")
    return context


def _ssl_cause(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc)


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
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.base_url = URL(base_url)
        self.max_body = max_body
        self.auth = auth
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.observer = observer
        self._ssl: ssl.SSLContext | bool = True
        self._server_name = tls.server_name if tls else None
        self._https = self.base_url.scheme == "https"
        self._client_cert = bool(tls and tls.cert_file)
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
                response, used = await self._attempt(request, authorize)
            except (ApiConnectionError, ApiTimeoutError):
                if attempt >= self.retry.retries:
                    raise
            else:
                if 200 <= response.status < 300:
                    return response
                code, message = error_details(response.body)
                if response.status in (401, 403):
                    if (response.status == 401 and authorize and not relogged
                            and self.auth is not None and self.auth.invalidate(used)):
                        relogged = True  # an expired bearer token: log in again, once
                        continue
                    kind = self.auth.kind if (self.auth and authorize) else "login credentials"
                    raise AuthError(request.endpoint, response.status, code, message, kind)
                # A proxy in front of EMQX answers with its own HTML page: say so.
                error = ApiError(request.endpoint, response.status, code, message,
                                 reason=reason("html_page") if "html" in response.content_type
                                 else None, retry_after=response.retry_after)
                retryable = response.status in _RETRY_STATUSES or (
                    response.status >= 500 and code != "NODE_DOWN")
                if not retryable or attempt >= self.retry.retries:
                    raise error
            delay = min(self.retry.backoff * 2**attempt, self.retry.backoff_max)
            await asyncio.sleep(delay * (0.5 + random.random()))  # jitter spreads retries out
            attempt += 1

    def _describe(self, exc: BaseException) -> str:
        """The cause of a connection failure in words an operator can act on."""
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            cert_error = exc.certificate_error
            detail = getattr(cert_error, "verify_message", None) or str(cert_error)
            if "mismatch" in detail:
                hint = " (set tls.server_name to a name the certificate holds)"
            elif "expired" in detail or "not yet valid" in detail:
                hint = ""
            else:
                hint = " (set tls.ca_file to the CA that issued it)"
            return f"TLS: EMQX's certificate was not accepted: {detail[:160]}{hint}"
        if isinstance(exc, aiohttp.ClientSSLError):
            return f"TLS handshake failed: {_excerpt(exc)}"
        if isinstance(exc, aiohttp.ClientConnectorError):
            # aiohttp's own text names its TLS setting ("ssl:default") even for plain HTTP.
            error = exc.os_error
            cause = (os.strerror(error.errno) if error.errno
                     else error.strerror or str(error) or type(error).__name__)
            return f"cannot connect to {exc.host}:{exc.port}: {cause}"
        text = _excerpt(exc)
        dropped = isinstance(exc, aiohttp.ServerDisconnectedError) or (
            isinstance(exc, aiohttp.ClientOSError)
            and not isinstance(exc, aiohttp.ClientConnectorError))
        if self._https and not self._client_cert and dropped:
            # With TLS 1.3 a server that requires a client certificate completes the handshake
            # and then drops the connection: all the client sees is the disconnect.
            text += (" (if EMQX's listener requires a client certificate, set tls.cert_file"
                     " and tls.key_file)")
        return text

    async def _attempt(self, request: Request, authorize: bool) -> tuple[Response, str | None]:
        """One try: the answer and the Authorization header it was sent with."""
        session = self._get_session()
        headers: dict[str, str] = {}
        header: str | None = None
        if authorize and self.auth is not None:
            header = await self.auth.header(self)
            if header:
                headers["Authorization"] = header
        url = self.base_url.joinpath(*map(path_segment, request.path), encoded=True)
        started = time.perf_counter()
        outcome = "error"
        try:
            async with asyncio.timeout(self.timeout):
                async with session.request(
                    request.method, url, params=list(request.params), headers=headers,
                    json=request.json_body, server_hostname=self._server_name,
                ) as answer:
                    body = await self._read_body(answer, request.endpoint)
                    outcome = str(answer.status)
                    retry_after = (parse_retry_after(answer.headers.get("Retry-After"),
                                                     time.time())
                                   if answer.status in (429, 503) else None)
                    return (Response(answer.status, answer.content_type, body, request.endpoint,
                                     retry_after), header)
        except TimeoutError as exc:
            outcome = "timeout"
            raise ApiTimeoutError(request.endpoint, self.timeout) from exc
        except aiohttp.ClientPayloadError as exc:
            raise ApiConnectionError(request.endpoint, f"truncated body: {exc}",
                                     reason=reason("truncated")) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ApiConnectionError(request.endpoint, self._describe(exc)) from exc
        finally:
            if self.observer is not None:
                self.observer(request.endpoint, outcome, time.perf_counter() - started)

    async def _read_body(self, answer: aiohttp.ClientResponse, endpoint: str) -> bytes:
        """The whole body, refused (and the connection dropped) once it passes `max_body`."""
        declared = answer.content_length
        if declared is not None and declared > self.max_body:
            raise ApiError(endpoint, answer.status, None,
                           f"body of {declared} bytes refused unread (max_body_bytes="
                           f"{self.max_body})", reason=reason("body_too_large"))
        chunks: list[bytes] = []
        size = 0
        async for chunk in answer.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > self.max_body:
                raise ApiError(endpoint, answer.status, None,
                               f"body passed max_body_bytes={self.max_body} and was refused",
                               reason=reason("body_too_large"))
            chunks.append(chunk)
        return b"".join(chunks)


def _excerpt(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]
