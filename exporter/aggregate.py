"""Aggregate families: per (node, class, listener, proto_name) sums over every listed client.

Bounded by construction: label values come from a short configured list, never client ids.

    emqx_clients_online{node="emqx@10.0.0.1"} 33120
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from operator import attrgetter
from dataclasses import dataclass

from exporter import contract as c
from exporter.labels import escape
from exporter.records import ClientRecord
from exporter.render import Rendered, as_label, render_groups


@dataclass(frozen=True, slots=True)
class ClassRule:
    """A named client class: a regex over the client id or the username (full match)."""

    name: str
    field: str  # "clientid" or "username"
    pattern: re.Pattern[str]


class Classifier:
    """First matching rule wins; the rest is `other`."""

    def __init__(self, rules: Sequence[ClassRule], default: str = "other") -> None:
        self.rules = tuple(rules)
        self.default = default

    def __call__(self, record: ClientRecord) -> str:
        for rule in self.rules:
            value = record.clientid if rule.field == "clientid" else (record.username or "")
            if rule.pattern.fullmatch(value):
                return rule.name
        return self.default


@dataclass(frozen=True, slots=True)
class AggregateSettings:
    labels: tuple[str, ...] = ("node",)
    saturation: float = 0.8
    const_labels: tuple[tuple[str, str], ...] = ()


def group_keys(records: Sequence[ClientRecord], settings: AggregateSettings,
               classify: Classifier) -> list[tuple[object, ...]]:
    """Each record's group: its raw values of the configured labels (the class name for class).

    Raw values are converted to label text once per group, not once per client.
    """
    columns = [list(map(classify, records)) if name == "class"
               else list(map(attrgetter(name), records)) for name in settings.labels]
    return list(zip(*columns, strict=True)) if columns else [()] * len(records)


def group_labels(settings: AggregateSettings, key: tuple[object, ...]) -> str:
    pairs = [*settings.const_labels,
             *((n, as_label(n, v)) for n, v in zip(settings.labels, key, strict=True))]
    return ",".join(f'{k}="{escape(v)}"' for k, v in pairs)


@dataclass(slots=True)
class _Gauges:
    online: int = 0
    sessions: int = 0
    mqueue: int = 0
    inflight: int = 0
    subscriptions: int = 0
    mqueue_saturated: int = 0
    inflight_saturated: int = 0


def seed_keys(settings: AggregateSettings, classify: Classifier,
              nodes: Iterable[str]) -> list[tuple[str, ...]]:
    """Groups that must be present even when empty: every walked node (and class).

    A node with no clients must say 0 rather than vanish; listener and proto_name values are
    not known in advance, so only node/class combinations are seeded.
    """
    if not set(settings.labels) <= {"node", "class"} or "node" not in settings.labels:
        return []
    classes = [rule.name for rule in classify.rules] + [classify.default]
    keys: list[tuple[str, ...]] = []
    for node in nodes:
        if settings.labels == ("node",):
            keys.append((node,))
            continue
        for name in classes:
            keys.append(tuple(node if label == "node" else name for label in settings.labels))
    return keys


def aggregate_gauges(records: Sequence[ClientRecord], settings: AggregateSettings,
                     classify: Classifier, seeds: Iterable[tuple[str, ...]] = ()) -> Rendered:
    """Point-in-time sums: online, sessions, queue, inflight, subscriptions, saturation."""
    groups: dict[tuple[object, ...], _Gauges] = {key: _Gauges() for key in seeds}
    threshold = settings.saturation
    for key, r in zip(group_keys(records, settings, classify), records, strict=True):
        g = groups.get(key)
        if g is None:
            g = groups[key] = _Gauges()
        g.sessions += 1
        if r.connected is not False:
            g.online += 1
        mqueue, mqueue_max, inflight, inflight_max = (r.mqueue_len, r.mqueue_max, r.inflight,
                                                      r.inflight_max)
        if mqueue:
            g.mqueue += mqueue
            if isinstance(mqueue_max, int) and mqueue_max > 0 and mqueue >= threshold * mqueue_max:
                g.mqueue_saturated += 1
        if inflight:
            g.inflight += inflight
            if isinstance(inflight_max, int) and inflight_max > 0 and (
                    inflight >= threshold * inflight_max):
                g.inflight_saturated += 1
        if r.subscriptions:
            g.subscriptions += r.subscriptions
    rows = sorted((group_labels(settings, k), g) for k, g in groups.items())
    out: Rendered = {}
    for family, attr in (
        (c.CLIENTS_ONLINE, "online"), (c.CLIENTS_SESSIONS, "sessions"),
        (c.CLIENTS_MQUEUE, "mqueue"), (c.CLIENTS_INFLIGHT, "inflight"),
        (c.CLIENTS_SUBSCRIPTIONS, "subscriptions"),
        (c.CLIENTS_MQUEUE_SATURATED, "mqueue_saturated"),
        (c.CLIENTS_INFLIGHT_SATURATED, "inflight_saturated"),
    ):
        if rows:
            out[family] = render_groups(family, [(ls, getattr(g, attr)) for ls, g in rows])
    return out
