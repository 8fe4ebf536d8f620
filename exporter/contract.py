"""The metric contract: every family name, type and HELP text, and the table of per-client parts.

Names follow Prometheus conventions (base units, `_total` on counters, `_timestamp_seconds` for
points in time). None of them reuses a family name of EMQX's own Prometheus endpoints.
Sample exposition:

    # HELP emqx_client_mqueue_messages Messages waiting in the client's session queue.
    # TYPE emqx_client_mqueue_messages gauge
    emqx_client_mqueue_messages{clientid="sensor-17"} 12
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricType = Literal["gauge", "counter", "info", "gaugehistogram", "histogram"]
#: The one exposition format a family is written in, for families that differ by format.
FormatName = Literal["text", "openmetrics"]

# Appended to every HELP text of data that comes from a poll, so nobody mistakes it for live data.
_POLLED = " Polled in the background; a scrape never triggers a poll."


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family: its sample name as exposed in text format 0.0.4, type and help."""

    name: str
    type: MetricType
    help: str
    #: Written only in this format (distributions differ by format); None: in both.
    only: FormatName | None = None

    @property
    def om_name(self) -> str:
        """The family name in OpenMetrics, where counters and infos drop their sample suffix."""
        if self.type == "counter":
            return self.name.removesuffix("_total")
        if self.type == "info":
            return self.name.removesuffix("_info")
        return self.name


def _g(name: str, text: str) -> Family:
    return Family(name, "gauge", text + _POLLED)


def _c(name: str, text: str) -> Family:
    return Family(name, "counter", text + _POLLED)


# --- per-client families --------------------------------------------------------------------
CLIENT_INFO = Family("emqx_client_info", "info", "Descriptive labels of an MQTT client; value 1." + _POLLED)
CLIENT_ONLINE = _g("emqx_client_online", "1 when the client is connected, 0 when it is not (a watched client not found is 0).")
CLIENT_CONNECTED_TS = _g("emqx_client_connected_timestamp_seconds", "When the client's current connection was established, Unix time.")
CLIENT_DISCONNECTED_TS = _g("emqx_client_disconnected_timestamp_seconds", "When an offline persistent session disconnected, Unix time.")
CLIENT_CREATED_TS = _g("emqx_client_created_timestamp_seconds", "When the client's session was created, Unix time.")
CLIENT_LAST_SEEN_TS = _g("emqx_client_last_seen_timestamp_seconds", "Last poll that saw a watched client online, Unix time.")
CLIENT_RECEIVED_BYTES = _c("emqx_client_received_bytes_total", "Bytes received from the client on its current connection.")
CLIENT_SENT_BYTES = _c("emqx_client_sent_bytes_total", "Bytes sent to the client on its current connection.")
CLIENT_RECEIVED_PACKETS = _c("emqx_client_received_packets_total", "MQTT packets received from the client on its current connection.")
CLIENT_SENT_PACKETS = _c("emqx_client_sent_packets_total", "MQTT packets sent to the client on its current connection.")
CLIENT_RECEIVED_MESSAGES = _c("emqx_client_received_messages_total", "PUBLISH messages received from the client (label qos when the split is enabled).")
CLIENT_SENT_MESSAGES = _c("emqx_client_sent_messages_total", "PUBLISH messages sent to the client (label qos when the split is enabled).")
CLIENT_RECEIVED_DROPPED = _c("emqx_client_received_messages_dropped_total", "Messages from the client that EMQX dropped (label reason when the split is enabled).")
CLIENT_SENT_DROPPED = _c("emqx_client_sent_messages_dropped_total", "Messages to the client that EMQX dropped (label reason when the split is enabled).")
CLIENT_MQUEUE = _g("emqx_client_mqueue_messages", "Messages waiting in the client's session queue.")
CLIENT_MQUEUE_CAPACITY = _g("emqx_client_mqueue_capacity_messages", "Capacity of the client's session queue (absent when unlimited).")
CLIENT_MQUEUE_DROPPED = _c("emqx_client_mqueue_dropped_messages_total", "Messages dropped because the client's session queue was full.")
CLIENT_INFLIGHT = _g("emqx_client_inflight_messages", "QoS 1/2 messages sent to the client and not yet acknowledged.")
CLIENT_INFLIGHT_CAPACITY = _g("emqx_client_inflight_capacity_messages", "Size of the client's inflight window.")
CLIENT_AWAITING_REL = _g("emqx_client_awaiting_rel_messages", "QoS 2 messages from the client awaiting PUBREL.")
CLIENT_AWAITING_REL_CAPACITY = _g("emqx_client_awaiting_rel_capacity_messages", "Limit of QoS 2 messages awaiting PUBREL (absent when unlimited).")
CLIENT_SUBSCRIPTIONS = _g("emqx_client_subscriptions", "Subscriptions the client holds.")
CLIENT_SUBSCRIPTIONS_CAPACITY = _g("emqx_client_subscriptions_capacity", "Maximum subscriptions allowed to the client (absent when unlimited).")
CLIENT_KEEPALIVE = _g("emqx_client_keepalive_seconds", "Keepalive interval the client asked for.")
CLIENT_SESSION_EXPIRY = _g("emqx_client_session_expiry_seconds", "Session expiry interval of the client.")
CLIENT_MAILBOX = _g("emqx_client_process_mailbox_messages", "Messages in the Erlang mailbox of the client's connection process.")
CLIENT_HEAP = _g("emqx_client_process_heap_bytes", "Heap of the client's connection process (EMQX reports words; 8 bytes each).")
CLIENT_REDUCTIONS = _c("emqx_client_process_reductions_total", "Reductions (Erlang work units) of the client's connection process.")

