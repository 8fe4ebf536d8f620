"""A client's fixed traits (connection, limits, traffic rates), derived from a hash of its index.

The hash is BLAKE2b keyed by the seed: 32 bytes give sixteen independent 16-bit draws per
client for ~0.8 us. Rates are fixed-point integers, events per millisecond times 2**32, so a
counter is ``elapsed_ms * rate >> 32``: integer-only arithmetic, ~3x cheaper than floats.
"""

from __future__ import annotations

import hashlib
import struct

from emqx_simulator.population import OFFLINE, Population
from emqx_simulator.settings import CLIENT_GROUPS

_DRAWS = struct.Struct("<16H")

_KEEPALIVES = (15, 30, 60, 60, 60, 120, 300, 600)
_EXPIRIES = (300, 3600, 7200, 86400)
# Erlang process heap sizes (words) come from a Fibonacci-like series.
_HEAPS = (376, 610, 987, 1598, 2586, 4185, 6772, 10958)
_SLOW_HEAPS = (17731, 28690, 46422, 75113)

#: Fixed-point scale of rates: ``count = elapsed_ms * rate >> RATE_SHIFT``.
RATE_SHIFT = 32


def _rate(per_second: float) -> int:
    """Events per second as a fixed-point rate per millisecond."""
    return round(per_second * (1 << RATE_SHIFT) / 1000.0)


def _levels(low: float, high: float) -> tuple[float, ...]:
    """256 log-uniform steps from low to high, indexed by the top byte of a draw."""
    return tuple(low * (high / low) ** (k / 255.0) for k in range(256))


def _rates(low: float, high: float) -> tuple[int, ...]:
    return tuple(_rate(x) for x in _levels(low, high))


# Per group (sensor, gateway, app): messages per second received from and sent to the client
# (log-uniform ranges), and (fewest, spread) of subscriptions. Tables keep floats and pow()
# out of the per-client derivation.
_IN_RATES = (_rates(0.02, 1.0), _rates(2.0, 40.0), _rates(0.01, 0.2))
_OUT_RATES = (_rates(0.001, 0.05), _rates(0.5, 5.0), _rates(1.0, 30.0))
_SUBS = ((1, 2), (2, 9), (1, 4))
_FILL_RATES = _rates(0.05, 2.0)
_CONNECTED_AGES_MS = tuple(int(x) for x in _levels(60_000, 3 * 86_400_000))  # 1 min .. 3 days
_OFFLINE_AGES_MS = tuple(int(x) for x in _levels(30_000, 7_200_000))  # 30 s .. 2 h
_ONE_PER_SECOND = _rate(1.0)
_BASE_REDUCTIONS = _rate(40.0)
_LISTENERS = (
    # (share edge of 65536, listener, TLS, client certificate): 70 % TCP, 18 % TLS with client
    # certificates, 8 % WebSocket, 4 % secure WebSocket.
    (45875, "tcp:default", False, False),
    (57671, "ssl:default", True, True),
    (62915, "ws:default", False, False),
    (65536, "wss:default", True, False),
)


class Profile:
    """Fixed traits of one client; all times are epoch milliseconds, rates per second."""

    __slots__ = (
        "awaiting_rel_max",
        "base_connected_ms",
        "base_disconnected_ms",
        "busy_out",
        "busy_qos2",
        "churn_period_ms",
        "clean_start",
        "clientid",
        "drop_expired",
        "drop_too_large",
        "expiry",
        "fill",
        "group",
        "heap",
        "in0",
        "in1",
        "in2",
        "in_size",
        "index",
        "inflight_max",
        "ip",
        "keepalive",
        "listener",
        "mqueue_max",
        "node",
        "offline_queue",
        "out0",
        "out1",
        "out2",
        "out_size",
        "port",
        "proto_name",
        "proto_ver",
        "pubrel_timeout",
        "reductions_rate",
        "slow",
        "status",
        "subs",
        "subscriptions_max",
        "tls",
        "tls_cert",
        "username",
        "wire",
    )

    index: int
    clientid: str
    username: str | None
    group: str
    node: int
    status: int
    ip: str
    port: int
    listener: str
    tls: bool
    tls_cert: bool
    proto_ver: int
    proto_name: str
    keepalive: int
    expiry: int
    clean_start: bool
    subs: int
    subscriptions_max: int | str
    mqueue_max: int
    inflight_max: int
    awaiting_rel_max: int | str
    base_connected_ms: int
    base_disconnected_ms: int
    churn_period_ms: int
    # Fixed-point rates (see RATE_SHIFT).
    in0: int
    in1: int
    in2: int
    out0: int
    out1: int
    out2: int
    drop_expired: int
    drop_too_large: int
    pubrel_timeout: int
    fill: int
    reductions_rate: int
    in_size: int
    out_size: int
    #: More than one QoS 1/2 message a second goes out (inflight is seldom empty).
    busy_out: bool
    #: More than one QoS 2 message every two seconds comes in (awaiting_rel is seldom empty).
    busy_qos2: bool
    slow: bool
    offline_queue: int
    heap: int
    #: The client's fixed wire values, filled in by the dialect on first use.
    wire: tuple[object, ...] | None


