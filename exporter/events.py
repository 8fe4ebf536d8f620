"""EMQX's client events counted by node, class and reason, and per watched client.

EMQX publishes every connect and disconnect on `$SYS/brokers/{node}/clients/{clientid}/
connected|disconnected` (QoS 0), the disconnect with EMQX's reason. `EventCounter.handle` turns
one such message into counts; `EventsCollector` writes them at scrape time (a few hundred series
at most: node x class x a bounded list of reasons, plus watched clients). The MQTT subscription
that feeds it is `exporter.eventsource`. Payloads, as recorded from the real brokers
(tests/fixtures/events): 5.x `{"clientid","username","reason","connected_at","disconnected_at",
"ts","protocol","proto_name","proto_ver","ipaddress","sockport"}` (connected: `keepalive`,
`clean_start`, `expiry_interval` instead of `reason`/`disconnected_at`); 4.4 the same without
`protocol`, plus `connack`. A client without a username has `"username":"undefined"`.

    emqx_clients_disconnected_events_total{node="emqx@n1",class="meter",reason="kicked"} 12
    emqx_client_last_disconnect_timestamp_seconds{clientid="meter-7",reason="kicked"} 1.7e+09
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter import contract as c
from exporter.aggregate import Classifier
from exporter.api import TlsSettings
from exporter.exposition import ConstLabels

Kind = Literal["connected", "disconnected"]
_KINDS: frozenset[str] = frozenset(("connected", "disconnected"))
_KNOWN_REASONS = frozenset(c.DISCONNECT_REASONS)
_TAKEOVERS = frozenset(c.TAKEOVER_REASONS)
#: How EMQX writes the Erlang atom `undefined` of a client without a username.
_NO_USERNAME = "undefined"


@dataclass(frozen=True, slots=True)
class EventsSettings:
    """Where and how to subscribe to one cluster's client events (validated by `config`)."""

    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    tls: TlsSettings | None
    clientid: str
    topic: str
    keepalive: int


class _Payload(msgspec.Struct):
    """The fields in use of an event's JSON payload; EMQX adds others, ignored."""

    clientid: str | None = None
    username: str | None = None
    reason: str | None = None
    disconnected_at: int | float | None = None
    ts: int | float | None = None


_decode = msgspec.json.Decoder(_Payload).decode


class EventDecodeError(ValueError):
    """An event message whose topic or payload is not what EMQX publishes."""


@dataclass(frozen=True, slots=True)
class ClientEvent:
    node: str
    clientid: str
    username: str | None
    kind: Kind
    #: EMQX's disconnect reason, as published (None for a connect).
    reason: str | None
    #: When it happened, Unix time (EMQX's `disconnected_at` or `ts`), None when not given.
    at: float | None


def parse(topic: str, payload: bytes) -> ClientEvent | None:
    """The event a message carries; None for other client events (subscribed, ...).

    Raises EventDecodeError when the topic or payload is not an EMQX client event.
    """
    # $SYS/brokers/{node}/clients/{clientid, which may hold '/'}/{event}
    parts = topic.split("/")
    if len(parts) < 6 or parts[0] != "$SYS" or parts[1] != "brokers" or parts[3] != "clients":
        raise EventDecodeError(f"not a client event topic: {topic[:200]!r}")
    kind = parts[-1]
    if kind not in _KINDS:
        return None
    try:
        body = _decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise EventDecodeError(f"bad {kind} payload: {exc}") from None
    clientid = body.clientid if body.clientid is not None else "/".join(parts[4:-1])
    if kind == "disconnected" and not body.reason:
        raise EventDecodeError("disconnected event without a reason")
    at = body.disconnected_at if kind == "disconnected" else None
    if at is None:
        at = body.ts
    username = None if body.username in (None, _NO_USERNAME) else body.username
    return ClientEvent(parts[2], clientid, username, kind,  # type: ignore[arg-type]
                       body.reason if kind == "disconnected" else None,
                       None if at is None else at / 1000.0)


def bounded_reason(reason: str) -> str:
    """The `reason` label of a disconnect reason: EMQX's own when listed, else `other`."""
    return reason if reason in _KNOWN_REASONS else c.OTHER_REASON


class EventCounter:
    """One cluster's counts of client events. Pure: no I/O, no clock."""

    def __init__(self, classifier: Classifier, watch: frozenset[str],
                 owns: Callable[[str], bool] = lambda _node: True) -> None:
        self.rules = classifier.rules
        self.default_class = classifier.default
        self.watch = watch
        #: Whether this replica covers a node (`--shard`): others' events are not counted.
        self.owns = owns
        self.connects: Counter[tuple[str, str]] = Counter()
        self.disconnects: Counter[tuple[str, str, str]] = Counter()
        self.takeovers: Counter[tuple[str, str]] = Counter()
        self.client_connects: Counter[str] = Counter()
        #: Watched client -> (reason label, Unix time) of its last disconnect.
        self.client_last: dict[str, tuple[str, float]] = {}
        self.messages = 0
        self.decode_errors = 0

    def classify(self, clientid: str, username: str | None) -> str:
        """The class of a client, first matching rule (as the aggregates classify)."""
        for rule in self.rules:
            value = clientid if rule.field == "clientid" else (username or "")
            if rule.pattern.fullmatch(value) is not None:
                return rule.name
        return self.default_class

    def handle(self, topic: str, payload: bytes) -> None:
        """Count one message; a message that is not a client event is a decode error."""
        self.messages += 1
        try:
            event = parse(topic, payload)
        except EventDecodeError:
            self.decode_errors += 1
            return
        if event is not None:
            self.count(event)

    def count(self, event: ClientEvent) -> None:
        if not self.owns(event.node):
            return
        group = (event.node, self.classify(event.clientid, event.username))
        watched = event.clientid in self.watch
        if event.kind == "connected":
            self.connects[group] += 1
            if watched:
                self.client_connects[event.clientid] += 1
            return
        assert event.reason is not None  # parse guarantees it
        reason = bounded_reason(event.reason)
        self.disconnects[(*group, reason)] += 1
        if reason in _TAKEOVERS:
            self.takeovers[group] += 1
        if watched and event.at is not None:
            self.client_last[event.clientid] = (reason, event.at)


