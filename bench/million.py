"""DESIGN.md §4, second case: 1M clients on 3 nodes (v5), aggregates by node and class plus
top-K 1000, no per-client export of everyone. Prints the floor beside a steady-state poll and
their ratio for each of `--rounds` rounds in a row, with the spread; the peak RSS of the
exporter; and the lasting counter state per client.

    python -m bench.million [--clients 1000000] [--version 5.8.9] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
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

CONFIG = {
    "timeout": 300,
    "classes": [{"name": "sensors", "clientid": "sensor-.*"},
                {"name": "gateways", "clientid": "gateway-.*"}],
    "aggregate": {"labels": ["node", "class"]},
    "per_client": {"top_k": {"mqueue_fill": 250, "inflight_fill": 250, "drop_rate": 250,
                             "byte_rate": 250},
                   "max_series": 20_000},
}


async def measure(url: str, version: str, rounds: int) -> dict[str, object]:
    settings = load_settings({"emqx_url": url, "api_key": "exporter", "api_secret": "secret",
                              **CONFIG}, {}, None)
    exporter = Exporter(settings)
    poller = exporter.pollers[0]
    with recording(poller) as fetches:
        began = time.perf_counter()
        (first,) = await exporter.poll_all_once()  # the baseline poll also fills the page cache
        first_s = time.perf_counter() - began
    assert first.ok, first.error
    pages = [f for f in fetches if "/clients" in f.url]
    floors: list[float] = []
    polls: list[float] = []
    for _ in range(rounds):
        floor_s, rows = await floor(pages, floor_concurrency(poller))
        floors.append(floor_s)
        began = time.perf_counter()
        report = await poller.poll_once()
        compose([poller.rendered], time.time())
        polls.append(time.perf_counter() - began)
        assert report.ok, report.error
    footprint = poller.pipeline.footprint()
    result = {
        "version": version,
        "dialect": report.dialect, "clients": report.clients, "rows": rows,
        "pages": len(pages), "first_poll_s": round(first_s, 2), **ratios(floors, polls),
        "series_per_client": poller.stats.series.get("per_client"),
        "series_aggregate": poller.stats.series.get("aggregate"),
        "series_dropped": poller.stats.series_dropped,
        "state_bytes_per_client": round(footprint.state_bytes / max(1, footprint.clients)),
        "peak_rss_mib": round(peak_rss_mib()),
    }
    await exporter.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--version", default="5.8.9")
    parser.add_argument("--rounds", type=int, default=3, help="floor and poll pairs in a row")
    args = parser.parse_args()
    configure_logging("warning")
    with simulator(args.clients, args.nodes, args.version, cache_mb=4096) as url:
        result = asyncio.run(measure(url, args.version, args.rounds))
    print("floor: aiohttp download + orjson decode; poll: a steady-state poll (aggregates "
          "+ top-K)")
    print(ratio_line(result, 1.0))
    print(f"{result['clients']} clients in {result['pages']} pages; peak RSS "
          f"{result['peak_rss_mib']} MiB (target <= 1024); counter state "
          f"{result['state_bytes_per_client']} B/client (target <= 400); per-client series "
          f"{result['series_per_client']} (cap 20000), aggregate series "
          f"{result['series_aggregate']}")
    save_result("million", result)


if __name__ == "__main__":
    main()
