"""The exporter pointed at a real EMQX (tests/realbroker.py), polled when a test asks, and the
broker's own answers to compare its series with.

EMQX refreshes listing stats lazily (about 15 s on 5.8.9 after activity; an offline session's
queue 30+ s on 5.3.2), while `GET /clients/{id}` answers from the session itself: a test polls
until what it caused shows, with a deadline (`RealRig.until`), never a guessed sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from exporter.config import load_settings
from exporter.dialects.base import parse_version
from exporter.records import v5_unread
from exporter.server import build_app
from exporter.service import Exporter
from tests.exposition import Sample, samples_text
from tests.realbroker import Broker

#: Every per-client part, so every per-client family is compared.
ALL_PARTS = {"info": True, "online": True, "bytes": True, "messages": True,
             "messages_qos": False, "dropped": True, "dropped_reasons": False, "mqueue": True,
             "inflight": True, "subscriptions": True, "packets": True, "awaiting_rel": True,
             "session": True, "process": True}


@dataclass
class RealRig:
    broker: Broker
    exporter: Exporter
    client: TestClient[web.Request, web.Application]
    polls: int = 0

    async def poll(self) -> list[Sample]:
        """One poll, then what /metrics serves."""
        self.polls += 1
        await self.exporter.poll_all_once()
        response = await self.client.get("/metrics")
        assert response.status == 200
        return samples_text(await response.text())

    async def until(self, check: Callable[[list[Sample]], list[str]], what: str,
                    deadline_s: float = 75.0) -> list[Sample]:
        """Poll until `check` finds nothing wrong (it returns the differences), or fail at the
        deadline naming them."""
        deadline = time.monotonic() + deadline_s
        while True:
            samples = await self.poll()
            wrong = check(samples)
            if not wrong:
                return samples
            if time.monotonic() > deadline:
                pytest.fail(f"{self.broker.kind}: {what}: still {wrong[:8]} "
                            f"after {deadline_s:.0f} s")
            await _pause()


async def _pause() -> None:
    await asyncio.sleep(1.0)  # between polls of a deadline-bounded wait, not a guessed delay


@asynccontextmanager
async def exporting(broker: Broker, **config: Any) -> AsyncIterator[RealRig]:
    """An exporter polling `broker` (API key unless `config` says otherwise), every part on."""
    per_client = {"max_series": 1_000_000, "parts": ALL_PARTS,
                  "info_labels": ["username", "zone", "proto_ver", "clean_start"],
                  **config.pop("per_client", {})}
    flags: dict[str, Any] = {**broker.exporter_config(), "retries": 0, "interval": 5,
                             "per_client": per_client}
    flags.update(config)
    exporter = Exporter(load_settings(flags, {}, None))
    client: TestClient[web.Request, web.Application] = TestClient(
        TestServer(build_app(exporter, poll=False), host="127.0.0.1"))
    await client.start_server()
    try:
        yield RealRig(broker, exporter, client)
    finally:
        await client.close()
        await exporter.stop()


# -- the broker's own answer, as the exporter should export it ---------------------------------

#: family → (v4 wire name, v5 wire name, conversion), written from EMQX's API docs
#: (REFERENCE.md §3), independently of the exporter's own field table.
WIRE: dict[str, tuple[str | None, str, str]] = {
    "emqx_client_online": ("connected", "connected", "flag"),
    "emqx_client_connected_timestamp_seconds": ("connected_at", "connected_at", "time"),
    "emqx_client_disconnected_timestamp_seconds": ("disconnected_at", "disconnected_at",
                                                   "offline_time"),
    "emqx_client_created_timestamp_seconds": ("created_at", "created_at", "time"),
    "emqx_client_received_bytes_total": ("recv_oct", "recv_oct", ""),
    "emqx_client_sent_bytes_total": ("send_oct", "send_oct", ""),
    "emqx_client_received_packets_total": ("recv_pkt", "recv_pkt", ""),
    "emqx_client_sent_packets_total": ("send_pkt", "send_pkt", ""),
    "emqx_client_received_messages_total": ("recv_msg", "recv_msg", ""),
    "emqx_client_sent_messages_total": ("send_msg", "send_msg", ""),
    "emqx_client_received_messages_dropped_total": ("recv_msg.dropped", "recv_msg.dropped", ""),
    "emqx_client_sent_messages_dropped_total": ("send_msg.dropped", "send_msg.dropped", ""),
    "emqx_client_mqueue_messages": ("mqueue_len", "mqueue_len", "queue"),
    "emqx_client_mqueue_capacity_messages": ("max_mqueue", "mqueue_max", "capacity"),
    "emqx_client_mqueue_dropped_messages_total": ("mqueue_dropped", "mqueue_dropped", "queue"),
    "emqx_client_inflight_messages": ("inflight", "inflight_cnt", ""),
    "emqx_client_inflight_capacity_messages": ("max_inflight", "inflight_max", "capacity"),
    "emqx_client_awaiting_rel_messages": ("awaiting_rel", "awaiting_rel_cnt", ""),
    "emqx_client_awaiting_rel_capacity_messages": ("max_awaiting_rel", "awaiting_rel_max",
                                                   "capacity"),
    "emqx_client_subscriptions": ("subscriptions_cnt", "subscriptions_cnt", ""),
    "emqx_client_subscriptions_capacity": ("max_subscriptions", "subscriptions_max", "capacity"),
    "emqx_client_keepalive_seconds": ("keepalive", "keepalive", ""),
    "emqx_client_session_expiry_seconds": ("expiry_interval", "expiry_interval", ""),
    "emqx_client_process_mailbox_messages": ("mailbox_len", "mailbox_len", "process"),
    "emqx_client_process_heap_bytes": ("heap_size", "heap_size", "process"),
    "emqx_client_process_reductions_total": ("reductions", "reductions", "process"),
}


def _time(text: str, v4: bool) -> float:
    if v4:  # "YYYY-MM-DD HH:MM:SS" in the broker's zone: these brokers run in UTC
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(
            tzinfo=ZoneInfo("UTC")).timestamp()
    return datetime.fromisoformat(text).timestamp()


def expected(broker: Broker, row: dict[str, Any]) -> dict[str, float | None]:
    """What the exporter should export for a client EMQX answered `row` for; None: absent.

    Process figures (heap, reductions, mailbox) move by themselves: `compare` checks them
    loosely.
    """
    v4 = broker.api == "v4"
    durable = bool(row.get("durable"))
    # Figures the exporter does not read from this version (records.V5_UNREAD_BEFORE).
    unread = set() if v4 else v5_unread(parse_version(broker.version))
    out: dict[str, float | None] = {}
    for family, (v4_name, v5_name, conversion) in WIRE.items():
        name = v4_name if v4 else v5_name
        raw = row.get(name) if name and name not in unread else None
        value: float | None
        if raw is None:
            value = None
        elif conversion == "flag":
            value = 1.0 if raw else 0.0
        elif conversion == "time":
            value = _time(raw, v4)
        elif conversion == "offline_time":
            value = _time(raw, v4) if row.get("connected") is False else None
        elif conversion == "capacity":
            value = float(raw) if isinstance(raw, int) and raw > 0 else None
        elif conversion == "process" and name == "heap_size":
            value = float(raw) * 8
        else:
            value = float(raw)
        if durable and family in ("emqx_client_mqueue_messages",
                                  "emqx_client_mqueue_capacity_messages"):
            value = None  # durable storage, not a queue: no figure (issue 17)
        out[family] = value
    return out


def exported(samples: list[Sample], clientid: str) -> dict[str, float]:
    """The exported per-client samples of one client without extra labels, by family."""
    return {name: value for name, labels, value in samples
            if len(labels) == 1 and dict(labels).get("clientid") == clientid}


def compare(broker: Broker, samples: list[Sample], clientid: str,
            row: dict[str, Any] | None = None) -> list[str]:
    """Differences between the exported series of `clientid` and EMQX's own answer for it."""
    row = row if row is not None else broker.client(clientid)
    if row is None:
        return [f"{clientid}: EMQX has no such client"]
    want = expected(broker, row)
    got = exported(samples, clientid)
    wrong = []
    for family, value in want.items():
        have = got.get(family)
        if WIRE[family][2] == "process":
            if (value is None) != (have is None):
                wrong.append(f"{clientid} {family}: {have} vs {value}")
            continue
        if value is None or have is None:
            if value != have:
                wrong.append(f"{clientid} {family}: {have} vs {value}")
        elif abs(have - value) > (1.0 if "timestamp" in family else 0.0):
            wrong.append(f"{clientid} {family}: {have} vs {value}")
    return wrong
