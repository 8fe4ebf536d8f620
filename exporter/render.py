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
from exporter.records import ERLANG_WORD_BYTES, ClientRecord
from exporter.timeparse import TimeParser

#: Rendered families of one batch of clients: samples as UTF-8 lines, without HELP/TYPE.
RenderedBatch = dict[Family, bytes]
#: Rendered families of a whole poll: the batches' chunks, in order.
Rendered = dict[Family, list[bytes]]

# `%r` of an int or float is its repr, which is what the exposition formats want.
_NUMBER = b"%r".__mod__

# EMQX 3.x/4.x print a missing username as the atom `undefined`.
_NO_USERNAME = frozenset({"undefined", ""})


@dataclass(frozen=True, slots=True)
class ClientRenderSettings:
    """What to render per client."""

    parts: frozenset[str] = c.DEFAULT_PARTS
    identity_labels: tuple[str, ...] = ()
    info_labels: tuple[str, ...] = c.DEFAULT_INFO_LABELS
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


Convert = Callable[["ClientRenderer", Sequence[ClientRecord], list[Any]], list[Any]]


def _times(renderer: ClientRenderer, _: Sequence[ClientRecord], values: list[Any]) -> list[Any]:
    return list(map(renderer.parse_time, values))


def _disconnected(renderer: ClientRenderer, records: Sequence[ClientRecord],
                  values: list[Any]) -> list[Any]:
    # Only offline sessions have a disconnection time worth showing.
    return [renderer.parse_time(v) if r.connected is False else None
            for r, v in zip(records, values, strict=True)]


def _online(_: ClientRenderer, __: Sequence[ClientRecord], values: list[Any]) -> list[Any]:
    return _online_flags(values)


def _capacity(_: ClientRenderer, __: Sequence[ClientRecord], values: list[Any]) -> list[Any]:
    return limits(values)


def _heap_bytes(_: ClientRenderer, __: Sequence[ClientRecord], values: list[Any]) -> list[Any]:
    return [None if v is None else v * ERLANG_WORD_BYTES for v in values]


#: Per-client families that are one value per client: (part, family, field, conversion).
_COLUMNS: tuple[tuple[str, Family, str, Convert | None], ...] = (
    ("online", c.CLIENT_ONLINE, "connected", _online),
    ("online", c.CLIENT_CONNECTED_TS, "connected_at", _times),
    ("online", c.CLIENT_DISCONNECTED_TS, "disconnected_at", _disconnected),
    ("bytes", c.CLIENT_RECEIVED_BYTES, "received_bytes", None),
    ("bytes", c.CLIENT_SENT_BYTES, "sent_bytes", None),
    ("messages", c.CLIENT_RECEIVED_MESSAGES, "received_messages", None),
    ("messages", c.CLIENT_SENT_MESSAGES, "sent_messages", None),
    ("dropped", c.CLIENT_RECEIVED_DROPPED, "received_dropped", None),
    ("dropped", c.CLIENT_SENT_DROPPED, "sent_dropped", None),
    ("mqueue", c.CLIENT_MQUEUE, "mqueue_len", None),
    ("mqueue", c.CLIENT_MQUEUE_CAPACITY, "mqueue_max", _capacity),
    ("mqueue", c.CLIENT_MQUEUE_DROPPED, "mqueue_dropped", None),
    ("inflight", c.CLIENT_INFLIGHT, "inflight", None),
    ("inflight", c.CLIENT_INFLIGHT_CAPACITY, "inflight_max", _capacity),
    ("subscriptions", c.CLIENT_SUBSCRIPTIONS, "subscriptions", None),
    ("subscriptions", c.CLIENT_SUBSCRIPTIONS_CAPACITY, "subscriptions_max", _capacity),
    ("packets", c.CLIENT_RECEIVED_PACKETS, "received_packets", None),
    ("packets", c.CLIENT_SENT_PACKETS, "sent_packets", None),
    ("awaiting_rel", c.CLIENT_AWAITING_REL, "awaiting_rel", None),
    ("awaiting_rel", c.CLIENT_AWAITING_REL_CAPACITY, "awaiting_rel_max", _capacity),
    ("session", c.CLIENT_KEEPALIVE, "keepalive", None),
    ("session", c.CLIENT_SESSION_EXPIRY, "expiry_interval", None),
    ("session", c.CLIENT_CREATED_TS, "created_at", _times),
    ("process", c.CLIENT_MAILBOX, "mailbox_len", None),
    ("process", c.CLIENT_HEAP, "heap_size", _heap_bytes),
    ("process", c.CLIENT_REDUCTIONS, "reductions", None),
)

Split = tuple[Family, str, str, tuple[tuple[str, str], ...], str | None]

#: Families that an opt-in part splits by a label: part → (switch part, splits).
_SPLITS: dict[str, tuple[str, tuple[Split, ...]]] = {
    "messages": ("messages_qos", (
        (c.CLIENT_RECEIVED_MESSAGES, "received_messages", "qos",
         (("0", "received_qos0"), ("1", "received_qos1"), ("2", "received_qos2")), None),
        (c.CLIENT_SENT_MESSAGES, "sent_messages", "qos",
         (("0", "sent_qos0"), ("1", "sent_qos1"), ("2", "sent_qos2")), None),
    )),
    "dropped": ("dropped_reasons", (
        (c.CLIENT_RECEIVED_DROPPED, "received_dropped", "reason",
         (("await_pubrel_timeout", "received_dropped_await_pubrel_timeout"),), "other"),
        (c.CLIENT_SENT_DROPPED, "sent_dropped", "reason",
         (("expired", "sent_dropped_expired"), ("queue_full", "sent_dropped_queue_full"),
          ("too_large", "sent_dropped_too_large")), "other"),
    )),
}
#: Families whose column rendering is replaced by a split when its switch is on.
_SPLIT_FAMILIES = {family: switch for switch, splits in _SPLITS.values()
                   for family, *_ in splits}


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

        for part, family, attr, convert in _COLUMNS:
            if part not in parts:
                continue
            if _SPLIT_FAMILIES.get(family) in parts:
                continue  # rendered below, split by a label
            values = list(map(attrgetter(attr), records))
            if convert is not None:
                values = convert(self, records, values)
            text = family_lines(family.name.encode(), encoded, values, template)
            if text:
                out[family] = text
        if "info" in parts:
            out[c.CLIENT_INFO] = self._info(records, labels)
        for part, (switch, splits) in _SPLITS.items():
            if part in parts and switch in parts:
                for family, total, label, pieces, remainder in splits:
                    self._split(out, family, records, labels, total, label, pieces, remainder)
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
