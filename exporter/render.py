"""Render per-client and aggregate families to exposition bytes, fast.

This is the hot path: a 100k-client poll renders millions of samples. Each record's label set
is escaped once per poll and baked into a %-format of one line per record; a family is then
one C-level `template % values`, about ten times faster than an f-string per sample and forty
times faster than prometheus_client metric objects. Sample output:

    emqx_client_received_bytes_total{clientid="sensor-17"} 48213
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import compress
from operator import attrgetter
from typing import Any

from exporter import contract as c
from exporter.contract import Family
from exporter.labels import escape
from exporter.records import ClientRecord
from exporter.timeparse import TimeParser

#: Rendered families of one batch of clients: samples as UTF-8 lines, without HELP/TYPE.
RenderedBatch = dict[Family, bytes]
#: Rendered families of a whole poll: the batches' chunks, in order.
Rendered = dict[Family, list[bytes]]

# `%r` of an int or float is its repr, which is what the exposition formats want.
_NUMBER = b"%r".__mod__

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
    values = list(map(attrgetter(name), records))
    fragments = {v: f'{lead}"{escape(as_label(name, v))}"' for v in set(values)}
    return list(map(fragments.__getitem__, values))


def as_label(name: str, value: object) -> str:
    """A raw field value as label text: absent is "", booleans are "true"/"false"."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if name == "username" and value in _NO_USERNAME:
        return ""
    return str(value)


def encode_labels(labels: Sequence[str]) -> list[bytes]:
    # A lone surrogate cannot come from valid JSON, but never let one label sink a poll.
    return [ls.encode("utf-8", "replace") for ls in labels]


def line_template(labels: Sequence[bytes]) -> bytes:
    """A %-format of one line per record, `%s{labels} %r`, shared by every full family."""
    pieces: list[bytes] = [b"%s"] * (3 * len(labels))
    pieces[1::3] = [ls.replace(b"%", b"%%") for ls in labels]
    pieces[2::3] = (b"%r\n",) * len(labels)
    return b"".join(pieces)


def family_lines(name: bytes, labels: Sequence[bytes], values: Sequence[object],
                 template: bytes | None = None) -> bytes:
    """`name{labels} value` lines; a None value leaves its line out.

    A family with a value for every record is one %-format of the poll's line template, built
    in C. Others interleave four columns by slice assignment and join once, which still builds
    no string per line.
    """
    if template is not None and None not in values:
        arguments: list[object] = [name] * (2 * len(values))
        arguments[1::2] = values
        return template % tuple(arguments)
    if None in values:
        keep = [v is not None for v in values]
        labels = list(compress(labels, keep))
        values = [v for v in values if v is not None]
    count = len(values)
    pieces: list[bytes] = [name] * (4 * count)
    pieces[1::4] = labels
    pieces[2::4] = map(_NUMBER, values)
    pieces[3::4] = (b"\n",) * count
    return b"".join(pieces)


def _limit(value: int | str | None) -> int | None:
    """A capacity as a number; unlimited (0 or "infinity") is None so the series is omitted."""
    return value if isinstance(value, int) and value > 0 else None


def limits(values: list[Any]) -> list[Any]:
    """`_limit` over a column, skipped in the common case of positive numbers only."""
    if set(map(type, values)) == {int} and min(values, default=1) > 0:
        return values
    return list(map(_limit, values))


def _online_flags(values: list[Any]) -> list[Any]:
    # v3 has no flag (None): a listed connection is online.
    return [0 if v is False else 1 for v in values]


