"""DESIGN.md §4, third case: scrapes of a ~1M-series snapshot are served from cache, with no
re-render, while polls keep running. A separate scraper process asks like Prometheus does
(OpenMetrics, gzip) and reports latency percentiles.

    python -m bench.scrape_latency [--clients 70000] [--scrapes 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys

from aiohttp import web

from bench.common import save_result, simulator
from exporter.config import load_settings
from exporter.logs import configure_logging
from exporter.server import build_app
from exporter.service import Exporter
from tests.ports import free_port

SCRAPER = r"""
import asyncio, json, sys, time, aiohttp
async def main(url, count):
    headers = {"Accept": "application/openmetrics-text;version=1.0.0,"
                         "text/plain;version=0.0.4;q=0.5", "Accept-Encoding": "gzip"}
    latencies = []
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for _ in range(count):
            began = time.perf_counter()
            async with session.get(url, headers=headers) as answer:
                body = await answer.read()
            latencies.append(time.perf_counter() - began)
            await asyncio.sleep(0.05)
    print(json.dumps({"latencies": latencies, "bytes": len(body)}))
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def measure(url: str, scrapes: int) -> dict[str, object]:
    settings = load_settings({"emqx_url": url, "api_key": "exporter", "api_secret": "secret",
                              "timeout": 120, "per_client": {"max_series": 100_000_000}},
                             {}, None)
    exporter = Exporter(settings)
    await exporter.poll_all_once()
    runner = web.AppRunner(build_app(exporter, poll=False), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    polls = 0
    stop = asyncio.Event()

    async def keep_polling() -> None:
        nonlocal polls
        while not stop.is_set():
            await exporter.poll_all_once()
            polls += 1

    poller = asyncio.create_task(keep_polling())
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SCRAPER, f"http://127.0.0.1:{port}/metrics", str(scrapes),
        stdout=subprocess.PIPE)
    out, _ = await process.communicate()
    stop.set()
    await poller
    series = exporter.snapshot.series
    await runner.cleanup()
    await exporter.stop()
    data = json.loads(out)
    latencies = sorted(data["latencies"])
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    return {"series": series, "scrapes": len(latencies), "polls_during": polls,
            "gzip_bytes": data["bytes"],
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(p99 * 1000, 1), "max_ms": round(latencies[-1] * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=70_000)
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    configure_logging("warning")
    with simulator(args.clients, 3, "5.8.9") as url:
        result = asyncio.run(measure(url, args.scrapes))
    print(f"{result['series']} series, {result['scrapes']} scrapes while {result['polls_during']} "
          f"polls ran: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms (target <= 250), "
          f"max {result['max_ms']} ms; {result['gzip_bytes']} bytes gzipped")
    save_result("scrape_latency", result)


if __name__ == "__main__":
    main()
