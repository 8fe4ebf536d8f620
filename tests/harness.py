"""A simulated cluster and an exporter wired together on loopback, for integration tests."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from emqx_simulator import ManualClock, SimCluster, SimSettings, build_sim_app
from exporter.api import ApiClient, BasicAuth, RetryPolicy
from exporter.config import load_settings
from exporter.server import build_app
from exporter.service import Exporter
from tests.exposition import Sample, samples_openmetrics, samples_text


@dataclass
class Rig:
    cluster: SimCluster
    clock: ManualClock
    exporter: Exporter
    client: TestClient[web.Request, web.Application]
    sim_url: str

    async def poll(self) -> None:
        await self.exporter.poll_all_once()

    async def scrape(self, openmetrics: bool = False) -> list[Sample]:
        headers = {"Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {}
        response = await self.client.get("/metrics", headers=headers)
        assert response.status == 200
        text = await response.text()
        return samples_openmetrics(text) if openmetrics else samples_text(text)

    async def raw(self, headers: Mapping[str, str]) -> tuple[dict[str, str], bytes]:
        response = await self.client.get("/metrics", headers=headers, auto_decompress=False)
        body = await response.read()
        if response.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return dict(response.headers), body


@asynccontextmanager
async def rig(sim: SimSettings | None = None, **config: Any) -> AsyncIterator[Rig]:
    """Simulator and exporter on free loopback ports; polls happen only when the test asks."""
    clock = ManualClock()
    cluster = SimCluster(sim or SimSettings(), clock)
    sim_server = TestServer(build_sim_app(cluster), host="127.0.0.1")
    await sim_server.start_server()
    sim_url = str(sim_server.make_url("/")).rstrip("/")
    flags: dict[str, Any] = {"emqx_url": sim_url, "api_key": cluster.settings.api_key,
                             "api_secret": cluster.settings.api_secret, "retries": 0,
                             "per_client": {"max_series": 10_000_000}}
    flags.update(config)
    settings = load_settings(flags, {}, None)
    exporter = Exporter(settings, clock=clock)
    client: TestClient[web.Request, web.Application] = TestClient(
        TestServer(build_app(exporter, poll=False), host="127.0.0.1"))
    await client.start_server()
    try:
        yield Rig(cluster, clock, exporter, client, sim_url)
    finally:
        await client.close()
        await exporter.stop()
        await sim_server.close()


def per_client(samples: list[Sample], name: str) -> dict[str, float]:
    """clientid → value of a per-client family without extra labels."""
    out: dict[str, float] = {}
    for n, labels, value in samples:
        if n == name:
            clientid = dict(labels)["clientid"]
            assert clientid not in out, f"{name}: {clientid} exported twice"
            out[clientid] = value
    return out


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    want = tuple(sorted(labels.items()))
    for n, got, v in samples:
        if n == name and all(item in got for item in want):
            return v
    return None


@asynccontextmanager
async def sim_api(sim: SimSettings) -> AsyncIterator[tuple[SimCluster, ApiClient]]:
    """A simulated cluster on a free loopback port and a request funnel to it, no exporter:
    for tests of one stage (a walk, a lookup, a discovery)."""
    cluster = SimCluster(sim, ManualClock())
    server = TestServer(build_sim_app(cluster), host="127.0.0.1")
    await server.start_server()
    client = ApiClient(str(server.make_url("/")), BasicAuth(sim.api_key, sim.api_secret),
                       retry=RetryPolicy(retries=0))
    try:
        yield cluster, client
    finally:
        await client.close()
        await server.close()
