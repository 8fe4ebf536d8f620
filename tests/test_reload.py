"""Reloading the main configuration: POST /-/reload in process, SIGHUP on the real daemon.

A good file is applied (only changed clusters get new pollers; the served snapshot stays), a
bad one is refused with the key named, the running configuration goes on, and
`emqx_client_exporter_config_last_reload_successful` says which happened.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from emqx_simulator import ManualClock, SimCluster, SimSettings, build_sim_app
from exporter.config import load_settings
from exporter.reload import ConfigReloader
from exporter.server import build_app
from exporter.service import Exporter
from tests.exposition import Sample, samples_text
from tests.harness import rig, value
from tests.ports import free_port
from tests.prometheus_server import running, tail, wait_http_ok
from tests.test_prometheus_e2e import serve_simulator
from tests.test_rules import ROOT

RELOAD_OK = "emqx_client_exporter_config_last_reload_successful"
RELOAD_AT = "emqx_client_exporter_config_last_reload_success_timestamp_seconds"
INTERVAL = "emqx_client_exporter_poll_interval_seconds"


def config(sim_url: str, sim: SimSettings, *, b_interval: float = 30, with_b: bool = True,
           **extra: Any) -> dict[str, Any]:
    clusters: list[dict[str, Any]] = [{"name": "a", "emqx_url": sim_url}]
    if with_b:
        clusters.append({"name": "b", "emqx_url": sim_url, "interval": b_interval})
    return {"api_key": sim.api_key, "api_secret": sim.api_secret, "retries": 0,
            "reload_endpoint": True, "clusters": clusters, **extra}


@dataclass
class Reloadable:
    path: Path
    sim_url: str
    sim: SimSettings
    exporter: Exporter
    client: TestClient[web.Request, web.Application]

    def write(self, data: dict[str, Any]) -> None:
        self.path.write_text(yaml.safe_dump(data))

    async def reload(self) -> tuple[int, str]:
        response = await self.client.post("/-/reload")
        return response.status, await response.text()

    async def scrape(self) -> list[Sample]:
        response = await self.client.get("/metrics")
        assert response.status == 200
        return samples_text(await response.text())


@asynccontextmanager
async def reloadable(tmp_path: Path) -> AsyncIterator[Reloadable]:
    sim = SimSettings(clients=50)
    clock = ManualClock()
    sim_server = TestServer(build_sim_app(SimCluster(sim, clock)), host="127.0.0.1")
    await sim_server.start_server()
    sim_url = str(sim_server.make_url("/")).rstrip("/")
    path = tmp_path / "exporter.yml"
    path.write_text(yaml.safe_dump(config(sim_url, sim)))
    exporter = Exporter(load_settings({}, {}, str(path)), clock=clock)
    reloader = ConfigReloader(exporter, lambda: load_settings({}, {}, str(path)))
    client: TestClient[web.Request, web.Application] = TestClient(
        TestServer(build_app(exporter, poll=False, reloader=reloader), host="127.0.0.1"))
    await client.start_server()
    try:
        yield Reloadable(path, sim_url, sim, exporter, client)
    finally:
        await client.close()
        await exporter.stop()
        await sim_server.close()


def clusters_with(samples: list[Sample], name: str) -> set[str]:
    return {dict(labels)["cluster"] for n, labels, _ in samples if n == name}


async def test_post_reload_applies_a_good_file_and_refuses_a_bad_one(tmp_path: Path) -> None:
    async with reloadable(tmp_path) as r:
        await r.exporter.poll_all_once()
        a, b = r.exporter.pollers
        before = await r.scrape()
        assert clusters_with(before, "emqx_clients_online") == {"a", "b"}
        assert value(before, RELOAD_OK) == 1

        r.write(config(r.sim_url, r.sim, b_interval=5))  # only cluster b changes
        assert await r.reload() == (200, "configuration reloaded\n")
        assert r.exporter.pollers[0] is a and r.exporter.pollers[1] is not b
        after = await r.scrape()
        assert value(after, INTERVAL, cluster="b") == 5
        assert value(after, INTERVAL, cluster="a") == 30
        # b's new poller has not polled yet: the last data of b is still served.
        assert clusters_with(after, "emqx_clients_online") == {"a", "b"}
        b_online = value(before, "emqx_clients_online", cluster="b", node="emqx@10.0.0.1")
        assert b_online is not None and b_online > 0
        assert value(after, "emqx_clients_online", cluster="b", node="emqx@10.0.0.1") == b_online
        assert value(after, RELOAD_OK) == 1

        for bad, key in ((config(r.sim_url, r.sim, b_interval=-1), "clusters[1].interval"),
                         ({**config(r.sim_url, r.sim), "colour": "red"}, "colour"),
                         (config(r.sim_url, r.sim, listen="127.0.0.1:1"), "listen")):
            r.write(bad)
            status, text = await r.reload()
            assert status == 500 and f"{key}: " in text, text
            refused = await r.scrape()
            assert value(refused, RELOAD_OK) == 0
            assert value(refused, INTERVAL, cluster="b") == 5  # the running config goes on
            assert clusters_with(refused, "emqx_clients_online") == {"a", "b"}

        r.write(config(r.sim_url, r.sim, with_b=False))  # cluster b removed
        assert (await r.reload())[0] == 200
        assert r.exporter.pollers == [a]
        removed = await r.scrape()
        assert clusters_with(removed, "emqx_clients_online") == {"a"}
        assert value(removed, RELOAD_OK) == 1

        r.write({**config(r.sim_url, r.sim, with_b=False), "reload_endpoint": False})
        assert (await r.reload())[0] == 200
        assert (await r.reload())[0] == 403  # switched off by the file it just loaded


async def scrape_url(session: aiohttp.ClientSession, url: str) -> list[Sample]:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
        assert response.status == 200
        return samples_text(await response.text())


async def wait_for(session: aiohttp.ClientSession, url: str, name: str, expected: float,
                   deadline: float, log: Path, **labels: str) -> list[Sample]:
    """Scrape until `name` has the expected value; fail with the daemon's log at the deadline."""
    while True:
        samples = await scrape_url(session, url)
        if value(samples, name, **labels) == expected:
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} never became {expected}:\n{tail(log)}")
        await asyncio.sleep(0.1)


