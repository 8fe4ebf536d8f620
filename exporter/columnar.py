"""A listing page decoded straight into columns by pyarrow, outside the interpreter lock.

Decoding a page into Python records holds the interpreter lock throughout: it cannot overlap
the next page's download or the pipeline's work, and at scale it is about half of a poll.
pyarrow's JSON reader parses into Arrow arrays with the lock released, so a page is decoded on
a thread while the event loop and the pipeline go on; NumPy takes its numbers without a copy,
and Python records are made only for the few clients that need one (`ArrowRows.records`).

The reader is taken only where its answer is the typed decoder's (`records.record_type`) to
the value: with an explicit schema it refuses what that decoder refuses (a string where a
number belongs, a float, a number past int64, a key twice); what it would accept and the typed
decoder would not (a negative number, a number too large for its kind, a row without a client
id, invalid UTF-8, more than one JSON document) is checked around it. Any refusal gives None,
and the page is decoded the usual way, row by row where rows are bad, and counted as it always
was. pyarrow is an optional dependency (the `fast` extra): without it every page takes the
typed decoder.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from itertools import compress, repeat
from operator import attrgetter
from typing import Any, overload

import msgspec
import numpy as np

from exporter.records import ERLANG_WORD_BYTES, FIELDS, NUMBER_MAX, ClientRecord, Kind
from exporter.state import ABSENT, Bools, Ints

try:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj
except ImportError:  # the `fast` extra is not installed: the typed decoder does every page
    pa = None

#: pyarrow is installed (and not switched off, see `enable`).
available = pa is not None

_KINDS: dict[str, Kind] = {f.attr: f.kind for f in FIELDS}
#: The largest value of each number kind (`records.Number`, `records.Words`).
_MAXIMUM: dict[Kind, int] = {"int": NUMBER_MAX, "words": NUMBER_MAX // ERLANG_WORD_BYTES,
                             "limit": NUMBER_MAX}
#: A limit (`*_max`) is a number or the string "infinity", often both on one page (zones
#: differ), and an Arrow column has one type: "infinity" is read as this number instead, the
#: one an unlimited capacity has among the pipeline's numbers (`columns.limited`).
INFINITY = ABSENT
_FROM_INFINITY: dict[Any, Any] = {INFINITY: "infinity"}
#: `paged.Meta`'s keys and their types.
_META = (("page", "int"), ("limit", "int"), ("count", "int"), ("hasnext", "bool"),
         ("cursor", "str"))


def enable(on: bool) -> bool:
    """Use pyarrow where it is installed (True), or never (False, as without it); returns
    whether it is used now. Tests run both paths through this switch."""
    global available
    available = on and pa is not None
    return available


def every_row(rows: Ints, size: int) -> bool:
    """Whether these row numbers are all of a page's `size` rows, in order."""
    return len(rows) == size and bool((rows == np.arange(size)).all())


def field_values(records: Sequence[ClientRecord], attr: str) -> list[Any]:
    """A field's value in each record, read from the columns where Arrow decoded them."""
    if isinstance(records, ArrowRows):
        return records.values(attr)
    return list(map(attrgetter(attr), records))


def select_rows(records: Sequence[ClientRecord], keep: list[bool]) -> Sequence[ClientRecord]:
    """The records where `keep` holds, in order (still columns where Arrow decoded them)."""
    if isinstance(records, ArrowRows):
        return records.take(np.flatnonzero(keep))
    return list(compress(records, keep))


def _arrow_type(kind: str) -> Any:
    return {"str": pa.string(), "bool": pa.bool_()}.get(kind, pa.int64())


class ArrowDecoder:
    """Decodes a listing (`{"data": [...], "meta": {...}}`) into `ArrowRows` of the fields
    `record_cls` reads, under their wire names; `decode` gives None where it must not."""

    def __init__(self, record_cls: type[ClientRecord]) -> None:
        self.record_cls = record_cls
        info = msgspec.structs.fields(record_cls)
        #: (attribute, wire name) of the fields the record type reads (the rest have an
        #: impossible wire name, `records.type_of_spec`).
        self.read = [(f.name, f.encode_name) for f in info if not f.encode_name.startswith("~")]
        #: The record's fields in order, with the default of those not read.
        self.order = [(f.name, f.default) for f in info]
        #: Each limit read: its key with "infinity", with `INFINITY`, and before a negative
        #: number. Only a key of that name is such text (within a JSON string every quote is
        #: escaped), and no other key of that name is read.
        self._limits = [(b'"%s":"infinity"' % key, b'"%s":%d' % (key, INFINITY), b'"%s":-' % key)
                        for key in (wire.encode() for attr, wire in self.read
                                    if _KINDS[attr] == "limit")]
        if pa is not None:
            rows = [pa.field(wire, _arrow_type(_KINDS[attr])) for attr, wire in self.read]
            meta = [pa.field(name, _arrow_type(kind)) for name, kind in _META]
            self._options = pj.ParseOptions(
                explicit_schema=pa.schema([pa.field("data", pa.list_(pa.struct(rows))),
                                           pa.field("meta", pa.struct(meta))]),
                unexpected_field_behavior="ignore")

    def decode(self, body: bytes) -> tuple[ArrowRows, dict[str, Any]] | None:
        """The page's rows and its `meta` keys (absent ones None); None: decode it otherwise."""
        if not available or body[:1] != b"{":
            return None
        if not body.isascii():  # Arrow does not check UTF-8 (in C, ASCII is quick to tell)
            try:
                body.decode()
            except UnicodeDecodeError:
                return None
        for infinite, number, negative in self._limits:
            if negative in body:  # would be taken for `INFINITY`
                return None
            body = body.replace(infinite, number)
        try:
            table = pj.read_json(
                io.BytesIO(body),
                read_options=pj.ReadOptions(block_size=len(body) + 1, use_threads=False),
                parse_options=self._options)
        except Exception:  # any refusal (a wrong type, bad JSON, ...): the typed decoder's say
            return None
        if table.num_rows != 1:  # more than one JSON document: not a listing
            return None
        listed, about = table.column("data")[0], table.column("meta")[0]
        if not (listed.is_valid and about.is_valid):  # null or absent: the typed decoder tells
            return None
        data = listed.values
        meta = about.as_py()
        columns = {attr: data.field(wire) for attr, wire in self.read}
        if not self._valid(columns):
            return None
        return ArrowRows(self, columns, len(data)), {name: meta.get(name) for name, _ in _META}

    @staticmethod
    def _valid(columns: dict[str, Any]) -> bool:
        """What the typed decoder refuses and Arrow takes: a row without a client id, a
        number below 0 or above its kind's maximum."""
        if columns["clientid"].null_count:
            return False
        for attr, column in columns.items():
            if pa.types.is_integer(column.type) and len(column) > column.null_count:
                low, high = pc.min_max(column).values()
                kind = _KINDS[attr]
                if (low.as_py() < (INFINITY if kind == "limit" else 0)
                        or high.as_py() > _MAXIMUM[kind]):
                    return False
        return True