# --- aggregate families ---------------------------------------------------------------------
CLIENTS_ONLINE = _g("emqx_clients_online", "Clients connected.")
CLIENTS_SESSIONS = _g("emqx_clients_sessions", "Sessions listed, including offline persistent ones.")
CLIENTS_RECEIVED_BYTES = _c("emqx_clients_received_bytes_total", "Bytes received from clients; stays monotonic across client reconnects.")
CLIENTS_SENT_BYTES = _c("emqx_clients_sent_bytes_total", "Bytes sent to clients; stays monotonic across client reconnects.")
CLIENTS_RECEIVED_MESSAGES = _c("emqx_clients_received_messages_total", "PUBLISH messages received from clients; monotonic across reconnects.")
CLIENTS_SENT_MESSAGES = _c("emqx_clients_sent_messages_total", "PUBLISH messages sent to clients; monotonic across reconnects.")
CLIENTS_DROPPED = _c("emqx_clients_dropped_messages_total", "Messages dropped by EMQX, by direction and reason; monotonic across reconnects.")
CLIENTS_MQUEUE_DROPPED = _c("emqx_clients_mqueue_dropped_messages_total", "Messages dropped because session queues were full; monotonic across reconnects.")
CLIENTS_MQUEUE = _g("emqx_clients_mqueue_messages", "Messages waiting in session queues, summed.")
CLIENTS_INFLIGHT = _g("emqx_clients_inflight_messages", "Unacknowledged QoS 1/2 messages, summed.")
CLIENTS_SUBSCRIPTIONS = _g("emqx_clients_subscriptions", "Subscriptions, summed.")
CLIENTS_MQUEUE_SATURATED = _g("emqx_clients_mqueue_saturated", "Clients whose session queue is filled at or above the saturation threshold.")
CLIENTS_INFLIGHT_SATURATED = _g("emqx_clients_inflight_saturated", "Clients whose inflight window is filled at or above the saturation threshold.")
CLIENTS_CONNECTS = _c("emqx_clients_connects_total", "New client connections seen between polls (a lower bound).")

# --- fleet distributions -------------------------------------------------------------------
_NO_RATE = (" A client first seen, reconnected or not seen in the previous poll has no rate yet"
            " and is not counted.")


