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


_CONVERSIONS: dict[c.Conversion, Convert] = {
    "time": _times, "offline_time": _disconnected, "online_flag": _online,
    "capacity": _capacity, "heap_bytes": _heap_bytes,
}
#: Per-client families that are one value per client: (part, family, field, conversion).
_COLUMNS: tuple[tuple[str, Family, str, Convert | None], ...] = tuple(
    (col.part, col.family, col.field, None if col.convert is None else _CONVERSIONS[col.convert])
    for col in c.CLIENT_COLUMNS if col.field is not None)
#: Families that an opt-in part splits by a label: (part, family, total field, split).
_SPLITS: tuple[tuple[str, Family, str, c.Split], ...] = tuple(
    (col.part, col.family, col.field, col.split)
    for col in c.CLIENT_COLUMNS if col.split is not None and col.field is not None)
#: Families whose column rendering is replaced by a split when its switch is on.
_SPLIT_FAMILIES = {family: split.switch for _, family, _, split in _SPLITS}


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
        for part, family, total, split in _SPLITS:
            if part in parts and split.switch in parts:
                self._split(out, family, records, labels, total, split)
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
               labels: Sequence[str], total_attr: str, split: c.Split) -> None:
        """One line per labelled part where the version reports the split, else the total.

        With a remainder, the total minus the named pieces is its own line, so the lines of a
        client always sum to its total.
        """
        name, label, remainder = family.name, split.label, split.remainder
        total_of = attrgetter(total_attr)
        getters = [(value, attrgetter(attr)) for value, attr in split.pieces]
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
