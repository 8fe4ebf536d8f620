"""Client rows as each EMQX version writes them: field names, key sets, value shapes.

A row is first a flat tuple of values in a fixed field order, with ``UNSET`` for fields this
version or this client does not have. The tuple then becomes a msgspec Struct for the wire
(building and encoding a Struct is ~4x cheaper than a dict), a dict for ``rows()``, or a subset
Struct for v5 ``fields=``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from emqx_simulator.clock import TimeFormatter
from emqx_simulator.profile import Profile
from emqx_simulator.settings import Features
from emqx_simulator.traffic import TRAFFIC_FIELDS, Traffic

UNSET: Any = msgspec.UNSET

#: (online, connected_at ms, created_at ms, disconnected_at ms or 0)
Timeline = tuple[bool, int, int, int]

# Field orders: the client's fixed values first (cached per client), then the connection's
# timeline, then counters and gauges (``traffic.TRAFFIC_FIELDS``), then disconnected_at. EMQX's
# own key order is arbitrary (Erlang maps), so this order only serves speed.
V3_CONNECTION_FIELDS = (
    "client_id", "username", "node", "ipaddress", "port", "zone", "conn_mod", "peercert",
    "is_bridge", "proto_name", "proto_ver", "clean_start", "keepalive", "send_pend",
    "connected_at",
    "heap_size", "mailbox_len", "reductions", "recv_oct", "recv_cnt", "recv_pkt", "recv_msg",
    "send_oct", "send_cnt", "send_pkt", "send_msg",
)  # fmt: skip
_V3_TRAFFIC = (6, 5, 7, 8, 9, 10, 11, 17, 18, 19, 20)

V3_SESSION_FIELDS = (
    "awaiting_rel_len", "binding", "clean_start", "client_id", "created_at", "deliver_msg",
    "enqueue_msg", "expiry_interval", "heap_size", "inflight_len", "mailbox_len",
    "max_awaiting_rel", "max_inflight", "max_mqueue", "max_subscriptions", "mqueue_dropped",
    "mqueue_len", "node", "reductions", "subscriptions_count", "username",
)  # fmt: skip

V4_FIELDS = (
    "clientid", "username", "node", "ip_address", "port", "zone", "mountpoint", "is_bridge",
    "proto_name", "proto_ver", "clean_start", "keepalive", "expiry_interval",
    "max_subscriptions", "max_inflight", "max_mqueue", "max_awaiting_rel",
    "connected", "connected_at", "created_at",
    "subscriptions_cnt", "inflight", "mqueue_len", "mqueue_dropped", "awaiting_rel",
    "mailbox_len", "heap_size", "reductions", "recv_oct", "recv_cnt", "recv_pkt", "recv_msg",
    "recv_msg.qos0", "recv_msg.qos1", "recv_msg.qos2", "recv_msg.dropped", "send_oct",
    "send_cnt", "send_pkt", "send_msg", "send_msg.qos0", "send_msg.qos1", "send_msg.qos2",
    "send_msg.dropped", "send_msg.dropped.expired", "send_msg.dropped.queue_full",
    "send_msg.dropped.too_large",
    "disconnected_at",
)  # fmt: skip
# Traffic positions of the v4 counters (28 = UNSET: the per-QoS and per-reason counters that
# only exist from 4.4.0).
_V4_TRAFFIC = (*range(16), *range(17, 28))
_V4_TRAFFIC_OLD = (*range(12), 28, 28, 28, 28, 17, 18, 19, 20, 28, 28, 28, 28, 28, 28, 28)

V5_FIELDS = (
    "clientid", "username", "node", "ip_address", "port", "peerport", "listener",
    "mountpoint", "zone", "proto_name", "proto_ver", "clean_start", "keepalive",
    "expiry_interval", "is_bridge", "enable_authn", "is_persistent", "durable", "is_expired",
    "peersni", "cn", "dn", "client_attrs", "auth_expire_at", "subscriptions_max",
    "inflight_max", "mqueue_max", "awaiting_rel_max",
    "connected", "connected_at", "created_at",
    *TRAFFIC_FIELDS,
    "disconnected_at", "disconn_props",
)  # fmt: skip

#: Names v5 ``fields=`` accepts from 5.6.0: exactly the ``fields(client)`` schema of
#: ``emqx_mgmt_api_clients.erl``@v5.6.0 (L461-669; ``requested_client_fields`` L692-699). The
#: schema misses some returned fields (listener, is_persistent, enable_authn, peerport, peersni,
#: zone, ...), which therefore cannot be asked for by name.
_V5_FIELDS_ENUM_5_6 = frozenset(
    {
        "awaiting_rel_cnt", "awaiting_rel_max", "clean_start", "clientid", "connected",
        "connected_at", "created_at", "disconnected_at", "expiry_interval", "heap_size",
        "inflight_cnt", "inflight_max", "ip_address", "is_bridge", "keepalive", "mailbox_len",
        "mqueue_dropped", "mqueue_len", "mqueue_max", "node", "port", "proto_name", "proto_ver",
        "recv_cnt", "recv_msg", "recv_msg.dropped", "recv_msg.dropped.await_pubrel_timeout",
        "recv_msg.qos0", "recv_msg.qos1", "recv_msg.qos2", "recv_oct", "recv_pkt", "reductions",
        "send_cnt", "send_msg", "send_msg.dropped", "send_msg.dropped.expired",
        "send_msg.dropped.queue_full", "send_msg.dropped.too_large", "send_msg.qos0",
        "send_msg.qos1", "send_msg.qos2", "send_oct", "send_pkt", "subscriptions_cnt",
        "subscriptions_max", "username", "mountpoint",
    }
)  # fmt: skip
#: 5.7.0 adds the durable-session fields to the schema (``fields(client)``@v5.7.0 L518-780).
_V5_FIELDS_ENUM_5_7 = _V5_FIELDS_ENUM_5_6 | {
    "durable", "is_expired", "n_streams", "seqno_q1_comm", "seqno_q1_dup", "seqno_q1_next",
    "seqno_q2_comm", "seqno_q2_dup", "seqno_q2_rec", "seqno_q2_next",
}  # fmt: skip


def v5_fields_enum(version: tuple[int, int, int]) -> frozenset[str]:
    """The names ``fields=`` accepts at this version (empty before 5.6.0: no ``fields``)."""
    if version < (5, 6, 0):
        return frozenset()
    if version < (5, 7, 0):
        return _V5_FIELDS_ENUM_5_6
    if version < (5, 7, 1):
        return _V5_FIELDS_ENUM_5_7
    # 5.7.1: ``client_attrs`` joins the enum (``requested_client_fields``@v5.7.1).
    return _V5_FIELDS_ENUM_5_7 | {"client_attrs"}

_SNI = "mqtt.example.com"
_ONLINE_TAIL: tuple[Any, ...] = (UNSET,)
_V5_ONLINE_TAIL: tuple[Any, ...] = (UNSET, UNSET)
#: Positions in the traffic tuple of the socket counters (recv_oct, recv_cnt, send_oct,
#: send_cnt): a v5 session without a connection has no socket, and EMQX leaves them out of
#: its row (recorded: tests/fixtures/recorded/5.3.2/v5_lookup_offline.json).
_MQUEUE_DROPPED = TRAFFIC_FIELDS.index("mqueue_dropped")
_SOCKET_STATS = frozenset(TRAFFIC_FIELDS.index(n) for n in ("recv_oct", "recv_cnt", "send_oct",
                                                            "send_cnt"))

RowValues = tuple[Any, ...]
Builder = Callable[[Profile, Timeline, Traffic], RowValues]


def _struct_type(name: str, fields: Sequence[str]) -> type[msgspec.Struct]:
    attrs = [f.replace(".", "__") for f in fields]
    return msgspec.defstruct(
        name, [(a, Any) for a in attrs], rename=dict(zip(attrs, fields, strict=True))
    )


class RowShape:
    """A field order and its Struct type; turns value tuples into wire objects or dicts."""

    __slots__ = ("_getter", "fields", "struct")

    def __init__(self, name: str, fields: Sequence[str], source: Sequence[str] | None = None):
        self.fields = tuple(fields)
        self.struct = _struct_type(name, self.fields)
        # A subset shape picks its values out of the full tuple of ``source``.
        self._getter: Callable[[RowValues], RowValues] | None = None
        if source is not None:
            idx = [source.index(f) for f in self.fields]
            if not idx:
                self._getter = lambda v: ()
            elif len(idx) == 1:
                one = operator.itemgetter(idx[0])
                self._getter = lambda v: (one(v),)
            else:
                self._getter = operator.itemgetter(*idx)

    def encodable(self, values: RowValues) -> msgspec.Struct:
        """The row as a Struct ready for ``msgspec.json.encode`` (UNSET fields are omitted)."""
        if self._getter is not None:
            values = self._getter(values)
        return self.struct(*values)

    def as_dict(self, values: RowValues) -> dict[str, Any]:
        """The row as a dict with wire keys, without the UNSET fields."""
        if self._getter is not None:
            values = self._getter(values)
        return {k: v for k, v in zip(self.fields, values, strict=True) if v is not UNSET}


def _limit(value: int | str) -> int:
    """v3/v4 write an unlimited maximum as 0."""
    return 0 if isinstance(value, str) else value


def _username_v4(p: Profile) -> str:
    return p.username if p.username is not None else "undefined"


def _v3_connection(tf: TimeFormatter, nodes: Sequence[str]) -> Builder:
    pick = operator.itemgetter(*_V3_TRAFFIC)

    def fixed(p: Profile) -> tuple[Any, ...]:
        peercert = f"CN={p.clientid}, O=Simulated Devices" if p.tls_cert else "nossl"
        return (
            p.clientid, _username_v4(p), nodes[p.node], p.ip, p.port, "external",
            "emqx_connection", peercert, False, p.proto_name, p.proto_ver, p.clean_start,
            p.keepalive, 0,
        )  # fmt: skip

    def build(p: Profile, tl: Timeline, tr: Traffic) -> RowValues:
        static = p.wire
        if static is None:
            static = p.wire = fixed(p)
        return (*static, tf.local(tl[1]), *pick(tr))

    return build


def _v3_session(tf: TimeFormatter, f: Features, nodes: Sequence[str]) -> Builder:
    divisor = 1000 if f.v3_expiry_divided else 1

    def build(p: Profile, tl: Timeline, tr: Traffic) -> RowValues:
        t = tr
        return (
            t[4], "local", p.clean_start, p.clientid, tf.local(tl[2]), t[20],
            t[20] + t[2] + t[26], p.expiry // divisor, t[6], t[1], t[5], _limit(p.awaiting_rel_max),
            p.inflight_max, p.mqueue_max, _limit(p.subscriptions_max), t[3], t[2],
            nodes[p.node], t[7], t[0], _username_v4(p),
        )  # fmt: skip

    return build


def _v4(tf: TimeFormatter, f: Features, nodes: Sequence[str]) -> Builder:
    mountpoint = "undefined" if f.v4_mountpoint else UNSET
    pick = operator.itemgetter(*(_V4_TRAFFIC if f.qos_split else _V4_TRAFFIC_OLD))
    fmt = tf.local

    def fixed(p: Profile) -> tuple[Any, ...]:
        return (
            p.clientid, _username_v4(p), nodes[p.node], p.ip, p.port, "external", mountpoint,
            False, p.proto_name, p.proto_ver, p.clean_start, p.keepalive, p.expiry,
            _limit(p.subscriptions_max), p.inflight_max, p.mqueue_max,
            _limit(p.awaiting_rel_max),
        )  # fmt: skip

    def build(p: Profile, tl: Timeline, tr: Traffic) -> RowValues:
        static = p.wire
        if static is None:
            static = p.wire = fixed(p)
        if tl[0]:
            return (*static, tl[0], fmt(tl[1]), fmt(tl[2]), *pick((*tr, UNSET)), *_ONLINE_TAIL)
        # No socket counters without a connection (recorded: 4.4.19/v4_lookup_offline.json).
        offline = tuple(UNSET if i in _SOCKET_STATS else v for i, v in enumerate(tr))
        return (*static, tl[0], fmt(tl[1]), fmt(tl[2]), *pick((*offline, UNSET)), fmt(tl[3]))

    return build


def _v5(tf: TimeFormatter, f: Features, nodes: Sequence[str]) -> Builder:
    durable = False if f.durable_fields else UNSET
    zone = "default" if f.v5_zone else UNSET
    expiry_scale = 1000 if f.expiry_in_ms else 1
    peerport, peersni = f.peerport, f.peersni
    dropped_counted = f.mqueue_dropped_counted
    # 5.7.0: the channel's client info carries client_attrs and auth_expire_at (recorded on
    # 5.8.9: `{}` and null without attributes or an expiring authentication).
    attrs: Any = {} if f.durable_fields else UNSET
    auth_expire: Any = None if f.durable_fields else UNSET
    fmt = tf.rfc3339

    def fixed(p: Profile) -> tuple[Any, ...]:
        cn = p.clientid if p.tls_cert else UNSET
        dn = f"CN={p.clientid},O=Simulated Devices" if p.tls_cert else UNSET
        return (
            p.clientid, p.username, nodes[p.node], p.ip, p.port,
            p.port if peerport else UNSET, p.listener, None, zone, p.proto_name, p.proto_ver,
            p.clean_start, p.keepalive, p.expiry * expiry_scale, False, True, p.expiry > 0,
            durable, durable, (_SNI if p.tls else None) if peersni else UNSET, cn, dn,
            attrs, auth_expire, p.subscriptions_max, p.inflight_max, p.mqueue_max,
            p.awaiting_rel_max,
        )  # fmt: skip

    def build(p: Profile, tl: Timeline, tr: Traffic) -> RowValues:
        static = p.wire
        if static is None:
            static = p.wire = fixed(p)
        connected_at = fmt(tl[1])
        created_at = connected_at if tl[2] == tl[1] else fmt(tl[2])
        if tr[_MQUEUE_DROPPED] and not dropped_counted:
            # Before 5.8.5 a full queue counts in send_msg.dropped(.queue_full) only:
            # `mqueue_dropped` stayed 0 (recorded: 5.3.2/observations.json, full_lookup).
            tr = (*tr[:_MQUEUE_DROPPED], 0, *tr[_MQUEUE_DROPPED + 1:])
        if tl[0]:
            return (*static, tl[0], connected_at, created_at, *tr, *_V5_ONLINE_TAIL)
        offline = tuple(UNSET if i in _SOCKET_STATS else v for i, v in enumerate(tr))
        # An MQTT 5 client that said DISCONNECT leaves its (here empty) DISCONNECT properties
        # in the session's row (recorded: 5.3.2/v5_lookup_offline.json `"disconn_props": {}`).
        props = {} if p.proto_ver == 5 else UNSET
        return (*static, tl[0], connected_at, created_at, *offline, fmt(tl[3]), props)

    return build


class Dialect:
    """Row shapes and builders of one simulated version."""

    def __init__(self, features: Features, timezone: str, nodes: Sequence[str]) -> None:
        tf = TimeFormatter(timezone)
        self.features = features
        self.timefmt = tf
        self.session: RowShape | None = None
        self.build_session: Builder | None = None
        if features.api == "v3":
            self.client = RowShape("V3Connection", V3_CONNECTION_FIELDS)
            self.build: Builder = _v3_connection(tf, nodes)
            self.session = RowShape("V3Session", V3_SESSION_FIELDS)
            self.build_session = _v3_session(tf, features, nodes)
        elif features.api == "v4":
            self.client = RowShape("V4Client", V4_FIELDS)
            self.build = _v4(tf, features, nodes)
        else:
            self.client = RowShape("V5Client", V5_FIELDS)
            self.build = _v5(tf, features, nodes)
        self._subsets: dict[tuple[str, ...], RowShape] = {}

    def subset(self, names: Sequence[str]) -> RowShape:
        """The shape of v5 ``fields=names`` (names must be fields of the full shape)."""
        key = tuple(dict.fromkeys(n for n in names if n in self.client.fields))
        shape = self._subsets.get(key)
        if shape is None:
            if len(self._subsets) > 64:
                self._subsets.clear()
            shape = RowShape("V5ClientFields", key, source=self.client.fields)
            self._subsets[key] = shape
        return shape
