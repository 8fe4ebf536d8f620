"""What sharding costs EMQX per listing: N replicas against one simulated 3-node cluster.

    python -m bench.shard_listing [--clients 9000 90000 300000] [--page-size ...]

For each cluster size, one poll of every replica with the cluster-wide cursor (each keeps its
own nodes' rows) and with per-node page listing; prints requests, rows EMQX scans (the
simulator's cost model, `SimCluster.rows_scanned`) and rows it returns. README "Sharding".
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp.test_utils import TestServer

from bench.common import save_result
from emqx_simulator import ManualClock, SimCluster, SimSettings, build_sim_app
from exporter.config import load_settings
from exporter.logs import configure_logging
from exporter.service import Exporter


@asynccontextmanager
async def replicas(sim: SimSettings, count: int, **config: Any) -> AsyncIterator[
        tuple[SimCluster, list[Exporter]]]:
    """One simulated cluster on loopback and `count` exporters, replica i with `--shard i/count`."""
    clock = ManualClock()
    cluster = SimCluster(sim, clock)
    server = TestServer(build_sim_app(cluster), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("/")).rstrip("/")
    async with AsyncExitStack() as stack:
        stack.push_async_callback(server.close)
        exporters = []
        for index in range(count):
            flags: dict[str, Any] = {
                "emqx_url": url, "api_key": sim.api_key, "api_secret": sim.api_secret,
                "retries": 0, "shard": f"{index}/{count}",
                "per_client": {"max_series": 10_000_000}, **config}
            exporter = Exporter(load_settings(flags, {}, None), clock=clock)
            stack.push_async_callback(exporter.stop)
            exporters.append(exporter)
        yield cluster, exporters


@dataclass(frozen=True)
class ListingCost:
    requests: int
    rows_scanned: int
    rows_returned: int


async def listing_cost(listing: str, clients: int, page_size: int, count: int) -> ListingCost:
    """One poll of `count` replicas of a 3-node 5.8.9 cluster with `listing`."""
    # Not frozen: a frozen simulator serves repeated pages from its cache, uncounted.
    sim = SimSettings(version="5.8.9", nodes=3, clients=clients)
    async with replicas(sim, count, listing=listing, page_size=page_size) as (cluster, exporters):
        for exporter in exporters:
            await exporter.poll_all_once()
        requests = sum(n for route, n in cluster.requests.items() if "/clients" in route)
        return ListingCost(requests, cluster.rows_scanned, cluster.rows_returned)


async def measure(sizes: list[int], page_size: int, count: int) -> list[dict[str, Any]]:
    rows = []
    for clients in sizes:
        size = min(page_size, 500) if clients < 20_000 else page_size
        for listing in ("cursor", "page"):
            cost = await listing_cost(listing, clients, size, count)
            rows.append({"clients": clients, "page_size": size, "listing": listing,
                         **asdict(cost)})
            print(f"{clients:>9} clients, pages of {size:>6}, {listing:<6}: "
                  f"{cost.requests:>5} requests, {cost.rows_scanned:>10} rows scanned, "
                  f"{cost.rows_returned:>9} rows returned", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[9000, 90_000, 300_000])
    parser.add_argument("--page-size", type=int, default=10_000)
    parser.add_argument("--replicas", type=int, default=3)
    args = parser.parse_args()
    configure_logging("warning")
    rows = asyncio.run(measure(args.clients, args.page_size, args.replicas))
    save_result("shard_listing", {"replicas": args.replicas, "nodes": 3, "runs": rows})


if __name__ == "__main__":
    main()
