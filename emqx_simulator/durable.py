"""Offline durable sessions (EMQX 5.6+ with ``durable_sessions.enable = true``).

They live in EMQX's durable storage, not in any node's channel table, and EMQX's list handler
appends them after the nodes' rows of every ``/clients`` answer *without applying the query's
filters or* ``node=`` (``emqx_mgmt_api_clients.erl``@v5.8.9 L1545-1570,
``do_persistent_session_query``); ``/clients_v2`` filters them row by row (L1721-1790,
``does_offline_chan_info_match``). Their rows come whole whatever ``fields=`` asks for.
5.6.x writes a short row without ``node``; from 5.7 a row carries the channel's last info and
``node`` is the node it was last connected to (``format_persistent_session_info``, L1883-1909).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from emqx_simulator.clock import TimeFormatter
from emqx_simulator.listing import ClientFilter
from emqx_simulator.settings import Features

#: The durable session's sequence numbers per QoS track (5.7.0+ rows; 0 with nothing pending).
SEQNO_KEYS = ("seqno_q1_comm", "seqno_q1_dup", "seqno_q1_next", "seqno_q2_comm",
              "seqno_q2_dup", "seqno_q2_next", "seqno_q2_rec")
#: Seconds a durable session stays after its client left (its session expiry interval).
EXPIRY_SECONDS = 7200


class DurableSessions:
    """``count`` offline durable sessions: ``durable-0000`` ... on the nodes in turn."""

    def __init__(self, features: Features, count: int, nodes: Sequence[str], timezone: str,
                 start_ms: int, expired: int = 0) -> None:
        self.features = features
        self.count = count if features.durable_sessions else 0
        #: The last `expired` sessions outlived their expiry interval (5.7+: still listed,
        #: `is_expired: true`, until EMQX's garbage collection removes them).
        self.expired = min(expired, self.count)
        self.nodes = tuple(nodes)
        self._fmt = TimeFormatter(timezone).rfc3339
        self._start_ms = start_ms

    def clientid(self, k: int) -> str:
        return f"durable-{k:04d}"

    def index_of(self, clientid: str) -> int | None:
        head, _, digits = clientid.partition("-")
        if head != "durable" or not digits.isdigit() or len(digits) != 4:
            return None
        k = int(digits)
        return k if k < self.count else None

    def node_of(self, k: int) -> str:
        """The node the session was last connected to."""
        return self.nodes[k % len(self.nodes)]

    def row(self, k: int) -> dict[str, Any]:
        """The row as the listing writes it (``fields=`` does not apply)."""
        created = self._fmt(self._start_ms - 3_600_000 - k * 1000)
        if self.features.version < (5, 7, 0):
            return {"clientid": self.clientid(k), "connected": False, "connected_at": created,
                    "created_at": created, "expiry_interval": EXPIRY_SECONDS,
                    "ip_address": None, "is_persistent": True, "port": None}
        expired = k >= self.count - self.expired
        gone_ms = self._start_ms - 60_000 - k * 1000
        if expired:  # left longer ago than its expiry interval
            gone_ms -= EXPIRY_SECONDS * 1000
            created = self._fmt(gone_ms - 3_600_000)
        gone = self._fmt(gone_ms)
        # The key set of a real offline durable session's row (5.8.9, recorded in
        # tests/fixtures/recorded/5.8.9/v5_clients.json): the channel's last info, its
        # counters, no `mqueue_max`, `mqueue_len` 0 whatever waits (the messages are in
        # durable storage, not in a queue), and the session's stream bookkeeping.
        row: dict[str, Any] = {
            "clientid": self.clientid(k), "username": f"durable-user-{k % 3}",
            "node": self.node_of(k), "ip_address": f"10.9.0.{k % 250 + 1}", "port": 50000 + k,
            "listener": "tcp:default", "mountpoint": None, "proto_name": "MQTT",
            "proto_ver": 5, "clean_start": False, "keepalive": 60,
            "expiry_interval": EXPIRY_SECONDS, "is_bridge": False, "enable_authn": True,
            "connected": False, "connected_at": created, "created_at": created,
            "disconnected_at": gone, "durable": True, "is_persistent": True,
            "is_expired": expired, "subscriptions_cnt": 1, "subscriptions_max": "infinity",
            "inflight_cnt": 0, "inflight_max": 32, "mqueue_len": 0, "mqueue_dropped": 0,
            "awaiting_rel_cnt": 0, "awaiting_rel_max": 100, "mailbox_len": 0,
            "heap_size": 1598, "reductions": 11914, "recv_oct": 100 + k, "recv_cnt": 2,
            "recv_pkt": 2, "recv_msg": 1, "recv_msg.qos0": 0, "recv_msg.qos1": 1,
            "recv_msg.qos2": 0, "recv_msg.dropped": 0,
            "recv_msg.dropped.await_pubrel_timeout": 0, "send_oct": 200 + k, "send_cnt": 2,
            "send_pkt": 2, "send_msg": 2, "send_msg.qos0": 0, "send_msg.qos1": 2,
            "send_msg.qos2": 0, "send_msg.dropped": 0, "send_msg.dropped.expired": 0,
            "send_msg.dropped.queue_full": 0, "send_msg.dropped.too_large": 0,
            "n_streams": 1, **dict.fromkeys(SEQNO_KEYS, 0),
        }
        if self.features.peersni:
            row["peersni"] = None
        if self.features.durable_fields:  # 5.7.0: client_attrs and auth_expire_at
            row["client_attrs"] = {}
            row["auth_expire_at"] = None
        return row

    def rows(self, flt: ClientFilter | None = None) -> list[dict[str, Any]]:
        """Every session (``/clients``), or those matching ``flt`` (``/clients_v2``)."""
        rows = [self.row(k) for k in range(self.count)]
        if flt is None or not flt.active:
            return rows
        return [r for r in rows if _matches(flt, r)]


def _matches(flt: ClientFilter, row: dict[str, Any]) -> bool:
    """``/clients_v2``'s row filter over an offline durable session."""
    if flt.clientids and row["clientid"] not in flt.clientids:
        return False
    if flt.usernames and row.get("username") not in flt.usernames:
        return False
    if flt.conn_state is not None and flt.conn_state != "disconnected":
        return False
    if flt.like_clientid is not None and flt.like_clientid not in row["clientid"]:
        return False
    username = row.get("username") or ""
    return flt.like_username is None or flt.like_username in username
