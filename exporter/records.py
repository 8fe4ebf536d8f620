"""Compact client records, decoded straight from EMQX's JSON with wire names mapped once.

Every API generation names the same figure differently (`inflight` in v4, `inflight_cnt` in v5,
`client_id` in v3). `ClientRecord` holds the normalized names; each dialect gets a generated
subclass whose fields carry that version's wire names, so msgspec decodes a page into normalized
records in one C pass, without an intermediate dict per client.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import Context, ContextVar
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, ClassVar, Literal, cast

import msgspec

Kind = Literal["str", "int", "words", "bool", "limit"]

#: Every number EMQX sends a client row is a count, a size or a duration: a finite,
#: non-negative integer. Below 2**63 it fits the counter state's signed 64-bit slots and
#: stays exact through every sum downstream; anything else is dropped at decoding and counted.
NUMBER_MAX = 2**63 - 1
Number = Annotated[int, msgspec.Meta(ge=0, le=NUMBER_MAX)]
#: Erlang reports process memory in machine words; the exporter exports bytes.
ERLANG_WORD_BYTES = 8
#: A size in words, bounded so that its value in bytes is still a `Number`.
Words = Annotated[int, msgspec.Meta(ge=0, le=NUMBER_MAX // ERLANG_WORD_BYTES)]

_PY_TYPES: dict[Kind, Any] = {
    "str": str | None,
    "int": Number | None,
    "words": Words | None,
    "bool": bool | None,
    "limit": Number | str | None,  # v5 `*_max` may be the string "infinity"
}


@dataclass(frozen=True, slots=True)
class Field:
    """A normalized record field and its wire name per API generation (None: not sent)."""

    attr: str
    kind: Kind
    v3: str | None
    v4: str | None
    v5: str | None
    #: A cumulative count of one connection: the counter state follows its increases across
    #: polls and reconnects (`exporter.state`), aggregates add them up.
    counter: bool = False
    #: For the length of a bounded buffer, the field holding its capacity.
    capacity: str | None = None


def _same(attr: str, kind: Kind, wire: str | None = None, *, v3: bool = True,
          counter: bool = False) -> Field:
    name = wire or attr
    return Field(attr, kind, name if v3 else None, name, name, counter)


FIELDS: tuple[Field, ...] = (
    Field("clientid", "str", "client_id", "clientid", "clientid"),
    _same("username", "str"),
    _same("node", "str"),
    Field("listener", "str", None, None, "listener"),
    _same("zone", "str"),
    Field("mountpoint", "str", None, "mountpoint", "mountpoint"),
    Field("ip_address", "str", "ipaddress", "ip_address", "ip_address"),
    _same("proto_name", "str"),
    _same("proto_ver", "int"),
    _same("clean_start", "bool"),
    Field("connected", "bool", None, "connected", "connected"),
    _same("keepalive", "int"),
    Field("expiry_interval", "int", None, "expiry_interval", "expiry_interval"),
    _same("connected_at", "str"),
    Field("created_at", "str", None, "created_at", "created_at"),
    Field("disconnected_at", "str", None, "disconnected_at", "disconnected_at"),
    _same("received_bytes", "int", "recv_oct", counter=True),
    _same("sent_bytes", "int", "send_oct", counter=True),
    _same("received_packets", "int", "recv_pkt"),
    _same("sent_packets", "int", "send_pkt"),
    _same("received_messages", "int", "recv_msg", counter=True),
    _same("sent_messages", "int", "send_msg", counter=True),
    _same("received_qos0", "int", "recv_msg.qos0", v3=False),
    _same("received_qos1", "int", "recv_msg.qos1", v3=False),
    _same("received_qos2", "int", "recv_msg.qos2", v3=False),
    _same("sent_qos0", "int", "send_msg.qos0", v3=False),
    _same("sent_qos1", "int", "send_msg.qos1", v3=False),
    _same("sent_qos2", "int", "send_msg.qos2", v3=False),
    _same("received_dropped", "int", "recv_msg.dropped", v3=False, counter=True),
    Field("received_dropped_await_pubrel_timeout", "int", None, None,
          "recv_msg.dropped.await_pubrel_timeout", counter=True),
    _same("sent_dropped", "int", "send_msg.dropped", v3=False, counter=True),
    _same("sent_dropped_expired", "int", "send_msg.dropped.expired", v3=False, counter=True),
    _same("sent_dropped_queue_full", "int", "send_msg.dropped.queue_full", v3=False, counter=True),
    _same("sent_dropped_too_large", "int", "send_msg.dropped.too_large", v3=False, counter=True),
    Field("mqueue_len", "int", None, "mqueue_len", "mqueue_len", capacity="mqueue_max"),
    Field("mqueue_max", "int", None, "max_mqueue", "mqueue_max"),
    Field("mqueue_dropped", "int", None, "mqueue_dropped", "mqueue_dropped", counter=True),
    Field("inflight", "int", None, "inflight", "inflight_cnt", capacity="inflight_max"),
    Field("inflight_max", "int", None, "max_inflight", "inflight_max"),
    Field("awaiting_rel", "int", None, "awaiting_rel", "awaiting_rel_cnt",
          capacity="awaiting_rel_max"),
    Field("awaiting_rel_max", "limit", None, "max_awaiting_rel", "awaiting_rel_max"),
    Field("subscriptions", "int", None, "subscriptions_cnt", "subscriptions_cnt",
          capacity="subscriptions_max"),
    Field("subscriptions_max", "limit", None, "max_subscriptions", "subscriptions_max"),
    _same("mailbox_len", "int"),
    _same("heap_size", "words"),
    _same("reductions", "int"),
    # 5.7+: a durable session (its messages wait in durable storage, not in a queue) and one
    # that expired but is still listed until session GC (REFERENCE.md §13.1, §13.3).
    Field("durable", "bool", None, None, "durable"),
    Field("is_expired", "bool", None, None, "is_expired"),
)
#: The fields the counter state follows (`Field.counter`), in table order.
COUNTERS: tuple[str, ...] = tuple(f.attr for f in FIELDS if f.counter)
#: Each bounded buffer's length field and its capacity field (`Field.capacity`).
CAPACITY: dict[str, str] = {f.attr: f.capacity for f in FIELDS if f.capacity is not None}


class ClientRecord(msgspec.Struct, gc=False, omit_defaults=True):
    """One client as listed by EMQX, with normalized names. None means "not reported".

    Records cross to the pipeline's worker process as msgpack (`exporter.worker`); fields left
    at their default are not sent.
    """

    #: The arguments `record_type` built this class from (None: this base class), so that
    #: another process can build the same class to decode records sent to it.
    spec: ClassVar[RecordSpec | None] = None

    clientid: str
    username: str | None = None
    node: str | None = None
    listener: str | None = None
    zone: str | None = None
    mountpoint: str | None = None
    ip_address: str | None = None
    proto_name: str | None = None
    proto_ver: int | None = None
    clean_start: bool | None = None
    connected: bool | None = None
    keepalive: int | None = None
    expiry_interval: int | None = None
    connected_at: str | None = None
    created_at: str | None = None
    disconnected_at: str | None = None
    received_bytes: int | None = None
    sent_bytes: int | None = None
    received_packets: int | None = None
    sent_packets: int | None = None
    received_messages: int | None = None
    sent_messages: int | None = None
    received_qos0: int | None = None
    received_qos1: int | None = None
    received_qos2: int | None = None
    sent_qos0: int | None = None
    sent_qos1: int | None = None
    sent_qos2: int | None = None
    received_dropped: int | None = None
    received_dropped_await_pubrel_timeout: int | None = None
    sent_dropped: int | None = None
    sent_dropped_expired: int | None = None
    sent_dropped_queue_full: int | None = None
    sent_dropped_too_large: int | None = None
    mqueue_len: int | None = None
    mqueue_max: int | None = None
    mqueue_dropped: int | None = None
    inflight: int | None = None
    inflight_max: int | None = None
    awaiting_rel: int | None = None
    awaiting_rel_max: int | str | None = None
    subscriptions: int | None = None
    subscriptions_max: int | str | None = None
    mailbox_len: int | None = None
    heap_size: int | None = None
    reductions: int | None = None
    durable: bool | None = None
    is_expired: bool | None = None


Generation = Literal["v3", "v4", "v5"]
#: `record_type`'s arguments: generation, connected_default, only.
RecordSpec = tuple[Generation, bool | None, frozenset[str] | None]


def record_type(generation: Generation, *, connected_default: bool | None = None,
                only: frozenset[str] | None = None) -> type[ClientRecord]:
    """The ClientRecord subclass that decodes `generation`'s wire names; the same arguments
    give the same class.

    With `only`, every other field is left unread: msgspec skips its JSON value without
    creating a Python object, which makes decoding a full v5 row about a third cheaper.
    """
    return type_of_spec((generation, connected_default, only))


@cache
def type_of_spec(spec: RecordSpec | None) -> type[ClientRecord]:
    """The record class `ClientRecord.spec` describes, built once per spec."""
    if spec is None:
        return ClientRecord
    generation, connected_default, only = spec
    fields: list[tuple[str, Any, Any]] = []
    for f in FIELDS:
        wire = getattr(f, generation)
        if only is not None and f.attr not in only and f.attr != "clientid":
            wire = None
        if f.attr == "clientid":
            fields.append((f.attr, str, msgspec.field(name=wire)))
            continue
        # A field this version never sends gets an impossible wire name, so a stray key with the
        # normalized name (say "inflight" in v5) is not mistaken for it.
        default = connected_default if f.attr == "connected" else None
        fields.append((f.attr, _PY_TYPES[f.kind],
                       msgspec.field(default=default, name=wire or f"~absent~{f.attr}")))
    cls = msgspec.defstruct(
        f"ClientRecord{generation.upper()}", fields, bases=(ClientRecord,), gc=False,
        namespace={"spec": spec},
    )
    return cast(type[ClientRecord], cls)


def wire_names(generation: Generation, attrs: frozenset[str]) -> list[str]:
    """The wire names of the given normalized fields in `generation`."""
    names = []
    for f in FIELDS:
        wire = getattr(f, generation)
        if f.attr in attrs and wire is not None:
            names.append(wire)
    return names


def valid_number(value: Any) -> bool:
    """An integer (not a bool, not a float) in the range of `Number`."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= NUMBER_MAX


