"""One exception tree for the exporter: every failure carries a short `reason` for metrics.

`REASONS` is the one list of the `reason` label's values of
`emqx_client_exporter_api_errors_total`; the table in docs/metrics.md is generated from it.
"""

from __future__ import annotations

import traceback

#: Every value of the `reason` label, with what it means (docs table, `check`, tests).
REASONS: dict[str, str] = {
    "unreachable": "EMQX could not be reached: connection refused or reset, DNS, TLS",
    "timeout": "no complete answer (body included) within `timeout`",
    "truncated": "the connection closed before the whole body arrived",
    "body_too_large": "an answer over `max_body_bytes`, refused as it streamed in",
    "unauthorized": "EMQX rejected the credentials (401)",
    "login_locked": "EMQX 5.9+ locked the dashboard user after failed logins (401 LOGIN_LOCKED)",
    "forbidden": "the credentials lack a permission (403)",
    "rate_limited": "EMQX or a proxy asked to slow down (429); `Retry-After` is obeyed",
    "not_found": "the API path does not exist (404)",
    "client_error": "any other 4xx answer",
    "server_error": "a 5xx answer",
    "node_down": "EMQX could not reach the node (NODE_DOWN, code 101)",
    "api_error_code": "v3/v4 answered HTTP 200 with a non-zero `code`",
    "html_page": "an HTML page (a proxy's) instead of JSON",
    "bad_json": "the body is not valid JSON",
    "bad_shape": "valid JSON, but not the shape of an EMQX answer",
    "page_limit": "a walk needed more than `max_pages` pages",
    "bad_row": "a client row without a usable client id, skipped",
    "bad_value": "a value of the wrong type or out of range, dropped (the row is kept)",
    "internal": "a bug in the exporter itself; the poll fails and the loop goes on",
    "error": "an error of no more precise kind",
}


def reason(name: str) -> str:
    """A reason from `REASONS`, checked, so a typo cannot invent a new label value."""
    if name not in REASONS:
        raise ValueError(f"unknown error reason {name!r}")
    return name


# The constructors below take a parameter named `reason`; this is the check under another name.
_known = reason


class ExporterError(Exception):
    """Base of every error the exporter raises on purpose."""

    #: Value of the `reason` label of `emqx_client_exporter_api_errors_total`.
    reason: str = "error"


class ConfigError(ExporterError):
    """The configuration is invalid; `key` names the offending setting (exits at start)."""

    #: How `main` introduces the error on stderr.
    kind = "configuration error"

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class ListenError(ConfigError):
    """The listen address cannot be bound (in use, not this host's): the configuration is
    valid, the address is not available."""

    kind = "address error"


class ApiError(ExporterError):
    """EMQX answered, but with an error: an HTTP error status or an error envelope."""

    def __init__(
        self,
        endpoint: str,
        status: int,
        code: str | int | None = None,
        message: str = "",
        *,
        reason: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        detail = f" {code}" if code is not None else ""
        text = f": {message}" if message else ""
        wait = f" (Retry-After {retry_after:g} s)" if retry_after is not None else ""
        super().__init__(f"{endpoint}: HTTP {status}{detail}{text}{wait}")
        self.endpoint = endpoint
        self.status = status
        self.code = code
        self.message = message
        self.reason = _known(reason) if reason else _reason_for(status, code)
        #: Seconds EMQX (or a proxy) asked us to wait, from a 429's or 503's `Retry-After`.
        self.retry_after = retry_after


class AuthError(ApiError):
    """EMQX refused the credentials (401) or their rights (403)."""

    def __init__(self, endpoint: str, status: int, code: str | int | None, message: str,
                 credential_kind: str) -> None:
        super().__init__(endpoint, status, code, message)
        self.credential_kind = credential_kind

    def __str__(self) -> str:
        code = f" ({self.code})" if self.code else ""
        if self.reason == "login_locked":
            return (f"EMQX locked the {self.credential_kind} after repeated failed logins"
                    f"{code}: EMQX 5.9+ locks a dashboard user for 10 minutes after 5 failures"
                    f" in 5 minutes, humans included")
        if self.status == 403:
            return (f"the {self.credential_kind} lacks permission for {self.endpoint}{code}: "
                    f"HTTP 403")
        return f"EMQX rejected the {self.credential_kind}{code} on {self.endpoint}: HTTP 401"


class ApiConnectionError(ExporterError):
    """EMQX could not be reached: refused, reset, DNS or TLS failure."""

    reason = "unreachable"

    def __init__(self, endpoint: str, cause: str, *, reason: str = "unreachable") -> None:
        super().__init__(f"{endpoint}: cannot reach EMQX: {cause}")
        self.endpoint = endpoint
        self.reason = _known(reason)


class ApiTimeoutError(ExporterError):
    """A request, including reading its whole body, took longer than the timeout."""

    reason = "timeout"

    def __init__(self, endpoint: str, timeout: float) -> None:
        super().__init__(f"{endpoint}: no complete answer within {timeout:g} s")
        self.endpoint = endpoint


class DecodeError(ExporterError):
    """A response body could not be understood (not JSON, truncated, HTML, wrong shape)."""

    def __init__(self, endpoint: str, reason: str, detail: str) -> None:
        super().__init__(f"{endpoint}: {reason}: {detail}")
        self.endpoint = endpoint
        self.reason = _known(reason)


class WalkError(ExporterError):
    """Walking a node's client list went wrong in a way no single response shows."""

    def __init__(self, node: str, reason: str, detail: str) -> None:
        super().__init__(f"{node}: {detail}")
        self.node = node
        self.reason = _known(reason)


class InternalError(ExporterError):
    """An exception the exporter did not expect: a bug of ours, shown as a failed poll."""

    reason = "internal"

    def __init__(self, cause: BaseException) -> None:
        where = traceback.extract_tb(cause.__traceback__)[-1:] if cause.__traceback__ else []
        place = f" at {where[0].filename.rsplit('/', 1)[-1]}:{where[0].lineno}" if where else ""
        super().__init__(f"internal error{place}: {type(cause).__name__}: {cause}"[:300])
        self.cause = cause


class BackingOffError(ExporterError):
    """Not asked this poll: an earlier failure set a time before which EMQX is left alone."""

    def __init__(self, last: ExporterError, until: float, now: float, why: str = "") -> None:
        wait = max(0.0, until - now)
        super().__init__(f"not asked for {wait:.0f} s more{why}; last error: {last}")
        self.last = last
        self.reason = last.reason
        self.until = until


def _reason_for(status: int, code: str | int | None) -> str:
    if code == "NODE_DOWN" or code == 101:
        return "node_down"
    if code == "LOGIN_LOCKED":
        return "login_locked"
    if status == 429:
        return "rate_limited"
    if status == 401:
        return "unauthorized"
    if status == 403:
        return "forbidden"
    if status == 404:
        return "not_found"
    if status == 200:
        return "api_error_code"  # v3/v4 report errors inside HTTP 200
    if status >= 500:
        return "server_error"
    return "client_error"
