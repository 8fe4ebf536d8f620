"""DESIGN.md §4, third case: scrapes are served from the cached snapshot, never re-rendered,
while polls keep running. A separate scraper process asks like Prometheus does (OpenMetrics,
gzip) with several scrapers at once, then sends one burst of many scrapes at once; it reports
latency percentiles and errors.

    python -m bench.scrape_latency                      # 1M clients, aggregates + top-K
    python -m bench.scrape_latency --case series        # 70k clients, every series (~1M)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
from typing import Any

from aiohttp import web

from bench.common import save_result, simulator
from bench.million import CONFIG as MILLION_CONFIG
from exporter.config import load_settings
from exporter.logs import configure_logging
from exporter.server import build_app
from exporter.service import Exporter
from tests.ports import free_port

#: The two cases: (clients, config beside the credentials).
CASES: dict[str, tuple[int, dict[str, Any]]] = {
    "million": (1_000_000, MILLION_CONFIG),
    "series": (70_000, {"timeout": 120, "per_client": {"max_series": 100_000_000}}),
}

SCRAPER = r"""
import asyncio, json, sys, time, aiohttp
HEADERS = {"Accept": "application/openmetrics-text;version=1.0.0,"
                     "text/plain;version=0.0.4;q=0.5", "Accept-Encoding": "gzip"}
async def scrape(session, url):
    began = time.perf_counter()
    try:
        async with session.get(url, headers=HEADERS) as answer:
            body = await answer.read()
            ok = answer.status == 200
    except aiohttp.ClientError:
        body, ok = b"", False
    return time.perf_counter() - began, ok, len(body)
async def main(url, scrapers, seconds, burst):
    latencies, errors, size = [], 0, 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(auto_decompress=False, connector=connector) as session:
        deadline = time.perf_counter() + seconds
        async def one_scraper():
            nonlocal errors, size
            while time.perf_counter() < deadline:
                latency, ok, size = await scrape(session, url)
                latencies.append(latency)
                errors += not ok
                await asyncio.sleep(0.05)
        await asyncio.gather(*(one_scraper() for _ in range(scrapers)))
        results = await asyncio.gather(*(scrape(session, url) for _ in range(burst)))
    print(json.dumps({"latencies": latencies, "errors": errors, "bytes": size,
                      "burst_errors": sum(not ok for _, ok, _ in results),
                      "burst_max": max(latency for latency, _, _ in results)}))
asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])))
"""


async def measure(url: str, config: dict[str, Any], scrapers: int, seconds: float,
                  burst: int) -> dict[str, object]:
    settings = load_settings({"emqx_url": url, "api_key": "exporter", "api_secret": "secret",
                              **config}, {}, None)
    exporter = Exporter(settings)
    await exporter.poll_all_once()  # the baseline, and the simulator caches its pages
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
        sys.executable, "-c", SCRAPER, f"http://127.0.0.1:{port}/metrics", str(scrapers),
        str(seconds), str(burst), stdout=subprocess.PIPE)
    out, _ = await process.communicate()
    stop.set()
    await poller
    series = exporter.snapshot.series
    await runner.cleanup()
    await exporter.stop()
    data = json.loads(out)
    latencies = sorted(data["latencies"])
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    return {"series": series, "scrapers": scrapers, "scrapes": len(latencies),
            "errors": data["errors"], "polls_during": polls, "gzip_bytes": data["bytes"],
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(p99 * 1000, 1), "max_ms": round(latencies[-1] * 1000, 1),
            "burst": burst, "burst_errors": data["burst_errors"],
            "burst_max_ms": round(data["burst_max"] * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), default="million")
    parser.add_argument("--clients", type=int, help="instead of the case's client count")
    parser.add_argument("--scrapers", type=int, default=10, help="scraping at once")
    parser.add_argument("--seconds", type=float, default=60.0, help="of steady scraping")
    parser.add_argument("--burst", type=int, default=100, help="scrapes sent at once after")
    args = parser.parse_args()
    configure_logging("warning")
    clients, config = CASES[args.case]
    with simulator(args.clients or clients, 3, "5.8.9", cache_mb=4096) as url:
        result = asyncio.run(measure(url, config, args.scrapers, args.seconds, args.burst))
    print(f"{args.case}: {result['series']} series; {result['scrapers']} scrapers made "
          f"{result['scrapes']} scrapes while {result['polls_during']} polls ran: "
          f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms (target <= 250), "
          f"max {result['max_ms']} ms, {result['errors']} errors; then {result['burst']} at "
          f"once: {result['burst_errors']} errors (target 0), slowest "
          f"{result['burst_max_ms']} ms; {result['gzip_bytes']} bytes gzipped")
    save_result(f"scrape_latency_{args.case}", result)


if __name__ == "__main__":
    main()
