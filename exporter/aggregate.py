"""Aggregate families: per (node, class, listener, proto_name) gauges, distributions (see
`distribution`) and monotonic counters.

Bounded by construction: label values come from a short configured list, never client ids.
Counters add each client's increase since the last poll (see `state`), so they stay monotonic
when clients reconnect, are kicked or vanish.

    emqx_clients_online{node="emqx@10.0.0.1"} 33120
    emqx_clients_dropped_messages_total{node="emqx@10.0.0.1",direction="sent",reason="expired"} 7
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import compress
from operator import attrgetter, itemgetter, not_

from exporter import contract as c
from exporter.contract import Family
from exporter.distribution import Histograms
from exporter.distribution import render as render_distributions
from exporter.exposition import ConstLabels, extend, group_lines, label_set
from exporter.records import ClientRecord
from exporter.render import RenderedBatch, as_label
from exporter.selection import Pattern, fullmatches


@dataclass(frozen=True, slots=True)
class ClassRule(Pattern):
    """A named client class: a Pattern whose matches get this class name."""

    name: str


class Classifier:
    """First matching rule wins; the rest is `other`."""

    def __init__(self, rules: Sequence[ClassRule], default: str = "other") -> None:
        self.rules = tuple(rules)
        self.default = default

    def page(self, records: Sequence[ClientRecord]) -> list[str]:
        """Each record's class (the value `Pattern.matches` reads, first matching rule): one
        rule at a time over the records no earlier rule took, so the regex runs from C without
        a Python call per client."""
        names = [self.default] * len(records)
        pending = list(range(len(records)))
        for rule in self.rules:
            if not pending:
                break
            values = [records[i].clientid for i in pending] if rule.field == "clientid" else [
                records[i].username or "" for i in pending]
            hits = fullmatches(rule.pattern, values)
            for i in compress(pending, hits):
                names[i] = rule.name
            pending = list(compress(pending, map(not_, hits)))
        return names


@dataclass(frozen=True, slots=True)
class AggregateSettings:
    labels: tuple[str, ...] = ("node",)
    saturation: float = 0.8
    const_labels: ConstLabels = ()


@dataclass(slots=True)
class Gauges:
    """Point-in-time sums of one group in one poll."""

    online: int = 0
    sessions: int = 0
    mqueue: int = 0
    inflight: int = 0
    subscriptions: int = 0
    mqueue_saturated: int = 0
    inflight_saturated: int = 0

    def add(self, other: Gauges) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


GroupKey = tuple[object, ...]

# Indexes into a group's counter list.
(RX_BYTES, TX_BYTES, RX_MSGS, TX_MSGS, MQUEUE_DROPPED, RX_DROP_PUBREL, RX_DROP_OTHER,
 TX_DROP_EXPIRED, TX_DROP_QUEUE_FULL, TX_DROP_TOO_LARGE, TX_DROP_OTHER, CONNECTS) = range(12)

_DROP_SERIES = (
    ("received", "await_pubrel_timeout", RX_DROP_PUBREL), ("received", "other", RX_DROP_OTHER),
    ("sent", "expired", TX_DROP_EXPIRED), ("sent", "queue_full", TX_DROP_QUEUE_FULL),
    ("sent", "too_large", TX_DROP_TOO_LARGE), ("sent", "other", TX_DROP_OTHER),
)
_COUNTER_FAMILIES: tuple[tuple[Family, int], ...] = (
    (c.CLIENTS_RECEIVED_BYTES, RX_BYTES), (c.CLIENTS_SENT_BYTES, TX_BYTES),
    (c.CLIENTS_RECEIVED_MESSAGES, RX_MSGS), (c.CLIENTS_SENT_MESSAGES, TX_MSGS),
    (c.CLIENTS_MQUEUE_DROPPED, MQUEUE_DROPPED), (c.CLIENTS_CONNECTS, CONNECTS),
)
_GAUGE_FAMILIES: tuple[tuple[Family, str], ...] = (
    (c.CLIENTS_ONLINE, "online"), (c.CLIENTS_SESSIONS, "sessions"),
    (c.CLIENTS_MQUEUE, "mqueue"), (c.CLIENTS_INFLIGHT, "inflight"),
    (c.CLIENTS_SUBSCRIPTIONS, "subscriptions"),
    (c.CLIENTS_MQUEUE_SATURATED, "mqueue_saturated"),
    (c.CLIENTS_INFLIGHT_SATURATED, "inflight_saturated"),
)


_CONNECTED = attrgetter("connected")
_SUBSCRIPTIONS = attrgetter("subscriptions")
#: (length, capacity, Gauges total, Gauges saturated count) of each bounded buffer.
_FILLS = ((attrgetter("mqueue_len"), attrgetter("mqueue_max"), "mqueue", "mqueue_saturated"),
          (attrgetter("inflight"), attrgetter("inflight_max"), "inflight", "inflight_saturated"))


class Aggregator:
    """Groups clients and keeps each group's counters for the life of the process."""

    def __init__(self, settings: AggregateSettings, classify: Classifier) -> None:
        self.settings = settings
        self.classify = classify
        self.counters: dict[GroupKey, list[int]] = {}

    def keys(self, records: Sequence[ClientRecord]) -> list[GroupKey]:
        """Each record's group: its raw values of the labels (the class name for `class`)."""
        columns = [self.classify.page(records) if name == "class"
                   else list(map(attrgetter(name), records)) for name in self.settings.labels]
        return list(zip(*columns, strict=True)) if columns else [()] * len(records)

    def count(self, key: GroupKey, deltas: list[int], new_connection: bool) -> None:
        """Add one client's increases (in `state.COUNTER_FIELDS` order) to its group."""
        totals = self.counters.get(key)
        if totals is None:
            totals = self.counters[key] = [0] * 12
        elif not new_connection and not any(deltas):
            return  # an idle client, most of a large fleet
        (rx_bytes, tx_bytes, rx_msgs, tx_msgs, mq_dropped, rx_dropped, rx_pubrel,
         tx_dropped, tx_expired, tx_full, tx_large) = deltas
        totals[RX_BYTES] += rx_bytes
        totals[TX_BYTES] += tx_bytes
        totals[RX_MSGS] += rx_msgs
        totals[TX_MSGS] += tx_msgs
        totals[MQUEUE_DROPPED] += mq_dropped
        if rx_dropped:
            totals[RX_DROP_PUBREL] += rx_pubrel
            totals[RX_DROP_OTHER] += max(0, rx_dropped - rx_pubrel)
        if tx_dropped:
            totals[TX_DROP_EXPIRED] += tx_expired
            totals[TX_DROP_QUEUE_FULL] += tx_full
            totals[TX_DROP_TOO_LARGE] += tx_large
            totals[TX_DROP_OTHER] += max(0, tx_dropped - tx_expired - tx_full - tx_large)
        if new_connection:
            totals[CONNECTS] += 1

    def gauge(self, gauges: Gauges, records: Sequence[ClientRecord]) -> None:
        """Add a group's records of one page, a column at a time (in C, not per client)."""
        gauges.sessions += len(records)
        gauges.online += len(records) - list(map(_CONNECTED, records)).count(False)
        threshold = self.settings.saturation
        for length, capacity, total, saturated in _FILLS:
            lengths = list(map(length, records))
            if not any(lengths):
                continue  # empty queues and windows, most of a fleet
            setattr(gauges, total, getattr(gauges, total) + sum(filter(None, lengths)))
            capacities = compress(map(capacity, records), lengths)
            full = sum(1 for n, m in zip(compress(lengths, lengths), capacities, strict=True)
                       if isinstance(m, int) and m > 0 and n >= threshold * m)
            setattr(gauges, saturated, getattr(gauges, saturated) + full)
        gauges.subscriptions += sum(filter(None, map(_SUBSCRIPTIONS, records)))

    def seeds(self, nodes: Iterable[str]) -> list[GroupKey]:
        """Groups that must show 0 rather than vanish: each walked node (with each class).

        Listener and protocol values are not known in advance, so only node/class
        combinations are seeded.
        """
        labels = self.settings.labels
        if "node" not in labels or not set(labels) <= {"node", "class"}:
            return []
        classes = [rule.name for rule in self.classify.rules] + [self.classify.default]
        keys: list[GroupKey] = []
        for node in nodes:
            if "class" not in labels:
                keys.append((node,))
            else:
                keys.extend(tuple(node if label == "node" else name for label in labels)
                            for name in classes)
        return keys

    def render_node_totals(self, totals: dict[str, tuple[int | None, int | None]]) -> (
            RenderedBatch):
        """Online and session gauges per node from `/nodes` (watch-only polls), leaving out
        each figure the version does not report."""
        out: RenderedBatch = {}
        for family, position in ((c.CLIENTS_ONLINE, 0), (c.CLIENTS_SESSIONS, 1)):
            rows = [(self._labels((node,)), figures[position])
                    for node, figures in sorted(totals.items())]
            known = [(labels, v) for labels, v in rows if v is not None]
            if known:
                out[family] = group_lines(family, known)
        return out

    def render(self, gauges: dict[GroupKey, Gauges],
               histograms: dict[GroupKey, Histograms] | None = None) -> RenderedBatch:
        """Every aggregate family: this poll's gauges and distributions, the lasting counters."""
        out: RenderedBatch = {}
        if histograms:
            out.update(render_distributions(sorted(
                ((self._labels(k), h) for k, h in histograms.items()), key=itemgetter(0))))
        gauge_rows = sorted((self._labels(k), g) for k, g in gauges.items())
        for family, attr in _GAUGE_FAMILIES:
            if gauge_rows:
                out[family] = group_lines(family, [(ls, getattr(g, attr))
                                                   for ls, g in gauge_rows])
        counter_rows = sorted((self._labels(k), totals) for k, totals in self.counters.items())
        if counter_rows:
            for family, index in _COUNTER_FAMILIES:
                out[family] = group_lines(family, [(ls, t[index]) for ls, t in counter_rows])
            out[c.CLIENTS_DROPPED] = group_lines(c.CLIENTS_DROPPED, [
                (extend(ls, ("direction", direction), ("reason", reason)), t[index])
                for ls, t in counter_rows for direction, reason, index in _DROP_SERIES])
        return out

    def _labels(self, key: GroupKey) -> str:
        """A group's label set: the constant labels, then its values of the aggregate labels."""
        return label_set(self.settings.const_labels, (
            (n, as_label(n, v)) for n, v in zip(self.settings.labels, key, strict=True)))
