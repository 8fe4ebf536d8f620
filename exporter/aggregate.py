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
from operator import itemgetter, not_
from typing import Any

import numpy as np
import numpy.typing as npt

from exporter import contract as c
from exporter.columns import INT64_MAX, Columns, exact
from exporter.contract import Family
from exporter.distribution import Histograms
from exporter.distribution import render as render_distributions
from exporter.exposition import ConstLabels, extend, group_lines, label_set
from exporter.records import CAPACITY, ClientRecord
from exporter.render import RenderedBatch, as_label
from exporter.selection import Pattern, fullmatches
from exporter.state import COUNTER_INDEX, Bools, Ints


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
        """Each record's class (see `classes`)."""
        return self.classes(Columns(records))

    def classes(self, page: Columns) -> list[str]:
        """Each row's class (the value `Pattern.matches` reads, first matching rule): one
        rule at a time over the rows no earlier rule took, so the regex runs from C without
        a Python call per client."""
        names = [self.default] * page.size
        pending = list(range(page.size))
        columns: dict[str, list[str]] = {}
        for rule in self.rules:
            if not pending:
                break
            column = columns.get(rule.field)
            if column is None:
                column = columns[rule.field] = (
                    page.clientids if rule.field == "clientid"
                    else [u or "" for u in page.values("username")])
            values = column if len(pending) == page.size else list(
                map(column.__getitem__, pending))
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


#: Point-in-time sums of a group in one poll, in this order in every gauge row.
GAUGES = ("online", "sessions", "mqueue", "inflight", "subscriptions", "mqueue_saturated",
          "inflight_saturated")

GroupKey = tuple[object, ...]


def _drop_series() -> tuple[tuple[str, str, str, tuple[str, ...], str | None], ...]:
    """Drop series by direction and reason, from the per-client dropped families' splits:
    (direction, reason, total field, piece fields, piece field or None for the remainder)."""
    series: list[tuple[str, str, str, tuple[str, ...], str | None]] = []
    for col in c.CLIENT_COLUMNS:
        if col.part != "dropped" or col.split is None or col.field is None:
            continue
        direction = "received" if col.family is c.CLIENT_RECEIVED_DROPPED else "sent"
        pieces = tuple(f for _, f in col.split.pieces)
        series.extend((direction, reason, col.field, pieces, piece)
                      for reason, piece in col.split.pieces)
        if col.split.remainder is not None:
            series.append((direction, col.split.remainder, col.field, pieces, None))
    return tuple(series)


#: (direction, reason, total field, piece fields, piece field or None: the remainder).
_DROP_SERIES = _drop_series()
#: Lasting counters of a group, in this order in every counter row: counter fields summed as
#: they are, then the drop series, then new connections.
_SUMMED = ("received_bytes", "sent_bytes", "received_messages", "sent_messages",
           "mqueue_dropped")
COUNTER_SERIES = (*_SUMMED, *(f"{d}:{r}" for d, r, *_ in _DROP_SERIES), "connects")
_COUNTER_FAMILIES: tuple[tuple[Family, str], ...] = (
    (c.CLIENTS_RECEIVED_BYTES, "received_bytes"), (c.CLIENTS_SENT_BYTES, "sent_bytes"),
    (c.CLIENTS_RECEIVED_MESSAGES, "received_messages"),
    (c.CLIENTS_SENT_MESSAGES, "sent_messages"), (c.CLIENTS_MQUEUE_DROPPED, "mqueue_dropped"),
    (c.CLIENTS_CONNECTS, "connects"),
)
_GAUGE_FAMILIES: tuple[tuple[Family, str], ...] = (
    (c.CLIENTS_ONLINE, "online"), (c.CLIENTS_SESSIONS, "sessions"),
    (c.CLIENTS_MQUEUE, "mqueue"), (c.CLIENTS_INFLIGHT, "inflight"),
    (c.CLIENTS_SUBSCRIPTIONS, "subscriptions"),
    (c.CLIENTS_MQUEUE_SATURATED, "mqueue_saturated"),
    (c.CLIENTS_INFLIGHT_SATURATED, "inflight_saturated"),
)
_COUNTER_AT = {name: i for i, name in enumerate(COUNTER_SERIES)}
_GAUGE_AT = {name: i for i, name in enumerate(GAUGES)}


