"""The running exporter: pollers started and stopped cleanly, snapshots published, readiness.

Readiness (README): `/-/ready` is 503 until the first poll of every cluster has finished and one
has succeeded; after that it stays ready (a failing EMQX shows in `up`, not in readiness).
Clusters are simulated brokers on loopback; a cluster that is down is a closed port.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from emqx_simulator import ManualClock, SimCluster, SimSettings, build_sim_app
from exporter.config import load_settings
from exporter.service import Exporter
from tests.exposition import samples_text
from tests.harness import value
from tests.ports import free_port

SIM = SimSettings(clients=40, offline_sessions=0.0, churn=0.0)
DEADLINE = 20.0


@asynccontextmanager
async def simulated(sim: SimSettings = SIM) -> AsyncIterator[tuple[SimCluster, str]]:
    cluster = SimCluster(sim, ManualClock())
    server = TestServer(build_sim_app(cluster), host="127.0.0.1")
    await server.start_server()
    try:
        yield cluster, str(server.make_url("/")).rstrip("/")
    finally:
        await server.close()


@asynccontextmanager
async def exporter(clusters: list[dict[str, Any]], clock: ManualClock | None = None,
                   **extra: Any) -> AsyncIterator[Exporter]:
    flags: dict[str, Any] = {"api_key": SIM.api_key, "api_secret": SIM.api_secret, "retries": 0,
                             "timeout": 10, "clusters": clusters, **extra}
    service = Exporter(load_settings(flags, {}, None), clock=clock or ManualClock())
    try:
        yield service
    finally:
        await service.stop()


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for a condition of the running service, failing after a deadline."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE} s: {what}"
        await asyncio.sleep(0.01)


def poll_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("poll-")]


def clusters(text: str) -> set[str | None]:
    """The `cluster` label values of a body's samples."""
    return {dict(labels).get("cluster") for _, labels, _ in samples_text(text)}


def up(service: Exporter, cluster: str) -> float | None:
    return value(samples_text(service.metrics.text().decode()), "emqx_client_exporter_up",
                 cluster=cluster)


async def test_nothing_is_served_or_ready_before_the_first_poll() -> None:
    async with simulated() as (_, url), exporter([{"name": "a", "emqx_url": url}]) as service:
        assert not service.ready
        assert service.snapshot.series == 0 and service.snapshot.text() == ""
        assert poll_tasks() == []  # building the service starts no polling


async def test_one_poll_of_every_cluster_publishes_a_snapshot_and_makes_it_ready() -> None:
    clock = ManualClock()
    async with simulated() as (_, url), exporter(
            [{"name": "a", "emqx_url": url}, {"name": "b", "emqx_url": url}], clock) as service:
        reports = await service.poll_all_once()
        assert len(reports) == 2
        assert service.snapshot.created == clock()
        samples = samples_text(service.snapshot.text())
        for name in ("a", "b"):
            assert sum(v for n, labels, v in samples if n == "emqx_clients_sessions"
                       and ("cluster", name) in labels) == SIM.clients
        assert service.ready


async def test_not_ready_while_every_cluster_fails() -> None:
    async with exporter([{"name": "down", "emqx_url": closed_url()}]) as service:
        await service.poll_all_once()
        assert not service.ready and up(service, "down") == 0


async def test_ready_once_every_cluster_polled_and_one_succeeded() -> None:
    async with simulated() as (_, url), exporter(
            [{"name": "ok", "emqx_url": url}, {"name": "down", "emqx_url": closed_url()}]
    ) as service:
        await service.poll_all_once()
        assert service.ready
        assert (up(service, "ok"), up(service, "down")) == (1, 0)


async def test_readiness_does_not_flap_when_emqx_fails_later() -> None:
    async with simulated() as (cluster, url), exporter(
            [{"name": "a", "emqx_url": url}]) as service:
        await service.poll_all_once()
        assert service.ready
        cluster.faults.add("http_error", status=500)
        await service.poll_all_once()
        assert up(service, "a") == 0 and service.ready


async def test_started_pollers_publish_on_their_own_and_stop_cleanly() -> None:
    clock = ManualClock()
    async with simulated() as (_, url), exporter(
            [{"name": "a", "emqx_url": url, "interval": 0.05},
             {"name": "b", "emqx_url": url, "interval": 0.05}], clock) as service:
        service.start()
        service.start()  # a second start adds no second loop
        assert sorted(t.get_name() for t in poll_tasks()) == ["poll-a", "poll-b"]
        await until(lambda: service.ready, "ready from the background polls")
        clock.advance(10)
        # a publish may have read the clock before the advance; a later one reads it after
        await until(lambda: service.snapshot.created == clock(), "a later poll publishes again")
        await service.stop()
        assert poll_tasks() == []
        stopped = service.snapshot
        assert stopped.series > 0  # the last snapshot is still there to serve
        await service.stop()  # stopping twice is harmless


async def test_stop_does_not_wait_for_a_slow_poll() -> None:
    async with simulated() as (cluster, url), exporter(
            [{"name": "a", "emqx_url": url, "interval": 0.05, "timeout": 60}]) as service:
        cluster.faults.add("http_error", status=500, delay=30.0)
        service.start()
        await until(lambda: any(rule.seen for rule in cluster.faults.rules),
                    "a request hangs in the slow broker")
        began = time.monotonic()
        await service.stop()
        assert time.monotonic() - began < 5.0 and poll_tasks() == []


async def test_a_failing_cluster_does_not_hold_back_the_others() -> None:
    async with simulated() as (_, url), exporter(
            [{"name": "down", "emqx_url": closed_url(), "interval": 0.05},
             {"name": "ok", "emqx_url": url, "interval": 0.05}]) as service:
        service.start()
        await until(lambda: "ok" in clusters(service.snapshot.text()), "the good cluster served")
        assert service.ready
        assert clusters(service.snapshot.text()) == {"ok"}


async def test_an_unwritable_state_file_is_logged_and_polling_goes_on(tmp_path: Path) -> None:
    state = tmp_path / "missing-dir" / "state.json"
    async with simulated() as (cluster, url), exporter(
            [{"name": "a", "emqx_url": url}], per_client={
                "watch": [cluster.population.clientid(0)], "state_file": str(state)}) as service:
        with capture_logs() as logs:
            await service.poll_all_once()
            await service.poll_all_once()
        assert service.ready and service.snapshot.series > 0
        assert [e["event"] for e in logs if e["event"].startswith("state_file")] == [
            "state_file_not_written"] * 2
        assert not state.exists()


async def test_a_damaged_state_file_does_not_stop_the_start(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json", encoding="utf-8")
    async with simulated() as (cluster, url), exporter(
            [{"name": "a", "emqx_url": url}], per_client={
                "watch": [cluster.population.clientid(0)], "state_file": str(state)}) as service:
        await service.poll_all_once()
        assert service.ready
        assert cluster.population.clientid(0) in state.read_text(encoding="utf-8")


async def test_apply_keeps_unchanged_pollers_and_drops_removed_clusters() -> None:
    async with simulated() as (_, url), exporter(
            [{"name": "a", "emqx_url": url}, {"name": "b", "emqx_url": url}]) as service:
        await service.poll_all_once()
        kept = service.pollers[0]
        flags: dict[str, Any] = {"api_key": SIM.api_key, "api_secret": SIM.api_secret,
                                 "retries": 0, "timeout": 10,
                                 "clusters": [{"name": "a", "emqx_url": url}]}
        await service.apply(load_settings(flags, {}, None))
        assert service.pollers == [kept]
        assert clusters(service.snapshot.text()) == {"a"}
