"""The cost of the exporter's polls to EMQX itself, measured on real brokers.

    EMQX_TEST_SLOT=1 python -m bench.emqx_cost [--clients 3000] [--polls 5] [KIND ...]

For each broker kind (default 5.8.9 and 4.4.19, started with `tests/realbroker.py`), it opens
`--clients` real MQTT connections (a light asyncio connector: CONNECT/CONNACK over asyncio
streams, sockets kept open, PINGREQ while they wait), then runs the exporter's own polls
(`Exporter.poll_all_once`) in each mode and prints per poll:

- poll time (wall clock, seconds),
- requests per poll (counted at the exporter's request funnel),
- EMQX's CPU time per poll: utime + stime of the broker's Erlang VM from /proc/<pid>/stat
  before and after, minus its idle rate (measured first, with the connections open) times the
  poll's duration.

Modes: a full walk (the default configuration), and watch-only lookups of 100 and 1000 ids,
both batched (`GET /clients?clientid=..&clientid=..`, 5.6+; `per_client.lookup: batched`) and
one `GET /clients/{id}` per id (`lookup: single`, the only way before 5.6).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.config import load_settings
from exporter.service import Exporter
from tests.realbroker import KINDS, Broker, BrokerPool

TICK = os.sysconf("SC_CLK_TCK")
CONNECT_CONCURRENCY = 100
KEEPALIVE_S = 120
IDLE_WINDOW_S = 10.0


# -- a light MQTT connector ---------------------------------------------------------------------


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_packet(clientid: str, keepalive: int = KEEPALIVE_S) -> bytes:
    """MQTT 3.1.1 CONNECT with a clean session and no credentials."""
    cid = clientid.encode()
    body = (b"\x00\x04MQTT\x04\x02" + struct.pack("!H", keepalive)
            + struct.pack("!H", len(cid)) + cid)
    return b"\x10" + _remaining_length(len(body)) + body


@dataclass
class Connection:
    clientid: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


async def open_connection(host: str, port: int, clientid: str) -> Connection:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(connect_packet(clientid))
    await writer.drain()
    connack = await asyncio.wait_for(reader.readexactly(4), 30)
    if connack[0] != 0x20 or connack[3] != 0:
        raise ConnectionError(f"{clientid}: CONNACK {connack.hex()}")
    return Connection(clientid, reader, writer)


class Fleet:
    """`n` connected MQTT clients kept alive with PINGREQ until closed."""

    def __init__(self, host: str, port: int, prefix: str, n: int) -> None:
        self.host, self.port, self.prefix, self.n = host, port, prefix, n
        self.connections: list[Connection] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def clientids(self) -> list[str]:
        return [c.clientid for c in self.connections]

    async def __aenter__(self) -> Fleet:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(i: int) -> Connection:
            async with gate:
                return await open_connection(self.host, self.port, f"{self.prefix}{i:05d}")

        self.connections = list(await asyncio.gather(*(one(i) for i in range(self.n))))
        self._tasks = [asyncio.create_task(self._drain(c)) for c in self.connections]
        self._tasks.append(asyncio.create_task(self._ping()))
        return self

    async def _drain(self, connection: Connection) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, OSError):
            while await connection.reader.read(64):
                pass  # PINGRESPs

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S / 2)
            for c in self.connections:
                with contextlib.suppress(ConnectionError, OSError):
                    c.writer.write(b"\xc0\x00")

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for c in self.connections:
            with contextlib.suppress(ConnectionError, OSError):
                c.writer.write(b"\xe0\x00")  # DISCONNECT
                c.writer.close()


# -- the broker's CPU ---------------------------------------------------------------------------


def beam_pid(broker: Broker) -> int:
    """The broker's Erlang VM: of its processes, the one that used the most CPU."""
    return max(broker._pids(), key=cpu_seconds)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14, 15 of stat(5)


async def idle_rate(pid: int, seconds: float = IDLE_WINDOW_S) -> float:
    """EMQX's CPU seconds per second while nobody asks it anything."""
    before, began = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - began)


# -- the polls ------------------------------------------------------------------------------------


@dataclass
class PollCost:
    seconds: float
    requests: int
    emqx_cpu_ms: float