class ProfileFactory:
    """Derive client profiles of one population, relative to the cluster's start time."""

    def __init__(self, population: Population, seed: int, start_ms: int) -> None:
        self._population = population
        self._key = (seed & ((1 << 64) - 1)).to_bytes(8, "little")
        self._start_ms = start_ms

    def profile(self, index: int) -> Profile:
        """The profile of client ``index``."""
        pop = self._population
        u = _DRAWS.unpack(
            hashlib.blake2b(index.to_bytes(8, "little"), key=self._key, digest_size=32).digest()
        )
        h = pop.hash(index)
        p = Profile()
        p.index = index
        p.clientid = pop.clientid_of_hash(index, h)
        p.username = pop.username_of_hash(h)
        group = p.group = pop.group_of_hash(h)
        gi = CLIENT_GROUPS.index(group)
        node = p.node = h % pop.n_nodes
        status = p.status = pop.status_of_hash(h)
        p.wire = None
        p.ip = f"10.{20 + node % 200}.{u[12] >> 8}.{(u[12] & 0xFF) or 1}"
        p.port = 1024 + u[13] % 64000
        for edge, listener, tls, cert in _LISTENERS:
            if u[0] < edge:
                p.listener, p.tls, p.tls_cert = listener, tls, cert
                break
        p.proto_ver = 5 if u[1] < 39322 else 4 if u[1] < 62259 else 3
        p.proto_name = "MQIsdp" if p.proto_ver == 3 else "MQTT"
        p.keepalive = _KEEPALIVES[u[2] & 7]
        fewest, spread = _SUBS[gi]
        p.subs = fewest + (u[2] >> 3) % spread
        persistent = status == OFFLINE or u[3] < 19661
        p.expiry = _EXPIRIES[u[3] >> 14] if persistent else 0
        p.clean_start = not persistent
        p.mqueue_max = 0 if u[10] < 3277 else 1000
        p.inflight_max = 16 if (u[10] & 0xF) == 0 else 32
        p.subscriptions_max = 10 * (1 + (u[10] >> 12) % 4) if (u[10] >> 4) & 7 == 0 else "infinity"
        p.awaiting_rel_max = "infinity" if (u[10] >> 7) & 0xF == 0 else 100
        # Rates: log-uniform within the group's range, split over QoS levels.
        total_in, total_out = _IN_RATES[gi][u[4] >> 8], _OUT_RATES[gi][u[5] >> 8]
        in1, in2 = total_in * (u[6] & 0xFF) // 510, total_in * (u[6] >> 8) // 2550
        p.in0, p.in1, p.in2 = total_in - in1 - in2, in1, in2
        out1, out2 = total_out * (u[7] & 0xFF) // 510, total_out * (u[7] >> 8) // 2550
        p.out0, p.out1, p.out2 = total_out - out1 - out2, out1, out2
        p.busy_out, p.busy_qos2 = out1 + out2 > _ONE_PER_SECOND, 2 * in2 > _ONE_PER_SECOND
        p.in_size = 24 + (u[8] & 0xFF) * 8
        p.out_size = 24 + (u[8] >> 8) * 8
        p.drop_expired = total_out // 500 if u[15] & 0xF == 0 else 0
        p.drop_too_large = total_out // 1000 if (u[15] >> 4) & 0x1F == 0 else 0
        p.pubrel_timeout = in2 // 100 if (u[15] >> 9) & 0x1F == 0 else 0
        # A few slow consumers: messages pile up in the queue faster than they are delivered.
        slow = p.slow = (u[9] & 0x3FF) < 15
        p.fill = _FILL_RATES[u[9] >> 8] if slow else 0
        p.offline_queue = (u[14] >> 8) % 64 if status == OFFLINE else 0
        p.reductions_rate = _BASE_REDUCTIONS + 350 * (total_in + total_out)
        p.heap = _SLOW_HEAPS[u[14] & 3] if slow else _HEAPS[u[14] & 7]
        # Times: connected 1 min .. 3 days before the start; offline sessions left 30 s .. 2 h
        # before it; churning clients reconnect every 1-10 min.
        age_ms = _CONNECTED_AGES_MS[u[11] >> 8] + (u[11] & 0xFF) * 997
        if status == OFFLINE:
            p.base_disconnected_ms = self._start_ms - _OFFLINE_AGES_MS[u[14] >> 8]
            p.base_connected_ms = p.base_disconnected_ms - age_ms
        else:
            p.base_disconnected_ms = 0
            p.base_connected_ms = self._start_ms - age_ms
        p.churn_period_ms = 60_000 + (u[14] % 541) * 1000
        return p
