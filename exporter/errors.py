"""One exception tree for the exporter: every failure carries a short `reason` for metrics."""

from __future__ import annotations


class ExporterError(Exception):
    """Base of every error the exporter raises on purpose."""

    #: Value of the `reason` label of `emqx_client_exporter_api_errors_total`.
    reason: str = "error"


class ConfigError(ExporterError):
    """The configuration is invalid; `key` names the offending setting."""

    reason = "config"

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


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
    ) -> None:
        detail = f" {code}" if code is not None else ""
        text = f": {message}" if message else ""
        super().__init__(f"{endpoint}: HTTP {status}{detail}{text}")
        self.endpoint = endpoint
        self.status = status
        self.code = code
        self.message = message
        self.reason = reason or _reason_for(status, code)


class AuthError(ApiError):
    """EMQX refused the credentials (401) or their rights (403)."""

    def __init__(self, endpoint: str, status: int, code: str | int | None, message: str,
                 credential_kind: str) -> None:
        super().__init__(endpoint, status, code, message)
        self.credential_kind = credential_kind

    def __str__(self) -> str:
        code = f" ({self.code})" if self.code else ""
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
        self.reason = reason


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
        self.reason = reason


class WalkError(ExporterError):
    """Walking a node's client list went wrong in a way no single response shows."""

    def __init__(self, node: str, reason: str, detail: str) -> None:
        super().__init__(f"{node}: {detail}")
        self.node = node
        self.reason = reason


def _reason_for(status: int, code: str | int | None) -> str:
    if code == "NODE_DOWN" or code == 101:
        return "node_down"
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