async def measure(broker: Broker, pid: int, idle: float, polls: int,
                  settings: dict[str, Any]) -> list[PollCost]:
    """`polls` polls of an exporter with `settings` (after one warm-up poll)."""
    config = broker.exporter_config(retries=0, timeout=120, **settings)
    exporter = Exporter(load_settings(config, {}, None))
    poller = exporter.pollers[0]
    counted = [0]
    inner: Callable[[str, str, float], None] | None = poller.client.observer

    def observe(endpoint: str, outcome: str, seconds: float) -> None:
        counted[0] += 1
        if inner is not None:
            inner(endpoint, outcome, seconds)

    poller.client.observer = observe
    out = []
    try:
        await exporter.poll_all_once()  # warm-up: detection, login, connections
        for _ in range(polls):
            counted[0] = 0
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            reports = await exporter.poll_all_once()
            wall = time.monotonic() - t0
            cpu = cpu_seconds(pid) - cpu0 - idle * wall
            failed = [o for r in reports for o in r.outcomes if o.error is not None]
            if failed:
                raise RuntimeError(f"poll failed: {failed[0].error}")
            out.append(PollCost(wall, counted[0], max(0.0, cpu) * 1000))
    finally:
        await exporter.stop()
    return out


def modes(broker: Broker, ids: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(name, exporter settings) for each mode measured."""
    batched = broker.api == "v5" and tuple(int(x) for x in broker.version.split(".")[:2]) >= (
        5, 6)
    out: list[tuple[str, dict[str, Any]]] = [("full walk", {})]
    for n in (100, 1000):
        def watch(mode: str, n: int = n) -> dict[str, Any]:
            return {"per_client": {"watch": ids[:n], "watch_only": True, "lookup": mode}}
        if batched:
            out.append((f"watch {n}: batched clientid=", watch("batched")))
        out.append((f"watch {n}: GET /clients/{{id}} each", watch("single")))
    return out


async def bench_one(broker: Broker, clients: int, polls: int) -> list[tuple[str, list[PollCost]]]:
    async with Fleet(broker.mqtt_host, broker.mqtt_port, "bench-", clients) as fleet:
        deadline = time.monotonic() + 120
        while await asyncio.to_thread(_listed, broker) < clients:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{clients} connections not shown in /nodes within 120 s")
            await asyncio.sleep(0.5)
        pid = beam_pid(broker)
        results = []
        for name, settings in modes(broker, fleet.clientids):
            idle = await idle_rate(pid)
            costs = await measure(broker, pid, idle, polls, settings)
            results.append((name, costs))
            print(f"  {name:36} idle {idle * 1000:6.1f} ms/s  " + _summary(costs), flush=True)
        return results


def _listed(broker: Broker) -> int:
    status, body = broker.request("GET", "/nodes")
    if status != 200:
        return 0
    nodes = body if broker.api == "v5" else body.get("data", [])
    return sum(int(n.get("live_connections", n.get("connections", 0)) or 0) for n in nodes)


def _summary(costs: list[PollCost]) -> str:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    return (f"poll {med([c.seconds for c in costs]):6.3f} s  "
            f"requests {med([c.requests for c in costs]):6.0f}  "
            f"EMQX CPU {med([c.emqx_cpu_ms for c in costs]):8.1f} ms/poll "
            f"(min {min(c.emqx_cpu_ms for c in costs):.1f}, "
            f"max {max(c.emqx_cpu_ms for c in costs):.1f})")


def start(pool: BrokerPool, root: Path, kind: str, instance: int | None) -> Broker | None:
    """The broker of `kind`: the pool's (EMQX_TEST_SLOT), or one as EMQX_INSTANCE `instance`."""
    if instance is None:
        pool.start_many([kind])
        if kind in pool.failed:
            print(f"{kind}: not measured: {pool.failed[kind]}", file=sys.stderr)
            return None
        return pool.started[kind]
    env = {**KINDS[kind], "EMQX_INSTANCE": str(instance)}
    broker = pool._start(kind, env, root / kind, env.get("EMQX_DURABLE") == "1")
    pool.started[f"{kind}@{instance}"] = broker  # stopped with the pool
    return broker


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kinds", nargs="*", default=["5.8.9", "4.4.19"])
    parser.add_argument("--clients", type=int, default=3000)
    parser.add_argument("--polls", type=int, default=5)
    parser.add_argument("--instance", type=int, default=None,
                        help="start brokers as this EMQX_INSTANCE instead of EMQX_TEST_SLOT's")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="emqx-cost-") as root:
        pool = BrokerPool(Path(root))
        try:
            for kind in args.kinds:
                broker = start(pool, Path(root), kind, args.instance)
                if broker is None:
                    continue
                print(f"EMQX {broker.version} ({broker.api}), {args.clients} MQTT connections, "
                      f"{args.polls} polls per mode (median, min, max):", flush=True)
                asyncio.run(bench_one(broker, args.clients, args.polls))
                broker.stop()
        finally:
            pool.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
