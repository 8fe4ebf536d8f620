"""Render per-client and aggregate families to exposition text, fast.

This is the hot path: a 100k-client poll renders millions of samples, so every family is one
list comprehension of f-strings over parallel lists of records and pre-escaped label strings,
about 10x faster than building prometheus_client metric objects. Sample output:

    emqx_client_received_bytes_total{clientid="sensor-17"} 48213
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import compress
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from exporter import contract as c
from exporter.contract import Family
from exporter.labels import escape
from exporter.records import ClientRecord
from exporter.timeparse import TimeParser

#: A rendered family: its samples as text lines, without HELP/TYPE.
Rendered = dict[Family, str]

# EMQX 3.x/4.x print a missing username as the atom `undefined`.
_NO_USERNAME = frozenset({"undefined", ""})

_ERLANG_WORD_BYTES = 8


@dataclass(frozen=True, slots=True)
class ClientRenderSettings:
    """What to render per client."""

    parts: frozenset[str] = c.DEFAULT_PARTS
    identity_labels: tuple[str, ...] = ()
    info_labels: tuple[str, ...] = ("username", "node", "listener", "zone", "proto_name",
                                    "proto_ver", "clean_start")
    #: Labels put in front of every series, e.g. (("cluster", "prod"),).
    const_labels: tuple[tuple[str, str], ...] = ()


def label_value(record: ClientRecord, name: str) -> str:
    """A record field as a label value: absent is "", booleans are "true"/"false"."""
    return as_label(name, getattr(record, name))


def identity_labels(records: Sequence[ClientRecord], settings: ClientRenderSettings) -> list[str]:
    """Each record's label set as `{...} ` (braces and the space before the value included)."""
    prefix = "{" + "".join(f'{k}="{escape(v)}",' for k, v in settings.const_labels)
    extra = settings.identity_labels
    if not extra:
        return [f'{prefix}clientid="{escape(r.clientid)}"}} ' for r in records]
    columns = [label_column(records, name, f",{name}=") for name in extra]
    return ["".join(row) + "} " for row in zip(
        [f'{prefix}clientid="{escape(r.clientid)}"' for r in records], *columns, strict=True)]


def label_column(records: Sequence[ClientRecord], name: str, lead: str) -> list[str]:
    """`lead` + the quoted, escaped value of field `name`, per record.

    Label values such as node, listener or protocol repeat across thousands of clients, so each
    distinct raw value is converted and escaped once.
    """
    cache: dict[object, str] = {}
    out: list[str] = []
    append = out.append
    for value in map(attrgetter(name), records):
        fragment = cache.get(value)
        if fragment is None:
            fragment = cache[value] = f'{lead}"{escape(as_label(name, value))}"'
        append(fragment)
    return out


