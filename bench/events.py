"""The client events path: events per second handled on one core, and scrapes meanwhile.

A publisher in its own process (the simulator's MQTT server) sends EMQX-shaped client events
(`connected`, and `disconnected` with a mix of reasons, 5.x payloads as recorded) to the exporter
in this process, which subscribes as configured by `events:` and serves /metrics. A scraper in a
third process scrapes like Prometheus (OpenMetrics, gzip) all along. Three phases:

1. quiet: no events, the scrape latency baseline;
2. steady: events offered at --rate per second (default 2,000), for --seconds;
3. flood: events as fast as the publisher can send, to see the capacity of the exporter's core.

It prints, per phase, events handled per second, the exporter process's CPU seconds per second
(1.0 is one core busy) and the scrape latency percentiles.

    python -m bench.events                 # 2,000/s for 20 s, then a 10 s flood
    python -m bench.events --rate 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from aiohttp import web

from bench.scrape_latency import SCRAPER
from exporter.config import load_settings
from exporter.logs import configure_logging
from exporter.server import build_app
from exporter.service import Exporter
from tests.ports import free_port

#: The scraper of bench.scrape_latency, scraping every SCRAPE_EVERY_S seconds (Prometheus
#: scrapes every 15-30 s; once a second gives enough samples of the latency).
SCRAPE_EVERY_S = 0.5
SCRAPE_ON_INTERVAL = SCRAPER.replace("await asyncio.sleep(0.05)",
                                     f"await asyncio.sleep({SCRAPE_EVERY_S})")
assert SCRAPE_ON_INTERVAL != SCRAPER
REASONS = ("keepalive_timeout", "tcp_closed", "normal", "kicked", "discarded", "takenover",
           "sock_closed", "some_future_reason")
CLASSES = ("sensor", "gateway", "meter", "app")

PUBLISHER = f"REASONS = {REASONS!r}\nCLASSES = {CLASSES!r}\n" + r"""
import asyncio, json, sys, time
from emqx_simulator.mqtt import MqttServer
async def main(port, control):
    server = MqttServer()
    await server.start("127.0.0.1", port)
    print("listening", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    sent = 0
    while True:
        line = (await reader.readline()).decode().split()
        if not line or line[0] == "stop":
            break
        rate, seconds = float(line[0]), float(line[1])  # rate 0: as fast as possible
        began = time.monotonic()
        count = 0
        while (now := time.monotonic()) - began < seconds:
            due = int((now - began) * rate) if rate else count + 500
            while count < due:
                i = sent + count
                cls = CLASSES[i % len(CLASSES)]
                cid = f"{cls}-{i % 100000:07d}"
                ts = int(time.time() * 1000)
                if i % 2:
                    kind, body = "disconnected", {"username": "undefined", "ts": ts,
                        "sockport": 1883, "protocol": "mqtt", "proto_ver": 5,
                        "proto_name": "MQTT", "reason": REASONS[i % len(REASONS)],
                        "ipaddress": "10.1.2.3", "disconnected_at": ts,
                        "connected_at": ts - 60000, "clientid": cid}
                else:
                    kind, body = "connected", {"username": "undefined", "ts": ts,
                        "sockport": 1883, "protocol": "mqtt", "proto_ver": 5,
                        "proto_name": "MQTT", "keepalive": 60, "ipaddress": "10.1.2.3",
                        "expiry_interval": 0, "connected_at": ts, "clientid": cid,
                        "clean_start": True}
                server.publish(f"$SYS/brokers/emqx@10.0.0.{i % 3 + 1}/clients/{cid}/{kind}",
                               json.dumps(body).encode())
                count += 1
            await asyncio.sleep(0.005)
        sent += count
        print(json.dumps({"sent": count, "dropped": server.dropped}), flush=True)
    await server.stop()
asyncio.run(main(int(sys.argv[1]), None))
"""


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    if not ordered:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    return {"p50_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            "max_ms": 1000 * ordered[-1]}


def count_only(exporter: Exporter, n: int = 200_000) -> dict[str, Any]:
    """The decode-and-count step alone, on EMQX-shaped messages: events per CPU second."""
    counter = next(iter(exporter.events.subscriptions.values())).events.counter
    messages = []
    for i in range(1000):
        cid = f"{CLASSES[i % len(CLASSES)]}-{i:07d}"
        body = {"username": "undefined", "ts": 1, "sockport": 1883, "protocol": "mqtt",
                "proto_ver": 5, "proto_name": "MQTT", "reason": REASONS[i % len(REASONS)],
                "ipaddress": "10.1.2.3", "disconnected_at": 2, "connected_at": 1,
                "clientid": cid}
        messages.append((f"$SYS/brokers/emqx@10.0.0.{i % 3 + 1}/clients/{cid}/disconnected",
                         json.dumps(body).encode()))
    began = time.process_time()
    for i in range(n):
        counter.handle(*messages[i % 1000])
    spent = time.process_time() - began
    return {"phase": "count only (decode, classify, count)", "events": n,
            "events_per_cpu_second": round(n / spent)}


async def phase(name: str, exporter: Exporter, publisher: subprocess.Popen[bytes] | None,
                rate: float, seconds: float, metrics_url: str,
                scrape: bool = True) -> dict[str, Any]:
    counter = next(iter(exporter.events.subscriptions.values())).events.counter
    scraper = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SCRAPE_ON_INTERVAL, metrics_url, "2" if scrape else "0",
        str(seconds), "1",
        stdout=asyncio.subprocess.PIPE)
    before_msgs, before_cpu, began = counter.messages, cpu_seconds(), time.monotonic()
    sent = 0
    if publisher is not None:
        assert publisher.stdin is not None and publisher.stdout is not None
        publisher.stdin.write(f"{rate} {seconds}\n".encode())
        publisher.stdin.flush()
        line = await asyncio.to_thread(publisher.stdout.readline)
        sent = json.loads(line)["sent"]
    dropped = json.loads(line)["dropped"] if publisher is not None else 0
    # the last events in flight arrive (bounded): `caught_up_s` is how long after the
    # publisher's last event the count was complete (the lag behind EMQX)
    sent_done = time.monotonic()
    deadline = sent_done + 10
    while counter.messages - before_msgs < sent and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)  # a plain counter, bounded: no event to wait on
    caught_up = time.monotonic()
    handled = counter.messages - before_msgs
    cpu = cpu_seconds() - before_cpu
    out, _ = await scraper.communicate()
    elapsed = time.monotonic() - began
    if publisher is None:  # a phase without events: the whole phase is the window
        cpu, caught_up = cpu_seconds() - before_cpu, time.monotonic()
    scrapes = json.loads(out)
    return {"phase": name, "offered_per_s": rate if rate else "max", "sent": sent,
            "dropped_by_the_publisher_so_far": dropped, "handled": handled,
            "handled_per_s": round(handled / (caught_up - began)),
            "caught_up_s": round(caught_up - sent_done, 2),
            "exporter_cpu_per_s": round(cpu / (caught_up - began), 3),
            "events_per_cpu_second": round(handled / max(1e-9, cpu)) if handled else 0,
            "phase_s": round(elapsed, 1),
            "scrapes": len(scrapes["latencies"]), "scrape_errors": scrapes["errors"],
            **{k: round(v, 2) for k, v in percentiles(scrapes["latencies"]).items()}}


async def run(publisher: subprocess.Popen[bytes], mqtt_port: int, rate: float, seconds: float,
              flood_seconds: float) -> list[dict[str, Any]]:
    try:
        assert publisher.stdout is not None
        assert publisher.stdout.readline().strip() == b"listening"
        settings = load_settings({
            # Polling is not part of this measurement: an address nobody answers, never polled.
            "emqx_url": "http://127.0.0.1:9", "api_key": "k", "api_secret": "s",
            "classes": [{"name": c, "clientid": f"{c}-.*"} for c in CLASSES],
            "per_client": {"watch": [f"sensor-{i:07d}" for i in range(0, 400, 4)]},
            "events": {"host": "127.0.0.1", "port": mqtt_port, "clientid": "bench"},
            "log_level": "warning"}, {}, None)
        configure_logging(settings.log_level, settings.log_format)
        exporter = Exporter(settings)
        runner = web.AppRunner(build_app(exporter, poll=False), access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        exporter.events.start()
        state = next(iter(exporter.events.subscriptions.values())).events.state
        deadline = time.monotonic() + 10
        while not state.up:
            assert time.monotonic() < deadline, "the subscription did not come up"
            await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{port}/metrics"
        results = [await phase("quiet: scrapes, no events", exporter, None, 0, 5, url),
                   await phase("steady: scrapes while events arrive", exporter, publisher,
                               rate, seconds, url),
                   await phase("after: scrapes of the same series, no events", exporter, None,
                               0, 5, url),
                   await phase("flood: events only, as fast as they come", exporter,
                               publisher, 0, flood_seconds, url, scrape=False),
                   count_only(exporter)]
        await exporter.events.stop()
        await runner.cleanup()
        return results
    finally:
        if publisher.stdin is not None:
            publisher.stdin.write(b"stop\n")
            publisher.stdin.close()
        publisher.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s offered")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the steady phase")
    parser.add_argument("--flood-seconds", type=float, default=10.0)
    args = parser.parse_args()
    mqtt_port = free_port()
    publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(mqtt_port)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    for result in asyncio.run(run(publisher, mqtt_port, args.rate, args.seconds,
                                  args.flood_seconds)):
        print(json.dumps(result))


if __name__ == "__main__":
    main()