async def test_sighup_reloads_the_daemon_and_survives_a_bad_file(tmp_path: Path) -> None:
    sim = SimSettings(clients=50)
    cluster = SimCluster(sim)
    deadline = time.monotonic() + 30
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMQX_")}
    async with AsyncExitStack() as stack:
        sim_url = await stack.enter_async_context(serve_simulator(cluster))
        port = free_port()
        path = tmp_path / "exporter.yml"
        base = {"emqx_url": sim_url, "api_key": sim.api_key, "api_secret": sim.api_secret,
                "listen": f"127.0.0.1:{port}", "interval": 1}
        path.write_text(yaml.safe_dump(base))
        log = tmp_path / "exporter.log"
        daemon = await stack.enter_async_context(running(
            [sys.executable, "-m", "exporter", "run", "--config", str(path)], log, cwd=ROOT,
            env=env))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        url = f"http://127.0.0.1:{port}"
        await wait_http_ok(session, f"{url}/-/ready", deadline, daemon, log)
        first = await scrape_url(session, f"{url}/metrics")
        assert value(first, RELOAD_OK) == 1 and value(first, INTERVAL) == 1

        path.write_text(yaml.safe_dump({**base, "interval": 2}))
        daemon.send_signal(signal.SIGHUP)
        good = await wait_for(session, f"{url}/metrics", INTERVAL, 2, deadline, log)
        assert value(good, RELOAD_OK) == 1
        assert (value(good, RELOAD_AT) or 0) >= (value(first, RELOAD_AT) or 0)

        path.write_text(yaml.safe_dump({**base, "interval": "soon"}))
        daemon.send_signal(signal.SIGHUP)
        bad = await wait_for(session, f"{url}/metrics", RELOAD_OK, 0, deadline, log)
        assert value(bad, INTERVAL) == 2  # the running configuration goes on
        assert value(bad, "emqx_client_exporter_up") == 1
        assert value(bad, "emqx_clients_online", node="emqx@10.0.0.1") is not None
        assert "config_reload_failed" in log.read_text() and "interval" in log.read_text()
        assert (await session.post(f"{url}/-/reload")).status == 403  # off by default
    assert daemon.returncode == 0, tail(log)


async def test_a_reload_retries_a_rejected_credential_at_once() -> None:
    """After a 401 the login waits 1 to 30 minutes; once the credential is fixed, a reload
    (SIGHUP or POST /-/reload) tries it at once, even when the file did not change."""
    async with rig(SimSettings(clients=20), interval=600) as r:
        reloader = ConfigReloader(r.exporter, lambda: r.exporter.settings)
        stats = r.exporter.pollers[0].stats
        r.cluster.faults.add("unauthorized")
        r.exporter.start()
        await until(lambda: stats.polled)
        assert not stats.up and stats.api_errors["unauthorized"] == 1
        r.cluster.faults.clear()  # fixed on EMQX's side: the same key works again
        assert await reloader.reload() is None
        await until(lambda: stats.up)
        assert r.exporter.pollers[0].stats is stats  # the same poller, not a new one
        assert stats.api_errors["unauthorized"] == 1


async def until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