@dataclass(frozen=True, slots=True)
class Distribution:
    """Clients of an aggregate group counted by buckets of one figure, at poll time.

    OpenMetrics gets one `gaugehistogram` family; text format 0.0.4 has no such type, so it
    gets the same samples as prometheus_client writes them there: the `_bucket` lines as a
    `histogram` family, `_gcount` and `_gsum` as two gauges.
    """

    name: str
    help: str
    #: Upper bounds of the buckets, ascending; `+Inf` follows implicitly.
    bounds: tuple[float, ...]
    layout: str  # how the bounds are spaced, for the README
    family: Family
    #: The `_bucket`, `_gcount` and `_gsum` lines as families of text format 0.0.4.
    text_families: tuple[Family, Family, Family]


def _d(name: str, text: str, bounds: tuple[float, ...], layout: str) -> Distribution:
    return Distribution(name, text, bounds, layout,
                        Family(name, "gaugehistogram", text + _POLLED, "openmetrics"),
                        # As prometheus_client writes a gauge histogram in text format 0.0.4.
                        (Family(name, "histogram", text + _POLLED, "text"),
                         Family(f"{name}_gcount", "gauge", f"{text} Clients counted." + _POLLED,
                                "text"),
                         Family(f"{name}_gsum", "gauge", f"{text} Sum of the counted values."
                                + _POLLED, "text")))


_FILL = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_BYTE_RATE = (0.0, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8)
_MESSAGE_RATE = (0.0, 0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4)
_DROP_RATE = (0.0, 0.01, 0.1, 1.0, 10.0, 100.0, 1e3)
#: 10 s, 1 min, 10 min, 1 h, 6 h, 1 d, 1 week, 30 days.
_AGE = (10.0, 60.0, 600.0, 3600.0, 21600.0, 86400.0, 604800.0, 2592000.0)
_SUBSCRIPTIONS = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0)
_LINEAR, _DECADES = "linear, step 0.1", "log, one per decade"

# The order is the order of the figures `distribution.figures` computes for each client.
DIST_MQUEUE_FILL = _d("emqx_clients_mqueue_fill_ratio", "Clients by session queue fill (length / capacity); a client whose capacity is unlimited or unknown is not counted.", _FILL, _LINEAR)
DIST_INFLIGHT_FILL = _d("emqx_clients_inflight_fill_ratio", "Clients by inflight window fill (inflight / window size); a client whose window size is unlimited or unknown is not counted.", _FILL, _LINEAR)
DIST_RECEIVED_BYTES = _d("emqx_clients_received_bytes_per_second", "Clients by bytes per second received from them since the exporter's previous poll." + _NO_RATE, _BYTE_RATE, _DECADES)
DIST_SENT_BYTES = _d("emqx_clients_sent_bytes_per_second", "Clients by bytes per second sent to them since the exporter's previous poll." + _NO_RATE, _BYTE_RATE, _DECADES)
DIST_RECEIVED_MESSAGES = _d("emqx_clients_received_messages_per_second", "Clients by PUBLISH messages per second received from them since the exporter's previous poll." + _NO_RATE, _MESSAGE_RATE, _DECADES)
DIST_SENT_MESSAGES = _d("emqx_clients_sent_messages_per_second", "Clients by PUBLISH messages per second sent to them since the exporter's previous poll." + _NO_RATE, _MESSAGE_RATE, _DECADES)
DIST_DROPPED = _d("emqx_clients_dropped_messages_per_second", "Clients by messages per second EMQX dropped for them (received, sent and queue drops) since the exporter's previous poll." + _NO_RATE, _DROP_RATE, _DECADES)
DIST_CONNECTION_AGE = _d("emqx_clients_connection_age_seconds", "Connected clients by seconds since their connection was established.", _AGE, "log, on human units (10 s to 30 days)")
DIST_SUBSCRIPTIONS = _d("emqx_clients_subscriptions_per_client", "Clients by the number of subscriptions they hold.", _SUBSCRIPTIONS, "log, 1-2-5 steps")

