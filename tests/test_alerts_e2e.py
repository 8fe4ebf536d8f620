"""End to end: faults drive the generated alerts to firing in a real Prometheus, and the
Alertmanager inhibitions hold in a real Alertmanager.

simulator (this event loop) -> exporter (subprocess) -> Prometheus (1 s scrapes and rule
evaluations, the rules of deploy/generate_rules.py with `for: 2s`) -> Alertmanager (the
generated configuration). Faults, in order: a reconnect loop of one client, a reconnect burst
of a class, a node stopped, EMQX unreachable, the exporter killed. After each, the expected
alerts must fire in Prometheus, alerts that fired before must stay firing while their data is
gone, and Alertmanager must show the client alerts inhibited by the alert naming the cause.

Marked ``prometheus``: skipped locally without the Debian packages prometheus and
prometheus-alertmanager, required in CI (``CI=true``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from aiohttp import web

from emqx_simulator import SimCluster, SimSettings, build_sim_app
from tests.conftest import require_tool
from tests.ports import free_port
from tests.prometheus_server import (
    Alertmanager,
    Prometheus,
    alertmanager_server,
    prometheus_server,
    running,
    tail,
    wait_http_ok,
)
from tests.test_rules import GENERATOR, ROOT

JOB = "emqx-client-exporter"
CLUSTER = "sim"
#: Seconds for the whole run, start-up included.
BUDGET_SECONDS = 150.0
SIM = SimSettings(api="v5", nodes=3, clients=600, seed=7, class_prefixes=True)
#: Simulated seconds per real second; the simulated clock stays behind real time for HORIZON s.
SPEEDUP = 5.0
HORIZON = 400.0
#: A watched client id EMQX does not know: EMQXWatchedClientOffline fires for it.
MISSING_CLIENT = "gateway-9999999"
#: Clients reconnected at once for the storm.
BURST = 40
#: Short `for:` and small thresholds so that a few seconds of faults fire the alerts.
RULE_SETTINGS: dict[str, Any] = {
    "for_override": "2s",
    "storm_keep_firing_for": "5m",
    "thresholds": {"storm_min": 20, "storm_ratio": 0.05, "client_reconnects": 3},
}


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_rules", GENERATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def clock() -> Callable[[], float]:
    origin = time.time()
    start = origin - SPEEDUP * HORIZON
    return lambda: start + (time.time() - origin) * SPEEDUP


def exporter_config(sim_url: str, port: int, watch: list[str]) -> dict[str, Any]:
    return {
        "listen": f"127.0.0.1:{port}",
        "interval": 1,
        "timeout": 2,
        "retries": 0,
        "clusters": [{"name": CLUSTER, "emqx_url": sim_url, "api_key": SIM.api_key,
                      "api_secret": SIM.api_secret}],
        "classes": [{"name": "sensors", "clientid": "sensor-.*"},
                    {"name": "gateways", "clientid": "gateway-.*"}],
        "aggregate": {"labels": ["node", "class"]},
        "per_client": {"watch": watch, "top_k": {"mqueue_fill": 5}},
    }


def prometheus_config(rules_dir: Path, exporter: str, alertmanager: str) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_dir / "prometheus" / "recording.yml"),
                       str(rules_dir / "prometheus" / "alerts.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [{"job_name": JOB, "honor_labels": True,
                            "static_configs": [{"targets": [exporter]}]}],
    }


class Watch:
    """Waits, with one deadline, on Prometheus' alerts and Alertmanager's view of them."""

    def __init__(self, prom: Prometheus, am: Alertmanager, deadline: float) -> None:
        self.prom = prom
        self.am = am
        self.deadline = deadline

    async def _until(self, what: str, probe: Callable[[], Any]) -> Any:
        last: Any = None
        while True:
            last = await probe()
            if last:
                return last
            if time.monotonic() > self.deadline:
                alerts = [(a["labels"]["alertname"], a["state"])
                          for a in (await self.prom.api("alerts"))["alerts"]]
                raise AssertionError(f"{what}: not in time; Prometheus alerts: {alerts}\n"
                                     f"{tail(self.prom.log, 15)}")
            await asyncio.sleep(0.5)

    async def query_at_least(self, expr: str, value: float) -> None:
        async def probe() -> bool:
            result = await self.prom.query(expr)
            return bool(result) and float(result[0]["value"][1]) >= value
        await self._until(f"{expr} >= {value}", probe)

    async def firing(self, name: str, **labels: str) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            for alert in (await self.prom.api("alerts"))["alerts"]:
                if (alert["labels"]["alertname"] == name and alert["state"] == "firing"
                        and labels.items() <= alert["labels"].items()):
                    return dict(alert)
            return None
        found: dict[str, Any] = await self._until(f"{name} {labels} firing", probe)
        return found

    async def inhibited(self, name: str, by: str, **labels: str) -> None:
        """``name`` is suppressed in Alertmanager, and among its inhibitors is alert ``by``."""
        async def probe() -> bool:
            alerts = await self.am.alerts()
            sources = {a["fingerprint"] for a in alerts if a["labels"]["alertname"] == by}
            return any(a["labels"]["alertname"] == name
                       and labels.items() <= a["labels"].items()
                       and a["status"]["state"] == "suppressed"
                       and sources & set(a["status"]["inhibitedBy"]) for a in alerts)
        await self._until(f"{name} {labels} inhibited by {by} in Alertmanager", probe)

    async def active_in_alertmanager(self, name: str, **labels: str) -> None:
        async def probe() -> bool:
            return any(a["labels"]["alertname"] == name and a["status"]["state"] == "active"
                       and labels.items() <= a["labels"].items() for a in await self.am.alerts())
        await self._until(f"{name} {labels} active in Alertmanager", probe)


@pytest.mark.prometheus
async def test_faults_fire_alerts_and_alertmanager_inhibits_client_alerts(tmp_path: Path) -> None:
    prometheus_binary = require_tool("prometheus")
    alertmanager_binary = require_tool("prometheus-alertmanager")
    deadline = time.monotonic() + BUDGET_SECONDS
    gen = generator()
    rules_dir = tmp_path / "rules"
    gen.write(gen.render(gen.Settings.from_mapping(RULE_SETTINGS)), rules_dir)

    cluster = SimCluster(SIM, clock())
    rows = [r for r in cluster.rows() if r["connected"]]
    looping = next(r["clientid"] for r in rows if r["clientid"].startswith("gateway-"))
    stopped_node = cluster.node_names[-1]
    sensors = [r["clientid"] for r in rows
               if r["clientid"].startswith("sensor-") and r["node"] != stopped_node]
    assert len(sensors) > BURST, f"seed {SIM.seed}: too few online sensors"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMQX_")}
    env["PYTHONUNBUFFERED"] = "1"

    runner = web.AppRunner(build_sim_app(cluster), access_log=None)
    await runner.setup()
    async with AsyncExitStack() as stack:
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, sim_port = runner.addresses[0][:2]
        port = free_port()
        config_file = tmp_path / "exporter.yml"
        config_file.write_text(yaml.safe_dump(exporter_config(
            f"http://{host}:{sim_port}", port, [MISSING_CLIENT, looping])))
        exporter_log = tmp_path / "exporter.log"
        exporter = await stack.enter_async_context(running(
            [sys.executable, "-m", "exporter", "run", "--config", str(config_file)],
            exporter_log, cwd=ROOT, env=env))
        am = await stack.enter_async_context(alertmanager_server(
            alertmanager_binary, tmp_path / "alertmanager",
            rules_dir / "alertmanager" / "alertmanager.yml", deadline))
        prom = await stack.enter_async_context(prometheus_server(
            prometheus_binary, tmp_path / "prometheus",
            prometheus_config(rules_dir, f"127.0.0.1:{port}", am.url.removeprefix("http://")),
            deadline, extra_args=["--rules.alert.resend-delay=1s"]))
        await wait_http_ok(prom.session, f"http://127.0.0.1:{port}/-/ready", deadline, exporter,
                           exporter_log)
        watch = Watch(prom, am, deadline)
        await watch.query_at_least(
            f'count(count_over_time(node:emqx_clients_online:sum{{cluster="{CLUSTER}"}}[1m]) >= 3)',
            SIM.nodes)

        # A watched client EMQX does not know: offline, and only watched clients count.
        await watch.firing("EMQXWatchedClientOffline", clientid=MISSING_CLIENT, cluster=CLUSTER)
        await watch.active_in_alertmanager("EMQXWatchedClientOffline", clientid=MISSING_CLIENT)
        offline = await prom.query("ALERTS{alertname=\"EMQXWatchedClientOffline\"}")
        assert {a["metric"]["clientid"] for a in offline} == {MISSING_CLIENT}, offline

        # One client in a reconnect loop: every reconnect seen by a poll before the next.
        for seen in range(1, 4):
            cluster.reconnect(looping)
            await watch.query_at_least(
                f'changes(emqx_client_connected_timestamp_seconds{{clientid="{looping}"}}[5m])',
                seen)
        await watch.firing("EMQXClientReconnectLoop", clientid=looping)

        # A one-off reconnect burst of a class fires the storm, which inhibits the loop alert.
        for clientid in sensors[:BURST]:
            cluster.reconnect(clientid)
        await watch.firing("EMQXClientsReconnectStorm", **{"class": "sensors"})
        await watch.inhibited("EMQXClientReconnectLoop", by="EMQXClientsReconnectStorm",
                              clientid=looping)

        # A node stopped: its series vanish, yet the online drop fires (the node counts 0);
        # Alertmanager shows the cause, EMQXNodeStopped, and holds the drop back.
        cluster.set_node_down(stopped_node)
        await watch.firing("EMQXNodeStopped", node=stopped_node, cluster=CLUSTER)
        await watch.firing("EMQXClientsOnlineDrop", node=stopped_node, cluster=CLUSTER)
        await watch.inhibited("EMQXClientsOnlineDrop", by="EMQXNodeStopped", node=stopped_node)

        # EMQX unreachable: the snapshot empties; the client alerts stay firing, inhibited.
        await runner.cleanup()
        await watch.firing("EMQXClientExporterEMQXUnreachable", cluster=CLUSTER)
        await watch.firing("EMQXWatchedClientOffline", clientid=MISSING_CLIENT)
        await watch.firing("EMQXClientReconnectLoop", clientid=looping)
        await watch.inhibited("EMQXWatchedClientOffline", by="EMQXClientExporterEMQXUnreachable",
                              clientid=MISSING_CLIENT)

        # The exporter killed: every series goes stale; the client alerts still stay firing,
        # inhibited by EMQXClientExporterDown.
        exporter.kill()
        await exporter.wait()
        await watch.firing("EMQXClientExporterDown")
        await watch.firing("EMQXWatchedClientOffline", clientid=MISSING_CLIENT)
        await watch.inhibited("EMQXWatchedClientOffline", by="EMQXClientExporterDown",
                              clientid=MISSING_CLIENT)
        gone = await prom.query(f'emqx_client_online{{clientid="{MISSING_CLIENT}"}}')
        assert gone == [], "the held alert must fire on no data at all"

    assert prom.proc.returncode == 0, tail(prom.log)
    assert am.proc.returncode == 0, tail(am.log)