#: In the enum from 5.7.0 (durable-session flags, `emqx_mgmt_api_clients.erl`@v5.7.0; a real
#: 5.8.9 accepts them); before that these rows carry no such key, so nothing is asked.
V5_7_FIELDS = frozenset({"durable", "is_expired"})
#: What v5's `fields=` enum accepts (REFERENCE.md §3.6, §12.1): the names of the client schema,
#: `fields(client)` in `emqx_mgmt_api_clients.erl`@v5.6.0, as far as `FIELDS` reads them; from
#: 5.7.0 also `V5_7_FIELDS`. 5.7.1 adds `client_attrs`, which the exporter does not read.
V5_FIELDS_ENUM = frozenset({
    "clientid", "username", "node", "mountpoint", "ip_address", "proto_name", "proto_ver",
    "clean_start", "connected", "keepalive", "expiry_interval", "connected_at", "created_at",
    "disconnected_at", "recv_oct", "send_oct", "recv_pkt", "send_pkt", "recv_msg", "send_msg",
    "recv_msg.qos0", "recv_msg.qos1", "recv_msg.qos2", "send_msg.qos0", "send_msg.qos1",
    "send_msg.qos2", "recv_msg.dropped", "recv_msg.dropped.await_pubrel_timeout",
    "send_msg.dropped", "send_msg.dropped.expired", "send_msg.dropped.queue_full",
    "send_msg.dropped.too_large", "mqueue_len", "mqueue_max", "mqueue_dropped", "inflight_cnt",
    "inflight_max", "awaiting_rel_cnt", "awaiting_rel_max", "subscriptions_cnt",
    "subscriptions_max", "mailbox_len", "heap_size", "reductions",
})
#: Figures that a v5 version before the one given sends but that do not hold what the exporter
#: exports under them, so they are not read: before 5.8.5 a full queue's drops never reach
#: `mqueue_dropped` (EMQX fix 14608: `emqx_session_mem:enqueue_msg` kept the queue from before
#: the drop; 0 after 10 drops on the real 5.3.2, 10 on the real 5.8.9), which counts there only
#: messages filtered out when a session is taken over.
V5_UNREAD_BEFORE: dict[str, tuple[int, int, int]] = {"mqueue_dropped": (5, 8, 5)}
#: Every record field.
ALL_FIELDS = frozenset(f.attr for f in FIELDS)


