"""DESIGN.md §4, first case: 100k clients on 3 nodes (v5), every client exported with the
default per-client parts. Prints the floor (the same pages downloaded with aiohttp and decoded
with orjson) beside one full exporter poll + render, and their ratio, for each of `--rounds`
rounds in a row in one run, with the spread.

    python -m bench.poll_vs_floor [--clients 100000] [--version 5.8.9] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from bench.common import (
    floor,
    floor_concurrency,
    peak_rss_mib,
    ratio_line,
    ratios,
    recording,
    save_result,
    simulator,
)
from exporter.config import load_settings
from exporter.logs import configure_logging
from exporter.service import Exporter
from exporter.snapshot import compose


async def measure(url: str, rounds: int, version: str) -> dict[str, object]:
    # Every client exported: the cap is lifted for this case.
    settings = load_settings({"emqx_url": url, "api_key": "exporter", "api_secret": "secret",
                              "timeout": 120, "per_client": {"max_series": 100_000_000}},
                             {}, None)
    exporter = Exporter(settings)
    poller = exporter.pollers[0]
    with recording(poller) as fetches:
        await exporter.poll_all_once()  # warm-up: detection, and the simulator caches its pages
    pages = [f for f in fetches if "/clients" in f.url]

    floors: list[float] = []
    polls: list[float] = []
    rows = series = 0
    for _ in range(rounds):
        seconds, rows = await floor(pages, floor_concurrency(poller))
        floors.append(seconds)
        # Poll + render: everything up to the composed snapshot. Compressing it for scrapers
        # happens after, before it is swapped in, and is reported on its own.
        began = time.perf_counter()
        report = await poller.poll_once()
        snapshot = compose([poller.rendered], time.time())
        polls.append(time.perf_counter() - began)
        assert report.ok, report.error
        series = snapshot.series
    began = time.perf_counter()
    snapshot.gzipped("openmetrics")
    gzip_seconds = time.perf_counter() - began
    await exporter.stop()
    floor_s, poll_s = statistics.median(floors), statistics.median(polls)
    return {
        "version": version,
        "dialect": report.dialect, "pages": len(pages), "rows": rows,
        "clients": report.clients, "series": series, "floor_s": round(floor_s, 3),
        "poll_render_s": round(poll_s, 3), "ratio": round(poll_s / floor_s, 2),
        "gzip_once_s": round(gzip_seconds, 3), "peak_rss_mib": round(peak_rss_mib()),
        **ratios(floors, polls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--version", default="5.8.9")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging("warning")
    with simulator(args.clients, args.nodes, args.version) as url:
        result = asyncio.run(measure(url, args.rounds, args.version))
    print(f"{'case':<44}{'seconds':>10}")
    print(f"{'floor: aiohttp download + orjson decode':<44}{result['floor_s']:>10}")
    print(f"{'exporter: one poll + render':<44}{result['poll_render_s']:>10}")
    print(ratio_line(result, 1.3))
    print(f"median ratio {result['ratio']}; {result['clients']} clients, "
          f"{result['series']} series, {result['pages']} pages, dialect {result['dialect']}; "
          f"gzip of the snapshot once {result['gzip_once_s']} s; peak RSS "
          f"{result['peak_rss_mib']} MiB")
    save_result("poll_vs_floor", result)


if __name__ == "__main__":
    main()
