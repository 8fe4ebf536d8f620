"""Failure state of one cluster's targets: when a failing target may be asked again, and one log
line when it starts failing for a reason and one when it recovers.

(Readiness, `/-/ready`, is the service's: see tests/test_service.py.)
"""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from exporter.errors import (
    ApiConnectionError,
    ApiError,
    ApiTimeoutError,
    AuthError,
    ExporterError,
    InternalError,
)
from exporter.health import (
    CLUSTER,
    LOGIN_BACKOFF_FIRST,
    LOGIN_BACKOFF_MAX,
    LOGIN_LOCK_SECONDS,
    RETRY_AFTER_MAX,
    Health,
)

INTERVAL = 80.0
NODE = "emqx@10.0.0.1"


def waits(health: Health, target: str, error: ExporterError, failures: int) -> list[float]:
    """The back-off after each of `failures` failures, each one when the last wait ended."""
    out, now = [], 1000.0
    for _ in range(failures):
        assert health.waiting(target, now) is None
        health.failed(target, error, now)
        blocked = health.waiting(target, now)
        assert blocked is not None
        out.append(blocked.until - now)
        now = blocked.until
    return out


def test_a_target_never_failed_may_always_be_asked() -> None:
    health = Health("prod", INTERVAL)
    assert health.waiting(CLUSTER, 0.0) is None and health.waiting(NODE, 0.0) is None


def test_a_failing_node_waits_an_eighth_of_the_interval_doubling_up_to_the_interval() -> None:
    health = Health("prod", INTERVAL)
    assert waits(health, NODE, ApiTimeoutError("/clients", 5.0), 6) == [
        10.0, 20.0, 40.0, 80.0, 80.0, 80.0]


def test_the_cluster_itself_is_paced_by_the_interval_not_by_a_back_off() -> None:
    health = Health("prod", INTERVAL)
    health.failed(CLUSTER, ApiConnectionError("/nodes", "refused"), 10.0)
    assert health.waiting(CLUSTER, 10.0) is None


def test_a_429_waits_its_whole_retry_after_up_to_ten_minutes() -> None:
    health = Health("prod", INTERVAL)
    health.failed(CLUSTER, ApiError("/nodes", 429, retry_after=30.0), 0.0)
    blocked = health.waiting(CLUSTER, 29.0)
    assert blocked is not None and blocked.reason == "rate_limited" and blocked.until == 30.0
    assert health.waiting(CLUSTER, 30.0) is None
    health.failed(NODE, ApiError("/clients", 429, retry_after=3600.0), 0.0)
    assert health.waiting(NODE, INTERVAL) is not None  # more than the poll interval
    assert health.waiting(NODE, RETRY_AFTER_MAX - 1) is not None
    assert health.waiting(NODE, RETRY_AFTER_MAX) is None  # an hour asked, ten minutes kept


def test_a_rejected_login_waits_a_minute_doubling_up_to_half_an_hour() -> None:
    health = Health("prod", INTERVAL)
    rejected = AuthError("/api/v5/login", 401, None, "", "dashboard user")
    got = waits(health, CLUSTER, rejected, 7)
    assert got[0] == LOGIN_BACKOFF_FIRST == 60.0
    assert got == [60.0, 120.0, 240.0, 480.0, 960.0, 1800.0, 1800.0]
    assert LOGIN_BACKOFF_MAX == 1800.0
    forbidden = AuthError("/api/v5/clients", 403, None, "", "API key")
    assert waits(Health("prod", INTERVAL), NODE, forbidden, 2) == [60.0, 120.0]


def test_a_locked_login_is_not_retried_before_the_lock_ends() -> None:
    health = Health("prod", INTERVAL)
    locked = AuthError("/api/v5/login", 401, "LOGIN_LOCKED", "", "dashboard user")
    assert waits(health, CLUSTER, locked, 3) == [LOGIN_LOCK_SECONDS] * 3 == [600.0] * 3