class ArrowRows(Sequence[ClientRecord]):
    """A decoded page: read as columns (`values`, `numbers`), or as records, made on demand.

    As a sequence it is the page's records (made for the rows asked for), so any code written
    for a list of records takes it as one; the pipeline reads its columns instead.
    """

    def __init__(self, decoder: ArrowDecoder, columns: dict[str, Any], size: int) -> None:
        self.decoder = decoder
        self.columns = columns
        self.size = size
        self._values: dict[str, list[Any]] = {}

    def __len__(self) -> int:
        return self.size

    @overload
    def __getitem__(self, index: int) -> ClientRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[ClientRecord]: ...

    def __getitem__(self, index: int | slice) -> ClientRecord | list[ClientRecord]:
        if isinstance(index, slice):
            return self.records(np.arange(self.size)[index])
        if not -self.size <= index < self.size:
            raise IndexError(index)
        return self.records(np.array([index % self.size]))[0]

    def __iter__(self) -> Iterator[ClientRecord]:
        return iter(self.records(np.arange(self.size)))

    def values(self, attr: str) -> list[Any]:
        """A field's values as Python objects, None where not reported."""
        found = self._values.get(attr)
        if found is None:
            column = self.columns.get(attr)
            if column is None:  # not read: every record holds the field's default
                default = dict(self.decoder.order)[attr]
                found = [default] * self.size
            elif column.null_count or not pa.types.is_integer(column.type):
                found = column.to_pylist()
            else:
                found = column.to_numpy().tolist()
            if _KINDS[attr] == "limit":
                found = list(map(_FROM_INFINITY.get, found, found))
            self._values[attr] = found
        return found

    def numbers(self, attr: str) -> Ints:
        """A number field as int64, `ABSENT` where not reported or not a number ("infinity")."""
        column = self.columns.get(attr)
        if column is None or not pa.types.is_integer(column.type):
            return np.full(self.size, ABSENT, np.int64)
        return np.asarray(column.fill_null(ABSENT).to_numpy(), np.int64)

    def flags(self, attr: str, value: bool) -> Bools:
        """Where a bool field holds `value` (not where it is absent)."""
        column = self.columns.get(attr)
        if column is None:
            return np.zeros(self.size, np.bool_)
        found = pc.equal(column, value).fill_null(False)
        return np.asarray(found.to_numpy(zero_copy_only=False), np.bool_)

    def take(self, rows: Ints) -> ArrowRows:
        """These rows, in this order."""
        indices = pa.array(rows, pa.int64())
        return ArrowRows(self.decoder, {attr: column.take(indices)
                                        for attr, column in self.columns.items()}, len(rows))

    @staticmethod
    def concat(parts: Sequence[ArrowRows]) -> ArrowRows | None:
        """The rows of these parts, in order; None unless one decoder made them all."""
        decoder = parts[0].decoder
        if any(part.decoder is not decoder for part in parts):
            return None
        return ArrowRows(decoder, {attr: pa.concat_arrays([part.columns[attr] for part in parts])
                                   for attr in parts[0].columns},
                         sum(part.size for part in parts))

    def records(self, rows: Ints) -> list[ClientRecord]:
        """The records of these rows, made from their columns, in this order."""
        part = self if every_row(rows, self.size) else self.take(rows)
        read = part.columns.keys()
        arguments = [part.values(attr) if attr in read else repeat(default)
                     for attr, default in self.decoder.order]
        return list(map(self.decoder.record_cls, *arguments))

    def sessions(self, expiry_in_ms: bool) -> ArrowRows:
        """The rows as `V5Base._normalize` leaves records: without expired durable sessions,
        without a queue figure for durable ones, expiry in seconds."""
        rows = self
        expired = self.flags("is_expired", True)
        if expired.any():  # `live_sessions`
            rows = self.take(np.flatnonzero(~expired))
        durable = rows.flags("durable", True)
        changed = dict(rows.columns)
        if durable.any():  # `durable_queue`
            mask = pa.array(durable)
            for attr in ("mqueue_len", "mqueue_max"):
                if attr in changed:
                    column = changed[attr]
                    changed[attr] = pc.if_else(mask, pa.scalar(None, column.type), column)
        if expiry_in_ms and "expiry_interval" in changed:
            changed["expiry_interval"] = pc.divide(changed["expiry_interval"], 1000)
        if all(changed[attr] is column for attr, column in rows.columns.items()):
            return rows
        return ArrowRows(self.decoder, changed, rows.size)
