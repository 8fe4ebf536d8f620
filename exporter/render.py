"""Render per-client families of one batch of clients: what each part writes, from which field
and conversion (`contract.CLIENT_COLUMNS`); `exposition` writes the lines, fast. Sample output:

    emqx_client_received_bytes_total{clientid="sensor-17"} 48213
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from exporter import contract as c
from exporter.columns import Columns, capacities
from exporter.contract import Family
from exporter.exposition import (
    NUMBER_FORMAT,
    TEXT_FORMAT,
    ConstLabels,
    SplitRow,
    client_label_sets,
    encode_labels,
    family_lines,
    info_lines,
    label_column,
    label_text,
    line_template,
    pair,
    split_lines,
    template_labels,
)
from exporter.records import ERLANG_WORD_BYTES
from exporter.state import ABSENT
from exporter.timeparse import TimeParser

#: Rendered families of one batch of clients: samples as UTF-8 lines, without HELP/TYPE.
RenderedBatch = dict[Family, bytes]
#: Rendered families of a whole poll: the batches' chunks, in order.
Rendered = dict[Family, list[bytes]]

# EMQX 3.x/4.x print a missing username as the atom `undefined`.
_NO_USERNAME = frozenset({"undefined", ""})


@dataclass(frozen=True, slots=True)
class ClientRenderSettings:
    """What to render per client."""

    parts: frozenset[str] = c.DEFAULT_PARTS
    identity_labels: tuple[str, ...] = ()
    info_labels: tuple[str, ...] = c.DEFAULT_INFO_LABELS
    #: Labels put in front of every series, e.g. (("cluster", "prod"),).
    const_labels: ConstLabels = ()


def identity_labels(clients: Columns, settings: ClientRenderSettings) -> list[str]:
    """Each client's closed label set (see `exposition`): constant labels, clientid, then the
    configured identity labels."""
    columns = [field_label_column(clients, name) for name in settings.identity_labels]
    return client_label_sets(settings.const_labels, clients.clientids, columns)


def field_label_column(clients: Columns, name: str) -> list[str]:
    """`,name="value"` of field `name` per client (`exposition.label_column`)."""
    return label_column(name, clients.values(name), partial(as_label, name))


def info_suffixes(clients: Columns, names: Sequence[str]) -> list[str]:
    """`,name="value"` of each of these fields per client, joined; a value the version does
    not report (`zone` from 5.1 on) is left out, not `zone=""`.

    Clients share a few combinations of node, listener, protocol and so on: each distinct
    combination is written once."""
    combos: list[tuple[Any, ...]] = list(zip(*(clients.values(name) for name in names),
                                             strict=True))
    made = {combo: "".join(_fragment(name, value) for name, value in zip(names, combo,
                                                                         strict=True))
            for combo in set(combos)}
    return list(map(made.__getitem__, combos))


def _fragment(name: str, value: object) -> str:
    text = as_label(name, value)
    return "," + pair(name, text) if text else ""


def as_label(name: str, value: object) -> str:
    """A raw field value as label text (`exposition.label_text`); EMQX's `undefined` username
    is absent."""
    if name == "username" and value in _NO_USERNAME:
        return ""
    return label_text(value)


def _online_flags(values: list[Any]) -> list[Any]:
    # v3 has no flag (None): a listed connection is online.
    return [0 if v is False else 1 for v in values]


Convert = Callable[["ClientRenderer", Columns, list[Any]], list[Any]]


def _times(renderer: ClientRenderer, _: Columns, values: list[Any]) -> list[Any]:
    return renderer.parse_time.texts(values)


def _disconnected(renderer: ClientRenderer, clients: Columns, values: list[Any]) -> list[Any]:
    # Only offline sessions have a disconnection time worth showing.
    return renderer.parse_time.texts([v if connected is False else None for connected, v in
                                      zip(clients.values("connected"), values, strict=True)])


def _online(_: ClientRenderer, __: Columns, values: list[Any]) -> list[Any]:
    return _online_flags(values)


_ABSENT_IS_NONE = {ABSENT: None}


def _capacity(_: ClientRenderer, __: Columns, values: list[Any]) -> list[Any]:
    # Unlimited (0, "infinity") or unknown: no series (`columns.capacities` says which).
    numbers = capacities(values).tolist()
    return list(map(_ABSENT_IS_NONE.get, numbers, numbers))


def _heap_bytes(_: ClientRenderer, __: Columns, values: list[Any]) -> list[Any]:
    return [None if v is None else v * ERLANG_WORD_BYTES for v in values]


_CONVERSIONS: dict[c.Conversion, Convert] = {
    "time": _times, "offline_time": _disconnected, "online_flag": _online,
    "capacity": _capacity, "heap_bytes": _heap_bytes,
}
#: Conversions that give each value's exposition text, not a number (see `TimeParser.texts`).
_TEXTS: frozenset[c.Conversion] = frozenset({"time", "offline_time"})
#: Per-client families that are one value per client: (part, family, field, conversion, how
#: the values are written).
_COLUMNS: tuple[tuple[str, Family, str, Convert | None, bytes], ...] = tuple(
    (col.part, col.family, col.field, None if col.convert is None else _CONVERSIONS[col.convert],
     TEXT_FORMAT if col.convert in _TEXTS else NUMBER_FORMAT)
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

    def render(self, clients: Columns, labels: Sequence[str]) -> RenderedBatch:
        parts = self.settings.parts
        out: RenderedBatch = {}
        encoded = template_labels(encode_labels(labels))
        templates: dict[bytes, bytes] = {}  # by value format, made when first needed

        for part, family, attr, convert, value in _COLUMNS:
            if part not in parts:
                continue
            if _SPLIT_FAMILIES.get(family) in parts:
                continue  # rendered below, split by a label
            values = clients.values(attr)
            if convert is not None:
                values = convert(self, clients, values)
            template = templates.get(value)
            if template is None:
                template = templates[value] = line_template(encoded, value)
            text = family_lines(family.name.encode(), encoded, values, template, value)
            if text:
                out[family] = text
        if "info" in parts:
            out[c.CLIENT_INFO] = self._info(clients, labels)
        for part, family, total, split in _SPLITS:
            if part in parts and split.switch in parts:
                self._split(out, family, clients, labels, total, split)
        return out

    def _info(self, clients: Columns, labels: Sequence[str]) -> bytes:
        # A label already in the identity set must not appear twice in one series.
        names = [n for n in self.settings.info_labels if n not in self.settings.identity_labels]
        # A value the version does not list (`zone` from 5.1 on) is absent, not `zone=""`.
        return info_lines(c.CLIENT_INFO, labels, [info_suffixes(clients, names)] if names else [])

    @staticmethod
    def _split(out: RenderedBatch, family: Family, clients: Columns,
               labels: Sequence[str], total_attr: str, split: c.Split) -> None:
        """One line per labelled part where the version reports the split, else the total.

        With a remainder, the total minus the named pieces is its own line, so the lines of a
        client always sum to its total.
        """
        remainder = split.remainder
        totals = clients.values(total_attr)
        # Each client's piece values as a tuple, built in C from one column per piece.
        pieces = zip(*[clients.values(attr) for _, attr in split.pieces], strict=True)

        def rows() -> Iterator[SplitRow]:
            for total, values in zip(totals, pieces, strict=True):
                if None in values:
                    yield total  # the version does not split it: the total alone, if known
                elif remainder is None or total is None:
                    yield values
                else:
                    yield (*values, max(0, total - sum(values)))

        names = [v for v, _ in split.pieces]
        if remainder is not None:
            names.append(remainder)
        text = split_lines(family, labels, split.label, names, rows())
        if text:
            out[family] = text