DISTRIBUTIONS: tuple[Distribution, ...] = (
    DIST_MQUEUE_FILL, DIST_INFLIGHT_FILL, DIST_RECEIVED_BYTES, DIST_SENT_BYTES,
    DIST_RECEIVED_MESSAGES, DIST_SENT_MESSAGES, DIST_DROPPED, DIST_CONNECTION_AGE,
    DIST_SUBSCRIPTIONS,
)
#: Every family the distributions are written as, in exposition order.
DISTRIBUTION_FAMILIES: tuple[Family, ...] = tuple(
    f for d in DISTRIBUTIONS for f in (d.family, *d.text_families))

# --- exporter self-metrics --------------------------------------------------------------------
SELF_PREFIX = "emqx_client_exporter_"
#: Rows EMQX reported for a node that its listing never gave (alerts use this name).
CLIENTS_UNLISTED = SELF_PREFIX + "clients_unlisted"

#: Label names a user may choose for per-client identity and aggregates.
IDENTITY_LABEL_CHOICES = ("username", "node", "listener", "zone", "proto_name", "ip_address")
INFO_LABEL_CHOICES = (
    "username", "node", "listener", "zone", "mountpoint", "proto_name", "proto_ver", "clean_start",
    "ip_address",
)
AGGREGATE_LABEL_CHOICES = ("node", "class", "listener", "proto_name")
#: Labels of `emqx_client_info` unless `per_client.info_labels` says otherwise.
# No username by default: a username (like an IP address) becomes a label only where the user
# asks for it (`per_client.info_labels` or `labels`).
DEFAULT_INFO_LABELS = ("node", "listener", "zone", "proto_name", "proto_ver", "clean_start")


@dataclass(frozen=True, slots=True)
class Part:
    """A group of per-client families that is switched on or off as one."""

    name: str
    default: bool
    help: str

    @property
    def families(self) -> tuple[Family, ...]:
        return tuple(col.family for col in CLIENT_COLUMNS if col.part == self.name)


PARTS: tuple[Part, ...] = (
    Part("info", True, "emqx_client_info with descriptive labels"),
    Part("online", True, "online flag, connected and disconnected time"),
    Part("bytes", True, "received and sent bytes"),
    Part("messages", True, "received and sent PUBLISH messages"),
    Part("messages_qos", False, "split messages by a qos label (v4.4+, v5)"),
    Part("dropped", True, "dropped messages per direction"),
    Part("dropped_reasons", False, "split dropped messages by a reason label (v4.4+, v5)"),
    Part("mqueue", True, "session queue length, capacity and drops"),
    Part("inflight", True, "inflight window use and size"),
    Part("subscriptions", True, "subscriptions and their limit"),
    Part("packets", False, "received and sent MQTT packets"),
    Part("awaiting_rel", False, "QoS 2 messages awaiting PUBREL and their limit"),
    Part("session", False, "keepalive, session expiry and session creation time"),
    Part("process", False, "Erlang process internals: mailbox, heap, reductions"),
)
PARTS_BY_NAME = {part.name: part for part in PARTS}
DEFAULT_PARTS = frozenset(part.name for part in PARTS if part.default)

#: How a record field becomes sample values; render holds the function of each name.
#: time: an EMQX time string to Unix time; offline_time: the same, for offline sessions only;
#: online_flag: 1 unless EMQX says False (v3 has no flag); capacity: unlimited is absent;
#: heap_bytes: Erlang words to bytes.
Conversion = Literal["time", "offline_time", "online_flag", "capacity", "heap_bytes"]


@dataclass(frozen=True, slots=True)
class Split:
    """A family that an opt-in part splits by a label, where the EMQX version reports the pieces."""

    #: The part that turns the split on (the family's own part must be on too).
    switch: str
    label: str
    #: (label value, record field) of each piece.
    pieces: tuple[tuple[str, str], ...]
    #: Label value of the total minus the pieces, so a client's lines sum to its total.
    remainder: str | None = None

    @property
    def extra_series(self) -> int:
        """Lines of a client beyond the one line of the unsplit family."""
        return len(self.pieces) + (self.remainder is not None) - 1


@dataclass(frozen=True, slots=True)
class ClientColumn:
    """One per-client family: its part, the record field it reads, conversion and split."""

    part: str
    family: Family
    #: None: written from several fields (emqx_client_info, from the info labels).
    field: str | None
    convert: Conversion | None = None
    split: Split | None = None