def v5_unread(version: tuple[int, int, int]) -> frozenset[str]:
    """The fields this v5 version sends but the exporter does not read (`V5_UNREAD_BEFORE`);
    an unknown version (0, 0, 0) is taken as the oldest."""
    return frozenset(f for f, fixed in V5_UNREAD_BEFORE.items() if version < fixed)


#: Not in the enum, and not worth all fields: list rows lose `zone` from 5.1 on, and 5.0 has
#: no `fields=`.
V5_NEVER_LISTED = frozenset({"zone"})


def durable_queue(records: Sequence[ClientRecord]) -> None:
    """A durable session keeps its messages in durable storage, not in a queue: EMQX lists
    `mqueue_len` 0 (and a capacity) whatever waits for it, so it has no queue figure."""
    for record in records:
        if record.durable:
            record.mqueue_len = None
            record.mqueue_max = None


def live_sessions(records: Sequence[ClientRecord]) -> Sequence[ClientRecord]:
    """Without the expired durable sessions 5.7+ keeps listing until session GC removes them
    (`is_expired: true`, REFERENCE.md §13.3): they are neither sessions nor clients."""
    if any(r.is_expired for r in records):
        return [r for r in records if not r.is_expired]
    return records


def v5_fields_param(version: tuple[int, int, int], attrs: frozenset[str]) -> list[str] | None:
    """The `fields=` names for these record fields at this v5 version; None: ask for all
    (before 5.6.0 there is no `fields=`; and a needed field the enum lacks, such as
    `listener`, comes only with every field)."""
    if version < (5, 6, 0):
        return None
    newer = V5_7_FIELDS if version >= (5, 7, 0) else frozenset()
    wanted = [name for name in wire_names("v5", attrs) if name not in V5_NEVER_LISTED
              and (name in newer or name not in V5_7_FIELDS)]
    if not (V5_FIELDS_ENUM | newer).issuperset(wanted):
        return None
    return wanted