@dataclass(slots=True)
class SubscriptionState:
    """The health of one cluster's events subscription (written by `eventsource`)."""

    up: bool = False
    #: Losses of the subscription after it was up.
    gaps: int = 0
    #: Seconds it was down after first being up, not counting the current outage.
    gap_seconds: float = 0.0
    #: Since when it is down (after having been up), monotonic seconds; None while up.
    down_since: float | None = None
    up_since: float | None = None  # Unix time
    last_error: str | None = None
    last_error_at: float | None = None  # Unix time
    ever_up: bool = False

    def came_up(self, now: float) -> None:
        if self.down_since is not None:
            self.gap_seconds += time.monotonic() - self.down_since
            self.down_since = None
        self.up, self.ever_up, self.up_since = True, True, now

    def went_down(self, error: str, now: float) -> None:
        if self.up:
            self.gaps += 1
            self.down_since = time.monotonic()
        self.up = False
        self.up_since = None
        self.last_error, self.last_error_at = error, now

    def missed_seconds(self) -> float:
        """Seconds events may have been missed since the subscription first came up."""
        ongoing = 0.0 if self.down_since is None else time.monotonic() - self.down_since
        return self.gap_seconds + ongoing


@dataclass(slots=True)
class ClusterEvents:
    """One cluster's events: its counts, subscription state and labels."""

    name: str | None
    counter: EventCounter
    state: SubscriptionState = field(default_factory=SubscriptionState)
    const: ConstLabels = ()


class EventsCollector:
    """prometheus_client collector over every cluster's events (no I/O at scrape time)."""

    def __init__(self) -> None:
        self.clusters: list[ClusterEvents] = []

    def collect(self) -> Iterator[Metric]:
        named = any(e.name for e in self.clusters)
        base = ["cluster"] if named else []
        with_class = any(e.counter.rules for e in self.clusters)
        group = [*base, "node", *(["class"] if with_class else [])]

        def counter(f: c.Family, extra: list[str]) -> CounterMetricFamily:
            return CounterMetricFamily(f.name, f.help, labels=extra)

        def gauge(f: c.Family, extra: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(f.name, f.help, labels=extra)

        connects = counter(c.EVENT_CONNECTS, group)
        disconnects = counter(c.EVENT_DISCONNECTS, [*group, "reason"])
        takeovers = counter(c.EVENT_TAKEOVERS, group)
        client_connects = counter(c.CLIENT_EVENT_CONNECTS, [*base, "clientid"])
        client_last = gauge(c.CLIENT_LAST_DISCONNECT, [*base, "clientid", "reason"])
        up = gauge(c.EVENTS_UP, base)
        messages = counter(c.EVENTS_MESSAGES, base)
        errors = counter(c.EVENTS_DECODE_ERRORS, base)
        gaps = counter(c.EVENTS_GAPS, base)
        gap_seconds = counter(c.EVENTS_GAP_SECONDS, base)
        for e in self.clusters:
            cluster = [e.name or ""] if named else []
            n = e.counter

            def key(g: tuple[str, ...], cluster: list[str] = cluster) -> list[str]:
                # (node, class, ...) without the class where no classes are configured
                return [*cluster, g[0], *(g[1:] if with_class else g[2:])]

            for g, count in sorted(n.connects.items()):
                connects.add_metric(key(g), count)
            for g3, count in sorted(n.disconnects.items()):
                disconnects.add_metric(key(g3), count)
            for g, count in sorted(n.takeovers.items()):
                takeovers.add_metric(key(g), count)
            for cid, count in sorted(n.client_connects.items()):
                client_connects.add_metric([*cluster, cid], count)
            for cid, (reason, at) in sorted(n.client_last.items()):
                client_last.add_metric([*cluster, cid, reason], at)
            up.add_metric(cluster, 1.0 if e.state.up else 0.0)
            messages.add_metric(cluster, n.messages)
            errors.add_metric(cluster, n.decode_errors)
            gaps.add_metric(cluster, e.state.gaps)
            gap_seconds.add_metric(cluster, e.state.missed_seconds())
        if not self.clusters:
            return
        yield from (connects, disconnects, takeovers, client_connects, client_last, up, messages,
                    errors, gaps, gap_seconds)