#: Every integer up to 2**53 is a float64, and so is every sum that stays below it.
FLOAT_EXACT = 2**53


def group_sums(groups: Ints, matrix: npt.NDArray[Any]) -> dict[int, list[int]]:
    """Each group's column sums of `matrix` (a row per client), exact whatever the values."""
    if not len(groups):
        return {}
    present, inverse = np.unique(groups, return_inverse=True)
    largest = int(np.abs(matrix).max()) if matrix.size else 0
    if largest * len(groups) < FLOAT_EXACT:  # the usual case: bincount, exact in float64
        sums = np.stack([np.bincount(inverse, weights=column, minlength=len(present))
                         for column in matrix.T], axis=1).astype(np.int64)
    else:
        if largest > INT64_MAX // len(groups):
            matrix = matrix.astype(object)  # Python ints: a sum past 2**63 stays exact
        sums = np.zeros((len(present), matrix.shape[1]), matrix.dtype)
        np.add.at(sums, inverse, matrix)
    return dict(zip(present.tolist(), sums.tolist(), strict=True))


class Aggregator:
    """Groups clients and keeps each group's counters for the life of the process."""

    def __init__(self, settings: AggregateSettings, classify: Classifier) -> None:
        self.settings = settings
        self.classify = classify
        #: Lasting counters of every group seen, in `COUNTER_SERIES` order.
        self.counters: dict[GroupKey, list[int]] = {}
        #: Counter fields some client has reported: a series whose figure no client ever
        #: reported (the version does not send it: v3's drops, `await_pubrel_timeout` before
        #: v5) is absent, not 0. Once seen, always (a counter does not disappear).
        self.reported: set[str] = set()
        #: Every group seen, by number, and each group's number.
        self.keys_by_id: list[GroupKey] = []
        self._ids: dict[GroupKey, int] = {}

    def keys(self, records: Sequence[ClientRecord]) -> list[GroupKey]:
        """Each record's group: its raw values of the labels (the class name for `class`)."""
        return [self.keys_by_id[group] for group in self.groups(Columns(records)).tolist()]

    def groups(self, page: Columns) -> Ints:
        """Each row's group number (`keys_by_id`), new groups numbered as they come.

        A row's group is its raw values of the labels (the class name for `class`); each
        label's values become codes, combined into one number per row, so a group key is built
        once per distinct combination, not once per row."""
        combined = np.zeros(page.size, np.int64)
        distinct_values: list[list[object]] = []
        for name in self.settings.labels:
            column = (self.classify.classes(page) if name == "class"
                      else page.values(name))
            distinct = list(dict.fromkeys(column))
            code = {value: i for i, value in enumerate(distinct)}
            combined = combined * len(distinct) + np.fromiter(
                map(code.__getitem__, column), np.int64, page.size)
            distinct_values.append(distinct)
        present, inverse = np.unique(combined, return_inverse=True)
        ids = []
        for number in present.tolist():
            key: list[object] = []
            for values in reversed(distinct_values):
                number, at = divmod(number, len(values))
                key.append(values[at])
            ids.append(self._id(tuple(reversed(key))))
        return np.array(ids, np.int64)[inverse.reshape(-1)]

    def _id(self, key: GroupKey) -> int:
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(self.keys_by_id)
            self.keys_by_id.append(key)
        return found

    def count(self, groups: Ints, deltas: Ints, connects: Bools) -> None:
        """Add a page's counter increases (`state.COUNTER_FIELDS` columns) to their groups;
        `connects` marks new connections."""
        at = COUNTER_INDEX
        columns = [deltas[:, at[name]] for name in _SUMMED]
        for _, _, total, pieces, piece in _DROP_SERIES:
            dropped = deltas[:, at[total]]
            if piece is not None:
                share = deltas[:, at[piece]]
            else:  # the total minus the named pieces, never below 0
                total_col, *piece_cols = exact(dropped, *(deltas[:, at[p]] for p in pieces))
                share = np.maximum(0, total_col - sum(piece_cols))
            columns.append(np.where(dropped != 0, share, 0))
        columns.append(connects.astype(np.int64))
        if any(col.dtype == object for col in columns):  # see `_exact`
            columns = [col.astype(object) for col in columns]
        matrix = np.stack(columns, axis=1)
        for group, sums in group_sums(groups, matrix).items():
            key = self.keys_by_id[group]
            totals = self.counters.get(key)
            if totals is None:
                self.counters[key] = sums
            else:
                self.counters[key] = [a + b for a, b in zip(totals, sums, strict=True)]

    def note_reported(self, fields: Iterable[str]) -> None:
        """Counter fields that a page's clients report (see `reported`)."""
        self.reported.update(fields)

    def gauge(self, groups: Ints, page: Columns) -> dict[int, list[int]]:
        """Each group's point-in-time sums (`GAUGES` order) over a page's rows."""
        threshold = self.settings.saturation
        lengths = {}
        saturated = {}
        for length in ("mqueue_len", "inflight"):
            n = page.number(length)
            m = page.capacity(CAPACITY[length])
            lengths[length] = np.maximum(n, 0)
            saturated[length] = (n > 0) & (m > 0) & (n >= threshold * m)
        matrix = np.stack([
            ~page.offline(), np.ones(page.size, np.bool_), lengths["mqueue_len"],
            lengths["inflight"], np.maximum(page.number("subscriptions"), 0),
            saturated["mqueue_len"], saturated["inflight"]], axis=1).astype(np.int64)
        return group_sums(groups, matrix)

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

    def render(self, gauges: dict[GroupKey, list[int]],
               histograms: dict[GroupKey, Histograms] | None = None) -> RenderedBatch:
        """Every aggregate family: this poll's gauges and distributions, the lasting counters."""
        out: RenderedBatch = {}
        if histograms:
            out.update(render_distributions(sorted(
                ((self._labels(k), h) for k, h in histograms.items()), key=itemgetter(0))))
        gauge_rows = sorted((self._labels(k), g) for k, g in gauges.items())
        for family, name in _GAUGE_FAMILIES:
            if gauge_rows:
                at = _GAUGE_AT[name]
                out[family] = group_lines(family, [(ls, g[at]) for ls, g in gauge_rows])
        counter_rows = sorted((self._labels(k), totals) for k, totals in self.counters.items())
        if counter_rows:
            reported = self.reported
            for family, name in _COUNTER_FAMILIES:
                if name == "connects" or name in reported:
                    at = _COUNTER_AT[name]
                    out[family] = group_lines(family, [(ls, t[at]) for ls, t in counter_rows])
            # A reason's series needs its figure; the remainder ("other") needs the total.
            drops = [(direction, reason, _COUNTER_AT[f"{direction}:{reason}"])
                     for direction, reason, total, _, piece in _DROP_SERIES
                     if (piece or total) in reported]
            if drops:
                out[c.CLIENTS_DROPPED] = group_lines(c.CLIENTS_DROPPED, [
                    (extend(ls, ("direction", direction), ("reason", reason)), t[at])
                    for ls, t in counter_rows for direction, reason, at in drops])
        return out

    def _labels(self, key: GroupKey) -> str:
        """A group's label set: the constant labels, then its values of the aggregate labels."""
        return label_set(self.settings.const_labels, (
            (n, as_label(n, v)) for n, v in zip(self.settings.labels, key, strict=True)))
