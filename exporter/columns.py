"""A page of client records as columns: NumPy arrays of the figures, lists of the texts.

Every stage after decoding (counter state, aggregates, distributions, rankings) works on a
page's columns with array operations, so no stage takes a Python step per client. A column
is built when a stage first asks for it, once per page, by a C pass over the records.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from itertools import chain, repeat
from operator import attrgetter, is_
from typing import Any

import numpy as np
import numpy.typing as npt

from exporter.columnar import ArrowRows, every_row
from exporter.records import CAPACITY, FIELDS, ClientRecord
from exporter.state import ABSENT, COUNTER_FIELDS, Bools, Floats, Ints

#: Maps None to `ABSENT` and any other value to itself (`dict.get(value, value)`, in C).
_NONE_ABSENT: dict[Any, Any] = {None: ABSENT}


def ints(values: Sequence[Any]) -> Ints:
    """Numbers as int64, `ABSENT` (-1) where not reported (every figure EMQX sends is >= 0).

    The values are a record field's: its type (`records.Number`) keeps bools and numbers out
    of range out, so the fast paths only meet ints, None and, in a limit, "infinity"."""
    try:  # the common case, every value an int, in C (`array` takes no str, unlike NumPy)
        return np.frombuffer(array("q", values), np.int64)
    except (TypeError, OverflowError):
        pass
    try:  # the usual gap, a figure some rows lack (or the version never sends): still in C
        return np.frombuffer(array("q", map(_NONE_ABSENT.get, values, values)), np.int64)
    except (TypeError, OverflowError):
        pass
    column = np.array(values, object)
    # Still in C: what is not an int (None, v5's "infinity") is absent; bool is not a number.
    numbers = np.fromiter(map(is_, map(type, values), repeat(int)), np.bool_, len(values))
    column[~numbers] = ABSENT
    return column.astype(np.int64)


def capacities(values: list[Any]) -> Ints:
    """Capacities as int64, `ABSENT` where unlimited (0, v5's "infinity") or not reported."""
    return limited(ints(values))


def limited(numbers: Ints) -> Ints:
    """Numbers as capacities, in place: 0 (and below, `ABSENT`) is unlimited or unknown."""
    numbers[numbers <= 0] = ABSENT
    return numbers


def ratios(lengths: Ints, capacity: Ints) -> tuple[Floats, Bools]:
    """Length / capacity (from `capacities`), and where it is known (a length and a limited
    capacity)."""
    known = (lengths >= 0) & (capacity > 0)
    out = np.zeros(len(lengths), np.float64)
    np.divide(lengths, capacity, out=out, where=known)
    return out, known


#: Where an int64 sum of this many values of this size could overflow, sums take Python ints.
INT64_MAX = 2**63 - 1


def exact(*columns: Ints) -> list[npt.NDArray[Any]]:
    """Columns about to be added up: as Python ints where int64 could overflow (a figure near
    2**63 is valid EMQX input, see `records.Number`)."""
    if any(len(col) and int(col.max()) > INT64_MAX // (len(columns) + 1) for col in columns):
        return [col.astype(object) for col in columns]
    return list(columns)


def rates(counts: npt.NDArray[Any], per_second: float | None) -> Floats:
    """Counts over one poll interval as rates (0 on the first poll, `per_second` None)."""
    if per_second is None:
        return np.zeros(len(counts))
    if counts.dtype == object:  # Python ints past int64 (see `exact`)
        return np.array([n * per_second for n in counts.tolist()], np.float64)
    return counts * per_second


#: The number fields every page's stages read (counters, buffer lengths and their capacities),
#: read from the records in one pass: a pass per field would walk every record again, and on a
#: page of 10k records that is a walk through memory the cache no longer holds. Fields that may
#: hold a string ("infinity") are read one at a time.
BATCHED = tuple(f.attr for f in FIELDS if f.kind == "int" and (
    f.counter or f.attr in ("mqueue_len", "mqueue_max", "inflight", "inflight_max",
                            "subscriptions")))


class Columns:
    """The columns of one page's records (rows in the page's order)."""

    def __init__(self, records: Sequence[ClientRecord]) -> None:
        self.records = records
        self.size = len(records)
        self.clientids: list[str] = list(map(attrgetter("clientid"), records))
        self._numbers: dict[str, Ints] = {}
        self._values: dict[str, list[Any]] = {}
        self._offline: Bools | None = None

    def values(self, field: str) -> list[Any]:
        """A field's raw values (None where not reported)."""
        found = self._values.get(field)
        if found is None:
            found = self._values[field] = list(map(attrgetter(field), self.records))
        return found

    def number(self, field: str) -> Ints:
        """A number field as int64, `ABSENT` where not reported."""
        found = self._numbers.get(field)
        if found is None:
            if field in BATCHED:
                self._read_batched()
                return self._numbers[field]
            found = self._numbers[field] = ints(self.values(field))
        return found

    def _read_batched(self) -> None:
        """Every `BATCHED` field at once: a tuple per record, flattened row by row in C."""
        flat = list(chain.from_iterable(map(attrgetter(*BATCHED), self.records)))
        matrix = ints(flat).reshape(self.size, len(BATCHED))
        for at, name in enumerate(BATCHED):
            self._numbers[name] = matrix[:, at]

    def fill(self, length: str) -> tuple[Floats, Bools]:
        """A bounded buffer's fill ratio (`ratios`), from its length field."""
        return ratios(self.number(length), self.capacity(CAPACITY[length]))

    def capacity(self, field: str) -> Ints:
        """A capacity field, `ABSENT` where unlimited or not reported."""
        key = f"capacity:{field}"
        found = self._numbers.get(key)
        if found is None:
            found = self._numbers[key] = limited(self.number(field).copy())
        return found

    def reported(self, field: str) -> Bools:
        """Where the field has a value."""
        return self.number(field) >= 0

    def offline(self) -> Bools:
        """Rows EMQX lists as disconnected (v3 has no flag: a listed connection is online)."""
        if self._offline is None:
            self._offline = np.fromiter(map(is_, self.values("connected"), repeat(False)),
                                        np.bool_, self.size)
        return self._offline

    def counters(self) -> Ints:
        """The counters as a matrix, a row per record and `COUNTER_FIELDS` columns."""
        if not self.size:
            return np.zeros((0, len(COUNTER_FIELDS)), np.int64)
        return np.stack([self.number(name) for name in COUNTER_FIELDS], axis=1)

    def connection_starts(self) -> list[str | None]:
        """What identifies a connection: its start (`connected_at`, else `created_at`)."""
        connected = self.values("connected_at")
        if None not in connected:
            return connected
        return [a or b for a, b in zip(connected, self.values("created_at"), strict=True)]

    def take(self, rows: Ints) -> list[ClientRecord]:
        """The records of these rows, in this order."""
        return list(map(self.records.__getitem__, rows.tolist()))

    def subset(self, rows: Ints) -> Columns:
        """The columns of these rows, in this order."""
        return self if every_row(rows, self.size) else self._subset(rows)

    def _subset(self, rows: Ints) -> Columns:
        return Columns(self.take(rows))


class ArrowColumns(Columns):
    """The columns of a page Arrow decoded (`columnar.ArrowRows`): numbers without a copy,
    records made only for the rows taken."""

    def __init__(self, rows: ArrowRows) -> None:
        self.records = self.rows = rows
        self.size = len(rows)
        self.clientids = rows.values("clientid")
        self._numbers = {}
        self._offline = None

    def values(self, field: str) -> list[Any]:
        return self.rows.values(field)

    def number(self, field: str) -> Ints:
        found = self._numbers.get(field)
        if found is None:
            found = self._numbers[field] = self.rows.numbers(field)
        return found

    def offline(self) -> Bools:
        if self._offline is None:
            self._offline = self.rows.flags("connected", False)
        return self._offline

    def take(self, rows: Ints) -> list[ClientRecord]:
        return self.rows.records(rows)

    def _subset(self, rows: Ints) -> Columns:
        return ArrowColumns(self.rows.take(rows))


def columns_of(records: Sequence[ClientRecord]) -> Columns:
    """A page's columns, read from its records or, where Arrow decoded it, its arrays."""
    return ArrowColumns(records) if isinstance(records, ArrowRows) else Columns(records)


def concat(parts: Sequence[Columns]) -> Columns:
    """The rows of these columns, in order, as one (Arrow's arrays where they all are)."""
    if len(parts) == 1:
        return parts[0]
    arrow = [part.rows for part in parts if isinstance(part, ArrowColumns)]
    if len(arrow) == len(parts):
        rows = ArrowRows.concat(arrow)
        if rows is not None:
            return ArrowColumns(rows)
    return Columns([record for part in parts for record in part.take(np.arange(part.size))])
