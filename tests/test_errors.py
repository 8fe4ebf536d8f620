"""The exception tree as a specification: every failure carries a known `reason` label value."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from exporter import errors
from exporter.errors import (
    REASONS,
    ApiConnectionError,
    ApiError,
    ApiTimeoutError,
    AuthError,
    BackingOffError,
    ConfigError,
    DecodeError,
    ExporterError,
    InternalError,
    WalkError,
    reason,
)

EXPORTER = Path(errors.__file__).parent


def test_reason_accepts_every_listed_reason_and_refuses_a_typo() -> None:
    for name in REASONS:
        assert reason(name) == name
    for typo in ("timeout ", "Timeout", "time_out", "", "bad-json"):
        with pytest.raises(ValueError, match="unknown error reason"):
            reason(typo)


def test_every_reason_is_a_label_value_with_a_description() -> None:
    for name, meaning in REASONS.items():
        assert name.isidentifier() and name == name.lower(), name
        assert meaning.strip(), name


@pytest.mark.parametrize(("status", "code", "expected"), [
    (401, None, "unauthorized"),
    (403, None, "forbidden"),
    (404, "NOT_FOUND", "not_found"),
    (429, None, "rate_limited"),
    (400, "BAD_REQUEST", "client_error"),
    (418, None, "client_error"),
    (500, None, "server_error"),
    (503, None, "server_error"),
    (200, 102, "api_error_code"),       # v3/v4 report errors inside HTTP 200
    (500, "NODE_DOWN", "node_down"),     # the code says more than the status
    (200, 101, "node_down"),
    (401, "LOGIN_LOCKED", "login_locked"),
])
def test_api_error_reason_follows_status_and_code(status: int, code: str | int | None,
                                                  expected: str) -> None:
    error = ApiError("/api/v5/clients", status, code, "message")
    assert error.reason == expected
    assert error.reason in REASONS
    assert error.endpoint == "/api/v5/clients" and error.status == status
    assert f"HTTP {status}" in str(error)


def test_api_error_names_retry_after_and_keeps_an_explicit_reason() -> None:
    error = ApiError("/api/v5/clients", 429, None, "slow down", retry_after=2.5)
    assert error.retry_after == 2.5 and "Retry-After 2.5 s" in str(error)
    assert ApiError("/x", 200, None, "", reason="html_page").reason == "html_page"


@pytest.mark.parametrize("make", [
    lambda: ApiError("/x", 500, reason="server_eror"),
    lambda: ApiConnectionError("/x", "refused", reason="unreachabel"),
    lambda: DecodeError("/x", "bad_jsn", "detail"),
    lambda: WalkError("emqx@a", "page_limt", "detail"),
])
def test_an_error_built_with_an_unknown_reason_is_refused(make: object) -> None:
    # A typo must not invent a new value of the `reason` label at run time.
    with pytest.raises(ValueError, match="unknown error reason"):
        make()  # type: ignore[operator]


def test_every_error_class_has_a_listed_reason() -> None:
    cause = _raised(KeyError("k"))
    built: list[ExporterError] = [
        ExporterError("x"),
        ConfigError("emqx_url", "missing"),
        ApiError("/x", 502),
        AuthError("/x", 401, None, "", "API key"),
        ApiConnectionError("/x", "refused"),
        ApiConnectionError("/x", "truncated", reason="truncated"),
        ApiTimeoutError("/x", 5.0),
        DecodeError("/x", "bad_shape", "no data"),
        WalkError("emqx@a", "page_limit", "too many pages"),
        InternalError(cause),
        BackingOffError(ApiError("/x", 429), until=10.0, now=0.0),
    ]
    for error in built:
        assert error.reason in REASONS, type(error).__name__
    assert ApiTimeoutError("/x", 5.0).reason == "timeout"
    assert InternalError(cause).reason == "internal"
    assert ExporterError("x").reason == "error"


def test_every_reason_literal_in_the_exporter_is_listed() -> None:
    """The source's literal reasons (`reason("x")`, `DecodeError(e, "x", ...)`, `count_error("x")`,
    `reason="x"`) are all in REASONS, including those on paths no test reaches."""
    found: dict[str, str] = {}
    for path in EXPORTER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            callee = node.func.attr if isinstance(node.func, ast.Attribute) else (
                node.func.id if isinstance(node.func, ast.Name) else "")
            literals: list[ast.expr] = [k.value for k in node.keywords if k.arg == "reason"]
            if callee in ("reason", "count_error") and node.args:
                literals.append(node.args[0])
            if callee in ("DecodeError", "WalkError") and len(node.args) > 1:
                literals.append(node.args[1])
            for lit in literals:
                if isinstance(lit, ast.Constant) and isinstance(lit.value, str):
                    found[lit.value] = f"{path.relative_to(EXPORTER)}:{node.lineno}"
    assert len(found) >= 8  # the scan sees the source, not nothing
    unknown = {name: where for name, where in found.items() if name not in REASONS}
    assert unknown == {}


def test_config_error_names_the_key() -> None:
    error = ConfigError("clusters[0].interval", "must be positive")
    assert (error.key, error.message) == ("clusters[0].interval", "must be positive")
    assert str(error).startswith("clusters[0].interval: ")


def test_auth_error_names_the_credential_kind_and_the_lock() -> None:
    rejected = AuthError("/api/v5/login", 401, None, "bad password", "dashboard user")
    assert rejected.reason == "unauthorized"
    assert "dashboard user" in str(rejected) and "401" in str(rejected)
    denied = AuthError("/api/v5/clients", 403, None, "", "API key")
    assert denied.reason == "forbidden" and "lacks permission" in str(denied)
    locked = AuthError("/api/v5/login", 401, "LOGIN_LOCKED", "", "dashboard user")
    assert locked.reason == "login_locked" and "locked" in str(locked)


def test_internal_error_names_the_bug_briefly_and_keeps_the_cause() -> None:
    cause = _raised(ValueError("x" * 1000))
    error = InternalError(cause)
    assert error.cause is cause
    text = str(error)
    assert "ValueError" in text and "test_errors.py:" in text
    assert len(text) <= 300
    assert "ValueError" in str(InternalError(ValueError("never raised")))  # no traceback


def test_backing_off_carries_the_last_reason_and_never_a_negative_wait() -> None:
    last = ApiError("/x", 429, retry_after=30.0)
    waiting = BackingOffError(last, until=130.0, now=100.0, why="; EMQX asked to slow down")
    assert waiting.reason == "rate_limited" and waiting.last is last and waiting.until == 130.0
    assert "30 s more; EMQX asked to slow down" in str(waiting)
    assert "not asked for 0 s more" in str(BackingOffError(last, until=100.0, now=130.0))


def test_every_error_is_an_exporter_error() -> None:
    for cls in (ConfigError, ApiError, AuthError, ApiConnectionError, ApiTimeoutError,
                DecodeError, WalkError, InternalError, BackingOffError):
        assert issubclass(cls, ExporterError)


def _raised(error: Exception) -> Exception:
    try:
        raise error
    except Exception as exc:  # kept with its traceback
        return exc