def test_the_back_off_error_names_the_last_failure() -> None:
    health = Health("prod", INTERVAL)
    first = ApiTimeoutError("/clients", 5.0)
    health.failed(NODE, first, 0.0)
    blocked = health.waiting(NODE, 4.0)
    assert blocked is not None
    assert blocked.last is first and blocked.reason == "timeout"
    assert "not asked for 6 s more" in str(blocked)


def test_recovery_forgets_the_back_off_and_the_failure_count() -> None:
    health = Health("prod", INTERVAL)
    error = ApiTimeoutError("/clients", 5.0)
    waits(health, NODE, error, 3)
    health.recovered(NODE, 5000.0)
    assert health.waiting(NODE, 5000.0) is None
    assert waits(health, NODE, error, 1) == [10.0]  # counted from the first failure again


def test_one_line_when_a_target_starts_failing_and_one_when_it_recovers() -> None:
    health = Health("prod", INTERVAL)
    timeout = ApiTimeoutError("/clients", 5.0)
    with capture_logs() as logs:
        health.failed(NODE, timeout, 0.0)
        health.failed(NODE, timeout, 10.0)
        health.failed(NODE, timeout, 30.0)
        health.recovered(NODE, 100.0)
        health.recovered(NODE, 200.0)  # already recovered: nothing more to say
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("node_walk_failed", "warning"), ("node_walk_recovered", "info")]
    assert logs[0]["reason"] == "timeout" and logs[0]["node"] == NODE
    assert logs[0]["cluster"] == "prod"
    assert (logs[1]["failures"], logs[1]["failed_for"]) == (3, 100.0)


def test_a_new_reason_is_a_new_failure_to_log() -> None:
    health = Health("prod", INTERVAL)
    with capture_logs() as logs:
        health.failed(CLUSTER, ApiTimeoutError("/nodes", 5.0), 0.0)
        health.failed(CLUSTER, ApiConnectionError("/nodes", "refused"), 10.0)
        health.failed(CLUSTER, ApiConnectionError("/nodes", "refused"), 20.0)
        health.recovered(CLUSTER, 30.0)
    assert [(e["event"], e["reason"]) for e in logs] == [
        ("poll_failed", "timeout"), ("poll_failed", "unreachable"),
        ("poll_recovered", "unreachable")]
    assert logs[-1]["failed_for"] == 20.0 and logs[-1]["failures"] == 2


def test_a_bug_is_logged_with_its_traceback_once_per_cluster() -> None:
    health = Health("prod", INTERVAL)
    errors = []
    for text in ("first", "second"):
        try:
            raise KeyError(text)
        except KeyError as exc:
            errors.append(InternalError(exc))
    with capture_logs() as logs:
        health.failed(CLUSTER, errors[0], 0.0)
        health.failed(NODE, errors[1], 0.0)
    assert [(e["event"], e["log_level"], "exc_info" in e) for e in logs] == [
        ("poll_failed", "error", True), ("node_walk_failed", "warning", False)]
    assert logs[0]["exc_info"] is errors[0].cause


@pytest.mark.parametrize(("kind", "lock_hint"), [("dashboard user", True), ("API key", False)])
def test_a_rejected_credential_is_logged_with_the_pause_and_the_lock_risk(
        kind: str, lock_hint: bool) -> None:
    with capture_logs() as logs:
        Health("prod", INTERVAL).failed(CLUSTER, AuthError("/login", 401, None, "", kind), 0.0)
    [entry] = logs
    assert "retried after a growing pause" in entry["hint"]
    assert ("lock" in entry["hint"]) == lock_hint


def test_targets_fail_and_recover_independently() -> None:
    health = Health("prod", INTERVAL)
    other = "emqx@10.0.0.2"
    health.failed(NODE, ApiTimeoutError("/clients", 5.0), 0.0)
    assert health.waiting(other, 1.0) is None
    health.failed(other, ApiTimeoutError("/clients", 5.0), 0.0)
    health.recovered(other, 2.0)
    assert health.waiting(NODE, 2.0) is not None and health.waiting(other, 2.0) is None
