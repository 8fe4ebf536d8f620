"""The simulated cluster's client events, published as EMQX publishes them over MQTT.

Topics `$SYS/brokers/{node}/clients/{clientid}/connected|disconnected`, payload keys, types and
units as recorded from the real brokers (tests/fixtures/events): 5.x with `protocol` and
`expiry_interval` in milliseconds; 4.x without `protocol`, with `connack`, `expiry_interval`
in seconds (3.x, of which no recording exists, as 4.x). Published: what the controls do
(kick: `kicked`; disconnect: `normal`; a reconnect of a connected client: a takeover,
`discarded`/`takenover` on 5.x and no disconnect on 4.x, as 4.4.19 does) and the periodic
reconnects of churning clients, each with a reason drawn from the client's hash.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import structlog

from emqx_simulator.cluster import SimCluster
from emqx_simulator.mqtt import MqttServer
from emqx_simulator.population import CHURN, mix64

log = structlog.get_logger(__name__)

#: Churning clients are followed only in populations up to this size (each tick looks at
#: every churning client); larger ones publish the controls' events only.
MAX_FOLLOWED = 200_000
TICK_S = 1.0
#: Why a churning client reconnects, by share of 16: mostly keepalive timeouts and dropped
#: sockets, as devices on mobile networks do, some clean, some overlapping (takeover).
_CHURN_REASONS = (("keepalive_timeout",) * 7 + ("tcp_closed",) * 5 + ("normal",) * 2
                  + ("takeover",) * 2)
_encode = msgspec.json.encode


class EventPublisher:
    """Publishes `cluster`'s client events on `server`."""

    def __init__(self, cluster: SimCluster, server: MqttServer) -> None:
        self.cluster = cluster
        self.server = server
        self.v5 = cluster.features.api == "v5"
        self._task: asyncio.Task[None] | None = None
        self._churning: list[int] = []
        self._last_connect: dict[int, int] = {}
        cluster.listeners.append(self.publish)

    def start(self) -> None:
        pop = self.cluster.population
        if self.cluster.settings.clients <= MAX_FOLLOWED:
            self._churning = [i for i in pop.iter_indices() if pop.status(i) == CHURN]
            self._last_connect = {i: self._connected_at(i) for i in self._churning}
        self._task = asyncio.create_task(self._follow_churn(), name="sim-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(ValueError):
            self.cluster.listeners.remove(self.publish)

    def _connected_at(self, index: int) -> int:
        tl = self.cluster._timeline(index, self.cluster.profile(index), self.cluster.now_ms())
        return -1 if tl is None or not tl[0] else tl[1]

    async def _follow_churn(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            if not self.server.sessions:
                continue  # nobody listens: only keep the reconnect times current
            self.tick()

    def tick(self) -> int:
        """Publish the reconnects of churning clients since the last tick; how many."""
        down = self.cluster.down_nodes()
        published = 0
        for index in self._churning:
            now_at = self._connected_at(index)
            before = self._last_connect[index]
            if now_at == before:
                continue
            self._last_connect[index] = now_at
            if now_at < 0 or before < 0 or self.cluster.population.node_of(index) in down:
                continue  # kicked, offline or its node is down: the controls published it
            reason = _CHURN_REASONS[mix64(index ^ now_at) % len(_CHURN_REASONS)]
            if reason == "takeover":
                if self.v5:
                    p = self.cluster.profile(index)
                    self.publish("disconnected", index,
                                 "discarded" if p.clean_start else "takenover", now_at, before)
            else:
                self.publish("disconnected", index, reason, now_at, before)
            self.publish("connected", index, None, now_at)
            published += 1
        return published

    def publish(self, event: str, index: int, reason: str | None, at: int | None = None,
                connected_at: int | None = None) -> None:
        """One event as EMQX publishes it; `at`: when, epoch ms (default now);
        `connected_at`: of the connection that ended (default: the current one)."""
        cluster = self.cluster
        p = cluster.profile(index)
        now = cluster.now_ms() if at is None else at
        node = cluster.node_names[p.node]
        if event == "connected":
            self._last_connect[index] = now
        if connected_at is None:
            tl = cluster._timeline(index, p, cluster.now_ms())
            connected_at = tl[1] if tl is not None else now
        username = p.username if p.username is not None else "undefined"
        common: dict[str, object] = {"username": username, "ts": now,
                                     "sockport": self.server.port}
        if self.v5:
            common["protocol"] = "mqtt"
        common.update(proto_ver=p.proto_ver, proto_name=p.proto_name)
        if event == "connected":
            body = {**common, "keepalive": p.keepalive, "ipaddress": p.ip,
                    "expiry_interval": p.expiry * 1000 if self.v5 else p.expiry,
                    "connected_at": now, **({} if self.v5 else {"connack": 0}),
                    "clientid": p.clientid, "clean_start": p.clean_start}
        else:
            body = {**common, "reason": reason, "ipaddress": p.ip, "disconnected_at": now,
                    "connected_at": min(connected_at, now), "clientid": p.clientid}
        topic = f"$SYS/brokers/{node}/clients/{p.clientid}/{event}"
        self.server.publish(topic, _encode(body))