def valid_value(kind: Kind, value: Any) -> bool:
    """Whether a decoded JSON value fits a field kind (None always does: not reported)."""
    if value is None:
        return True
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return valid_number(value)
    if kind == "words":
        return valid_number(value) and value <= NUMBER_MAX // ERLANG_WORD_BYTES
    return isinstance(value, str) or valid_number(value)


#: The first client id whose row lost a value in the current asyncio task (one node's walk),
#: so the poll's single log line can name an example without every dialect passing it along.
_bad_example: ContextVar[str | None] = ContextVar("bad_example", default=None)


def take_bad_example() -> str | None:
    """The example noted since the last call in this task, and forget it."""
    example = _bad_example.get()
    _bad_example.set(None)
    return example


def keep_bad_example(context: Context) -> None:
    """Keep the example noted in `context` (where a page was decoded, on a thread) as if
    noted here, unless this task holds one already."""
    example = context.get(_bad_example)
    if example is not None and _bad_example.get() is None:
        _bad_example.set(example)


@dataclass(slots=True)
class LenientResult:
    """Outcome of converting one row field by field."""

    record: ClientRecord | None
    bad_values: list[str]


def lenient_record(cls: type[ClientRecord], generation: Generation, row: Any) -> LenientResult:
    """Convert one decoded row, keeping the good values of a row with bad ones.

    The fast path decodes a whole page at once and fails on the first wrong type; this slow
    path runs only for the rows of such a page and skips just the offending values.
    """
    if not isinstance(row, dict):
        return LenientResult(None, ["<row>"])
    kwargs: dict[str, Any] = {}
    bad: list[str] = []
    # Read what the fast path reads: a field outside `only` is neither kept nor counted as bad.
    only = cls.spec[2] if cls.spec is not None else None
    for f in FIELDS:
        wire = getattr(f, generation)
        if wire is None or wire not in row or (
                only is not None and f.attr not in only and f.attr != "clientid"):
            continue
        value = row[wire]
        if valid_value(f.kind, value):
            kwargs[f.attr] = value
        else:
            bad.append(wire)
    clientid = kwargs.get("clientid")
    if not isinstance(clientid, str):
        return LenientResult(None, bad or ["clientid"])
    if bad and _bad_example.get() is None:
        _bad_example.set(clientid)
    return LenientResult(cls(**kwargs), bad)