_C = ClientColumn
_QOS = "messages_qos", "qos"
_REASON = "dropped_reasons", "reason"
#: Every per-client family in exposition order: adding a metric is one line here.
CLIENT_COLUMNS: tuple[ClientColumn, ...] = (
    _C("info", CLIENT_INFO, None),
    _C("online", CLIENT_ONLINE, "connected", "online_flag"),
    _C("online", CLIENT_CONNECTED_TS, "connected_at", "time"),
    _C("online", CLIENT_DISCONNECTED_TS, "disconnected_at", "offline_time"),
    _C("bytes", CLIENT_RECEIVED_BYTES, "received_bytes"),
    _C("bytes", CLIENT_SENT_BYTES, "sent_bytes"),
    _C("messages", CLIENT_RECEIVED_MESSAGES, "received_messages", split=Split(
        *_QOS, (("0", "received_qos0"), ("1", "received_qos1"), ("2", "received_qos2")))),
    _C("messages", CLIENT_SENT_MESSAGES, "sent_messages", split=Split(
        *_QOS, (("0", "sent_qos0"), ("1", "sent_qos1"), ("2", "sent_qos2")))),
    _C("dropped", CLIENT_RECEIVED_DROPPED, "received_dropped", split=Split(
        *_REASON, (("await_pubrel_timeout", "received_dropped_await_pubrel_timeout"),), "other")),
    _C("dropped", CLIENT_SENT_DROPPED, "sent_dropped", split=Split(
        *_REASON, (("expired", "sent_dropped_expired"), ("queue_full", "sent_dropped_queue_full"),
                   ("too_large", "sent_dropped_too_large")), "other")),
    _C("mqueue", CLIENT_MQUEUE, "mqueue_len"),
    _C("mqueue", CLIENT_MQUEUE_CAPACITY, "mqueue_max", "capacity"),
    _C("mqueue", CLIENT_MQUEUE_DROPPED, "mqueue_dropped"),
    _C("inflight", CLIENT_INFLIGHT, "inflight"),
    _C("inflight", CLIENT_INFLIGHT_CAPACITY, "inflight_max", "capacity"),
    _C("subscriptions", CLIENT_SUBSCRIPTIONS, "subscriptions"),
    _C("subscriptions", CLIENT_SUBSCRIPTIONS_CAPACITY, "subscriptions_max", "capacity"),
    _C("packets", CLIENT_RECEIVED_PACKETS, "received_packets"),
    _C("packets", CLIENT_SENT_PACKETS, "sent_packets"),
    _C("awaiting_rel", CLIENT_AWAITING_REL, "awaiting_rel"),
    _C("awaiting_rel", CLIENT_AWAITING_REL_CAPACITY, "awaiting_rel_max", "capacity"),
    _C("session", CLIENT_KEEPALIVE, "keepalive"),
    _C("session", CLIENT_SESSION_EXPIRY, "expiry_interval"),
    _C("session", CLIENT_CREATED_TS, "created_at", "time"),
    _C("process", CLIENT_MAILBOX, "mailbox_len"),
    _C("process", CLIENT_HEAP, "heap_size", "heap_bytes"),
    _C("process", CLIENT_REDUCTIONS, "reductions"),
)


AGGREGATE_FAMILIES: tuple[Family, ...] = (
    CLIENTS_ONLINE, CLIENTS_SESSIONS, CLIENTS_RECEIVED_BYTES, CLIENTS_SENT_BYTES,
    CLIENTS_RECEIVED_MESSAGES, CLIENTS_SENT_MESSAGES, CLIENTS_DROPPED, CLIENTS_MQUEUE_DROPPED,
    CLIENTS_MQUEUE, CLIENTS_INFLIGHT, CLIENTS_SUBSCRIPTIONS, CLIENTS_MQUEUE_SATURATED,
    CLIENTS_INFLIGHT_SATURATED, CLIENTS_CONNECTS,
)
CLIENT_FAMILIES: tuple[Family, ...] = (*(col.family for col in CLIENT_COLUMNS), CLIENT_LAST_SEEN_TS)