class ClientRenderer:
    """Renders the enabled per-client parts for one poll."""

    def __init__(self, settings: ClientRenderSettings, parse_time: TimeParser) -> None:
        self.settings = settings
        self.parse_time = parse_time

    def render(self, records: Sequence[ClientRecord], labels: Sequence[str]) -> RenderedBatch:
        parts = self.settings.parts
        out: RenderedBatch = {}
        encoded = encode_labels(labels)
        template = line_template(encoded)

        def put(family: Family, get: Callable[[ClientRecord], Any],
                convert: Callable[[list[Any]], list[Any]] | None = None) -> None:
            values = list(map(get, records))
            if convert is not None:
                values = convert(values)
            text = family_lines(family.name.encode(), encoded, values, template)
            if text:
                out[family] = text

        def times(values: list[Any]) -> list[Any]:
            return list(map(self.parse_time, values))

        if "info" in parts:
            out[c.CLIENT_INFO] = self._info(records, labels)
        if "online" in parts:
            t = self.parse_time
            put(c.CLIENT_ONLINE, attrgetter("connected"), _online_flags)
            put(c.CLIENT_CONNECTED_TS, attrgetter("connected_at"), times)
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
            put(c.CLIENT_MQUEUE_CAPACITY, attrgetter("mqueue_max"), limits)
            put(c.CLIENT_MQUEUE_DROPPED, attrgetter("mqueue_dropped"))
        if "inflight" in parts:
            put(c.CLIENT_INFLIGHT, attrgetter("inflight"))
            put(c.CLIENT_INFLIGHT_CAPACITY, attrgetter("inflight_max"), limits)
        if "subscriptions" in parts:
            put(c.CLIENT_SUBSCRIPTIONS, attrgetter("subscriptions"))
            put(c.CLIENT_SUBSCRIPTIONS_CAPACITY, attrgetter("subscriptions_max"), limits)
        if "packets" in parts:
            put(c.CLIENT_RECEIVED_PACKETS, attrgetter("received_packets"))
            put(c.CLIENT_SENT_PACKETS, attrgetter("sent_packets"))
        if "awaiting_rel" in parts:
            put(c.CLIENT_AWAITING_REL, attrgetter("awaiting_rel"))
            put(c.CLIENT_AWAITING_REL_CAPACITY, attrgetter("awaiting_rel_max"), limits)
        if "session" in parts:
            put(c.CLIENT_KEEPALIVE, attrgetter("keepalive"))
            put(c.CLIENT_SESSION_EXPIRY, attrgetter("expiry_interval"))
            put(c.CLIENT_CREATED_TS, attrgetter("created_at"), times)
        if "process" in parts:
            put(c.CLIENT_MAILBOX, attrgetter("mailbox_len"))
            put(c.CLIENT_HEAP,
                lambda r: r.heap_size * _ERLANG_WORD_BYTES if r.heap_size is not None else None)
            put(c.CLIENT_REDUCTIONS, attrgetter("reductions"))
        return out

    def _info(self, records: Sequence[ClientRecord], labels: Sequence[str]) -> bytes:
        # A label already in the identity set must not appear twice in one series.
        names = [n for n in self.settings.info_labels if n not in self.settings.identity_labels]
        # Columns interleaved by slice assignment: name, `{identity`, info labels, `} 1`.
        count = len(records)
        pieces: list[str] = [c.CLIENT_INFO.name] * (4 * count)
        pieces[1::4] = [ls[:-2] for ls in labels]  # `labels` end in "} "
        columns = [label_column(records, n, f",{n}=") for n in names]
        pieces[2::4] = map("".join, zip(*columns, strict=True)) if columns else ("",) * count
        pieces[3::4] = ("} 1\n",) * count
        return "".join(pieces).encode("utf-8", "replace")

    @staticmethod
    def _split(out: RenderedBatch, family: Family, records: Sequence[ClientRecord],
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
            out[family] = "".join(chunks).encode("utf-8", "replace")


def render_groups(family: Family, rows: Sequence[tuple[str, int | float]]) -> bytes:
    """Lines of an aggregate family from (label string, value) rows."""
    name = family.name
    return "".join([f"{name}{{{ls}}} {v}\n" if ls else f"{name} {v}\n"
                    for ls, v in rows]).encode("utf-8", "replace")