def as_label(name: str, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if name == "username" and value in _NO_USERNAME:
        return ""
    return str(value)


def family_lines(name: str, labels: Sequence[str], values: Sequence[object]) -> str:
    """`name{labels} value` lines; a None value leaves its line out.

    Interleaving four columns by slice assignment and joining once avoids building a string
    per line: about twice as fast as an f-string per sample on large polls.
    """
    if None in values:
        keep = [v is not None for v in values]
        labels = list(compress(labels, keep))
        values = [v for v in values if v is not None]
    count = len(values)
    pieces: list[object] = [name] * (4 * count)
    pieces[1::4] = labels
    pieces[2::4] = map(str, values)
    pieces[3::4] = ("\n",) * count
    return "".join(pieces)  # type: ignore[arg-type]


def _limit(value: int | str | None) -> int | None:
    """A capacity as a number; unlimited (0 or "infinity") is None so the series is omitted."""
    return value if isinstance(value, int) and value > 0 else None


def _online(r: ClientRecord) -> int:
    return 0 if r.connected is False else 1  # v3 has no flag: a listed connection is online


class ClientRenderer:
    """Renders the enabled per-client parts for one poll."""

    def __init__(self, settings: ClientRenderSettings, parse_time: TimeParser) -> None:
        self.settings = settings
        self.parse_time = parse_time

    def render(self, records: Sequence[ClientRecord], labels: Sequence[str]) -> Rendered:
        parts = self.settings.parts
        out: Rendered = {}

        def put(family: Family, get: Callable[[ClientRecord], Any]) -> None:
            text = family_lines(family.name, labels, list(map(get, records)))
            if text:
                out[family] = text

        if "info" in parts:
            out[c.CLIENT_INFO] = self._info(records, labels)
        if "online" in parts:
            t = self.parse_time
            put(c.CLIENT_ONLINE, _online)
            put(c.CLIENT_CONNECTED_TS, lambda r: t(r.connected_at))
            put(c.CLIENT_DISCONNECTED_TS,
                lambda r: t(r.disconnected_at) if r.connected is False else None)
        if "bytes" in parts:
            put(c.CLIENT_RECEIVED_BYTES, attrgetter("received_bytes"))
            put(c.CLIENT_SENT_BYTES, attrgetter("sent_bytes"))
        if "messages" in parts:
            if "messages_qos" in parts:
                self._split(out, c.CLIENT_RECEIVED_MESSAGES, records, labels, "received_messages",
                            "qos", (("0", "received_qos0"), ("1", "received_qos1"),
                                    ("2", "received_qos2")), remainder=None)
                self._split(out, c.CLIENT_SENT_MESSAGES, records, labels, "sent_messages",
                            "qos", (("0", "sent_qos0"), ("1", "sent_qos1"), ("2", "sent_qos2")),
                            remainder=None)
            else:
                put(c.CLIENT_RECEIVED_MESSAGES, attrgetter("received_messages"))
                put(c.CLIENT_SENT_MESSAGES, attrgetter("sent_messages"))
        if "dropped" in parts:
            if "dropped_reasons" in parts:
                self._split(out, c.CLIENT_RECEIVED_DROPPED, records, labels, "received_dropped",
                            "reason", (("await_pubrel_timeout",
                                        "received_dropped_await_pubrel_timeout"),),
                            remainder="other")
                self._split(out, c.CLIENT_SENT_DROPPED, records, labels, "sent_dropped",
                            "reason", (("expired", "sent_dropped_expired"),
                                       ("queue_full", "sent_dropped_queue_full"),
                                       ("too_large", "sent_dropped_too_large")),
                            remainder="other")
            else:
                put(c.CLIENT_RECEIVED_DROPPED, attrgetter("received_dropped"))
                put(c.CLIENT_SENT_DROPPED, attrgetter("sent_dropped"))
        if "mqueue" in parts:
            put(c.CLIENT_MQUEUE, attrgetter("mqueue_len"))
            put(c.CLIENT_MQUEUE_CAPACITY, lambda r: _limit(r.mqueue_max))
            put(c.CLIENT_MQUEUE_DROPPED, attrgetter("mqueue_dropped"))
        if "inflight" in parts:
            put(c.CLIENT_INFLIGHT, attrgetter("inflight"))
            put(c.CLIENT_INFLIGHT_CAPACITY, lambda r: _limit(r.inflight_max))
        if "subscriptions" in parts:
            put(c.CLIENT_SUBSCRIPTIONS, attrgetter("subscriptions"))
            put(c.CLIENT_SUBSCRIPTIONS_CAPACITY, lambda r: _limit(r.subscriptions_max))
        if "packets" in parts:
            put(c.CLIENT_RECEIVED_PACKETS, attrgetter("received_packets"))
            put(c.CLIENT_SENT_PACKETS, attrgetter("sent_packets"))
        if "awaiting_rel" in parts:
            put(c.CLIENT_AWAITING_REL, attrgetter("awaiting_rel"))
            put(c.CLIENT_AWAITING_REL_CAPACITY, lambda r: _limit(r.awaiting_rel_max))
        if "session" in parts:
            put(c.CLIENT_KEEPALIVE, attrgetter("keepalive"))
            put(c.CLIENT_SESSION_EXPIRY, attrgetter("expiry_interval"))
            put(c.CLIENT_CREATED_TS, lambda r: self.parse_time(r.created_at))
        if "process" in parts:
            put(c.CLIENT_MAILBOX, attrgetter("mailbox_len"))
            put(c.CLIENT_HEAP,
                lambda r: r.heap_size * _ERLANG_WORD_BYTES if r.heap_size is not None else None)
            put(c.CLIENT_REDUCTIONS, attrgetter("reductions"))
        return out

    def _info(self, records: Sequence[ClientRecord], labels: Sequence[str]) -> str:
        # A label already in the identity set must not appear twice in one series.
        names = [n for n in self.settings.info_labels if n not in self.settings.identity_labels]
        columns = [label_column(records, n, f",{n}=") for n in names]
        # `labels` end in "} "; the info labels go inside the braces.
        inner = [ls[:-2] for ls in labels]
        name = c.CLIENT_INFO.name
        return "".join(
            name + "".join(row) + "} 1\n" for row in zip(inner, *columns, strict=True))

    @staticmethod
    def _split(out: Rendered, family: Family, records: Sequence[ClientRecord],
               labels: Sequence[str], total_attr: str, label: str,
               parts: tuple[tuple[str, str], ...], remainder: str | None) -> None:
        """One line per labelled part where the version reports the split, else the total.

        With `remainder`, the total minus the named parts is its own line, so the lines of a
        client always sum to its total.
        """
        name = family.name
        total_of = attrgetter(total_attr)
        getters = [(value, attrgetter(attr)) for value, attr in parts]
        chunks: list[str] = []
        for r, ls in zip(records, labels, strict=True):
            total = total_of(r)
            values = [(v, g(r)) for v, g in getters]
            if any(x is None for _, x in values):
                if total is not None:
                    chunks.append(f"{name}{ls}{total}\n")
                continue
            inner = ls[:-2]
            for v, x in values:
                chunks.append(f'{name}{inner},{label}="{v}"}} {x}\n')
            if remainder is not None and total is not None:
                rest = max(0, total - sum(x for _, x in values))
                chunks.append(f'{name}{inner},{label}="{remainder}"}} {rest}\n')
        if chunks:
            out[family] = "".join(chunks)


def render_groups(family: Family, rows: Sequence[tuple[str, int | float]]) -> str:
    """Lines of an aggregate family from (label string, value) rows."""
    name = family.name
    return "".join([f"{name}{{{ls}}} {v}\n" if ls else f"{name} {v}\n" for ls, v in rows])