# --- client events (optional: `events:` per cluster, see exporter.events) ------------------------
# Appended to every HELP text of data that comes from EMQX's client events, so nobody mistakes a
# lower bound for an exact count.
_EVENTS = (" From EMQX's client events ($SYS, QoS 0, at most once): a lower bound while the"
           " subscription is down (see emqx_client_exporter_events_up); polled state stays the"
           " truth for online/offline.")
#: Disconnect reasons EMQX publishes (`emqx_sys:reason/1` over the shutdown reasons of
#: emqx_channel/emqx_connection and MQTT 5 reason code names), kept as they are; any other
#: reason is counted as `other`, so the `reason` label stays bounded.
DISCONNECT_REASONS = (
    "normal", "kicked", "discarded", "takenover", "keepalive_timeout", "sock_closed",
    "tcp_closed", "ssl_closed", "idle_timeout", "expired", "not_authorized", "protocol_error",
    "malformed_packet", "packet_too_large", "receive_maximum_exceeded", "message_rate_too_high",
    "quota_exceeded", "implementation_specific_error", "unspecified_error",
    "disconnect_with_will_message", "server_shutting_down", "internal_error",
)
#: The reason of every other disconnect reason.
OTHER_REASON = "other"
#: Disconnect reasons of a connection taken over by a new one with the same client id: the
#: session was discarded (clean start) or taken over (resumed). EMQX 4.4.19 publishes none.
TAKEOVER_REASONS = ("discarded", "takenover")
#: Topic of the client events unless `events.topic` says otherwise.
EVENTS_TOPIC = "$SYS/brokers/+/clients/#"


def _e(name: str, kind: MetricType, text: str) -> Family:
    return Family(name, kind, text + _EVENTS)


EVENT_CONNECTS = _e("emqx_clients_connected_events_total", "counter", "Client connections by node and class.")
EVENT_DISCONNECTS = _e("emqx_clients_disconnected_events_total", "counter", "Client disconnections by node, class and EMQX's reason (reasons outside a fixed list are `other`).")
EVENT_TAKEOVERS = _e("emqx_clients_takeover_events_total", "counter", "Connections taken over by a new connection with the same client id (reason discarded or takenover), by node and class.")
CLIENT_EVENT_CONNECTS = _e("emqx_client_connected_events_total", "counter", "Connections of a watched client, each counted even when it reconnects faster than the poll.")
CLIENT_LAST_DISCONNECT = _e("emqx_client_last_disconnect_timestamp_seconds", "gauge", "When a watched client last disconnected, Unix time, with EMQX's reason.")
EVENT_FAMILIES: tuple[Family, ...] = (EVENT_CONNECTS, EVENT_DISCONNECTS, EVENT_TAKEOVERS, CLIENT_EVENT_CONNECTS, CLIENT_LAST_DISCONNECT)

# The events subscription's own health (exporter self-metrics).
EVENTS_UP = Family(SELF_PREFIX + "events_up", "gauge", "1 while the MQTT subscription to EMQX's client events is up; 0: events are being missed.")
EVENTS_MESSAGES = Family(SELF_PREFIX + "events_messages_total", "counter", "Client event messages received.")
EVENTS_DECODE_ERRORS = Family(SELF_PREFIX + "events_decode_errors_total", "counter", "Client event messages that could not be decoded and were not counted.")
EVENTS_GAPS = Family(SELF_PREFIX + "events_gaps_total", "counter", "Losses of the events subscription: events published until it was back were missed.")
EVENTS_GAP_SECONDS = Family(SELF_PREFIX + "events_gap_seconds_total", "counter", "Seconds the events subscription was down after it first came up: events of that time were missed.")
EVENTS_SELF_FAMILIES: tuple[Family, ...] = (EVENTS_UP, EVENTS_MESSAGES, EVENTS_DECODE_ERRORS, EVENTS_GAPS, EVENTS_GAP_SECONDS)
