"""What is failing in one cluster right now: state changes logged once, back-off per target.

A target is the cluster itself (`/nodes`, login) or one node's walk. Each failure is counted
by the caller; this module decides what is *logged* (one line when a target starts failing
for a reason, one when it recovers) and when a failing target may be asked again:

- a node that keeps failing waits `interval/8`, then twice as long after each further
  failure, up to the interval (counted from the failure, so a node that stays down is asked
  every second poll);
- a 429 waits its whole `Retry-After` (at most ten minutes, `RETRY_AFTER_MAX`);
- a rejected login waits a minute, doubling up to 30 minutes: EMQX 5.9+ locks a dashboard
  user for ten minutes after five failed logins in five minutes (humans included), and a
  credential that failed is not going to work before someone changes it; a configuration
  reload (SIGHUP) is that sign, and retries it at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from exporter.errors import AuthError, BackingOffError, ExporterError, InternalError

log = structlog.get_logger(__name__)

#: The cluster-level target (`/nodes`, detection, login).
CLUSTER = "cluster"
#: First wait after a rejected login, and the longest.
LOGIN_BACKOFF_FIRST = 60.0
LOGIN_BACKOFF_MAX = 1800.0
#: EMQX's lock duration (`unsuccessful_login_lock_duration`, 600 s): never retry sooner.
LOGIN_LOCK_SECONDS = 600.0
#: Longest `Retry-After` obeyed: a proxy asking for hours is taken as ten minutes.
RETRY_AFTER_MAX = 600.0


@dataclass(slots=True)
class _Failing:
    error: ExporterError
    since: float
    failures: int = 0
    until: float = 0.0


class Health:
    """Failure state of one cluster's targets; decides logging and back-off."""

    def __init__(self, cluster: str, interval: float) -> None:
        self.cluster = cluster
        self.interval = interval
        self._failing: dict[str, _Failing] = {}
        self._traceback_logged = False

    def waiting(self, target: str, now: float) -> BackingOffError | None:
        """The reason not to ask `target` now, or None when it may be asked."""
        state = self._failing.get(target)
        if state is None or now >= state.until:
            return None
        return BackingOffError(state.error, state.until, now, _why(state.error))

    def failed(self, target: str, error: ExporterError, now: float) -> None:
        """Record a failure: log it if it is new for this target, and set the back-off."""
        state = self._failing.get(target)
        if state is None or state.error.reason != error.reason:
            self._log_start(target, error)
            state = _Failing(error, now)
            self._failing[target] = state
        elif isinstance(error, InternalError):
            log.debug("poll_crashed_again", cluster=self.cluster, error=str(error),
                      exc_info=error.cause)
        state.error = error
        state.failures += 1
        state.until = now + self._delay(target, error, state.failures)

    def retry_credentials(self) -> bool:
        """Forget the pause after a rejected credential (401, 403), so the next poll tries it
        (a reload: someone may have fixed it). EMQX's login lock and a 429's `Retry-After`
        stay. True when there was such a pause."""
        state = self._failing.get(CLUSTER)
        if state is None or state.error.reason not in ("unauthorized", "forbidden"):
            return False
        state.until, state.failures = 0.0, 0
        return True

    def recovered(self, target: str, now: float) -> None:
        """The target answered completely: log the recovery once, forget its back-off."""
        state = self._failing.pop(target, None)
        if state is None:
            return
        log.info("poll_recovered" if target == CLUSTER else "node_walk_recovered",
                 cluster=self.cluster, node=target, reason=state.error.reason,
                 failed_for=round(now - state.since, 3), failures=state.failures)

    def _delay(self, target: str, error: ExporterError, failures: int) -> float:
        if error.reason == "login_locked":
            return LOGIN_LOCK_SECONDS
        if error.reason in ("unauthorized", "forbidden"):
            return min(LOGIN_BACKOFF_FIRST * 2.0 ** (failures - 1), LOGIN_BACKOFF_MAX)
        retry_after: float | None = getattr(error, "retry_after", None)
        if retry_after is not None:
            # Obeyed in full: a proxy's 429 is the only pacing signal there is (REFERENCE.md
            # §13.5); only an absurd one is cut short.
            return min(retry_after, RETRY_AFTER_MAX)
        if target == CLUSTER:
            return 0.0  # the poll interval paces the cluster's own requests
        return min(self.interval / 8 * 2.0 ** (failures - 1), self.interval)

    def _log_start(self, target: str, error: ExporterError) -> None:
        event = "poll_failed" if target == CLUSTER else "node_walk_failed"
        fields = {"cluster": self.cluster, "node": target, "reason": error.reason,
                  "error": str(error)}
        if isinstance(error, InternalError) and not self._traceback_logged:
            # A bug of ours: the traceback once, so it can be reported; later only the cause.
            self._traceback_logged = True
            log.error(event, **fields, exc_info=error.cause)
            return
        hint = _why(error)
        if hint:
            fields["hint"] = hint.removeprefix("; ")
        log.warning(event, **fields)


def _why(error: ExporterError) -> str:
    if error.reason not in ("unauthorized", "forbidden", "login_locked"):
        return "; EMQX asked to slow down (429)" if error.reason == "rate_limited" else ""
    if error.reason == "login_locked":
        return "; no login is tried before the 10-minute lock ends"
    pause = "; rejected credentials are retried after a growing pause (1 to 30 minutes)"
    if isinstance(error, AuthError) and error.credential_kind.startswith("dashboard"):
        return (f"{pause} so EMQX 5.9+ does not lock the user out (5 failed logins in 5 "
                f"minutes lock it for 10 minutes, humans included)")
    return pause


